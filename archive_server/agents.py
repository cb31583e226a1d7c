"""The agent registry (protos/bildsluss/v1/agents.proto): heartbeats from the
capture PCs, stored so that operations sees every agent (R21).

* :class:`~archive_server.models.AgentStatus` holds the latest snapshot per
  agent (one row, replaced by every heartbeat) and
  :class:`~archive_server.models.AgentRefusal` the recent refused cards (one
  row per card, kept up to ``MAX_REFUSALS_KEPT`` per agent).
* :class:`AgentRegistryCore` validates and stores a heartbeat (plain protocol
  messages in and out, domain errors raised); the servicer
  (:mod:`archive_server.services.agents`) only forwards to it, and
  :mod:`archive_server.interceptor` maps the errors to status codes.
* :func:`list_agents` is what ``bildsluss-archive agents --json`` prints and
  ``GET /api/v1/agents`` answers: the *expected fleet* (every agent bound with
  ``admin agent add``, whether it ever spoke or not) beside every agent that
  spoke, each with its liveness (:data:`LIVENESS`), clock skew and certificate
  expiry (issue 17).

On a TLS archive a heartbeat is accepted only from the certificate bound to
its agent id and department (:class:`~archive_server.agentcerts.AgentCaller`):
one agent cannot speak for another, nor move itself to another department.
The interval an agent asks for is capped at ``MAX_INTERVAL_S``, so that a
dead agent is reported silent within ``ALIVE_INTERVALS`` x 5 minutes however
long an interval a (bad or malicious) heartbeat asked for.

Heartbeats never carry patient numbers. As a second line, every text field
that holds something shaped like one is stored with it masked (and a warning
logged), so that an agent bug cannot leak a number into the operations view;
masking, not refusing, because a false alarm must not make an agent look dead.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.orm import Session

from archive_server import validation as v
from archive_server.agentcerts import AgentCaller
from archive_server.audit import append_audit
from archive_server.authz import NotPermitted, Principal, authorize, load_grants
from archive_server.errors import AgentUnauthenticated, InvalidArgument, NotFound
from archive_server.models import (
    Agent,
    AgentBinding,
    AgentHistory,
    AgentRefusal,
    AgentStatus,
    Department,
    utcnow,
)
from bildsluss_common.identity.masking import mask_numbers_in_text
from bildsluss.v1 import agents_pb2 as pb

if TYPE_CHECKING:
    from archive_server.db import Database

log = logging.getLogger(__name__)
_Select = TypeVar("_Select", bound="sa.Select")  # a select of any columns

# The interval the archive keeps to (and tells the agent to keep): what the
# agent asked for, at least MIN and at most MAX. At most 5 minutes, so that an
# agent that dies is shown silent within 15 minutes (ALIVE_INTERVALS x MAX).
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 300.0
# An agent is alive while its last heartbeat is at most this many intervals old.
ALIVE_INTERVALS = 3
MAX_ITEMS = 50
MAX_REFUSALS_KEPT = 100
# History entries kept per agent (its ops page shows the newest).
HISTORY_KEPT = 200
_REASON_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_STATES = {
    pb.AGENT_STATE_IDLE: "idle",
    pb.AGENT_STATE_BUSY: "busy",
    pb.AGENT_STATE_DEFERRED: "deferred",
    pb.AGENT_STATE_STARTING: "starting",
    pb.AGENT_STATE_STOPPING: "stopping",
}
_COUNT_FIELDS = ("detected", "archived", "refused", "deferred", "interrupted", "failed")
# An agent's liveness: heartbeats within ALIVE_INTERVALS intervals (alive);
# spoke once but not since (silent: red on the ops page, alerted); bound by an
# administrator but never heard from (never_seen: a PC that was never set up,
# or cannot reach the archive at all); its certificate revoked (revoked: no
# longer expected, not alarming).
LIVENESS = ("alive", "silent", "never_seen", "revoked")

DepartmentLookup = Callable[[Session, str, str], Department]


class AgentRegistryCore:
    """Heartbeat handling without gRPC: protocol messages in and out."""

    def __init__(self, db: "Database", department_for: DepartmentLookup,
                 clock: Callable[[], dt.datetime] = utcnow, *, tls: bool = False,
                 devices_for: Callable[[str], list[tuple[str, str, str]]] | None = None) -> None:
        # ``department_for`` is the ingest service's department rule for a
        # plaintext (development) archive (known, or registered automatically),
        # so a heartbeat there is held to exactly the same rule as an
        # OpenSession. On TLS (``tls``) the department is the certificate's.
        self.db = db
        self._department_for = department_for
        self._clock = clock
        self._tls = tls
        # The department's registered capture devices (archive_server.devices),
        # answered with every heartbeat; None: the answer carries no list.
        self._devices_for = devices_for

    def heartbeat(self, request: pb.HeartbeatRequest, caller: AgentCaller | None = None) -> pb.HeartbeatResponse:
        """``caller``: the certificate's agent (TLS); None on a plaintext archive."""
        _validate(request)
        if caller is None and self._tls:
            raise AgentUnauthenticated("NO_CLIENT_CERTIFICATE", "no client certificate identified the agent")
        if caller is not None:
            caller.check_claims(request.agent_id, request.department_hsa_id)
        for attempt in range(3):
            try:
                now, skew = self._store(request, caller)
                break
            except exc.IntegrityError:
                # Two heartbeats of a new agent raced; the loser retries and updates.
                if attempt == 2:
                    raise
        response = pb.HeartbeatResponse(next_interval_s=bounded_interval(request.interval_s))
        response.server_time.FromDatetime(now)
        if skew is not None:
            response.clock_skew_s = skew
        if self._devices_for is not None:
            department = caller.department_hsa_id if caller is not None else request.department_hsa_id
            response.devices.SetInParent()  # present even when the list is empty
            for make, model, serial in self._devices_for(department):
                response.devices.devices.append(pb.RegisteredDevice(make=make, model=model, serial=serial))
        return response

    def _store(self, r: pb.HeartbeatRequest, caller: AgentCaller | None) -> tuple[dt.datetime, float | None]:
        now = self._clock()
        skew = clock_skew_s(r, now)
        with self.db.write() as s:
            department_id = (caller.department_id if caller is not None else
                             self._department_for(s, r.department_hsa_id, f"agent:{r.agent_id}").id)
            agent = s.get(Agent, r.agent_id)
            previous_version = agent.version if agent is not None else None
            if agent is None:
                agent = Agent(agent_id=r.agent_id, department_id=department_id, version=r.agent_version,
                              first_seen=now, last_seen=now)
                s.add(agent)
            else:
                if agent.department_id not in (None, department_id):
                    log.warning("agent reports another department than before", extra={
                        "agent_id": r.agent_id, "department": r.department_hsa_id})
                agent.department_id = department_id
                agent.version = r.agent_version
                agent.last_seen = now
            s.flush()
            status = s.get(AgentStatus, r.agent_id)
            if status is None:
                status = AgentStatus(agent_id=r.agent_id, heartbeats=0)
                s.add(status)
            history = _changes(status if status.heartbeats else None, previous_version, r, now)
            status.host = masked(r.host, r.agent_id)
            status.state = _STATES.get(r.state, "unknown")
            status.queue_length = r.queue_length
            status.counts = {name: getattr(r.counts, name) for name in _COUNT_FIELDS}
            status.last_error = _error_json(r.last_error, r.agent_id) if r.HasField("last_error") else None
            status.in_progress = [_card_json(c, r.agent_id) for c in r.in_progress]
            status.interval_s = bounded_interval(r.interval_s)  # the interval the agent is told to keep
            status.archive_reachable = r.archive_reachable
            status.started_at = r.started_at.ToDatetime(dt.timezone.utc) if r.HasField("started_at") else None
            status.last_heartbeat = now
            status.heartbeats = (status.heartbeats or 0) + 1
            status.clock_skew_s = skew
            status.spool_free_bytes = r.spool_free_bytes if r.HasField("spool_free_bytes") else None
            status.spool_bytes = r.spool_bytes if r.HasField("spool_bytes") else None
            self._store_history(s, r.agent_id, history, now)
            self._store_refusals(s, r)
        if skew is not None and abs(skew) > CLOCK_SKEW_WARN_S:
            log.warning("agent clock skewed", extra={"agent_id": r.agent_id, "skew_s": round(skew, 1)})
        return now, skew

    @staticmethod
    def _store_history(s: Session, agent_id: str, changes: list[tuple[str, dict[str, Any]]],
                       now: dt.datetime) -> None:
        if not changes:
            return
        for kind, detail in changes:
            s.add(AgentHistory(agent_id=agent_id, at=now, kind=kind, detail=detail))
        s.flush()
        keep = sa.select(AgentHistory.id).where(AgentHistory.agent_id == agent_id).order_by(
            AgentHistory.id.desc()).limit(HISTORY_KEPT)
        s.execute(sa.delete(AgentHistory).where(
            AgentHistory.agent_id == agent_id, AgentHistory.id.not_in(keep.scalar_subquery())))

    @staticmethod
    def _store_refusals(s: Session, r: pb.HeartbeatRequest) -> None:
        if not r.refused:
            return
        known = {
            (key, ms) for key, ms in s.execute(
                sa.select(AgentRefusal.card_key, AgentRefusal.refused_at_ms)
                .where(AgentRefusal.agent_id == r.agent_id))
        }
        added = 0
        for card in r.refused:
            ms = card.refused_at.ToMilliseconds()
            key = masked(card.card_key, r.agent_id)
            if (key, ms) in known:
                continue
            known.add((key, ms))
            s.add(AgentRefusal(
                agent_id=r.agent_id, card_key=key, reader=masked(card.reader, r.agent_id),
                reason=card.reason_code,
                refused_at_ms=ms, refused_at=card.refused_at.ToDatetime(dt.timezone.utc),
                file_count=card.file_count))
            added += 1
        if not added:
            return
        s.flush()
        log.info("agent reported refused cards", extra={"agent_id": r.agent_id, "new": added})
        keep = sa.select(AgentRefusal.id).where(AgentRefusal.agent_id == r.agent_id).order_by(
            AgentRefusal.refused_at_ms.desc(), AgentRefusal.id.desc()).limit(MAX_REFUSALS_KEPT)
        s.execute(sa.delete(AgentRefusal).where(
            AgentRefusal.agent_id == r.agent_id, AgentRefusal.id.not_in(keep.scalar_subquery())))


