"""Heartbeats to the archive's AgentRegistry (protos/bildsluss/v1/agents.proto, R21).

Every ``[daemon] heartbeat_s`` (or the interval the archive asks for) the
agent sends its state from the status board: what it is doing, its queue, its
counts, its last error, the recent refused cards with their reason codes, the
cards in progress; a card that ends or is held brings the next beat forward.
Never a patient number: :func:`build_request` takes only
codes, counts and card keys from the snapshot, and masks anything shaped like
an identity number in the free text it passes on.

The answer carries the archive's measure of this PC's clock skew (logged
when over a minute: TLS and the identity-number date checks need the clock)
and the department's registered capture devices, kept by
:class:`~agent.daemon.registered_devices.DeviceRegister` (R6).

A heartbeat runs in its own thread with a short deadline: it never blocks or
crashes the daemon. Its result also tells the board whether the archive is
reachable (``board.archive_reachable``), so the status page can warn staff
before a card is inserted.
"""
from __future__ import annotations

import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from agent import __version__
from bildsluss_common.identity.masking import mask_numbers_in_text
from agent.card.model import Device
from agent.card.spool import Spool
from agent.config import AgentConfig
from agent.daemon.registered_devices import DeviceRegister
from agent.desk.status import StatusBoard
from agent.channel import open_channel
from bildsluss.v1 import agents_pb2 as pb
from bildsluss.v1 import agents_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MAX_ITEMS = 50
# A card that ends (or is held) is reported at once, but at most this often.
EARLY_BEAT_MIN_S = 1.0
# Status codes that mean "the archive cannot be reached now"; any other answer
# means it was reached (and refused, or is too old to know heartbeats).
UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
               grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
_STATES = {
    "idle": pb.AGENT_STATE_IDLE, "busy": pb.AGENT_STATE_BUSY, "deferred": pb.AGENT_STATE_DEFERRED,
    "starting": pb.AGENT_STATE_STARTING, "stopping": pb.AGENT_STATE_STOPPING,
}
_REASON_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
# A clock further off than this is logged (the archive alerts on it too).
CLOCK_SKEW_WARN_S = 60.0


def _scrub(text: Any, limit: int = 255) -> str:
    """Free text for the archive: no control characters, nothing shaped like an identity number."""
    clean = "".join(c if c.isprintable() else " " for c in str(text or ""))
    return mask_numbers_in_text(clean)[:limit]


def _code(value: Any) -> str:
    value = str(value or "")
    return value if _REASON_CODE.match(value) else ""


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def build_request(snapshot: dict[str, Any], *, department: str, host: str, interval_s: float,
                  now: float | None = None, state: str | None = None,
                  spool: tuple[int | None, int | None] = (None, None)) -> pb.HeartbeatRequest:
    """The heartbeat for one board snapshot (plain data in, a message out); ``spool``: (bytes held,
    bytes free) of the spool, None where unknown."""
    now = time.time() if now is None else now
    counts = snapshot.get("counts") or {}
    request = pb.HeartbeatRequest(
        agent_id=str(snapshot.get("agent_id", "")),
        host=_scrub(host),
        agent_version=str(snapshot.get("version") or __version__)[:64],
        department_hsa_id=department,
        state=_STATES.get(state or snapshot.get("state", ""), pb.AGENT_STATE_BUSY),
        queue_length=len(snapshot.get("queue") or []),
        counts=pb.CardCounts(**{k: int(counts.get(k, 0)) for k in
                                ("detected", "archived", "refused", "deferred", "interrupted", "failed")}),
        interval_s=interval_s,
        archive_reachable=(snapshot.get("archive") or {}).get("reachable") is not False,
    )
    if snapshot.get("started_at"):
        request.started_at.CopyFrom(_ts(snapshot["started_at"]))
    request.sent_at.CopyFrom(_ts(now))
    if spool[0] is not None:
        request.spool_bytes = spool[0]
    if spool[1] is not None:
        request.spool_free_bytes = spool[1]
    error = snapshot.get("last_error")
    if error:
        request.last_error.CopyFrom(pb.AgentError(code=_code(error.get("code")),
                                                  message=_scrub(error.get("message"), 1024)))
        if error.get("at"):
            request.last_error.at.CopyFrom(_ts(error["at"]))
    for entry in (snapshot.get("recent") or []):
        if entry.get("outcome") != "refused" or len(request.refused) >= MAX_ITEMS:
            continue
        request.refused.append(pb.RefusedCard(
            card_key=_scrub(entry.get("card")) or "card", reader=_scrub(entry.get("reader")),
            reason_code=_code(entry.get("reason")) or "REFUSED",
            refused_at=_ts(entry.get("finished") or now), file_count=int(entry.get("files") or 0)))
    cards = list(snapshot.get("cards") or []) + [
        {**q, "state": "queued", "progress": {}} for q in (snapshot.get("queue") or [])]
    for card in cards[:MAX_ITEMS]:
        progress = card.get("progress") or {}
        request.in_progress.append(pb.CardInProgress(
            card_key=_scrub(card.get("card")) or "card", reader=_scrub(card.get("reader")),
            state=_scrub(card.get("state"), 32), stage=_scrub(card.get("stage"), 32),
            files_done=int(progress.get("files_done", 0)), files_total=int(progress.get("files_total", 0)),
            bytes_done=int(progress.get("bytes_done", 0)), bytes_total=int(progress.get("bytes_total", 0)),
            since=_ts(card.get("since") or now), reason_code=_code(card.get("reason"))))
    return request


