"""``bildsluss-agent run``: the loop around the pipeline, for cards nobody types a command for.

One main thread turns detection events into jobs, keeps the queue and the
retry schedule, and pings systemd's watchdog; one thread per card runs it:
mount -> :func:`agent.card.pipeline.ingest_card` -> unmount. Every step of a card is
written to the journal (:mod:`agent.daemon.journal`) before the next one starts, so a
kill -9 or a power loss resumes where it stopped:

- a card seen again (same volume identity; for a watched folder, the same
  folder) with an unfinished journal row is *resumed*: its EHR context and
  mode are the ones it started with; if its files are unchanged the identity
  read before is reused; if the archive had confirmed it, a half-wiped card is
  finished after the receipts are asked for and checked again;
- a pulled card (removed event, or its files gone) is ``interrupted``
  (CARD_REMOVED): nothing wiped; put back, it is resumed;
- an unreachable archive (R12) makes the card ``deferred``: retried with
  exponential backoff (``retry_initial_s`` .. ``retry_max_s``) while it stays in
  the reader; it is never wiped until the archive confirmed every file.

Staff and ops see all of it through the status board (C2's
:mod:`agent.desk.status`): the control socket, the local page, notifications and
heartbeats all read it.

Test hooks (inert unless the variables are set): ``BILDSLUSS_TEST_KILL_FILE``
names a file; when the daemon reaches the journal state (or ``upload:N``, N
files uploaded) written in it, it removes the file and SIGKILLs itself.
``BILDSLUSS_TEST_PAUSE_FILE`` likewise: the card's thread writes
``paused:POINT`` into it and waits until the file is removed (so a test can
pull a card at an exact step).
"""
from __future__ import annotations

import collections
import dataclasses
import faulthandler
import itertools
import logging
import os
import pathlib
import queue
import re
import signal
import socket
import threading
import time
from collections.abc import Mapping
from typing import Protocol

from agent import __version__
from agent.daemon import mount as mount_mod
from agent.card.camera import CameraNotFound, CameraRequest, ingest_camera
from agent.config import AgentConfig
from agent.daemon.detect import BlockPolicy, CameraWatch, CardEvent, WatchBackend, block_backend
from agent.daemon.registered_devices import FILE_NAME as DEVICES_FILE
from agent.daemon.registered_devices import DeviceRegister
from agent.daemon.journal import CardRecord, Journal, JournalError, fields_of, resume_of
from agent.card.model import Mode
from agent.card.outcome import Outcome
from agent.card.pipeline import IngestOutcome, IngestRequest, ingest_card, stopped
from agent.card.progress import Checkpoint, Resume, Stop
from agent.card.reasons import Reason, staff_message
from agent.card.spool import Spool
from agent.desk.ehr_context import ContextStore
from agent.desk.status import StatusBoard
from bildsluss_common.identity.masking import mask_numbers_in_text

log = logging.getLogger(__name__)


def _masked(detail: str | None) -> str | None:
    return mask_numbers_in_text(detail, keep_date=True) if detail else detail

KILL_FILE_ENV = "BILDSLUSS_TEST_KILL_FILE"
PAUSE_FILE_ENV = "BILDSLUSS_TEST_PAUSE_FILE"
_TICK_S = 0.2
# An internal error (a local tool that failed to start, a bug) is tried again this
# many times with backoff before the card is given up as refused (untouched).
_INTERNAL_ERROR_TRIES = 3
_STOP_GRACE_S = 20.0


# --------------------------------------------------------------------------- systemd


def sd_notify(message: str) -> bool:
    """Send one sd_notify message to $NOTIFY_SOCKET (a datagram; abstract if it starts with @)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify failed", extra={"detail": str(exc)})
        return False


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec for this process, or None when there is no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


# --------------------------------------------------------------------------- jobs


_job_ids = itertools.count(1)


@dataclasses.dataclass(eq=False)
class Job:
    """One card in one reader, from its insertion until it is done, refused or gone."""

    reader: str
    source: str
    device: str | None = None
    path: pathlib.Path | None = None
    port: str | None = None  # a camera's libgphoto2 port (issue 16)
    id: int = dataclasses.field(default_factory=lambda: next(_job_ids))
    removed: threading.Event = dataclasses.field(default_factory=threading.Event)
    card_key: str | None = None
    record_id: int | None = None
    attempts: int = 0
    internal_errors: int = 0

    @property
    def key(self) -> str:
        """The card's name on the status board: its device or folder name."""
        if self.port:
            return f"camera-{re.sub(r'[^0-9A-Za-z]+', '-', self.port).strip('-')}#{self.id}"
        name = pathlib.Path(self.device).name if self.device else self.path.name if self.path else "card"
        return f"{name}#{self.id}"


