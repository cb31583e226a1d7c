"""The card's path, composed: scan -> identify -> decide -> strip -> upload -> verify -> wipe.

:func:`ingest_card` is the one function that runs a card from start to finish;
the CLI's ``ingest`` and (later) the daemon are loops around it. Every stage
is a module with plain-data inputs and outputs; this module only wires them
and turns their errors into one :class:`IngestOutcome`.

The safety rule (R10) is structural: :func:`agent.card.wipe.wipe` is reached only
after :func:`agent.card.verify.verify_receipts` accepted a receipt for every file,
and nothing before it writes to the card.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import pathlib
import uuid
from collections.abc import Callable, Mapping, Sequence

from agent.card import decide as decide_stage
from agent.card import identify as identify_stage
from agent.card import scan as scan_stage
from agent.card import strip as strip_stage
from agent.config import AgentConfig
from agent.card import devices as device_policy
from agent.card.metadata import MetadataReader
from agent.card.model import (
    Decision, Evidence, MediaFile, MediaKind, Method, Mode, ScanResult, StageError, StrippedFile,
)
from agent.card.reasons import Reason, staff_message
from agent.card.spool import Spool
from agent.card.upload import ArchiveClient, ArchiveRejected, ArchiveUnavailable, build_open_request
from agent.card.verify import verify_receipts
from agent.card.wipe import WipeResult, remove_housekeeping, wipe

log = logging.getLogger(__name__)

EXIT_CODES = {"archived": 0, "failed": 1, "refused": 3, "deferred": 4}
# Archived, but the card could not be (fully) wiped: the media is safe in the
# archive, the card must not be reused yet. An extension of the contract.
EXIT_ARCHIVED_NOT_WIPED = 5


@dataclasses.dataclass(frozen=True)
class IngestRequest:
    root: pathlib.Path
    department: str
    mode: Mode = Mode.PHOTO
    expect: str | None = None


@dataclasses.dataclass(frozen=True)
class FileOutcome:
    path: str
    status: str  # archived | refused | ignored | pending
    sha256: str | None = None
    reason: Reason | None = None
    detail: str = ""

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "status": self.status,
            "sha256": self.sha256,
            "reason": self.reason.value if self.reason else None,
        }


@dataclasses.dataclass(frozen=True)
class IngestOutcome:
    outcome: str  # archived | refused | deferred | failed
    reason: Reason | None
    message: str
    patient: str | None = None
    case_id: str | None = None
    wiped: bool = False
    files: tuple[FileOutcome, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    detail: str = ""
    session_id: str | None = None

    @property
    def exit_code(self) -> int:
        if self.outcome == "archived" and not self.wiped:
            return EXIT_ARCHIVED_NOT_WIPED
        return EXIT_CODES[self.outcome]

    def to_json(self) -> dict:
        return {
            "outcome": self.outcome,
            "reason": self.reason.value if self.reason else None,
            "message": self.message,
            "detail": self.detail or None,
            "patient": self.patient,
            "case_id": self.case_id,
            "session_id": self.session_id,
            "wiped": self.wiped,
            "files": [f.to_json() for f in self.files],
            "evidence": [e.to_json() for e in self.evidence],
        }


ProgressFn = Callable[[str, dict], None]
# Called when a step has finished and before the next one starts, with the
# journal state reached and what the step established (plain JSON data). The
# daemon writes it to its journal; it may raise StageError(CARD_REMOVED) to
# stop a card that was pulled.
CheckpointFn = Callable[[str, dict], None]


def _no_progress(stage: str, info: dict) -> None:
    pass


# The wipe step of a source: a card deletes from its file system (agent.wipe.wipe),
# a camera over PTP (agent.card.camera.camera_wiper). Reached only after every
# receipt was verified (R10); files it could not delete come back in ``failed``.
Wiper = Callable[[pathlib.Path, Sequence[MediaFile]], WipeResult]


@dataclasses.dataclass(frozen=True)
class Resume:
    """What an earlier, interrupted run of the same card established (from the journal)."""

    # relative path -> SHA-256 of the original file, as first scanned
    originals: Mapping[str, str]
    # the accepted decision (decision_to_json), reused when the card is unchanged
    decision: dict | None = None
    # the archive confirmed every file of this session: the card may be half wiped
    confirmed: bool = False
    session_id: str | None = None
    stripped: Sequence[dict] = ()  # stripped_to_json of what was sent


def decision_to_json(decision: Decision) -> dict:
    return {
        "patient": decision.patient_id,
        "ehr_context": decision.ehr_context,
        "evidence": [dict(e.to_json(), invalid=e.invalid) for e in decision.evidence],
    }


def decision_from_json(data: dict) -> Decision:
    evidence = tuple(
        Evidence(
            relative_path=e["file"], frame=int(e["frame"]), method=Method(e["method"]),
            text=e["text"], patient_id=e["patient"], symbology=e["symbology"] or "",
            position=tuple(e["position"]), invalid=bool(e.get("invalid", False)),
        )
        for e in data["evidence"]
    )
    return Decision(data["patient"], None, evidence=evidence, ehr_context=bool(data["ehr_context"]))


def stripped_to_json(stripped: Sequence[StrippedFile]) -> list[dict]:
    return [
        {"path": f.source.relative_path, "sha256": f.sha256, "size": f.size,
         "kind": f.source.kind.value, "media_type": f.source.media_type,
         "original_sha256": f.source.sha256, "original_size": f.source.size}
        for f in stripped
    ]


def _sent_from_json(root: pathlib.Path, entries: Sequence[dict]) -> list[StrippedFile]:
    """What an earlier run sent, rebuilt from the journal to check the receipts again.

    The originals may already be wiped, so nothing here is read from the card
    or the spool; only the names, hashes and sizes are compared.
    """
    return [
        StrippedFile(
            source=MediaFile(
                path=root / e["path"], relative_path=e["path"], kind=MediaKind(e["kind"]),
                media_type=e["media_type"], size=e["original_size"], sha256=e["original_sha256"],
                mtime_ns=0,
            ),
            spool_path=pathlib.Path(os.devnull), sha256=e["sha256"], size=e["size"],
        )
        for e in entries
    ]


class _Card:
    """What is known about the card so far, to build the outcome at any stage."""

    def __init__(self) -> None:
        self.scan: ScanResult | None = None
        self.decision: Decision | None = None
        self.file_reasons: dict[str, tuple[Reason, str]] = {}
        self.session_id: str | None = None
        self.device_evidence: tuple[Evidence, ...] = ()  # R6, helper E
        self.wiper: Wiper = wipe
        self.left_on_card: set[str] = set()  # archived, but the wipe could not delete them

    def files(self, media_status: str, stripped: dict[str, str] | None = None) -> tuple[FileOutcome, ...]:
        if self.scan is None:
            return ()
        out = []
        for m in self.scan.media:
            reason, detail = self.file_reasons.get(m.relative_path, (None, ""))
            sha = (stripped or {}).get(m.relative_path)
            status = "pending" if m.relative_path in self.left_on_card else media_status
            out.append(FileOutcome(m.relative_path, status, sha, reason, detail))
        for s in self.scan.skipped:
            out.append(FileOutcome(s.relative_path, s.status, None, s.reason, s.detail))
        return tuple(sorted(out, key=lambda f: f.path))

    def outcome(self, outcome: str, reason: Reason | None, detail: str = "", **kw) -> IngestOutcome:
        media_status = {"refused": "refused", "archived": "archived"}.get(outcome, "pending")
        stripped = kw.pop("stripped", None)
        return IngestOutcome(
            outcome=outcome,
            reason=reason,
            message=kw.pop("message", None) or (staff_message(reason) if reason else ""),
            patient=self.decision.patient_id if self.decision and self.decision.accepted else None,
            files=self.files(media_status, stripped),
            evidence=(self.decision.evidence if self.decision else ()) + self.device_evidence,
            detail=detail,
            session_id=self.session_id,
            **kw,
        )


def ingest_card(
    request: IngestRequest,
    config: AgentConfig,
    *,
    progress: ProgressFn = _no_progress,
    checkpoint: CheckpointFn = _no_progress,
    resume: Resume | None = None,
    wiper: Wiper = wipe,
) -> IngestOutcome:
    """Run one card from scan to wipe. Never raises for a card's or archive's fault.

    ``resume`` (the daemon, from its journal) lets a card that comes back
    after a crash or a pull skip reading its identity again when its content
    is unchanged, and lets a card the archive already confirmed be finished
    although part of it was wiped before the interruption.
    """
    card = _Card()
    card.wiper = wiper
    try:
        return _ingest(request, config, card, progress, checkpoint, resume)
    except OSError as exc:
        # A read error on the card (a bad reader, a card pulled while read).
        reason = Reason.CARD_REMOVED if exc.errno in (errno.ENODEV, errno.ENXIO) else Reason.CARD_UNREADABLE
        log.warning("card could not be read", extra={"reason": reason.value, "detail": str(exc)})
        outcome = "failed" if reason is Reason.CARD_REMOVED else "refused"
        return card.outcome(outcome, reason, f"{type(exc).__name__}: {exc}")
    except StageError as exc:
        outcome = "failed" if exc.reason in (Reason.CARD_REMOVED, Reason.CARD_CHANGED) else "refused"
        log.warning("card not ingested", extra={"reason": exc.reason.value, "detail": exc.detail})
        return card.outcome(outcome, exc.reason, exc.detail)
    except Exception as exc:  # the card stays untouched; ops get the traceback
        log.exception("internal error while ingesting a card")
        return card.outcome("failed", Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")


def _ingest(request: IngestRequest, config: AgentConfig, card: _Card, progress: ProgressFn,
            checkpoint: CheckpointFn, resume: Resume | None) -> IngestOutcome:
    mode = request.mode
    with MetadataReader() as reader:
        progress("scan", {"root": str(request.root)})
        card.scan = scan = scan_stage.scan(request.root, reader=reader)
        log.info("scanned card", extra={
            "root": str(request.root), "media": len(scan.media), "skipped": len(scan.skipped)})
        manifest = {m.relative_path: m.sha256 for m in scan.media}
        if resume is not None and resume.confirmed and resume.session_id and resume.stripped:
            left = set(manifest.items())
            if left <= set(resume.originals.items()):
                return _finish_confirmed(request, config, card, resume, progress, checkpoint)
            log.warning("card differs from the one the archive confirmed; reading it anew",
                        extra={"session_id": resume.session_id})
        checkpoint("scanned", {"manifest": manifest})
        refused = scan.refused
        if refused:
            # An unsafe path outranks a stray file: it may be an attack.
            first = min(refused, key=lambda s: s.reason != Reason.UNSAFE_PATH)
            detail = "; ".join(f"{s.relative_path}: {s.detail or s.reason}" for s in refused)
            raise StageError(first.reason or Reason.NOT_MEDIA, detail)

        judged = device_policy.judge(scan.media, config.devices, mode)
        card.device_evidence = device_policy.evidence(judged)
        bad_devices = [(j.media, j.why) for j in judged if not j.accepted]
        if bad_devices:
            for m, why in bad_devices:
                card.file_reasons[m.relative_path] = (Reason.UNREGISTERED_DEVICE, why)
            detail = "; ".join(f"{m.relative_path}: {why}" for m, why in bad_devices)
            raise StageError(Reason.UNREGISTERED_DEVICE, detail)

        reuse = (resume is not None and resume.decision is not None and scan.media
                 and manifest == dict(resume.originals))
        if reuse:
            assert resume is not None and resume.decision is not None
            # The same bytes as when the identity was read and accepted: the
            # earlier decision holds (and is what the archive's session has).
            progress("identify", {"files": len(scan.media), "resumed": True})
            card.decision = decision = decision_from_json(resume.decision)
        else:
            progress("identify", {"files": len(scan.media)})
            identified = identify_stage.identify(
                scan, mode, expect=request.expect, budget_s=config.identify_budget_s,
                reserve_formats=config.reserve_formats,
            )
            checkpoint("identified", {})
            card.decision = decision = decide_stage.decide(
                scan, identified, mode, expect=request.expect, reserve_formats=config.reserve_formats
            )
        if not decision.accepted:
            assert decision.reason is not None
            raise StageError(decision.reason, decision.detail)
        log.info("identified patient", extra={
            "evidence": len(decision.evidence), "ehr_context": decision.ehr_context,
            "resumed": bool(reuse)})
        checkpoint("decided", {"decision": decision_to_json(decision)})

        with Spool(config.spool_dir).session(str(uuid.uuid4())) as spool_dir:
            progress("strip", {"files": len(scan.media)})
            stripped = strip_stage.strip_all(scan.media, spool_dir, tool=reader)
            for f in stripped:
                os.chmod(f.spool_path, 0o600)  # R11: the agent's user only
            card.session_id = session_id_for(config.agent_id, request, decision, stripped)
            checkpoint("stripped", {"session_id": card.session_id,
                                    "stripped": stripped_to_json(stripped)})
            return _upload_verify_wipe(request, config, card, stripped, progress, checkpoint)


_SESSION_NAMESPACE = uuid.UUID("5b1d5c1e-6b1a-4f0e-9a57-3b1e0d5e2f10")


def session_id_for(
    agent_id: str, request: IngestRequest, decision: Decision, stripped: list[StrippedFile]
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


def _upload_verify_wipe(
    request: IngestRequest,
    config: AgentConfig,
    card: _Card,
    stripped: list[StrippedFile],
    progress: ProgressFn,
    checkpoint: CheckpointFn,
) -> IngestOutcome:
    assert card.scan is not None and card.decision is not None and card.session_id is not None
    sent = {f.source.relative_path: f.sha256 for f in stripped}
    open_request = build_open_request(
        card.session_id, config.agent_id, request.department, request.mode, card.decision, stripped,
        device_evidence=card.device_evidence,
    )
    checkpoint("uploading", {"session_id": card.session_id})
    try:
        with ArchiveClient(config.archive) as client:
            client.wait_until_reachable()
            client.open_session(open_request)
            total = sum(f.size for f in stripped)
            progress("upload", {"files": len(stripped), "bytes": total})
            client.upload(
                card.session_id,
                stripped,
                progress=lambda p: progress("upload", dataclasses.asdict(p)),
            )
            progress("commit", {})
            committed = client.commit(card.session_id)
            # A second, independent confirmation: the archive reports none missing.
            still_missing = client.find_missing(card.session_id, stripped)
    except ArchiveUnavailable as exc:
        log.warning("archive unavailable, card deferred", extra={"detail": str(exc)})
        return card.outcome("deferred", Reason.ARCHIVE_UNAVAILABLE, str(exc))
    except ArchiveRejected as exc:
        log.error("archive rejected the card", extra={"detail": str(exc)})
        return card.outcome("refused", Reason.ARCHIVE_REJECTED, str(exc))

    progress("verify", {"receipts": len(committed.receipts)})
    try:
        verify_receipts(stripped, committed.receipts)
        if still_missing:
            raise StageError(
                Reason.ARCHIVE_REJECTED,
                f"archive reports blobs missing after commit: {', '.join(sorted(still_missing))}",
            )
    except StageError as exc:
        log.error("receipts do not match what was sent; card left as it was",
                  extra={"detail": exc.detail, "case_id": committed.case_id})
        return card.outcome("failed", exc.reason, exc.detail, case_id=committed.case_id)
    log.info("archive confirmed every file", extra={
        "case_id": committed.case_id, "files": len(stripped)})
    checkpoint("confirmed", {"case_id": committed.case_id})
    return _wipe(request, card, card.scan.media, len(stripped),
                 dict(stripped=sent, case_id=committed.case_id), progress, checkpoint)


def _finish_confirmed(request: IngestRequest, config: AgentConfig, card: _Card, resume: Resume,
                      progress: ProgressFn, checkpoint: CheckpointFn) -> IngestOutcome:
    """Finish a card whose files the archive confirmed in an earlier run (perhaps half wiped).

    The receipts are asked for again (CommitSession is idempotent and answers
    a committed session with its receipts) and checked against what the
    journal says was sent; only then are the files still on the card, each
    unchanged since the first scan, wiped.
    """
    assert card.scan is not None and resume.session_id is not None
    card.session_id = resume.session_id
    if resume.decision is not None:
        card.decision = decision_from_json(resume.decision)
    sent = _sent_from_json(request.root, resume.stripped)
    progress("verify", {"resumed": True, "files": len(sent)})
    try:
        with ArchiveClient(config.archive) as client:
            client.wait_until_reachable()
            committed = client.commit(resume.session_id)
            still_missing = client.find_missing(resume.session_id, sent)
        verify_receipts(sent, committed.receipts)
        if still_missing:
            raise StageError(Reason.ARCHIVE_REJECTED,
                             f"archive reports blobs missing: {', '.join(sorted(still_missing))}")
    except ArchiveUnavailable as exc:
        return card.outcome("deferred", Reason.ARCHIVE_UNAVAILABLE, str(exc))
    except ArchiveRejected as exc:
        return card.outcome("failed", Reason.ARCHIVE_REJECTED, str(exc))
    except StageError as exc:
        log.error("receipts of the earlier run do not check out; card left as it is",
                  extra={"detail": exc.detail})
        return card.outcome("failed", exc.reason, exc.detail)
    log.info("archive confirmed the card of an earlier run; finishing the wipe", extra={
        "case_id": committed.case_id, "left_on_card": len(card.scan.media)})
    checkpoint("confirmed", {"case_id": committed.case_id})
    archived = dict(stripped={f.source.relative_path: f.sha256 for f in sent},
                    case_id=committed.case_id)
    outcome = _wipe(request, card, card.scan.media, len(sent), archived, progress, checkpoint)
    on_card = {m.relative_path for m in card.scan.media}
    wiped_before = [f.source.relative_path for f in sent if f.source.relative_path not in on_card]
    if outcome.wiped and wiped_before:
        # The housekeeping of the files the interrupted run had already deleted
        # (AppleDouble copies, sidecars, a DICOMDIR) goes now.
        removed, problems = remove_housekeeping(request.root, [f.source for f in sent], wiped_before, [])
        log.info("removed the housekeeping of files wiped before the interruption",
                 extra={"removed": len(removed)})
        if problems:
            detail = "; ".join(f"{path}: {why}" for path, why in problems)
            return card.outcome("archived", Reason.WIPE_FAILED, detail, wiped=False, **archived)
    return outcome


def _wipe(request: IngestRequest, card: _Card, media: Sequence[MediaFile], n: int,
          archived: dict, progress: ProgressFn, checkpoint: CheckpointFn) -> IngestOutcome:
    progress("wipe", {"files": len(media)})
    try:
        # wipe() re-reads every file from the card itself (page cache dropped)
        # and checks it is what was scanned, stripped and sent.
        result = card.wiper(request.root, media)
    except StageError as exc:
        log.error("card not wiped", extra={"reason": exc.reason.value, "detail": exc.detail})
        return card.outcome("archived", exc.reason, exc.detail, wiped=False, **archived)
    if not result.complete:
        detail = "; ".join(f"{path}: {why}" for path, why in result.failed)
        for path, why in result.failed:
            card.left_on_card.add(path)
            card.file_reasons[path] = (Reason.WIPE_FAILED, why)
        log.error("card only partly wiped", extra={"detail": detail})
        return card.outcome("archived", Reason.WIPE_FAILED, detail, wiped=False, **archived)
    checkpoint("wiped", {})
    message = (
        f"All {n} file{'s' if n != 1 else ''} are safely in the archive and have been "
        "deleted from the card. The card is ready for the next patient."
    )
    log.info("card archived and wiped", extra={"case_id": archived["case_id"], "files": n})
    return card.outcome("archived", None, message=message, wiped=True, **archived)