def _changes(before: AgentStatus | None, version: str | None, r: pb.HeartbeatRequest,
             now: dt.datetime) -> list[tuple[str, dict[str, Any]]]:
    """What this heartbeat changed, for the agent's history (kind, detail)."""
    state = _STATES.get(r.state, "unknown")
    if before is None:
        return [("first_heartbeat", {"state": state, "version": r.agent_version})]
    out: list[tuple[str, dict[str, Any]]] = []
    silent_s = (now - _aware(before.last_heartbeat)).total_seconds()
    if silent_s > ALIVE_INTERVALS * bounded_interval(before.interval_s):
        out.append(("returned", {"silent_s": round(silent_s, 1)}))
    started = r.started_at.ToDatetime(dt.timezone.utc) if r.HasField("started_at") else None
    if started is not None and before.started_at is not None and abs(
            (started - _aware(before.started_at)).total_seconds()) > 1:
        out.append(("restarted", {"version": r.agent_version}))
    if version is not None and version != r.agent_version:
        out.append(("version", {"from": version, "to": r.agent_version}))
    if state != before.state:
        out.append(("state", {"from": before.state, "to": state}))
    if r.HasField("last_error"):
        error = _error_json(r.last_error, r.agent_id)
        old = before.last_error or {}
        if (error["at"], error["code"]) != (old.get("at"), old.get("code")):
            out.append(("error", error))
    return out


