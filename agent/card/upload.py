"""Upload stage: stream stripped files to the archive over gRPC and commit the card.

Follows the exchange in ``protos/bildsluss/v1/ingest.proto``: OpenSession,
FindMissingBlobs, QueryWriteStatus + Write (resumable), CommitSession. Every
call has a deadline. Transient failures (UNAVAILABLE, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED) are retried with backoff within a budget and then raise
:class:`ArchiveUnavailable`; refusals raise :class:`ArchiveRejected`. Both
leave the card untouched: the caller decides.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import grpc
from google.protobuf import timestamp_pb2

from agent import __version__
from agent.channel import open_channel
from agent.config import ArchiveConfig
from agent.card.model import Decision, Evidence, MediaKind, Method, Mode, Receipt, StrippedFile
from agent.card.progress import SentFile
from bildsluss.v1 import ingest_pb2 as pb
from bildsluss.v1 import ingest_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    # The archive cancels a Write stream that stalled (write_idle_timeout_s); the
    # upload resumes from the committed size.
    grpc.StatusCode.CANCELLED,
}
# A blob whose bytes arrive corrupted is sent again from the start this often.
_DATA_LOSS_RETRIES = 2

_MODES = {
    Mode.PHOTO: pb.CAPTURE_MODE_PHOTO,
    Mode.ASSAULT: pb.CAPTURE_MODE_ASSAULT,
    Mode.ULTRASOUND: pb.CAPTURE_MODE_ULTRASOUND,
    Mode.VIDEO: pb.CAPTURE_MODE_VIDEO,
    Mode.AUDIO: pb.CAPTURE_MODE_AUDIO,
}
_KINDS = {
    MediaKind.IMAGE: pb.MEDIA_KIND_IMAGE,
    MediaKind.VIDEO: pb.MEDIA_KIND_VIDEO,
    MediaKind.AUDIO: pb.MEDIA_KIND_AUDIO,
    MediaKind.DICOM: pb.MEDIA_KIND_DICOM,
}
_METHODS = {
    Method.BARCODE: pb.IDENTITY_METHOD_BARCODE,
    Method.OCR: pb.IDENTITY_METHOD_OCR,
    Method.DICOM_HEADER: pb.IDENTITY_METHOD_DICOM_HEADER,
    Method.EHR_CONTEXT: pb.IDENTITY_METHOD_EHR_CONTEXT,
    Method.DEVICE: pb.IDENTITY_METHOD_DEVICE,
}


class ArchiveUnavailable(Exception):
    """The archive could not be reached within the retry budget (R12)."""


class ArchiveRejected(Exception):
    """The archive answered, and refused: retrying the same request will not help."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class CommitResult:
    case_id: str
    case_version: int
    receipts: tuple[Receipt, ...]


@dataclasses.dataclass(frozen=True)
class UploadProgress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


def build_open_request(
    session_id: str,
    agent_id: str,
    department: str,
    mode: Mode,
    decision: Decision,
    files: Sequence[StrippedFile],
    device_evidence: Sequence[Evidence] = (),
) -> pb.OpenSessionRequest:
    manifest = []
    for f in files:
        entry = pb.ManifestEntry(
            sha256=f.sha256,
            size_bytes=f.size,
            kind=_KINDS[f.source.kind],
            relative_path=f.source.relative_path,
            media_type=f.source.media_type,
            device=pb.Device(
                make=f.source.device.make, model=f.source.device.model, serial=f.source.device.serial
            ),
        )
        if f.source.capture_time is not None:
            ts = timestamp_pb2.Timestamp()
            ts.FromDatetime(f.source.capture_time)
            entry.capture_time.CopyFrom(ts)
        manifest.append(entry)
    evidence = [
        pb.IdentityEvidence(
            relative_path=e.relative_path,
            frame=e.frame,
            method=_METHODS[e.method],
            symbology=e.symbology,
            text=e.text,
            patient_id=e.patient_id or "",
            x=e.position[0],
            y=e.position[1],
            width=e.position[2],
            height=e.position[3],
        )
        for e in (*decision.evidence, *device_evidence)
    ]
    return pb.OpenSessionRequest(
        session_id=session_id,
        agent_id=agent_id,
        agent_version=__version__,
        department_hsa_id=department,
        patient_id=decision.patient_id or "",
        mode=_MODES[mode],
        manifest=manifest,
        evidence=evidence,
        ehr_context=decision.ehr_context,
    )


