"""Prometheus metrics of the archive (``GET /metrics`` on the HTTP endpoint, issue 11/17).

Two kinds, and they add up differently when several archive processes serve
one database (docs/operations.md, "Metrics"):

* **Per process** (this module's :data:`PROCESS`, in memory, from zero at each
  start): RPC latency by method and status code (the gRPC interceptor), cases
  and bytes ingested by the department (CommitSession), agent calls refused
  at the certificate gate by reason, and the database and blob store health
  as this process's monitor last saw them. Sum them over the processes
  (``sum by (department) (rate(...))``).
* **From the database** (:class:`FleetCollector`, read at scrape time, kept
  :data:`CACHE_S` seconds): the fleet (every agent's liveness, heartbeat age,
  clock skew, certificate expiry, queue, cards by outcome as the agent
  reports them) and the audit chain's length. Every process answers the same
  values; take ``max`` over them (or scrape one).

Nothing here names a patient: agents, departments, reason codes and counts.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from archive_server.models import AuditHead

if TYPE_CHECKING:
    from archive_server.db import Database

PROCESS = CollectorRegistry()
ProcessCollector(registry=PROCESS)
RPC_SECONDS = Histogram(
    "bildsluss_archive_rpc_duration_seconds", "gRPC calls served by this process, by method and status code",
    ["method", "code"], registry=PROCESS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0))
CASES_INGESTED = Counter(
    "bildsluss_archive_cases_ingested", "cases committed by this process, by department", ["department"],
    registry=PROCESS)
BYTES_INGESTED = Counter(
    "bildsluss_archive_ingest_bytes", "bytes of the media of the cases committed by this process, by department",
    ["department"], registry=PROCESS)
AGENT_CALLS_REFUSED = Counter(
    "bildsluss_archive_agent_calls_refused", "agent calls refused at the certificate gate, by reason",
    ["reason"], registry=PROCESS)
DATABASE_UP = Gauge("bildsluss_archive_database_up", "1 when this process's last database check passed",
                    registry=PROCESS)
BLOBSTORE_UP = Gauge("bildsluss_archive_blobstore_up", "1 when this process's last blob store check passed",
                     registry=PROCESS)
HEALTH_CHECKED = Gauge("bildsluss_archive_health_checked_timestamp_seconds",
                       "when this process last checked its database and blob store", registry=PROCESS)
INFO = Gauge("bildsluss_archive_info", "the archive's version (always 1)", ["version"], registry=PROCESS)

# Database reads at most this often per process, however often it is scraped.
CACHE_S = 10.0
log = logging.getLogger(__name__)
_LIVENESS = ("alive", "silent", "never_seen", "revoked")


def health_seen(database_ok: bool, blobstore_ok: bool) -> None:
    DATABASE_UP.set(1 if database_ok else 0)
    BLOBSTORE_UP.set(1 if blobstore_ok else 0)
    HEALTH_CHECKED.set(time.time())


class FleetCollector:
    """Fleet and audit-chain metrics read from the database at scrape time."""

    def __init__(self, db: "Database", cache_s: float = CACHE_S) -> None:
        self.db = db
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.cache_s:
                self._cached = (now, self._read())
            yield from self._cached[1]

    def _read(self) -> list[Metric]:
        from archive_server.agents import list_agents  # agents imports the gate; keep this module light

        up = GaugeMetricFamily("bildsluss_fleet_scrape_ok", "1 when the database answered this read")
        try:
            agents = list_agents(self.db, refusals=0)
            with self.db.read() as s:
                chain = s.execute(sa.select(AuditHead.seq)).scalar()
        except Exception as e:  # noqa: BLE001 - a scrape must answer; the log and database_up tell why
            log.warning("metrics: the fleet could not be read", extra={"error": repr(e)})
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *_fleet(agents), _chain(chain)]


def _chain(seq: int | None) -> Metric:
    family = GaugeMetricFamily("bildsluss_audit_chain_length", "events in the audit log's hash chain (R18)")
    family.add_metric([], float(seq or 0))
    return family


def _fleet(agents: list[dict[str, Any]]) -> list[Metric]:
    labels = ["agent", "department"]
    count = GaugeMetricFamily("bildsluss_agents", "agents of the fleet by department and liveness",
                              labels=["department", "liveness"])
    liveness = GaugeMetricFamily(
        "bildsluss_agent_liveness", "1 for the agent's liveness (alive, silent, never_seen, revoked), 0 for the others",
        labels=[*labels, "liveness"])
    age = GaugeMetricFamily("bildsluss_agent_heartbeat_age_seconds", "seconds since the agent's last heartbeat",
                            labels=labels)
    interval = GaugeMetricFamily("bildsluss_agent_heartbeat_interval_seconds",
                                 "the heartbeat interval the agent keeps to", labels=labels)
    skew = GaugeMetricFamily("bildsluss_agent_clock_skew_seconds",
                             "the agent's clock minus the archive's at its last heartbeat", labels=labels)
    expiry = GaugeMetricFamily("bildsluss_agent_certificate_expiry_timestamp_seconds",
                               "when the agent's bound certificate expires (Unix time)", labels=labels)
    queue = GaugeMetricFamily("bildsluss_agent_queue_length", "cards waiting on the agent", labels=labels)
    cards = CounterMetricFamily("bildsluss_agent_cards", "cards by outcome since the agent started, "
                                "as it reports them (resets when it restarts)", labels=[*labels, "outcome"])
    reachable = GaugeMetricFamily("bildsluss_agent_archive_reachable",
                                  "1 when the agent's last ingest call reached the archive", labels=labels)
    spool_free = GaugeMetricFamily("bildsluss_agent_spool_free_bytes",
                                   "bytes free on the file system of the agent's spool", labels=labels)
    totals: dict[tuple[str, str], int] = {}
    for a in agents:
        key = [a["agent_id"], a["department"] or ""]
        totals[(key[1], a["liveness"])] = totals.get((key[1], a["liveness"]), 0) + 1
        for state in _LIVENESS:
            liveness.add_metric([*key, state], 1 if a["liveness"] == state else 0)
        if a["heartbeat_age_s"] is not None:
            age.add_metric(key, a["heartbeat_age_s"])
            interval.add_metric(key, a["interval_s"])
            queue.add_metric(key, a["queue"])
            reachable.add_metric(key, 1 if a["archive_reachable"] else 0)
        if a["clock_skew_s"] is not None:
            skew.add_metric(key, a["clock_skew_s"])
        if a["spool_free_bytes"] is not None:
            spool_free.add_metric(key, a["spool_free_bytes"])
        if a["certificate_not_after"] is not None and a["bound"]:
            expiry.add_metric(key, dt.datetime.fromisoformat(a["certificate_not_after"]).timestamp())
        for outcome, n in sorted((a["counts"] or {}).items()):
            cards.add_metric([*key, outcome], n)
    for (department, state), n in sorted(totals.items()):
        count.add_metric([department, state], n)
    return [count, liveness, age, interval, skew, expiry, queue, cards, reachable, spool_free]


class Exporter:
    """What ``GET /metrics`` answers: this process's metrics and the database's."""

    def __init__(self, db: "Database") -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Forward(PROCESS))
        self.registry.register(FleetCollector(db))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Forward:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
