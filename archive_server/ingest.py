"""The ingest exchange (protos/bildsluss/v1/ingest.proto), without gRPC.

:class:`IngestCore` takes and returns the protocol's messages (plain data) and
raises the domain errors of ``errors.py``; the servicer
(``services/ingest.py``) only forwards to it, with the caller its certificate
names (``agentcerts.AgentGate``), and one interceptor maps the errors to
status codes.

Invariants kept here:
* on a TLS archive the agent and department are the certificate's
  (:class:`~archive_server.agentcerts.AgentCaller`): a request naming others,
  or touching another agent's session, is refused; departments are never
  registered by an ingest there;
* dedup never crosses a department: a blob's bytes may be skipped only when
  the session's department holds it in a case, or the session itself sent
  them (``session_blobs``); CommitSession checks the same, so quoting another
  department's sha256 never attaches its image;
* a ``blobs`` row exists only for bytes that were made durable and verified
  under their content-addressed name (the blob store's ``commit``), and a
  blob counts as stored only while the store still has it (``blobs.py``);
* a session becomes at most one case: CommitSession locks the session row
  (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and
  ``cases.source_session_id`` is unique;
* the case, its version, its media items, the audit event and the session's
  "committed" mark are written in one transaction.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from archive_server import faults, limits
from archive_server import validation as v
from archive_server.agentcerts import AgentCaller
from archive_server.audit import append_audit
from archive_server import blobs as catalogue
from archive_server import metrics
from archive_server.blobstores import BlobStore, PartialKey
from archive_server.config import ArchiveConfig
from archive_server.db import Database, lock_patient, retry_on_conflict
from archive_server.errors import (
    AgentUnauthenticated,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
)
from archive_server.forms import DEFAULT_TEMPLATE
from archive_server.models import (
    Agent,
    Blob,
    Case,
    CaseVersion,
    ConfidentialPatient,
    Department,
    IngestSession,
    MediaItem,
    SessionBlob,
    utcnow,
)
from bildsluss.v1 import ingest_pb2 as pb

log = logging.getLogger(__name__)

MODES = {
    pb.CAPTURE_MODE_PHOTO: "photo",
    pb.CAPTURE_MODE_ASSAULT: "assault",
    pb.CAPTURE_MODE_ULTRASOUND: "ultrasound",
    pb.CAPTURE_MODE_VIDEO: "video",
    pb.CAPTURE_MODE_AUDIO: "audio",
}
KINDS = {
    pb.MEDIA_KIND_IMAGE: "image",
    pb.MEDIA_KIND_VIDEO: "video",
    pb.MEDIA_KIND_AUDIO: "audio",
    pb.MEDIA_KIND_DICOM: "dicom",
}
METHODS = {
    pb.IDENTITY_METHOD_BARCODE: "barcode",
    pb.IDENTITY_METHOD_OCR: "ocr",
    pb.IDENTITY_METHOD_DICOM_HEADER: "dicom_header",
    pb.IDENTITY_METHOD_EHR_CONTEXT: "ehr_context",
    pb.IDENTITY_METHOD_DEVICE: "device",
}
# Modes whose ingest must be started from the EHR with the patient in context (R3).
EHR_MODES = {"ultrasound", "audio"}
_MAX_LISTED = 20


@dataclasses.dataclass(frozen=True)
class OpenSessionInfo:
    """What Write, QueryWriteStatus and FindMissingBlobs need to know of a session."""

    session_id: str
    committed: bool
    sizes: dict[str, int]  # sha256 -> size_bytes of the manifest's blobs
    agent_id: str
    department_id: int


class IngestCore:
    def __init__(self, db: Database, blobs: BlobStore, config: ArchiveConfig) -> None:
        self.db = db
        self.blobs = blobs
        self.config = config
        self._reserve_formats = config.reserve_formats
        self._manifests = _ParsedManifests()
        self.streams = limits.WriteStreams(config.effective_max_write_streams, config.agent_max_write_streams,
                                           config.write_idle_timeout_s)

    # -- OpenSession ------------------------------------------------------------------

    def open_session(self, request: pb.OpenSessionRequest,
                     caller: AgentCaller | None = None) -> pb.OpenSessionResponse:
        """``caller``: the certificate's agent (TLS); None on a plaintext
        development archive, where the request's agent and department are taken."""
        manifest, evidence = self._validate_open(request)
        self._trusted(caller)
        if caller is not None:
            caller.check_claims(request.agent_id, request.department_hsa_id)
        fingerprint = session_fingerprint(request)
        return retry_on_conflict(lambda: self._open(request, manifest, evidence, fingerprint, caller))

    def _trusted(self, caller: AgentCaller | None) -> None:
        # The gate yields no caller only on plaintext; never trust a request's
        # word on a TLS archive, whatever went wrong on the way here.
        if caller is None and self.config.tls.enabled:
            raise AgentUnauthenticated("NO_CLIENT_CERTIFICATE", "no client certificate identified the agent")

    def _open(
        self, request: pb.OpenSessionRequest, manifest: list[dict[str, Any]],
        evidence: list[dict[str, Any]], fingerprint: str, caller: AgentCaller | None,
    ) -> pb.OpenSessionResponse:
        now = utcnow()
        with self.db.write() as s:
            existing = s.execute(
                sa.select(IngestSession).where(IngestSession.session_id == request.session_id)
            ).scalar_one_or_none()
            if existing is not None:
                if existing.fingerprint != fingerprint:
                    raise AlreadyExists(
                        f"session {request.session_id} is already known with different content; "
                        "a new card needs a new session_id"
                    )
                self._touch_agent(s, request, existing.department_id, now)
                return pb.OpenSessionResponse(
                    session_id=request.session_id, committed=existing.status == "committed"
                )
            department_id = (caller.department_id if caller is not None else
                             self._department(s, request.department_hsa_id, f"agent:{request.agent_id}").id)
            open_manifests: list[list[dict[str, Any]]] = list(s.scalars(sa.select(IngestSession.manifest).where(
                IngestSession.agent_id == request.agent_id, IngestSession.status == "open",
                IngestSession.opened_at >= now - limits.OPEN_WINDOW)))
            open_sizes = [_declared(m) for m in open_manifests]
            limits.check_open_sessions(request.agent_id, open_sizes, _declared(manifest),
                                       max_sessions=self.config.agent_max_open_sessions,
                                       max_bytes=self.config.agent_max_declared_bytes)
            self._touch_agent(s, request, department_id, now)
            s.add(IngestSession(
                session_id=request.session_id, agent_id=request.agent_id,
                department_id=department_id, patient_id=request.patient_id,
                mode=MODES[request.mode], ehr_context=request.ehr_context,
                manifest=manifest, evidence=evidence, fingerprint=fingerprint,
                status="open", opened_at=now,
            ))
        log.info("session opened", extra={
            "session_id": request.session_id, "agent_id": request.agent_id,
            "department": request.department_hsa_id, "files": len(manifest),
            "bytes": sum(e["size"] for e in manifest)})
        return pb.OpenSessionResponse(session_id=request.session_id, committed=False)

    def _validate_open(
        self, r: pb.OpenSessionRequest
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        v.session_id(r.session_id)
        v.agent_id(r.agent_id)
        if len(r.agent_version) > 64:
            raise InvalidArgument("agent_version is longer than 64 characters")
        v.hsa_id(r.department_hsa_id)
        v.patient_id(r.patient_id, self._reserve_formats)
        if r.mode not in MODES:
            raise InvalidArgument(f"mode must be one of {', '.join(MODES.values())}, got {r.mode}")
        mode = MODES[r.mode]
        if not r.manifest:
            raise InvalidArgument("the manifest is empty: a session declares at least one file")
        manifest: list[dict[str, Any]] = []
        paths: set[str] = set()
        sizes: dict[str, int] = {}
        for i, e in enumerate(r.manifest):
            where = f"manifest[{i}]"
            v.sha256(e.sha256, f"{where}.sha256")
            v.size(e.size_bytes, f"{where}.size_bytes", self.config.max_blob_bytes)
            v.relative_path(e.relative_path, f"{where}.relative_path")
            if e.relative_path in paths:
                raise InvalidArgument(f"{where}.relative_path {e.relative_path!r} appears twice")
            paths.add(e.relative_path)
            if sizes.setdefault(e.sha256, e.size_bytes) != e.size_bytes:
                raise InvalidArgument(f"{where}: blob {e.sha256} is declared with two different sizes")
            if e.kind not in KINDS:
                raise InvalidArgument(f"{where}.kind must be one of {', '.join(KINDS.values())}")
            v.media_type(e.media_type, f"{where}.media_type")
            for name in ("make", "model", "serial"):
                if len(getattr(e.device, name)) > 255:
                    raise InvalidArgument(f"{where}.device.{name} is longer than 255 characters")
            capture = _timestamp(e.capture_time) if e.HasField("capture_time") else None
            manifest.append({
                "relative_path": e.relative_path, "sha256": e.sha256, "size": e.size_bytes,
                "kind": KINDS[e.kind], "media_type": e.media_type,
                "capture_time": capture.isoformat() if capture else None,
                "device": {"make": e.device.make, "model": e.device.model, "serial": e.device.serial},
            })
        evidence: list[dict[str, Any]] = []
        confirmed = False
        for i, ev in enumerate(r.evidence):
            where = f"evidence[{i}]"
            if ev.relative_path and ev.relative_path not in paths:
                raise InvalidArgument(f"{where}.relative_path {ev.relative_path!r} is not in the manifest")
            if ev.method not in METHODS:
                raise InvalidArgument(f"{where}.method must be one of {', '.join(METHODS.values())}")
            if ev.method == pb.IDENTITY_METHOD_DEVICE and ev.patient_id:
                raise InvalidArgument(f"{where}: a device decision never names a patient")
            if ev.patient_id:
                if ev.patient_id != r.patient_id:
                    # R4: one patient per card. The agent refuses such cards; the
                    # archive refuses them too rather than file a wrong patient.
                    raise InvalidArgument(
                        f"{where} names patient {ev.patient_id}, not the session's patient: "
                        "a card holds media of one patient only"
                    )
                confirmed = True
            evidence.append({
                "relative_path": ev.relative_path, "frame": ev.frame, "method": METHODS[ev.method],
                "symbology": ev.symbology, "text": ev.text, "patient_id": ev.patient_id,
                "position": [ev.x, ev.y, ev.width, ev.height],
            })
        if mode in EHR_MODES and not r.ehr_context:
            raise InvalidArgument(f"{mode} ingest must be started from the EHR with the patient in context")
        if not confirmed and not r.ehr_context:
            raise InvalidArgument(
                "no identity evidence names the patient: media enters the archive only "
                "when the patient's number was read from it (or given by the EHR)"
            )
        return manifest, evidence

    def _department(self, s: Session, hsa_id: str, actor: str) -> Department:
        """The request's department, on a plaintext (development) archive only."""
        department = s.execute(
            sa.select(Department).where(Department.hsa_id == hsa_id)
        ).scalar_one_or_none()
        if department is not None:
            return department
        if not self.config.registers_unknown_departments:
            raise FailedPrecondition(
                f"department {hsa_id} is not registered in this archive "
                "(bildsluss-archive departments add)"
            )
        department = Department(hsa_id=hsa_id, name=hsa_id, registered_by="auto")
        s.add(department)
        s.flush()
        append_audit(s, actor, "department.registered",
                     details={"hsa_id": hsa_id, "name": hsa_id, "how": "first ingest"})
        return department

    @staticmethod
    def _touch_agent(s: Session, r: pb.OpenSessionRequest, department_id: int, now: dt.datetime) -> None:
        agent = s.get(Agent, r.agent_id)
        if agent is None:
            s.add(Agent(agent_id=r.agent_id, department_id=department_id, version=r.agent_version,
                        first_seen=now, last_seen=now))
        else:
            agent.department_id = department_id
            agent.version = r.agent_version
            agent.last_seen = now
        s.flush()

    # -- FindMissingBlobs / QueryWriteStatus --------------------------------------

    def find_missing(self, request: pb.FindMissingBlobsRequest,
                     caller: AgentCaller | None = None) -> pb.FindMissingBlobsResponse:
        v.session_id(request.session_id)
        for i, b in enumerate(request.blobs):
            v.sha256(b.sha256, f"blobs[{i}].sha256")
            v.size(b.size_bytes, f"blobs[{i}].size_bytes")
        with self.db.read() as s:
            info = self._session_info(request.session_id, caller, s)
            for b in request.blobs:
                _require_in_manifest(info, b)
            recorded = _recorded(s, {b.sha256 for b in request.blobs})
        stored = self._held(info, recorded)
        missing: list[pb.BlobDigest] = []
        seen: set[str] = set()
        for b in request.blobs:
            if b.sha256 not in stored and b.sha256 not in seen:
                seen.add(b.sha256)
                missing.append(pb.BlobDigest(sha256=b.sha256, size_bytes=b.size_bytes))
        return pb.FindMissingBlobsResponse(missing=missing)

    def query_write_status(self, request: pb.QueryWriteStatusRequest,
                           caller: AgentCaller | None = None) -> pb.QueryWriteStatusResponse:
        v.session_id(request.session_id)
        if not request.HasField("blob"):
            raise InvalidArgument("blob is required")
        v.sha256(request.blob.sha256, "blob.sha256")
        with self.db.read() as s:
            info = self._session_info(request.session_id, caller, s)
            _require_in_manifest(info, request.blob)
            recorded = _recorded(s, {request.blob.sha256})
        if self._held(info, recorded):
            return pb.QueryWriteStatusResponse(committed_size=request.blob.size_bytes, complete=True)
        size = self.blobs.committed_size(PartialKey(request.session_id, request.blob.sha256))
        return pb.QueryWriteStatusResponse(committed_size=size, complete=False)

    # -- Write ------------------------------------------------------------------------

    def write(self, requests: Iterator[pb.WriteRequest], caller: AgentCaller | None = None,
              stream: limits.StreamHandle | None = None) -> pb.WriteResponse:
        """``stream``: the counted stream this call is (``limits``), held to its agent's limit."""
        first = next(requests, None)
        if first is None:
            raise InvalidArgument("empty Write stream: the first message names the session and blob")
        v.session_id(first.session_id)
        if not first.HasField("blob"):
            raise InvalidArgument("the first Write message must carry the blob digest")
        sha, size = v.sha256(first.blob.sha256, "blob.sha256"), first.blob.size_bytes
        # One read transaction for the session and the blob's row: a card's new
        # blobs (every Write of a first upload) end their reading here (issue 12).
        with self.db.read() as s:
            info = self._session_info(first.session_id, caller, s)
            _require_in_manifest(info, first.blob)
            recorded = _recorded(s, {sha})
        if stream is not None:
            stream.belongs_to(info.agent_id)
        if self._held(info, recorded):
            return pb.WriteResponse(committed_size=size, complete=True)
        # A committed session's blob whose stored bytes are gone (a disk fault, an
        # old backup restored) is received again: the card that holds them is the
        # only other copy, and the agent re-sends before it wipes (issue 13).
        # Stored for another department, stored without a record, or not at all:
        # the bytes are received and verified either way (committing identical
        # bytes again changes nothing stored), and only then count as this
        # session's. A file in the store proves nothing about who sent it.

        key = PartialKey(first.session_id, sha)
        message: pb.WriteRequest | None = first
        # Leaving the writer without a commit keeps what is durable resumable.
        with self.blobs.begin_write(key) as writer:
            if log.isEnabledFor(logging.DEBUG):  # committed_size is a stat() of the partial
                log.debug("write started", extra={"session_id": key.session_id, "sha256": sha,
                                                  "offset": first.offset, "committed": writer.committed_size})
            while message is not None:
                if message is not first:
                    if message.session_id and message.session_id != first.session_id:
                        raise InvalidArgument("a Write message names another session than the first")
                    if message.HasField("blob") and message.blob != first.blob:
                        raise InvalidArgument("a Write message names another blob than the first")
                if len(message.data) > limits.MAX_CHUNK_BYTES:
                    raise InvalidArgument(f"a chunk of {len(message.data)} bytes; at most "
                                          f"{limits.MAX_CHUNK_BYTES} (1 MiB) per WriteRequest")
                end = message.offset + len(message.data)
                if message.offset < 0:
                    raise InvalidArgument(f"negative offset {message.offset}")
                if end > size:
                    raise InvalidArgument(f"data beyond the declared size: bytes up to {end} of a "
                                          f"{size}-byte blob")
                if message.data:
                    writer.write(message.offset, message.data)
                    faults.reach("write.chunk_written")
                elif message.offset != writer.offset:
                    raise OutOfRange(f"write at offset {message.offset}, but the committed "
                                     f"size is {writer.committed_size}", writer.committed_size)
                if message.finish_write:
                    storage_key = writer.commit(sha, size)
                    faults.reach("write.blob_committed")
                    # The blob's row and "this session sent it" in one transaction.
                    catalogue.record(self.db, self.blobs, sha, size, storage_key, sent_by=key.session_id)
                    faults.reach("write.blob_recorded")
                    log.info("blob stored", extra={"session_id": key.session_id, "sha256": sha,
                                                   "size": size})
                    return pb.WriteResponse(committed_size=size, complete=True)
                message = next(requests, None)
        return pb.WriteResponse(committed_size=self.blobs.committed_size(key), complete=False)

    # -- CommitSession ------------------------------------------------------------

    def commit_session(self, request: pb.CommitSessionRequest,
                       caller: AgentCaller | None = None) -> pb.CommitSessionResponse:
        v.session_id(request.session_id)
        with self.db.read() as s:
            self._session_info(request.session_id, caller, s)  # the caller's own session, or refused
        response, created, (department, size) = retry_on_conflict(lambda: self._commit(request.session_id, caller))
        faults.reach("commit.committed")
        if created:
            metrics.CASES_INGESTED.labels(department=department).inc()
            metrics.BYTES_INGESTED.labels(department=department).inc(size)
            self.blobs.discard_session(request.session_id)  # leftovers of deduplicated blobs
            faults.reach("commit.partials_discarded")
            log.info("case ingested", extra={"session_id": request.session_id,
                                             "case_id": response.case_id,
                                             "files": len(response.receipts)})
        return response

    def _commit(self, session_id: str, caller: AgentCaller | None
                ) -> tuple[pb.CommitSessionResponse, bool, tuple[str, int]]:
        """The receipts, whether this call made the case, and (for the
        metrics) its department and the bytes of its media."""
        faults.reach("commit.begin")
        with self.db.write() as s:
            sess = s.execute(
                sa.select(IngestSession).where(IngestSession.session_id == session_id).with_for_update()
            ).scalar_one_or_none()
            if sess is None:
                raise NotFound(f"unknown session {session_id}")
            if sess.status == "committed":
                return self._receipts(s, sess), False, ("", 0)
            faults.reach("commit.session_locked")
            manifest: list[dict[str, Any]] = sess.manifest
            # Share-locked until the case is committed, so that no purge can
            # tombstone them meanwhile; each confirmed in the store (issue 13).
            stored = catalogue.lock_stored(s, {e["sha256"] for e in manifest})
            faults.reach("commit.blobs_locked")
            # Only blobs this session may file: its department's, or sent by it.
            held = _held_by(s, session_id, sess.department_id, set(stored))
            present = {sha for sha, b in stored.items()
                       if sha in held and catalogue.present(self.blobs, sha, b.size)}
            faults.reach("commit.blobs_confirmed")
            missing = [e for e in manifest if e["sha256"] not in present]
            if missing:
                listed = ", ".join(f"{e['relative_path']} ({e['sha256']})" for e in missing[:_MAX_LISTED])
                more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
                raise FailedPrecondition(
                    f"{len(missing)} blob(s) of session {session_id} are not durably stored, or not "
                    "sent by this session or held by its department, yet: "
                    f"{listed}{more}"
                )
            now = utcnow()
            actor = f"agent:{sess.agent_id}"
            # R17: a patient marked confidential stays so for cases ingested later.
            # The patient's lock first: a mark being made right now is seen.
            lock_patient(s, sess.patient_id)
            confidential = s.get(ConfidentialPatient, sess.patient_id) is not None
            faults.reach("commit.patient_locked")
            case = Case(id=str(uuid.uuid4()), patient_id=sess.patient_id,
                        department_id=sess.department_id, status="unsigned", confidential=confidential,
                        created_at=now, current_version=1, source_session_id=session_id)
            # R13: an ingested card is an unsigned case whose form is completed later.
            version = CaseVersion(case=case, version=1, created_at=now, created_by=actor,
                                  fields=case_fields(sess), patient_id=sess.patient_id,
                                  status="unsigned", form_template=DEFAULT_TEMPLATE["name"], form={})
            s.add_all([case, version])
            faults.reach("commit.case_added")
            for position, e in enumerate(manifest):
                device = e.get("device") or {}
                s.add(MediaItem(
                    id=str(uuid.uuid4()), case_version=version, blob_sha256=e["sha256"],
                    relative_path=e["relative_path"], kind=e["kind"], media_type=e["media_type"],
                    capture_time=dt.datetime.fromisoformat(e["capture_time"]) if e["capture_time"] else None,
                    device_make=device.get("make", ""), device_model=device.get("model", ""),
                    device_serial=device.get("serial", ""), position=position,
                ))
            s.flush()
            faults.reach("commit.media_flushed")
            sess.status = "committed"
            sess.case_id = case.id
            sess.committed_at = now
            faults.reach("commit.session_marked")
            department = s.get(Department, sess.department_id)
            details: dict[str, Any] = {
                "session_id": session_id, "patient_id": sess.patient_id,
                "department": department.hsa_id if department else None, "mode": sess.mode,
                "version": 1, "files": len(manifest), "bytes": sum(e["size"] for e in manifest),
            }
            if caller is not None:
                details["certificate"] = caller.fingerprint
            append_audit(s, actor, "case.ingested", case_id=case.id, patient=sess.patient_id,
                         department=department.hsa_id if department else None, details=details)
            s.flush()
            faults.reach("commit.audited")
            return self._receipts(s, sess), True, (details["department"] or "", details["bytes"])

    @staticmethod
    def _receipts(s: Session, sess: IngestSession) -> pb.CommitSessionResponse:
        rows = s.execute(
            sa.select(MediaItem, Blob)
            .join(CaseVersion, MediaItem.case_version_id == CaseVersion.id)
            .join(Blob, MediaItem.blob_sha256 == Blob.sha256)
            .where(CaseVersion.case_id == sess.case_id, CaseVersion.version == 1)
            .order_by(MediaItem.position)
        ).all()
        return pb.CommitSessionResponse(
            case_id=sess.case_id or "",
            case_version=1,
            receipts=[
                pb.FileReceipt(relative_path=item.relative_path, sha256=blob.sha256,
                               size_bytes=blob.size, blob_id=blob.storage_key, media_item_id=item.id)
                for item, blob in rows
            ],
        )

    # -- helpers ------------------------------------------------------------------

    def _session_info(self, session_id: str, caller: AgentCaller | None, s: Session) -> OpenSessionInfo:
        """The session, once it is the caller's own (refused otherwise). Its row
        is read on every call (it may have been committed, or purged, by another
        process); its manifest only when this process has not parsed it yet."""
        self._trusted(caller)
        conn = s.connection()
        row = conn.execute(_SESSION_ROW, {"session_id": session_id}).one_or_none()
        sizes = self._manifests.get((session_id, row.fingerprint)) if row is not None else None
        if row is not None and sizes is None:
            # Read again with the manifest, all in one statement: what is kept is
            # the manifest of the fingerprint it is kept by, even should the row
            # change between two statements (PostgreSQL's read committed).
            row = conn.execute(_SESSION_WITH_MANIFEST, {"session_id": session_id}).one_or_none()
            if row is not None:
                sizes = {e["sha256"]: e["size"] for e in row.manifest}
                self._manifests.put((session_id, row.fingerprint), sizes)
        if row is None or sizes is None:
            raise NotFound(f"unknown session {session_id}: call OpenSession first")
        if caller is not None:
            caller.check_session(session_id, row.agent_id, row.department_id)
        return OpenSessionInfo(session_id, row.status == "committed", sizes, row.agent_id, row.department_id)

    def _held(self, info: OpenSessionInfo, recorded: set[str]) -> set[str]:
        """Those of ``recorded`` (``_recorded``) this session need not send: held
        (``_held_by``) and confirmed in the store."""
        # Only a blob recorded as stored can be held: the Writes of a card's new
        # blobs (every Write of a first upload) end here.
        if not recorded:
            return set()
        with self.db.read() as s:
            held = _held_by(s, info.session_id, info.department_id, recorded)
            sent = set(s.scalars(sa.select(SessionBlob.sha256).where(
                SessionBlob.session_id == info.session_id, SessionBlob.sha256.in_(held))))
        confirmed = catalogue.confirmed(self.db, self.blobs, held)
        # Bytes another card sent stand for this one only once hashed (issue 13).
        return (confirmed & sent) | catalogue.whole(self.db, self.blobs, confirmed - sent)


# Prepared once: these run on every Write, FindMissingBlobs and QueryWriteStatus (issue 12).
_SESSIONS = cast(sa.Table, IngestSession.__table__)
_SESSION_ROW = sa.select(_SESSIONS.c.status, _SESSIONS.c.agent_id, _SESSIONS.c.department_id,
                         _SESSIONS.c.fingerprint).where(_SESSIONS.c.session_id == sa.bindparam("session_id"))
_SESSION_WITH_MANIFEST = sa.select(*_SESSION_ROW.selected_columns, _SESSIONS.c.manifest).where(
    _SESSIONS.c.session_id == sa.bindparam("session_id"))
_BLOBS = cast(sa.Table, Blob.__table__)
_RECORDED = sa.select(_BLOBS.c.sha256).where(_BLOBS.c.sha256.in_(sa.bindparam("shas", expanding=True)),
                                             _BLOBS.c.state == catalogue.STORED)


def _recorded(s: Session, shas: set[str]) -> set[str]:
    """Those of ``shas`` whose blob row says stored (not yet that the store has them)."""
    return set(s.connection().execute(_RECORDED, {"shas": sorted(shas)}).scalars())


class _ParsedManifests:
    """The blob sizes of recently used sessions' manifests, by (session id,
    fingerprint): a session's fingerprint is the SHA-256 of its manifest (among
    the rest), and the manifest of a session id never changes while its row
    lives, so an entry is right for as long as the row still has that
    fingerprint. Parsing a card's manifest on each of its Writes cost CPU in
    proportion to the card (issue 12)."""

    def __init__(self, capacity: int = 256) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[tuple[str, str], dict[str, int]] = collections.OrderedDict()

    def get(self, key: tuple[str, str]) -> dict[str, int] | None:
        with self._lock:
            sizes = self._entries.get(key)
            if sizes is not None:
                self._entries.move_to_end(key)
            return sizes

    def put(self, key: tuple[str, str], sizes: dict[str, int]) -> None:
        with self._lock:
            self._entries[key] = sizes
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


def _declared(manifest: list[dict[str, Any]]) -> int:
    """The bytes a session's manifest declares, each blob once."""
    return sum({e["sha256"]: e["size"] for e in manifest}.values())


def _held_by(s: Session, session_id: str, department_id: int, shas: set[str]) -> set[str]:
    """Those of ``shas`` the session's department holds (a media item of one of
    its cases, any version) or the session itself sent. Any other must be sent,
    even when the bytes are stored for another department: knowing a digest is
    not holding the image (issue 10). Whether the bytes are still stored is the
    catalogue's question (``blobs.confirmed``)."""
    if not shas:
        return set()
    sent = set(s.scalars(sa.select(SessionBlob.sha256).where(
        SessionBlob.session_id == session_id, SessionBlob.sha256.in_(shas))))
    in_cases = set(s.scalars(
        sa.select(MediaItem.blob_sha256).distinct()
        .join(CaseVersion, MediaItem.case_version_id == CaseVersion.id)
        .join(Case, Case.id == CaseVersion.case_id)
        .where(Case.department_id == department_id, MediaItem.blob_sha256.in_(shas - sent))))
    return sent | in_cases


def session_fingerprint(request: pb.OpenSessionRequest) -> str:
    """SHA-256 of what defines the card: agent, department, patient, mode,
    manifest, EHR context. Left out: ``agent_version`` (an agent upgraded
    between a call and its retry still sends the same card) and ``evidence``
    (a re-read of the same card may find a label once more or once less; the
    first session's evidence is the one kept)."""
    content = pb.OpenSessionRequest()
    content.CopyFrom(request)
    content.agent_version = ""
    del content.evidence[:]
    return hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()


def case_fields(sess: IngestSession) -> dict[str, Any]:
    """The capture facts of an ingested card, as a case version's fields (R7, R13)."""
    manifest: list[dict[str, Any]] = sess.manifest
    times = sorted(e["capture_time"] for e in manifest if e["capture_time"])
    devices: list[dict[str, str]] = []
    for e in manifest:
        d = e.get("device") or {}
        if any(d.values()) and d not in devices:
            devices.append(d)
    return {
        "source": "ingest",
        "session_id": sess.session_id,
        "agent_id": sess.agent_id,
        "mode": sess.mode,
        "ehr_context": sess.ehr_context,
        "capture_time_first": times[0] if times else None,
        "capture_time_last": times[-1] if times else None,
        "devices": devices,
        "files": [
            {k: e[k] for k in ("relative_path", "sha256", "size", "kind", "media_type", "capture_time")}
            for e in manifest
        ],
        "identity_evidence": sess.evidence,
    }


def _require_in_manifest(info: OpenSessionInfo, blob: pb.BlobDigest) -> None:
    if info.sizes.get(blob.sha256) != blob.size_bytes:
        raise FailedPrecondition(
            f"blob {blob.sha256} ({blob.size_bytes} bytes) is not in the manifest of session "
            f"{info.session_id}"
        )


def _timestamp(ts: Any) -> dt.datetime:
    try:
        return ts.ToDatetime(tzinfo=dt.timezone.utc)
    except (ValueError, OverflowError) as e:
        raise InvalidArgument(f"capture_time out of range: {e}") from None