class ArchiveClient:
    """One connection to the archive, used for one card at a time."""

    def __init__(self, config: ArchiveConfig, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self._sleep = sleep
        options = [
            ("grpc.max_send_message_length", config.chunk_bytes + (1 << 20)),
            ("grpc.max_receive_message_length", 16 << 20),
            ("grpc.enable_retries", 0),  # we retry ourselves, visibly
        ]
        self._channel = open_channel(config, options)
        self._stub = pb_grpc.IngestStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ArchiveClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection and retries ---------------------------------------------------

    def wait_until_reachable(self) -> None:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=self.config.connect_timeout_s)
        except grpc.FutureTimeoutError:
            raise ArchiveUnavailable(
                f"no connection to the archive at {self.config.address} "
                f"within {self.config.connect_timeout_s:g} s"
            ) from None

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one call, retrying transient failures with backoff within the budget."""
        deadline = time.monotonic() + self.config.retry_budget_s
        delay = 0.2
        attempt = 1
        while True:
            try:
                return fn()
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in _RETRYABLE:
                    raise ArchiveRejected(f"{what}: {code.name}: {exc.details()}", code) from None
                if time.monotonic() + delay > deadline:
                    raise ArchiveUnavailable(
                        f"{what}: archive unavailable after {attempt} attempts: "
                        f"{code.name}: {exc.details()}"
                    ) from None
                log.warning("archive call failed, retrying", extra={
                    "call": what, "code": code.name, "attempt": attempt, "retry_in_s": delay})
                self._sleep(delay)
                delay = min(delay * 2, 5.0)
                attempt += 1

    # -- the exchange ------------------------------------------------------------------

    def open_session(self, request: pb.OpenSessionRequest) -> pb.OpenSessionResponse:
        return self._call(
            "OpenSession",
            lambda: self._stub.OpenSession(request, timeout=self.config.call_timeout_s),
        )

    def find_missing(self, session_id: str, files: Sequence[StrippedFile] | Sequence[SentFile]) -> set[str]:
        request = pb.FindMissingBlobsRequest(
            session_id=session_id,
            blobs=[pb.BlobDigest(sha256=f.sha256, size_bytes=f.size) for f in files],
        )
        response = self._call(
            "FindMissingBlobs",
            lambda: self._stub.FindMissingBlobs(request, timeout=self.config.call_timeout_s),
        )
        return {b.sha256 for b in response.missing}

    def upload(
        self,
        session_id: str,
        files: Sequence[StrippedFile],
        progress: Callable[[UploadProgress], None] | None = None,
    ) -> None:
        """Send every blob the archive lacks; resumes partly sent ones.

        Up to ``config.upload_streams`` Write streams at once: the archive
        fsyncs and checks each blob when it ends, and one stream at a time
        would leave the link (and the archive's other core) idle meanwhile.
        The first failure stops the rest (those not yet started are not sent)
        and is raised; what was sent stays resumable."""
        unique = {f.sha256: f for f in files}  # a card may hold the same bytes twice
        missing = self.find_missing(session_id, list(unique.values()))
        todo = [f for sha, f in unique.items() if sha in missing]
        total = sum(f.size for f in todo)
        lock = threading.Lock()
        in_flight: dict[int, int] = {}
        state = {"files": 0, "bytes": 0}

        def reporter(index: int) -> Callable[[int], None]:
            return lambda file_bytes: sent(index, file_bytes)

        def sent(index: int, file_bytes: int) -> None:  # on a Write stream's request thread
            if progress is None:
                return
            with lock:
                in_flight[index] = file_bytes
                now = UploadProgress(state["files"], len(todo), state["bytes"] + sum(in_flight.values()), total)
            progress(now)

        streams = max(1, min(self.config.upload_streams, len(todo)))
        if streams == 1:
            for index, f in enumerate(todo):
                self._upload_one(session_id, f, reporter(index))
                self._file_sent(f, index, lock, in_flight, state, len(todo), total, progress)
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=streams,
                                                   thread_name_prefix="upload") as pool:
            futures = {pool.submit(self._upload_one, session_id, f, reporter(index)): (index, f)
                       for index, f in enumerate(todo)}
            try:
                for future in concurrent.futures.as_completed(futures):
                    future.result()
                    index, f = futures[future]
                    self._file_sent(f, index, lock, in_flight, state, len(todo), total, progress)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    @staticmethod
    def _file_sent(f: StrippedFile, index: int, lock: threading.Lock, in_flight: dict[int, int],
                   state: dict[str, int], files_total: int, total: int,
                   progress: Callable[[UploadProgress], None] | None) -> None:
        with lock:
            in_flight.pop(index, None)
            state["files"] += 1
            state["bytes"] += f.size
            now = UploadProgress(state["files"], files_total, state["bytes"] + sum(in_flight.values()), total)
        if progress is not None:
            progress(now)

    def _upload_one(self, session_id: str, f: StrippedFile,
                    on_bytes: Callable[[int], None] | None = None) -> None:
        digest = pb.BlobDigest(sha256=f.sha256, size_bytes=f.size)
        # The first Write of a blob starts at offset 0 without asking
        # (FindMissingBlobs has just said it is missing: one round trip less
        # per file); an archive holding part of it from an earlier run answers
        # OUT_OF_RANGE, and every later try asks where to resume.
        asked = [False]

        def write() -> pb.WriteResponse:
            ask, asked[0] = asked[0], True
            return self._write_from(session_id, f, digest, on_bytes, ask=ask)

        data_loss = 0
        for _attempt in range(_DATA_LOSS_RETRIES + 2):  # one more: a first, unasked try
            try:
                response = self._call("Write", write)
            except ArchiveRejected as exc:
                if exc.code == grpc.StatusCode.DATA_LOSS and data_loss < _DATA_LOSS_RETRIES:
                    data_loss += 1
                    log.warning("archive saw corrupted bytes, sending again", extra={
                        "file": f.source.relative_path, "attempt": data_loss})
                    continue
                if exc.code == grpc.StatusCode.OUT_OF_RANGE:
                    continue  # part of it is there already, or another writer moved the offset: ask, resume
                raise
            if response.complete and response.committed_size == f.size:
                return
            raise ArchiveRejected(
                f"Write of {f.source.relative_path}: archive did not confirm the blob "
                f"(committed {response.committed_size} of {f.size} bytes)"
            )
        raise ArchiveRejected(f"Write of {f.source.relative_path}: gave up after repeated DATA_LOSS or OUT_OF_RANGE")

    def _write_from(self, session_id: str, f: StrippedFile, digest: pb.BlobDigest,
                    on_bytes: Callable[[int], None] | None = None, *, ask: bool = True) -> pb.WriteResponse:
        offset = 0
        if ask:
            # Ask where to start inside the retried unit, so that a retry after a
            # dropped stream resumes instead of resending (the committed size
            # never goes backwards, proto "Retries").
            status = self._stub.QueryWriteStatus(
                pb.QueryWriteStatusRequest(session_id=session_id, blob=digest),
                timeout=self.config.call_timeout_s,
            )
            if status.complete:
                return pb.WriteResponse(committed_size=f.size, complete=True)
            offset = status.committed_size
        remaining = f.size - offset
        timeout = 30.0 + remaining / (1 << 20)
        return self._stub.Write(self._chunks(session_id, f, digest, offset, on_bytes), timeout=timeout)

    def _chunks(
        self, session_id: str, f: StrippedFile, digest: pb.BlobDigest, offset: int,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Iterator[pb.WriteRequest]:
        with open(f.spool_path, "rb") as fh:
            fh.seek(offset)
            first = True
            while True:
                data = fh.read(self.config.chunk_bytes)
                finish = fh.tell() >= f.size or not data
                request = pb.WriteRequest(offset=offset, data=data, finish_write=finish)
                if first:
                    request.session_id = session_id
                    request.blob.CopyFrom(digest)
                    first = False
                yield request
                offset += len(data)
                if on_bytes is not None:
                    _report_bytes(on_bytes, offset)
                if finish:
                    return

    def commit(self, session_id: str, resend: Sequence[StrippedFile] = ()) -> CommitResult:
        """CommitSession. When the archive answers that blobs of the session are not
        stored (FAILED_PRECONDITION: e.g. a stored file was lost between
        FindMissingBlobs and the commit) and ``resend`` holds the session's files,
        the missing ones are asked for and sent again, once, then committed again.
        Anything else the archive refuses raises, and the card stays as it was."""
        try:
            return self._commit(session_id)
        except ArchiveRejected as exc:
            if exc.code != grpc.StatusCode.FAILED_PRECONDITION or not resend:
                raise
            log.warning("archive lacks blobs at commit, sending them again", extra={"detail": str(exc)})
        self.upload(session_id, resend)
        return self._commit(session_id)

    def _commit(self, session_id: str) -> CommitResult:
        response = self._call(
            "CommitSession",
            lambda: self._stub.CommitSession(
                pb.CommitSessionRequest(session_id=session_id), timeout=self.config.call_timeout_s
            ),
        )
        return CommitResult(
            case_id=response.case_id,
            case_version=response.case_version,
            receipts=tuple(
                Receipt(
                    relative_path=r.relative_path,
                    sha256=r.sha256,
                    size=r.size_bytes,
                    blob_id=r.blob_id,
                    media_item_id=r.media_item_id,
                )
                for r in response.receipts
            ),
        )


def _report_bytes(on_bytes: Callable[[int], None], offset: int) -> None:
    # Runs on gRPC's request thread, between two chunks: a progress display
    # must never break (or stop) an upload.
    try:
        on_bytes(offset)
    except Exception as exc:  # noqa: BLE001
        log.debug("upload progress callback failed", extra={"detail": repr(exc)})