class _JournalledProgress:
    """A card's progress as the daemon keeps it (:class:`agent.card.progress.CardProgress`):
    every checkpoint into the journal before the next step starts, every stage on
    the status board; a pulled card stops at once, a stopping agent at the next
    checkpoint (the card resumes from the journal on the next start)."""

    def __init__(self, daemon: Daemon, job: Job) -> None:
        self._daemon = daemon
        self._job = job

    def stage(self, stage: str, info: Mapping[str, object]) -> None:
        self._daemon.board.progress(self._job.key, stage, dict(info))
        if stage == "upload" and "files_done" in info:
            self._daemon._hooks.reached(f"upload:{info['files_done']}")

    def reached(self, checkpoint: Checkpoint) -> None:
        assert self._job.record_id is not None
        self._daemon.journal.advance(self._job.record_id, checkpoint.state, **fields_of(checkpoint))
        self._daemon.board.card_state(self._job.key, checkpoint.state)
        self._daemon._hooks.reached(checkpoint.state)

    def should_stop(self) -> Stop | None:
        if self._job.removed.is_set():
            return Stop(Reason.CARD_REMOVED, "the card was taken out of the reader", now=True)
        if self._daemon._stop.is_set():
            return Stop(Reason.INTERNAL_ERROR, "the agent is stopping; the card resumes on start")
        return None


class _TestHooks:
    """The test hooks described in the module docstring; nothing happens unless the variables are set."""

    def __init__(self) -> None:
        self.kill = _env_path(KILL_FILE_ENV)
        self.pause = _env_path(PAUSE_FILE_ENV)

    def reached(self, point: str) -> None:
        if self.kill is not None and _read_text(self.kill) == point:
            self.kill.unlink(missing_ok=True)
            log.warning("test hook: killing the daemon", extra={"at": point})
            os.kill(os.getpid(), signal.SIGKILL)
        if self.pause is not None and _read_text(self.pause) == point:
            log.warning("test hook: pausing", extra={"at": point})
            self.pause.write_text(f"paused:{point}")
            while self.pause.exists():
                time.sleep(0.05)


def _env_path(name: str) -> pathlib.Path | None:
    value = os.environ.get(name)
    return pathlib.Path(value) if value else None


