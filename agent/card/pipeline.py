"""The card's path, composed: scan -> identify -> decide -> strip -> upload -> verify -> wipe.

:func:`ingest_card` is the one function that runs a card from start to finish;
the CLI's ``ingest``, the camera source and the daemon are loops around it.
Every stage is a module with plain-data inputs and outputs; this module only
wires them, tells a :class:`~agent.card.progress.CardProgress` where the card
is, and turns every way a card can stop into one :class:`IngestOutcome`
(:mod:`agent.card.outcome` says which outcome a reason means).

The safety rule (R10) is structural: the wipe is reached only after
:func:`agent.card.verify.verify_receipts` accepted a receipt for every file,
and nothing before it writes to the card.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import pathlib
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from agent.card import decide as decide_stage
from agent.card import devices as device_policy
from agent.card import strip as strip_stage
from agent.card.metadata import MetadataReader
from agent.card.model import Decision, Evidence, MediaFile, Mode, ScanResult, StageError, StrippedFile
from agent.card.outcome import FILE_STATUS, FileStatus, Outcome, Phase, exit_code, outcome_of
from agent.card.progress import (
    CardProgress, Checkpoint, Confirmed, Decided, Identified, NoProgress, Resume, Scanned, SentFile,
    Stripped, Uploading, Wiped,
)
from agent.card.reasons import Reason, staff_message
from agent.card.spool import FULL_ERRNOS, HEADROOM_BYTES, Spool, SpoolFull
from agent.card.strip.common import fsync
from agent.card.upload import ArchiveClient, ArchiveRejected, ArchiveUnavailable, build_open_request
from agent.card.verify import verify_receipts
from agent.card.workers import CardReaders
from bildsluss_common.identity.masking import mask_numbers_in_text, mask_patient
from agent.card.wipe import WipeResult, remove_housekeeping, wipe
from agent.config import AgentConfig

log = logging.getLogger(__name__)

# Copies stripped ahead that exiftool reads back in one request while the card is read.
_READ_BACK_BATCH = 16


@dataclasses.dataclass(frozen=True)
class IngestRequest:
    root: pathlib.Path
    department: str
    mode: Mode = Mode.PHOTO
    expect: str | None = None


@dataclasses.dataclass(frozen=True)
class FileOutcome:
    path: str
    status: FileStatus
    sha256: str | None = None
    reason: Reason | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status.value,
            "sha256": self.sha256,
            "reason": self.reason.value if self.reason else None,
        }


@dataclasses.dataclass(frozen=True)
class IngestOutcome:
    outcome: Outcome
    reason: Reason | None
    message: str
    patient: str | None = None
    case_id: str | None = None
    wiped: bool = False
    files: tuple[FileOutcome, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    detail: str = ""
    session_id: str | None = None
    # Wall seconds per stage, in the order the stages ran (for people and benchmarks).
    timings: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return exit_code(self.outcome, self.wiped)

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "reason": self.reason.value if self.reason else None,
            "message": self.message,
            "detail": self.detail or None,
            "patient": self.patient,
            "case_id": self.case_id,
            "session_id": self.session_id,
            "wiped": self.wiped,
            "files": [f.to_json() for f in self.files],
            "evidence": [e.to_json() for e in self.evidence],
            # A card with more than one patient: which files show which (masked) number.
            "patients_shown": [{"patient": mask_patient(number), "files": files}
                               for number, files in decide_stage.patients_shown(self.evidence)],
            "timings": {stage: round(seconds, 3) for stage, seconds in self.timings.items()},
        }


def stopped(reason: Reason, detail: str = "", *, message: str | None = None,
            evidence: tuple[Evidence, ...] = ()) -> IngestOutcome:
    """The outcome of a card that stopped before anything of it was read (a card
    that cannot be mounted, a camera refused by its DeviceInfo, an expired EHR context)."""
    return IngestOutcome(outcome_of(reason, Phase.READING), reason, message or staff_message(reason),
                         detail=detail, evidence=evidence)


# The wipe step of a source: a card deletes from its file system (agent.card.wipe.wipe),
# a camera over PTP (agent.card.camera.camera_wiper). Reached only after every
# receipt was verified (R10); files it could not delete come back in ``failed``.
Wiper = Callable[[pathlib.Path, Sequence[MediaFile]], WipeResult]


def ingest_card(
    request: IngestRequest,
    config: AgentConfig,
    *,
    progress: CardProgress | None = None,
    resume: Resume | None = None,
    wiper: Wiper = wipe,
) -> IngestOutcome:
    """Run one card from scan to wipe. Never raises for a card's or archive's fault.

    ``resume`` (the daemon, from its journal) lets a card that comes back
    after a crash or a pull skip reading its identity again when its content
    is unchanged, and lets a card the archive already confirmed be finished
    although part of it was wiped before the interruption.
    """
    return _CardRun(request, config, progress or NoProgress(), resume, wiper).run()


_SESSION_NAMESPACE = uuid.UUID("5b1d5c1e-6b1a-4f0e-9a57-3b1e0d5e2f10")


def session_id_for(
    agent_id: str, request: IngestRequest, decision: Decision, stripped: Sequence[StrippedFile]
) -> str:
    """The ingest session's id, derived from what the card holds.

    The same card ingested again (after a crash or a pulled card between the
    archive's commit and the wipe) gets the same id, so the archive answers
    with the case it already made instead of filing the media twice.
    """
    manifest = sorted(f"{f.source.relative_path}\0{f.sha256}\0{f.size}" for f in stripped)
    key = "\n".join(
        [agent_id, request.department, request.mode.value, decision.patient_id or "", *manifest]
    )
    return str(uuid.uuid5(_SESSION_NAMESPACE, key))


class _CardRun:
    """One run of one card: what is known so far, to build the outcome at any point."""

    def __init__(self, request: IngestRequest, config: AgentConfig, progress: CardProgress,
                 resume: Resume | None, wiper: Wiper) -> None:
        self.request = request
        self.config = config
        self.progress = progress
        self.resume = resume
        self.wiper = wiper
        self.phase = Phase.READING
        self.scan: ScanResult | None = None
        self.decision: Decision | None = None
        self.device_evidence: tuple[Evidence, ...] = ()  # R6
        self.file_reasons: dict[str, tuple[Reason, str]] = {}
        self.session_id: str | None = None
        self.case_id: str | None = None
        self.sent: dict[str, str] = {}  # relative path -> sha256 of what the archive holds
        self.left_on_card: set[str] = set()  # archived, but the wipe could not delete them
        self.timings: dict[str, float] = {}  # stage -> wall seconds, closed when the next starts
        self._current: tuple[str, float] | None = None
        # JPEG copies stripped while the card was read (root's, taken back): (path, sha256) -> copy.
        self._stripped_ahead: dict[tuple[str, str], strip_stage.Written] = {}
        self._unread_ahead: list[strip_stage.Written] = []  # not yet given to read_back_ahead

    # -- the boundary: every way a card stops becomes an outcome -----------------------

    def run(self) -> IngestOutcome:
        try:
            return self._ingest()
        except SpoolFull as exc:
            return self._spool_full(str(exc))
        except OSError as exc:
            if exc.errno in FULL_ERRNOS:  # only a write fails so: the spool, never the card
                return self._spool_full(f"{type(exc).__name__}: {exc}")
            # A read error on the card (a bad reader, a card pulled while read).
            reason = Reason.CARD_REMOVED if exc.errno in (errno.ENODEV, errno.ENXIO) else Reason.CARD_UNREADABLE
            log.warning("card could not be read", extra={"reason": reason.value, "detail": str(exc)})
            return self._stopped(reason, f"{type(exc).__name__}: {exc}")
        except StageError as exc:
            # A refusal's detail names the numbers it found (MIXED_PATIENTS names two):
            # the outcome keeps them for the one who ran the card, the log never does.
            log.warning("card not ingested" if self.phase is not Phase.CONFIRMED else "card not wiped",
                        extra={"reason": exc.reason.value, "detail": mask_numbers_in_text(exc.detail, keep_date=True),
                               "phase": self.phase.value})
            return self._stopped(exc.reason, exc.detail)
        except Exception as exc:  # the card stays untouched; ops get the traceback
            log.exception("internal error while ingesting a card", extra={"phase": self.phase.value})
            return self._stopped(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _spool_full(self, detail: str) -> IngestOutcome:
        # Error, not warning: the PC takes no card until IT frees space (an ops alert).
        log.error("spool full: card deferred, nothing deleted; free space on this PC",
                  extra={"reason": Reason.SPOOL_FULL.value, "detail": detail})
        return self._stopped(Reason.SPOOL_FULL, detail)

    def _stopped(self, reason: Reason, detail: str) -> IngestOutcome:
        return self._outcome(outcome_of(reason, self.phase), reason, detail)

    def _outcome(self, outcome: Outcome, reason: Reason | None, detail: str = "", *,
                 message: str | None = None, wiped: bool = False) -> IngestOutcome:
        self._time_stage(None)
        accepted = self.decision is not None and self.decision.accepted
        return IngestOutcome(
            outcome=outcome,
            reason=reason,
            message=message or (staff_message(reason, self.request.mode) if reason else ""),
            patient=self.decision.patient_id if accepted and self.decision else None,
            case_id=self.case_id if outcome is Outcome.ARCHIVED or self.phase is Phase.COMMITTED else None,
            wiped=wiped,
            files=self._files(FILE_STATUS[outcome], archived=outcome is Outcome.ARCHIVED),
            evidence=(self.decision.evidence if self.decision else ()) + self.device_evidence,
            detail=detail,
            session_id=self.session_id,
            timings=dict(self.timings),
        )

    def _files(self, media_status: FileStatus, *, archived: bool) -> tuple[FileOutcome, ...]:
        if self.scan is None:
            return ()
        out = []
        for m in self.scan.media:
            reason, detail = self.file_reasons.get(m.relative_path, (None, ""))
            status = FileStatus.PENDING if m.relative_path in self.left_on_card else media_status
            sha = self.sent.get(m.relative_path) if archived else None
            out.append(FileOutcome(m.relative_path, status, sha, reason, detail))
        for s in self.scan.skipped:
            out.append(FileOutcome(s.relative_path, FileStatus(s.status), None, s.reason, s.detail))
        return tuple(sorted(out, key=lambda f: f.path))

    # -- telling the runner ------------------------------------------------------------

    def _time_stage(self, stage: str | None) -> None:
        """Close the running stage's clock when another starts (None: the card ended)."""
        now = time.monotonic()
        if self._current is not None and self._current[0] == stage:
            return
        if self._current is not None:
            name, since = self._current
            self.timings[name] = self.timings.get(name, 0.0) + (now - since)
        self._current = (stage, now) if stage is not None else None

    def _report(self, stage: str, info: Mapping[str, object]) -> None:
        """Progress for people only (where a stop must wait for the step's end)."""
        self._time_stage(stage)
        self.progress.stage(stage, info)

    def _stage(self, stage: str, info: Mapping[str, object]) -> None:
        self._report(stage, info)
        if stage != "wipe":  # a wipe under way is finished: stopping it halfway helps nobody
            stop = self.progress.should_stop()
            if stop is not None and stop.now:
                raise StageError(stop.reason, stop.detail)

    def _reached(self, checkpoint: Checkpoint) -> None:
        self.progress.reached(checkpoint)
        if isinstance(checkpoint, Wiped):
            return  # the card is empty; only the outcome is left to record
        stop = self.progress.should_stop()
        if stop is not None:
            raise StageError(stop.reason, stop.detail)

    # -- the path ----------------------------------------------------------------------

    def _ingest(self) -> IngestOutcome:
        request, config, resume = self.request, self.config, self.resume
        spool = Spool(config.spool_dir)
        with spool.session(str(uuid.uuid4())) as spool_dir:
            # The readers first: forked workers must not inherit the exiftool process's pipes.
            with CardReaders(request.root, spool_dir, request.mode, budget_s=config.identify_budget_s,
                             reserve_formats=config.reserve_formats) as readers, \
                    MetadataReader(confinement=readers.readback_confinement) as reader, \
                    _SyncedMeanwhile() as syncing:
                self._stage("scan", {"root": str(request.root)})
                readers.on_probed = lambda done, total: self._stage("scan", {"files_total": total, "files_done": done})
                readers.strip_ahead = functools.partial(self._room_ahead, spool)
                readers.on_stripped = functools.partial(self._take_back_ahead, readers, syncing)
                readers.on_read = functools.partial(self._read_back_rest, readers)
                self.scan = scan = readers.scan(request.root, reader=reader)
                log.info("scanned card", extra={
                    "root": str(request.root), "media": len(scan.media), "skipped": len(scan.skipped)})
                manifest = {m.relative_path: m.sha256 for m in scan.media}
                if resume is not None and resume.confirmed and resume.session_id and resume.sent:
                    if set(manifest.items()) <= set(resume.originals.items()):
                        return self._finish_confirmed(resume)
                    log.warning("card differs from the one the archive confirmed; reading it anew",
                                extra={"session_id": resume.session_id})
                self._reached(Scanned(manifest))
                self._refuse_what_the_scan_refused(scan)
                # Before any work on the card: its stripped copies must fit in the spool.
                spool.check_room(sum(m.size for m in scan.media))
                self._judge_devices(scan)
                decision, stripped = self._decide_and_strip(scan, manifest, readers, spool_dir, reader)
            for f in stripped:
                os.chmod(f.spool_path, 0o600)  # R11: the agent's user only
            self.session_id = session_id_for(config.agent_id, request, decision, stripped)
            self._reached(Stripped(self.session_id, tuple(SentFile.of(f) for f in stripped)))
            return self._upload_verify_wipe(stripped)

    def _decide_and_strip(self, scan: ScanResult, manifest: Mapping[str, str], readers: CardReaders,
                          spool_dir: pathlib.Path, reader: MetadataReader
                          ) -> tuple[Decision, list[StrippedFile]]:
        """Identify in the reader processes while this process strips into the spool.

        The card's decision comes first: a refused card's copies are removed with
        the spool folder and nothing is sent (R4); a strip failure counts only
        for a card that was accepted, as when the stages ran one after another."""
        wait = self._start_identify(scan, manifest, readers)
        files, size = len(scan.media), sum(m.size for m in scan.media)
        self._stage("strip", {"files": files, "bytes": size})
        stripped: list[StrippedFile] = []
        strip_failed: Exception | None = None
        try:
            stripped = strip_stage.strip_all(
                scan.media, spool_dir, tool=reader, ahead=self._stripped_ahead, parsers=readers,
                progress=lambda done, done_bytes: self._report(
                    "strip", {"files_total": files, "files_done": done, "bytes_total": size, "bytes_done": done_bytes}))
        except Exception as exc:  # held until the card is decided (see above)
            strip_failed = exc
        decision = self._decide(scan, wait)
        if strip_failed is not None:
            raise strip_failed
        return decision, stripped

    @staticmethod
    def _room_ahead(spool: Spool, card_bytes: int) -> bool:
        """Whether the reader processes strip the JPEGs as they scan them: only on a
        spool with room for the card twice over and twice the headroom (its copies,
        and each again should strip_all redo it). A tight spool keeps the order of
        before (the room check after the scan, then the strip, whose ENOSPC defers
        the card SPOOL_FULL)."""
        return spool.free_bytes() >= 2 * (card_bytes + HEADROOM_BYTES)

    def _take_back_ahead(self, readers: CardReaders, syncing: _SyncedMeanwhile, media: MediaFile,
                         early: strip_stage.Written) -> None:
        """Take back the copy a reader process stripped of a JPEG right after its scan,
        while the others read the next files (this process would only wait); its
        fsync on a thread at once, and their read-back a batch at a time on the
        scan's exiftool thread (the last, short batch once every file is read:
        :meth:`_read_back_rest`), so that the strip stage after the scan finds
        this work done. Nothing is judged here: a copy that fails is dropped and
        the strip stage strips that file again after the card is decided, as
        before (strip_all fsyncs every copy again and reads back any not read
        back yet); the copies of a refused card go with the spool folder
        (nothing is sent, R4)."""
        try:
            taken = readers.take_back_now(early, media)
        except Exception as exc:  # judged later, by strip_all, after the decision
            log.debug("strip ahead: %s not stripped yet: %s", media.relative_path, exc)
            return
        self._stripped_ahead[(media.relative_path, media.sha256)] = taken
        syncing.fsync(taken.out)
        self._unread_ahead.append(taken)
        if len(self._unread_ahead) >= _READ_BACK_BATCH:
            self._read_back_rest(readers)

    def _read_back_rest(self, readers: CardReaders) -> None:
        """The copies taken back ahead and not yet read back, to the scan's exiftool thread."""
        batch, self._unread_ahead = self._unread_ahead, []
        if batch:
            readers.exiftool_meanwhile(functools.partial(strip_stage.read_back_ahead, batch))

    def _start_identify(self, scan: ScanResult, manifest: Mapping[str, str], readers: CardReaders
                        ) -> Callable[[], Decision] | Decision:
        """The earlier accepted decision (an unchanged card resumed), or the reading started."""
        resume = self.resume
        if (resume is not None and resume.decision is not None and bool(scan.media)
                and dict(manifest) == dict(resume.originals)):
            # The same bytes as when the identity was read and accepted: the
            # earlier decision holds (and is what the archive's session has).
            self._stage("identify", {"files": len(scan.media), "resumed": True})
            return resume.decision
        self._stage("identify", {"files": len(scan.media)})
        waiting = readers.start_identify(scan)

        def decided() -> Decision:
            request, config = self.request, self.config
            identified = waiting(lambda done, total: self._stage(
                "identify", {"files_total": total, "files_done": done}))
            self._reached(Identified())
            return decide_stage.decide(scan, identified, request.mode, expect=request.expect,
                                       reserve_formats=config.reserve_formats)

        return decided

    def _refuse_what_the_scan_refused(self, scan: ScanResult) -> None:
        refused = scan.refused
        if refused:
            # An unsafe path outranks a stray file: it may be an attack.
            first = min(refused, key=lambda s: s.reason != Reason.UNSAFE_PATH)
            detail = "; ".join(f"{s.relative_path}: {s.detail or s.reason}" for s in refused)
            raise StageError(first.reason or Reason.NOT_MEDIA, detail)

    def _judge_devices(self, scan: ScanResult) -> None:
        judged = device_policy.judge(scan.media, self.config.devices, self.request.mode)
        self.device_evidence = device_policy.evidence(judged)
        bad = [(j.media, j.why) for j in judged if not j.accepted]
        if bad:
            for m, why in bad:
                self.file_reasons[m.relative_path] = (Reason.UNREGISTERED_DEVICE, why)
            raise StageError(Reason.UNREGISTERED_DEVICE, "; ".join(f"{m.relative_path}: {why}" for m, why in bad))

    def _decide(self, scan: ScanResult, started: Callable[[], Decision] | Decision) -> Decision:
        reuse = isinstance(started, Decision)
        self.decision = decision = started if isinstance(started, Decision) else started()
        if not decision.accepted:
            assert decision.reason is not None
            raise StageError(decision.reason, decision.detail)
        log.info("identified patient", extra={
            "evidence": len(decision.evidence), "ehr_context": decision.ehr_context, "resumed": reuse})
        self._reached(Decided(decision))
        return decision

    def _upload_verify_wipe(self, stripped: Sequence[StrippedFile]) -> IngestOutcome:
        assert self.scan is not None and self.decision is not None and self.session_id is not None
        session_id = self.session_id
        open_request = build_open_request(
            session_id, self.config.agent_id, self.request.department, self.request.mode, self.decision,
            stripped, device_evidence=self.device_evidence,
        )
        self._reached(Uploading(session_id))
        self.phase = Phase.SENDING
        sent = [SentFile.of(f) for f in stripped]
        with _archive(self.config) as client:
            client.open_session(open_request)
            self._stage("upload", {"files": len(stripped), "bytes": sum(f.size for f in stripped)})
            client.upload(session_id, stripped,
                          progress=lambda p: self._stage("upload", dataclasses.asdict(p)))
            self._stage("commit", {})
            committed = client.commit(session_id, resend=stripped)
            self.case_id = committed.case_id
            self.phase = Phase.COMMITTED
            # A second, independent confirmation: the archive reports none missing.
            still_missing = client.find_missing(session_id, sent)
            if still_missing:
                # Committed before (this card's earlier run), and a stored copy is
                # gone since: the card holds the only other one. Send it again.
                log.warning("archive lost blobs of a committed session, sending them again",
                            extra={"blobs": len(still_missing)})
                client.upload(session_id, stripped)
                still_missing = client.find_missing(session_id, sent)
        self._stage("verify", {"receipts": len(committed.receipts)})
        self._verify(sent, committed.receipts, still_missing)
        log.info("archive confirmed every file", extra={"case_id": committed.case_id, "files": len(sent)})
        with _removed_meanwhile([f.spool_path for f in stripped]):
            return self._confirmed_then_wipe(sent)

    def _finish_confirmed(self, resume: Resume) -> IngestOutcome:
        """Finish a card whose files the archive confirmed in an earlier run (perhaps half wiped).

        The receipts are asked for again (CommitSession is idempotent and answers
        a committed session with its receipts) and checked against what the
        journal says was sent; only then are the files still on the card, each
        unchanged since the first scan, wiped.
        """
        assert self.scan is not None and resume.session_id is not None
        self.session_id = resume.session_id
        self.decision = resume.decision
        sent = list(resume.sent)
        self._stage("verify", {"resumed": True, "files": len(sent)})
        self.phase = Phase.SENDING
        with _archive(self.config) as client:
            committed = client.commit(resume.session_id)
            self.case_id = committed.case_id
            self.phase = Phase.COMMITTED
            still_missing = client.find_missing(resume.session_id, sent)
        self._verify(sent, committed.receipts, still_missing)
        log.info("archive confirmed the card of an earlier run; finishing the wipe", extra={
            "case_id": committed.case_id, "left_on_card": len(self.scan.media)})
        outcome = self._confirmed_then_wipe(sent)
        on_card = {m.relative_path for m in self.scan.media}
        wiped_before = [f for f in sent if f.relative_path not in on_card]
        if outcome.wiped and wiped_before:
            # The housekeeping of the files the interrupted run had already deleted
            # (AppleDouble copies, sidecars, a DICOMDIR) goes now.
            removed, problems = remove_housekeeping(
                self.request.root, wiped_before, [f.relative_path for f in wiped_before], [])
            log.info("removed the housekeeping of files wiped before the interruption",
                     extra={"removed": len(removed)})
            if problems:
                detail = "; ".join(f"{path}: {why}" for path, why in problems)
                return self._outcome(Outcome.ARCHIVED, Reason.WIPE_FAILED, detail)
        return outcome

    def _verify(self, sent: Sequence[SentFile], receipts: Sequence[Any], still_missing: Collection[str]) -> None:
        try:
            verify_receipts(sent, receipts)
            if still_missing:
                raise StageError(Reason.ARCHIVE_REJECTED,
                                 f"archive reports blobs missing after commit: {', '.join(sorted(still_missing))}")
        except StageError as exc:
            log.error("receipts do not match what was sent; card left as it was",
                      extra={"detail": exc.detail, "case_id": self.case_id})
            raise

    def _confirmed_then_wipe(self, sent: Sequence[SentFile]) -> IngestOutcome:
        assert self.scan is not None and self.case_id is not None
        self.phase = Phase.CONFIRMED
        self.sent = {f.relative_path: f.sha256 for f in sent}
        self._reached(Confirmed(self.case_id))
        media = self.scan.media
        self._stage("wipe", {"files": len(media)})
        # The wiper re-reads every file from the card itself (page cache dropped)
        # and checks it is what was scanned, stripped and sent.
        result = self.wiper(self.request.root, media)
        if not result.complete:
            detail = "; ".join(f"{path}: {why}" for path, why in result.failed)
            for path, why in result.failed:
                self.left_on_card.add(path)
                self.file_reasons[path] = (Reason.WIPE_FAILED, why)
            log.error("card only partly wiped", extra={"detail": detail})
            return self._outcome(Outcome.ARCHIVED, Reason.WIPE_FAILED, detail)
        self._reached(Wiped())
        n = len(sent)
        message = (
            f"All {n} file{'s' if n != 1 else ''} are safely in the archive and have been "
            "deleted from the card. The card is ready for the next patient."
        )
        log.info("card archived and wiped", extra={"case_id": self.case_id, "files": n})
        return self._outcome(Outcome.ARCHIVED, None, message=message, wiped=True)


class _SyncedMeanwhile:
    """fsync of the copies taken back while the card is read, on a thread: the
    disk writes them while the reader processes read on, instead of the strip
    stage waiting for 100 fsyncs after the scan. Only a head start: strip_all
    fsyncs every copy it uses again (then cheap) and raises what that raises,
    so an error here is dropped. Pending syncs are cancelled when the card
    stops (a refused card's copies go with the spool folder)."""

    def __init__(self) -> None:
        # Started at the first copy (the reader processes are forked by then).
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def fsync(self, path: pathlib.Path) -> None:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="spool-fsync-ahead")
        self._pool.submit(_fsync_quietly, path)

    def __enter__(self) -> _SyncedMeanwhile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _fsync_quietly(path: pathlib.Path) -> None:
    with contextlib.suppress(OSError):  # strip_all's own fsync of the copy judges
        fsync(path)