class Heartbeater:
    def __init__(self, config: AgentConfig, board: StatusBoard, *, host: str | None = None,
                 devices: DeviceRegister | None = None, clock: Callable[[], float] = time.time) -> None:
        """``devices``: where the archive's list of registered devices is kept
        (None: not kept); ``clock``: the agent's wall clock (sent_at)."""
        self.config = config
        self.board = board
        self.host = host or socket.gethostname()
        self.devices = devices
        self._clock = clock
        # The archive's measure of this PC's clock (agent minus archive, s); None: unknown.
        self.clock_skew_s: float | None = None
        self.interval_s = config.daemon.heartbeat_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.AgentRegistryStub | None = None
        self._last_problem: str | None = None
        self.sent = 0  # accepted heartbeats, for the logs and tests
        self.failed = 0

    def start(self) -> None:
        if self.config.daemon.heartbeat_s <= 0:
            log.info("heartbeats are off ([daemon] heartbeat_s = 0)")
            return
        if not self.config.department:
            log.warning("no department configured; heartbeats are off")
            return
        self._stop.clear()
        self._channel = open_channel(self.config.archive, [("grpc.enable_retries", 0)])
        self._stub = pb_grpc.AgentRegistryStub(self._channel)
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=self.config.archive.call_timeout_s + 2)
        self._thread = None
        # A last word, so operations can tell a stopped agent from a dead one.
        self.beat(state="stopping", timeout_s=1.0)
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _run(self) -> None:
        # News that operations should see at once (a refused or held card) brings
        # the next beat forward, but never closer than EARLY_BEAT_MIN_S to the last.
        updates = self.board.subscribe()
        try:
            while not self._stop.is_set():
                sent_at = time.monotonic()
                self.beat()
                self._wait_for_next(updates, sent_at)
        finally:
            self.board.unsubscribe(updates)

    def _wait_for_next(self, updates: "queue.Queue[dict]", sent_at: float) -> None:
        due = sent_at + self.interval_s
        news = False
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= due or (news and now >= sent_at + EARLY_BEAT_MIN_S):
                return
            try:
                event = updates.get(timeout=min(0.5, due - now)).get("event") or {}
            except queue.Empty:
                continue
            news = news or event.get("kind") in ("finished", "deferred")

    def beat(self, *, state: str | None = None, timeout_s: float | None = None) -> bool:
        """Send one heartbeat now; True when the archive accepted it. Never raises."""
        if self._stub is None:
            return False
        try:
            request = build_request(self.board.snapshot(), department=str(self.config.department),
                                    host=self.host, interval_s=self.config.daemon.heartbeat_s, state=state,
                                    now=self._clock(), spool=Spool(self.config.spool_dir).usage())
            timeout = timeout_s or max(1.0, min(self.config.archive.call_timeout_s, self.interval_s * 2))
            response = self._stub.Heartbeat(request, timeout=timeout)
        except grpc.RpcError as exc:
            self.failed += 1
            code = exc.code() if hasattr(exc, "code") else None
            problem = f"{code.name if code else 'ERROR'}: {exc.details() if hasattr(exc, 'details') else exc}"
            reachable = code not in UNREACHABLE
            self.board.archive_reachable(reachable, problem)
            self._report(problem, refused=reachable)
            return False
        except Exception:  # noqa: BLE001 - a heartbeat must never take the daemon down
            self.failed += 1
            log.exception("heartbeat failed")
            return False
        self.sent += 1
        if response.next_interval_s > 0:
            self.interval_s = response.next_interval_s
        self._take_answer(response)
        self.board.archive_reachable(True)
        if self._last_problem is not None:
            log.info("heartbeats accepted again")
            self._last_problem = None
        return True

    def _take_answer(self, response: pb.HeartbeatResponse) -> None:
        if response.HasField("clock_skew_s"):
            was_off = self.clock_skew_s is not None and abs(self.clock_skew_s) > CLOCK_SKEW_WARN_S
            self.clock_skew_s = response.clock_skew_s
            off = abs(response.clock_skew_s) > CLOCK_SKEW_WARN_S
            if off and not was_off:
                log.warning("this PC's clock is off from the archive's: check time synchronisation "
                            "(chrony/systemd-timesyncd)", extra={"skew_s": round(response.clock_skew_s, 1)})
            elif was_off and not off:
                log.info("this PC's clock agrees with the archive's again",
                         extra={"skew_s": round(response.clock_skew_s, 1)})
        if self.devices is not None and response.HasField("devices"):
            self.devices.update(Device(d.make, d.model, d.serial) for d in response.devices.devices)

    def _report(self, problem: str, *, refused: bool) -> None:
        """Log a problem once, not at every beat."""
        if problem == self._last_problem:
            return
        self._last_problem = problem
        if refused:
            log.error("the archive refused the heartbeat", extra={"error": problem})
        else:
            log.warning("archive unreachable (heartbeat)", extra={"error": problem})