def _read_text(path: pathlib.Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# --------------------------------------------------------------------------- the daemon


class Service(Protocol):
    """A thread the daemon starts after the journal is open and stops on the way out."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class StartError(Exception):
    """The daemon cannot start (a port in use, a folder it may not write); the message says which."""


class Daemon:
    def __init__(
        self,
        config: AgentConfig,
        *,
        department: str,
        watch_root: pathlib.Path | None = None,
    ) -> None:
        self.config = config
        self.dconf = config.daemon
        self.department = department
        self.watch_root = watch_root
        self.journal = Journal(self.dconf.state_dir / "journal.sqlite3")
        self._prune_journal()
        self._events: queue.Queue[CardEvent] = queue.Queue()
        self._pending: collections.deque[Job] = collections.deque()
        self._waiting: dict[str, tuple[float, Job]] = {}  # reader -> (retry at, deferred job)
        self._running: dict[str, Job] = {}  # reader -> job being worked on
        # Readers whose card is finished and still in them: a new card needs the old one
        # taken out first (udev re-announces a card after the agent unmounts it).
        self._spent: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._hooks = _TestHooks()
        self._services: list[Service] = []
        self._last_status = ""
        # What staff and ops see, and the EHR's expected patients: plain state that the
        # services started in :meth:`_start_services` share with the card loop.
        self.board = StatusBoard(self.config.agent_id, __version__, self.department)
        self.contexts = ContextStore(self.config.reserve_formats)
        # The archive's list of the department's registered devices, as last handed out (R6).
        self.devices = DeviceRegister(self.dconf.state_dir / DEVICES_FILE)

    # -- life cycle -------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        os.umask(0o077)  # spool files, journal, mount points: the agent's user only (R11)
        faulthandler.register(signal.SIGUSR1)  # `kill -USR1` prints every thread's stack (ops)
        try:
            self._start_services()
            self._clean_leftovers()
            backend = self._backend()
            backend.start()
            cameras = self._camera_watch()
            cameras.start()
        except (OSError, ValueError) as exc:
            self._stop_services()
            self.journal.close()
            raise StartError(f"the agent could not start: {exc}") from exc
        self.board.set_phase("running")
        sd_notify("READY=1\nSTATUS=waiting for cards")
        log.info("daemon ready", extra={
            "version": __version__, "backend": backend.source, "department": self.department,
            "watch_root": str(self.watch_root) if self.watch_root else None})
        interval = watchdog_interval_s()
        next_ping = 0.0
        try:
            while not self._stop.is_set():
                self._drain_events(timeout=_TICK_S)
                self._release_due_retries()
                self._dispatch()
                if interval and time.monotonic() >= next_ping:
                    sd_notify("WATCHDOG=1")
                    next_ping = time.monotonic() + interval
        finally:
            sd_notify("STOPPING=1")
            self.board.set_phase("stopping")
            log.info("daemon stopping")
            cameras.stop()
            backend.stop()
            self._wait_for_running(_STOP_GRACE_S)
            self._stop_services()
            if self.watch_root is None:
                mount_mod.clean_stale(self.dconf.mount_root)
            self.journal.close()
        return 0

    def _stop_services(self) -> None:
        for service in reversed(self._services):
            try:
                service.stop()
            except Exception:
                log.exception("error stopping a service")
        self._services.clear()

    def _start_services(self) -> None:
        from agent.desk.control import ControlServer, resolve_group
        from agent.daemon.heartbeat import Heartbeater
        from agent.desk.notify import Notifier

        self.board.set_phase("starting")
        services: list[Service] = [ControlServer(self.dconf.control_socket, self.board, self.contexts,
                                  allowed_gid=resolve_group(self.dconf.control_group),
                                  context_ttl_s=self.dconf.context_ttl_s)]
        heartbeater = Heartbeater(self.config, self.board, devices=self.devices)
        if self.dconf.status_http:
            from agent.desk.metrics import AgentMetrics
            from agent.desk.page import StatusHttpServer

            metrics = AgentMetrics(self.board, self.config.spool_dir, clock_skew=lambda: heartbeater.clock_skew_s,
                                   devices=lambda: len(self.devices.effective(self.config.devices)))
            services.append(metrics)
            services.append(StatusHttpServer(self.dconf.status_http, self.board, contexts=self.contexts,
                                             metrics=metrics))
        services.append(Notifier(self.board, self.dconf.notify))
        services.append(heartbeater)
        for service in services:
            service.start()
            self._services.append(service)

    def _clean_leftovers(self) -> None:
        stale = Spool(self.config.spool_dir).remove_leftovers()
        if stale:
            log.warning("removed spool folders of an earlier run", extra={"folders": len(stale)})
        if self.watch_root is None:
            mount_mod.prepare_root(self.dconf.mount_root)
            mount_mod.clean_stale(self.dconf.mount_root)
        for record in self.journal.unfinished():
            log.info("unfinished card in the journal; resumed when it is seen", extra={
                "card": record.card_key, "state": record.state, "journal_id": record.id})

    def _backend(self):
        if self.watch_root is not None:
            return WatchBackend(self.watch_root, self._events.put)
        policy = BlockPolicy(self.dconf.mount_root, allow_loop=self.dconf.allow_loop,
                             loop_backing_dir=self.dconf.loop_backing_dir)
        return block_backend(policy, self._events.put)

    def _camera_watch(self) -> CameraWatch:
        cams = self.config.cameras
        return CameraWatch(self._events.put, usb=cams.usb, ports=cams.watched_ports(),
                           poll_s=cams.ptpip_poll_s)

    def _wait_for_running(self, grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    return
            time.sleep(0.1)
        log.warning("stopping with cards still being worked on; the journal resumes them",
                    extra={"cards": len(self._running)})

    # -- events -----------------------------------------------------------------

    def _drain_events(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            try:
                self._on_event(event)
            except Exception:  # one odd event must not stop the daemon
                log.exception("error handling a card event", extra={
                    "action": event.action, "reader": event.reader})
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _on_event(self, event: CardEvent) -> None:
        with self._lock:
            if event.action == "removed":
                self._on_removed(event.reader)
                return
            if event.reader in self._spent:
                log.debug("card in this reader already finished; waiting for it to be taken out",
                          extra={"reader": event.reader})
                return
            known = [j for j in (*self._pending, *self._running.values(),
                                 *(j for _, j in self._waiting.values()))
                     if j.reader == event.reader and not j.removed.is_set()]
            if any(j.device == event.device and j.path == event.path and j.port == event.port for j in known):
                return  # the same card announced again (several change events)
            job = Job(event.reader, event.source, device=event.device, path=event.path, port=event.port)
            self._pending.append(job)
        log.info("card inserted", extra={"card": job.key, "reader": job.reader, "source": job.source})
        self.board.card_detected(job.key, job.reader, job.source)

    def _on_removed(self, reader: str) -> None:
        self._spent.discard(reader)
        for job in self._running.values():
            if job.reader == reader:
                job.removed.set()  # the card's thread stops at its next step
        gone = [j for j in self._pending if j.reader == reader]
        self._pending = collections.deque(j for j in self._pending if j.reader != reader)
        waiting = self._waiting.pop(reader, None)
        if waiting is not None:
            gone.append(waiting[1])
        for job in gone:
            job.removed.set()
            self._report_gone(job)
        log.info("card removed", extra={"reader": reader})

    def _report_gone(self, job: Job, detail: str = "the card was taken out of the reader") -> None:
        """A card that left before it was finished: journal and board say so; nothing was wiped."""
        outcome = stopped(Reason.CARD_REMOVED, detail)
        if job.record_id is not None:
            try:
                self.journal.advance(job.record_id, "interrupted", reason=Reason.CARD_REMOVED.value,
                                     message=outcome.message, detail=detail)
            except JournalError as exc:  # already finished: nothing to record
                log.info("card gone after it was finished", extra={"card": job.key, "detail": str(exc)})
        self.board.card_finished(job.key, outcome.to_json())

    def _release_due_retries(self) -> None:
        now = time.time()
        with self._lock:
            for reader, (due, job) in list(self._waiting.items()):
                if due <= now:
                    del self._waiting[reader]
                    self._pending.append(job)

    def _dispatch(self) -> None:
        with self._lock:
            for job in list(self._pending):
                if len(self._running) >= self.dconf.workers:
                    break
                if job.reader in self._running:
                    continue  # one card per reader at a time; it waits its turn
                self._pending.remove(job)
                self._running[job.reader] = job
                threading.Thread(target=self._work, args=(job,), name=f"card-{job.id}",
                                 daemon=True).start()
            status = f"STATUS={len(self._running)} card(s) in progress, {len(self._pending)} queued"
        if status != self._last_status:
            self._last_status = status
            sd_notify(status)

    # -- one card -----------------------------------------------------------------

    def _work(self, job: Job) -> None:
        try:
            self._attempt(job)
        except Exception:
            log.exception("internal error with a card; it is left as it is", extra={"card": job.key})
            outcome = stopped(Reason.INTERNAL_ERROR)
            if job.record_id is not None:
                try:
                    self.journal.advance(job.record_id, "interrupted", reason=Reason.INTERNAL_ERROR.value)
                except Exception:
                    log.exception("could not record the error in the journal")
            self.board.card_finished(job.key, outcome.to_json())
        finally:
            with self._lock:
                self._running.pop(job.reader, None)

    def _attempt(self, job: Job) -> None:
        job.attempts += 1
        mount_point: pathlib.Path | None = None
        outcome: IngestOutcome | None = None
        try:
            if job.port is not None:
                job.card_key = f"camera:{job.port}"
                outcome = self._ingest(job, None)
            elif job.device is not None:
                volume = mount_mod.probe(job.device)
                if volume is None:
                    if job.removed.is_set() or not os.path.exists(job.device):
                        self._report_gone(job, f"{job.device} went away before it could be read")
                        return
                    self._refuse_unopened(job, f"dev:{job.device}", Reason.CARD_UNREADABLE,
                                          f"{job.device}: no file system found")
                    return
                job.card_key = volume.identity
                try:
                    mount_point = mount_mod.mount(volume, self.dconf.mount_root, self.dconf.filesystems)
                except mount_mod.MountError as exc:
                    if exc.reason is Reason.CARD_REMOVED or job.removed.is_set():
                        self._report_gone(job, exc.detail)
                        return
                    self._refuse_unopened(job, volume.identity, exc.reason, exc.detail)
                    return
                root = mount_point
            else:
                assert job.path is not None
                job.card_key = f"dir:{job.path}"
                if not self._settle(job):
                    if not self._stop.is_set():
                        self._report_gone(job, f"{job.path} went away before it could be read")
                    return
                root = job.path
            if job.port is None:
                outcome = self._ingest(job, root)
        finally:
            if mount_point is not None:
                mount_mod.unmount(mount_point)  # before staff hear "ready": the card may go now
        if outcome is not None:
            self._finish(job, outcome)

    def _settle(self, job: Job) -> bool:
        """Wait until a watched folder stops changing (a copy or automount may still fill it)."""
        assert job.path is not None
        previous = None
        while not job.removed.is_set() and not self._stop.is_set():
            try:
                listing = sorted((str(p), p.lstat().st_size, p.lstat().st_mtime_ns)
                                 for p in job.path.rglob("*"))
            except OSError:
                return False
            if listing == previous:
                return True
            previous = listing
            self._stop.wait(self.dconf.settle_s)
        return False

    def _record_for(self, job: Job) -> tuple[CardRecord, Resume | None] | IngestOutcome:
        """The journal row of this card: an unfinished one of the same card, or a new one.

        A new card takes the EHR context waiting for it (R5); an expired one
        refuses the card. A resumed card keeps the context it started with.
        """
        assert job.card_key is not None
        record: CardRecord | None
        if job.record_id is not None:
            record = self.journal.get(job.record_id)
        else:
            earlier = self.journal.unfinished(job.card_key)
            record = earlier[0] if earlier else None
        if record is not None and not record.finished:
            job.record_id = record.id
            resume = resume_of(record)
            log.info("resuming a card from the journal", extra={
                "card": job.key, "state": record.state, "confirmed": record.confirmed,
                "journal_id": record.id})
            return record, resume
        ctx = self.contexts.take()
        mode = self.config.mode
        expect = None
        if ctx is not None:
            mode = ctx.mode or self.config.mode
            expect = ctx.patient
        record = self.journal.open_card(job.card_key, job.reader, job.source, mode=mode.value,
                                        expect=expect)
        job.record_id = record.id
        self.board.card_state(job.key, "detected", patient_expected=expect, mode=mode.value)
        if ctx is not None and ctx.expired:
            return stopped(Reason.EHR_CONTEXT_EXPIRED, f"EHR context set by {ctx.set_by} expired")
        return record, None

    def _ingest(self, job: Job, root: pathlib.Path | None) -> IngestOutcome | None:
        found = self._record_for(job)
        if isinstance(found, IngestOutcome):
            return found
        record, resume = found
        # The PC's own [[devices]] and the archive's list, as of now (R6).
        config = dataclasses.replace(self.config, devices=self.devices.effective(self.config.devices))
        request = IngestRequest(root=root or pathlib.Path(os.devnull), department=self.department,
                                mode=Mode(record.mode or self.config.mode.value), expect=record.expect)
        progress = _JournalledProgress(self, job)

        if job.port is not None:
            camera = CameraRequest(port=job.port, department=self.department, mode=request.mode,
                                   expect=request.expect)
            try:
                outcome = ingest_camera(camera, config, progress=progress, resume=resume)
            except CameraNotFound as exc:
                self._report_gone(job, str(exc))
                return None
        else:
            outcome = ingest_card(request, config, progress=progress, resume=resume)
        if job.removed.is_set() and outcome.outcome is not Outcome.ARCHIVED:
            outcome = dataclasses.replace(outcome, outcome=Outcome.FAILED, reason=Reason.CARD_REMOVED,
                                          message=staff_message(Reason.CARD_REMOVED))
        elif self._stop.is_set() and not (outcome.outcome is Outcome.ARCHIVED and outcome.wiped):
            # Stopped between two steps: the journal keeps the last one; the next
            # start resumes the card from there.
            log.info("card left for the next start", extra={"card": job.key})
            return None
        return outcome

    def _finish(self, job: Job, outcome: IngestOutcome) -> None:
        """Record where the card ended up and tell the board."""
        assert job.record_id is not None
        retried = outcome.outcome is Outcome.DEFERRED or (
            outcome.reason is Reason.INTERNAL_ERROR and job.internal_errors + 1 < _INTERNAL_ERROR_TRIES)
        if not retried:
            with self._lock:
                if not job.removed.is_set():
                    self._spent.add(job.reader)
        reason = outcome.reason.value if outcome.reason else None
        common = dict(reason=reason, message=outcome.message, detail=outcome.detail or None)
        if outcome.case_id:
            common["case_id"] = outcome.case_id
        if outcome.outcome is Outcome.ARCHIVED and outcome.wiped:
            self.journal.advance(job.record_id, "done", **common)
            self.board.archive_reachable(True)
            self.board.card_finished(job.key, outcome.to_json())
            log.info("card done", extra={"card": job.key, "case_id": outcome.case_id})
        elif outcome.reason in (Reason.CARD_REMOVED, Reason.CARD_CHANGED):
            # Nothing wiped (or only confirmed files): put back, it is resumed.
            self.journal.advance(job.record_id, "interrupted", **common)
            self.board.card_finished(job.key, outcome.to_json())
            log.warning("card interrupted", extra={"card": job.key, "reason": reason})
        elif outcome.outcome is Outcome.DEFERRED:
            retry_at = self._retry_later(job)
            self.journal.advance(job.record_id, "deferred", attempts=job.attempts, retry_at=retry_at,
                                 **common)
            if outcome.reason is Reason.ARCHIVE_UNAVAILABLE:
                self.board.archive_reachable(False, outcome.detail or None)
            self.board.card_deferred(job.key, reason or "", outcome.message, retry_at)
            log.warning("card deferred", extra={"card": job.key, "retry_at": retry_at,
                                                "attempt": job.attempts})
        elif outcome.reason is Reason.INTERNAL_ERROR and job.internal_errors + 1 < _INTERNAL_ERROR_TRIES:
            job.internal_errors += 1
            retry_at = self._retry_later(job)
            self.journal.advance(job.record_id, "interrupted", attempts=job.attempts, retry_at=retry_at,
                                 **common)
            self.board.card_state(job.key, "interrupted", reason=reason, retry_at=retry_at)
            log.warning("internal error with a card; trying it again", extra={
                "card": job.key, "retry_at": retry_at, "detail": _masked(outcome.detail)})
        else:
            # Refused, or archived but not fully wiped (WIPE_FAILED), or failed
            # for a reason retrying will not fix: staff and IT must look.
            state = "done" if outcome.outcome is Outcome.ARCHIVED else "refused"
            self.journal.advance(job.record_id, state, **common)
            if outcome.outcome is Outcome.ARCHIVED:
                self.board.archive_reachable(True)
            self.board.card_finished(job.key, outcome.to_json())
            log.warning("card not ingested" if state == "refused" else "card archived, not wiped",
                        extra={"card": job.key, "reason": reason})
        self._prune_journal()

    def _prune_journal(self) -> None:
        pruned = self.journal.prune(self.dconf.journal_keep_days * 86400.0)
        if pruned:
            log.info("finished cards removed from the journal", extra={
                "cards": pruned, "journal_keep_days": self.dconf.journal_keep_days})

    def _retry_later(self, job: Job) -> float:
        """Queue the card again after the backoff for its attempt; returns when (time.time())."""
        delay = min(self.dconf.retry_initial_s * 2 ** (job.attempts - 1), self.dconf.retry_max_s)
        retry_at = time.time() + delay
        with self._lock:
            if not job.removed.is_set():
                self._waiting[job.reader] = (retry_at, job)
        return retry_at

    def _refuse_unopened(self, job: Job, card_key: str, reason: Reason, detail: str) -> None:
        """A card refused before it could be read (no file system, mount failed)."""
        job.card_key = card_key
        record = self.journal.open_card(card_key, job.reader, job.source, mode=None, expect=None)
        job.record_id = record.id
        log.warning("card cannot be read", extra={"card": job.key, "reason": reason.value,
                                                  "detail": _masked(detail)})
        self._finish(job, stopped(reason, detail))