# -- validation --------------------------------------------------------------------


# A skew beyond this is logged at every heartbeat (and alerted on, see
# packaging/prometheus/alerts.yml): TLS and the identity-number date checks
# need the capture PC's clock right to well within a minute.
CLOCK_SKEW_WARN_S = 60.0
# A sent_at further off than this is not a clock but garbage; not stored.
_SKEW_LIMIT_S = 10 * 365 * 86400.0


def clock_skew_s(r: pb.HeartbeatRequest, received: dt.datetime) -> float | None:
    """The agent's clock minus the archive's, in seconds (None without sent_at)."""
    if not r.HasField("sent_at"):
        return None
    sent = r.sent_at.seconds + r.sent_at.nanos / 1e9
    skew = sent - received.timestamp()
    return round(skew, 3) if abs(skew) < _SKEW_LIMIT_S else None


def bounded_interval(requested: float) -> float:
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, requested))


def _validate(r: pb.HeartbeatRequest) -> None:
    v.agent_id(r.agent_id)
    v.hsa_id(r.department_hsa_id)
    _text(r.host, "host", 255)
    _text(r.agent_version, "agent_version", 64)
    if not (math.isfinite(r.interval_s) and r.interval_s > 0):
        raise InvalidArgument(f"interval_s must be a number of seconds > 0, got {r.interval_s}")
    if r.state not in _STATES:
        raise InvalidArgument(f"state must be one of {', '.join(_STATES.values())}, got {r.state}")
    for name, items in (("refused", r.refused), ("in_progress", r.in_progress)):
        if len(items) > MAX_ITEMS:
            raise InvalidArgument(f"{name} has {len(items)} items; at most {MAX_ITEMS}")
    for i, card in enumerate(r.refused):
        where = f"refused[{i}]"
        _text(card.card_key, f"{where}.card_key", 255, required=True)
        _text(card.reader, f"{where}.reader", 255)
        _reason(card.reason_code, f"{where}.reason_code", required=True)
        if not card.HasField("refused_at"):
            raise InvalidArgument(f"{where}.refused_at is required")
    for i, card in enumerate(r.in_progress):
        where = f"in_progress[{i}]"
        _text(card.card_key, f"{where}.card_key", 255, required=True)
        _text(card.reader, f"{where}.reader", 255)
        _text(card.state, f"{where}.state", 32)
        _text(card.stage, f"{where}.stage", 32)
        _reason(card.reason_code, f"{where}.reason_code")
    if r.HasField("last_error"):
        _reason(r.last_error.code, "last_error.code")
        _text(r.last_error.message, "last_error.message", 1024)