@contextlib.contextmanager
def _removed_meanwhile(copies: Sequence[pathlib.Path]) -> Iterator[None]:
    """Remove the card's stripped copies on a thread while the block runs (the
    wipe), and wait for it at the end. Called once the archive confirmed every
    file: the copies hold patient images and are needed no more (R11), and
    removing 150 MB of fsynced files takes a while on a spool that discards
    freed blocks; reading the card for the wipe's check is other work meanwhile.
    What is left (an error here is not the card's) goes with the spool folder."""
    def remove() -> None:
        for path in copies:
            with contextlib.suppress(OSError):
                os.unlink(path)

    remover = threading.Thread(target=remove, name="spool-remove")
    remover.start()
    try:
        yield
    finally:
        remover.join()


@contextlib.contextmanager
def _archive(config: AgentConfig) -> Iterator[ArchiveClient]:
    """The archive client for one run, once the archive answers; its two kinds of
    failure become the card's reasons (unreachable: deferred; refused)."""
    try:
        with ArchiveClient(config.archive) as client:
            client.wait_until_reachable()
            yield client
    except ArchiveUnavailable as exc:
        log.warning("archive unavailable, card deferred", extra={"detail": str(exc)})
        raise StageError(Reason.ARCHIVE_UNAVAILABLE, str(exc)) from exc
    except ArchiveRejected as exc:
        log.error("archive rejected the card", extra={"detail": str(exc)})
        raise StageError(Reason.ARCHIVE_REJECTED, str(exc)) from exc
