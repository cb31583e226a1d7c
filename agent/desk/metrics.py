"""The agent's Prometheus metrics, served as ``GET /metrics`` on the local
status port (``[daemon] status_http``, loopback only; docs/operations.md,
"Metrics").

Read from the status board when scraped: cards by outcome since the daemon
started, the queue, cards being worked on, whether the archive was reachable;
from the spool's folder: the bytes it holds and the bytes free on its file
system. Fed from the board's events (a subscriber, like the notifications):
how long each pipeline stage took (scan, identify, strip, upload, commit,
verify, wipe) and how long a card took from insertion to its outcome, by
outcome. Nothing names a patient.
"""
from __future__ import annotations

import logging
import pathlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.card.spool import Spool
from agent.desk.status import StatusBoard

log = logging.getLogger(__name__)

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class AgentMetrics:
    """A service (start/stop) holding the agent's registry; :meth:`render` is the page."""

    def __init__(self, board: StatusBoard, spool_dir: pathlib.Path, *,
                 clock_skew: Callable[[], float | None] = lambda: None,
                 devices: Callable[[], int] | None = None) -> None:
        self.board = board
        self.registry = CollectorRegistry()
        self.stage_seconds = Histogram(
            "bildsluss_agent_stage_duration_seconds", "how long a pipeline stage took for one card",
            ["stage"], registry=self.registry, buckets=_BUCKETS)
        self.card_seconds = Histogram(
            "bildsluss_agent_card_duration_seconds", "from a card's insertion to its outcome",
            ["outcome"], registry=self.registry, buckets=_BUCKETS)
        self.registry.register(_BoardCollector(board, spool_dir, clock_skew, devices))
        self._stages: dict[str, tuple[str, float]] = {}  # card -> (stage, since)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def _run(self) -> None:
        updates = self.board.subscribe()
        try:
            while not self._stop.is_set():
                try:
                    snapshot = updates.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.observe(snapshot.get("event") or {}, snapshot)
        finally:
            self.board.unsubscribe(updates)

    def observe(self, event: dict[str, Any], snapshot: dict[str, Any]) -> None:
        """Account one board event (its snapshot for the card's start time)."""
        card, kind, at = event.get("card"), event.get("kind"), event.get("at")
        if not card or at is None:
            return
        if kind == "progress":
            stage = str(event.get("stage") or "")
            current = self._stages.get(card)
            if current is not None and current[0] == stage:
                return
            self._end_stage(card, at)
            self._stages[card] = (stage, at)
        elif kind in ("finished", "deferred") or (kind == "state" and event.get("state") == "interrupted"):
            self._end_stage(card, at)
            if kind == "finished":
                entry = next((e for e in snapshot.get("recent") or [] if e.get("card") == card), None)
                if entry is not None and entry.get("started") is not None:
                    self.card_seconds.labels(outcome=str(entry.get("outcome"))).observe(
                        max(0.0, entry["finished"] - entry["started"]))

    def _end_stage(self, card: str, at: float) -> None:
        current = self._stages.pop(card, None)
        if current is not None and current[0]:
            self.stage_seconds.labels(stage=current[0]).observe(max(0.0, at - current[1]))


class _BoardCollector:
    def __init__(self, board: StatusBoard, spool_dir: pathlib.Path,
                 clock_skew: Callable[[], float | None], devices: Callable[[], int] | None) -> None:
        self.board, self.spool_dir, self.clock_skew, self.devices = board, spool_dir, clock_skew, devices

    def collect(self) -> Iterator[Metric]:
        snap = self.board.snapshot()
        info = GaugeMetricFamily("bildsluss_agent_info", "the agent (always 1)",
                                 labels=["agent", "department", "version"])
        info.add_metric([str(snap.get("agent_id")), str(snap.get("department") or ""), str(snap.get("version"))], 1)
        yield info
        cards = CounterMetricFamily("bildsluss_agent_cards", "cards since the daemon started, by outcome "
                                    "(detected counts every card seen)", labels=["outcome"])
        for outcome, n in sorted((snap.get("counts") or {}).items()):
            cards.add_metric([outcome], n)
        yield cards
        yield GaugeMetricFamily("bildsluss_agent_queue_length", "cards waiting for their reader",
                                value=len(snap.get("queue") or []))
        yield GaugeMetricFamily("bildsluss_agent_cards_in_progress", "cards being read, uploaded, wiped or held",
                                value=len(snap.get("cards") or []))
        reachable = (snap.get("archive") or {}).get("reachable")
        if reachable is not None:
            yield GaugeMetricFamily("bildsluss_agent_archive_reachable",
                                    "1 when the last call to the archive reached it", value=1 if reachable else 0)
        yield GaugeMetricFamily("bildsluss_agent_started_timestamp_seconds", "when the daemon started",
                                value=float(snap.get("started_at") or 0))
        used, free = Spool(self.spool_dir).usage()
        if used is not None:
            yield GaugeMetricFamily("bildsluss_agent_spool_bytes", "bytes in the spool (stripped copies)", value=used)
        if free is not None:
            yield GaugeMetricFamily("bildsluss_agent_spool_free_bytes",
                                    "bytes free on the spool's file system", value=free)
        skew = self.clock_skew()
        if skew is not None:
            yield GaugeMetricFamily("bildsluss_agent_clock_skew_seconds",
                                    "this PC's clock minus the archive's, as the archive last measured it",
                                    value=skew)
        if self.devices is not None:
            yield GaugeMetricFamily("bildsluss_agent_registered_devices",
                                    "capture devices registered here ([[devices]]) and by the archive",
                                    value=self.devices())