def _text(value: str, field: str, limit: int, *, required: bool = False) -> None:
    if required and not value:
        raise InvalidArgument(f"{field} must not be empty")
    if len(value) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidArgument(f"{field} contains a control character")


def masked(value: str, agent_id: str = "") -> str:
    """``value`` with anything shaped like an identity number replaced by ``*``."""
    clean = mask_numbers_in_text(value)
    if clean != value:
        log.warning("heartbeat text looked like it held an identity number; masked",
                    extra={"agent_id": agent_id})
    return clean


def _reason(value: str, field: str, *, required: bool = False) -> None:
    if not value and not required:
        return
    if not _REASON_CODE.match(value):
        raise InvalidArgument(f"{field} must be an upper-case reason code like NO_ID_FOUND, got {value!r}")


# -- JSON views ---------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat()


def _ts_iso(ts: Any) -> str:
    return _iso(ts.ToDatetime(dt.timezone.utc)) or ""


def _error_json(e: pb.AgentError, agent_id: str) -> dict[str, Any]:
    return {"at": _ts_iso(e.at) if e.HasField("at") else None, "code": e.code or None,
            "message": masked(e.message, agent_id)}


def _card_json(c: pb.CardInProgress, agent_id: str) -> dict[str, Any]:
    return {
        "card_key": masked(c.card_key, agent_id), "reader": masked(c.reader, agent_id),
        "state": c.state, "stage": c.stage or None,
        "files_done": c.files_done, "files_total": c.files_total,
        "bytes_done": c.bytes_done, "bytes_total": c.bytes_total,
        "since": _ts_iso(c.since) if c.HasField("since") else None,
        "reason": c.reason_code or None,
    }


