"""The card's path, composed: scan -> identify -> decide -> strip -> upload -> verify -> wipe.

:func:`ingest_card` is the one function that runs a card from start to finish;
the CLI's ``ingest`` and (later) the daemon are loops around it. Every stage
is a module with plain-data inputs and outputs; this module only wires them
and turns their errors into one :class:`IngestOutcome`.

The safety rule (R10) is structural: :func:`agent.wipe.wipe` is reached only
after :func:`agent.verify.verify_receipts` accepted a receipt for every file,
and nothing before it writes to the card.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import uuid
from collections.abc import Callable

from agent import decide as decide_stage
from agent import identify as identify_stage
from agent import scan as scan_stage
from agent import strip as strip_stage
from agent.config import AgentConfig
from agent.devices import unregistered_media
from agent.metadata import MetadataReader
from agent.model import Decision, Evidence, Mode, ScanResult, StageError, StrippedFile
from agent.reasons import Reason, staff_message
from agent.spool import Spool
from agent.upload import ArchiveClient, ArchiveRejected, ArchiveUnavailable, build_open_request
from agent.verify import verify_receipts
from agent.wipe import wipe

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


def _no_progress(stage: str, info: dict) -> None:
    pass


class _Card:
    """What is known about the card so far, to build the outcome at any stage."""

    def __init__(self) -> None:
        self.scan: ScanResult | None = None
        self.decision: Decision | None = None
        self.file_reasons: dict[str, tuple[Reason, str]] = {}
        self.session_id: str | None = None

    def files(self, media_status: str, stripped: dict[str, str] | None = None) -> tuple[FileOutcome, ...]:
        if self.scan is None:
            return ()
        out = []
        for m in self.scan.media:
            reason, detail = self.file_reasons.get(m.relative_path, (None, ""))
            sha = (stripped or {}).get(m.relative_path)
            out.append(FileOutcome(m.relative_path, media_status, sha, reason, detail))
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
            evidence=self.decision.evidence if self.decision else (),
            detail=detail,
            session_id=self.session_id,
            **kw,
        )


def ingest_card(
    request: IngestRequest,
    config: AgentConfig,
    *,
    progress: ProgressFn = _no_progress,
) -> IngestOutcome:
    """Run one card from scan to wipe. Never raises for a card's or archive's fault."""
    card = _Card()
    try:
        return _ingest(request, config, card, progress)
    except StageError as exc:
        outcome = "failed" if exc.reason in (Reason.CARD_REMOVED, Reason.CARD_CHANGED) else "refused"
        log.warning("card not ingested", extra={"reason": exc.reason.value, "detail": exc.detail})
        return card.outcome(outcome, exc.reason, exc.detail)
    except Exception as exc:  # the card stays untouched; ops get the traceback
        log.exception("internal error while ingesting a card")
        return card.outcome("failed", Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")


def _ingest(request: IngestRequest, config: AgentConfig, card: _Card, progress: ProgressFn) -> IngestOutcome:
    mode = request.mode
    with MetadataReader() as reader:
        progress("scan", {"root": str(request.root)})
        card.scan = scan = scan_stage.scan(request.root, reader=reader)
        log.info("scanned card", extra={
            "root": str(request.root), "media": len(scan.media), "skipped": len(scan.skipped)})
        refused = scan.refused
        if refused:
            # An unsafe path outranks a stray file: it may be an attack.
            first = min(refused, key=lambda s: s.reason != Reason.UNSAFE_PATH)
            detail = "; ".join(f"{s.relative_path}: {s.detail or s.reason}" for s in refused)
            raise StageError(first.reason or Reason.NOT_MEDIA, detail)

        bad_devices = unregistered_media(scan.media, config.devices, mode)
        if bad_devices:
            for m, why in bad_devices:
                card.file_reasons[m.relative_path] = (Reason.UNREGISTERED_DEVICE, why)
            detail = "; ".join(f"{m.relative_path}: {why}" for m, why in bad_devices)
            raise StageError(Reason.UNREGISTERED_DEVICE, detail)

        progress("identify", {"files": len(scan.media)})
        identified = identify_stage.identify(
            scan, mode, expect=request.expect, budget_s=config.identify_budget_s,
            reserve_formats=config.reserve_formats,
        )
        card.decision = decision = decide_stage.decide(
            scan, identified, mode, expect=request.expect, reserve_formats=config.reserve_formats
        )
        if not decision.accepted:
            assert decision.reason is not None
            raise StageError(decision.reason, decision.detail)
        log.info("identified patient", extra={
            "evidence": len(decision.evidence), "ehr_context": decision.ehr_context})

        with Spool(config.spool_dir).session(str(uuid.uuid4())) as spool_dir:
            progress("strip", {"files": len(scan.media)})
            stripped = strip_stage.strip_all(scan.media, spool_dir, tool=reader)
            card.session_id = session_id_for(config.agent_id, request, decision, stripped)
            return _upload_verify_wipe(request, config, card, stripped, progress)


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
) -> IngestOutcome:
    assert card.scan is not None and card.decision is not None and card.session_id is not None
    sent = {f.source.relative_path: f.sha256 for f in stripped}
    open_request = build_open_request(
        card.session_id, config.agent_id, request.department, request.mode, card.decision, stripped
    )
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

    progress("wipe", {"files": len(card.scan.media)})
    archived = dict(stripped=sent, case_id=committed.case_id)
    try:
        result = wipe(request.root, card.scan.media)
    except StageError as exc:
        log.error("card not wiped", extra={"reason": exc.reason.value, "detail": exc.detail})
        return card.outcome("archived", exc.reason, exc.detail, wiped=False, **archived)
    if not result.complete:
        detail = "; ".join(f"{path}: {why}" for path, why in result.failed)
        log.error("card only partly wiped", extra={"detail": detail})
        return card.outcome("archived", Reason.WIPE_FAILED, detail, wiped=False, **archived)
    n = len(stripped)
    message = (
        f"All {n} file{'s' if n != 1 else ''} are safely in the archive and have been "
        "deleted from the card. The card is ready for the next patient."
    )
    log.info("card archived and wiped", extra={"case_id": committed.case_id, "files": n})
    return card.outcome("archived", None, message=message, wiped=True, **archived)