# Refused cards per agent in the fleet view (the ops page shows the newest
# three and the count; an agent's own page all that are kept).
FLEET_REFUSALS = 10


def fleet_for(db: "Database", principal: Principal, department: str | None = None,
              now: dt.datetime | None = None, *, agent_id: str | None = None,
              refusals: int = FLEET_REFUSALS) -> list[dict[str, Any]]:
    """:func:`list_agents` for a user with the right ``ops.read`` (the ops page
    and ``GET /api/v1/agents``). A refusal is audited; a permitted read is
    not: the fleet holds no patient data, and the ops page polls it every few
    seconds, which would bury the audit log (R18) in routine reads."""
    try:
        with db.read() as s:
            authorize(load_grants(s, principal), "ops.read")
    except NotPermitted as refused:
        with db.write() as s:
            append_audit(s, principal.actor, "agents.list", department=department, outcome="refused",
                         details={"login": principal.login_details(), "reason": refused.reason,
                                  "message": str(refused)})
        raise
    if department is not None:
        v.hsa_id(department, "department")
    return list_agents(db, now, department, refusals=refusals, agent_id=agent_id)


def agent_for(db: "Database", principal: Principal, agent_id: str,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """One agent of the fleet and its recent history (``ops.read``, as :func:`fleet_for`)."""
    v.agent_id(agent_id)
    found = fleet_for(db, principal, now=now, agent_id=agent_id, refusals=MAX_REFUSALS_KEPT)
    if not found:
        raise NotFound(f"no agent {agent_id} is bound or has spoken to this archive")
    return {**found[0], "history": agent_history(db, agent_id)}


def list_agents(db: "Database", now: dt.datetime | None = None, department: str | None = None, *,
                refusals: int = MAX_REFUSALS_KEPT, agent_id: str | None = None) -> list[dict[str, Any]]:
    """The fleet, by agent id: every agent bound to a certificate (the expected
    fleet, also those never heard from) and every agent that ever spoke (a
    heartbeat or an ingest), each with its ``liveness`` (:data:`LIVENESS`).
    ``department``: only that department's agents (its HSA-id); ``agent_id``:
    only that one. ``refused`` holds the newest ``refusals`` refused cards of
    each (0: none; the metrics need none), ``refused_count`` how many are kept."""
    now = now or utcnow()
    out: list[dict[str, Any]] = []
    with db.read() as s:
        def only(query: _Select, column: Any) -> _Select:
            return query if agent_id is None else query.where(column == agent_id)

        agents = {a.agent_id: a for a in s.scalars(only(sa.select(Agent), Agent.agent_id))}
        statuses = {st.agent_id: st for st in s.scalars(only(sa.select(AgentStatus), AgentStatus.agent_id))}
        bindings = {b.agent_id: b for b in s.scalars(only(sa.select(AgentBinding), AgentBinding.agent_id))}
        hsa_of: dict[int, str] = {i: h for i, h in s.execute(sa.select(Department.id, Department.hsa_id))}
        counts: dict[str, int] = {a: n for a, n in s.execute(only(
            sa.select(AgentRefusal.agent_id, sa.func.count()).group_by(AgentRefusal.agent_id), AgentRefusal.agent_id))}
        refused: dict[str, list[dict[str, Any]]] = {}
        if refusals > 0:
            # The newest ``refusals`` per agent, chosen by the database (a window
            # function: SQLite and PostgreSQL), not 100 per agent read and dropped.
            rank = sa.func.row_number().over(partition_by=AgentRefusal.agent_id, order_by=(
                AgentRefusal.refused_at_ms.desc(), AgentRefusal.id.desc())).label("rank")
            ranked = only(sa.select(AgentRefusal.id, rank), AgentRefusal.agent_id).subquery()
            for ref in s.scalars(sa.select(AgentRefusal).join(ranked, ranked.c.id == AgentRefusal.id)
                                 .where(ranked.c.rank <= refusals).order_by(
                                     AgentRefusal.agent_id, AgentRefusal.refused_at_ms.desc(), AgentRefusal.id.desc())):
                refused.setdefault(ref.agent_id, []).append({
                    "card_key": ref.card_key, "reader": ref.reader, "reason": ref.reason,
                    "refused_at": _iso(ref.refused_at), "files": ref.file_count,
                })
    for agent_id in sorted(set(agents) | set(bindings)):
        agent, status, binding = agents.get(agent_id), statuses.get(agent_id), bindings.get(agent_id)
        # The binding names the department an agent belongs to; an unbound
        # (plaintext) agent's is the one it last reported.
        department_id = (binding.department_id if binding is not None
                         else agent.department_id if agent is not None else None)
        hsa = hsa_of.get(department_id) if department_id is not None else None
        if department is not None and hsa != department:
            continue
        last_seen = (status.last_heartbeat if status is not None
                     else agent.last_seen if agent is not None else None)
        not_after = _aware(binding.not_after) if binding is not None and binding.not_after else None
        out.append({
            "agent_id": agent_id,
            "liveness": _liveness(agent, status, binding, now),
            "host": status.host if status is not None else None,
            "version": agent.version if agent is not None else None,
            "department": hsa,
            "state": status.state if status is not None else None,
            "last_seen": _iso(last_seen),
            "last_heartbeat": _iso(status.last_heartbeat) if status is not None else None,
            "heartbeat_age_s": (round((now - _aware(status.last_heartbeat)).total_seconds(), 1)
                                if status is not None else None),
            "alive": status is not None and _alive(status, now),
            "interval_s": status.interval_s if status is not None else None,
            "queue": status.queue_length if status is not None else 0,
            "counts": status.counts if status is not None else {},
            "last_error": status.last_error if status is not None else None,
            "archive_reachable": status.archive_reachable if status is not None else None,
            "in_progress": status.in_progress if status is not None else [],
            "refused": refused.get(agent_id, []),
            "refused_count": counts.get(agent_id, 0),
            "started_at": _iso(status.started_at) if status is not None else None,
            "first_seen": _iso(agent.first_seen) if agent is not None else None,
            "clock_skew_s": status.clock_skew_s if status is not None else None,
            "spool_free_bytes": status.spool_free_bytes if status is not None else None,
            "spool_bytes": status.spool_bytes if status is not None else None,
            "bound": binding is not None and binding.revoked_at is None,
            "certificate_not_after": _iso(not_after),
            "certificate_days_left": (round((not_after - now).total_seconds() / 86400, 2)
                                      if not_after is not None else None),
        })
    return out


def agent_history(db: "Database", agent_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The agent's recent history, newest first: ``at``, ``kind`` (first_heartbeat,
    returned, restarted, version, state, error) and its ``detail``."""
    with db.read() as s:
        rows = s.scalars(sa.select(AgentHistory).where(AgentHistory.agent_id == agent_id)
                         .order_by(AgentHistory.id.desc()).limit(limit)).all()
        return [{"at": _iso(h.at), "kind": h.kind, "detail": h.detail} for h in rows]


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value  # SQLite: naive UTC


def _liveness(agent: Agent | None, status: AgentStatus | None, binding: AgentBinding | None,
              now: dt.datetime) -> str:
    if binding is not None and binding.revoked_at is not None:
        return "revoked"
    if status is not None and _alive(status, now):
        return "alive"
    if status is None and agent is None:
        return "never_seen"
    return "silent"


def _alive(status: AgentStatus, now: dt.datetime) -> bool:
    last = status.last_heartbeat
    if last.tzinfo is None:
        last = last.replace(tzinfo=dt.timezone.utc)
    # Bounded again here: a row stored before the cap must not keep a dead agent "alive".
    return (now - last).total_seconds() <= ALIVE_INTERVALS * bounded_interval(status.interval_s)
