"""Small helpers to drive the archive's Ingest service in tests (reusable).

    with ingest_stub(address) as stub:
        request, response = ingest_files(stub, {"DCIM/IMG_0001.JPG": b"..."})

Everything here speaks the real protocol over a real channel; nothing is mocked.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator, Mapping, Sequence

import grpc
from google.protobuf import timestamp_pb2

from bildsluss.v1 import ingest_pb2 as pb
from bildsluss.v1 import ingest_pb2_grpc as pb_grpc

DEPARTMENT = "SE2321000016-15CQ"
CHUNK = 1 << 20
TIMEOUT = 30.0
DEVICE = ("Canon", "Canon EOS 250D", "083051006721")


def luhn_digit(nine: str) -> str:
    total = 0
    for i, ch in enumerate(nine):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def personnummer(birth: str | None = None, serial: str | None = None) -> str:
    """A valid canonical personnummer (12 digits) born ``birth`` (YYYYMMDD);
    a random birth date (1950–1999, day ≤ 28) and serial unless given.

    Tests share one archive per worker and look cases up by patient, so the
    default must not repeat: a fixed birth date with only a random serial
    collided often enough to fail runs."""
    rnd = uuid.uuid4().int
    if birth is None:
        birth = f"{1950 + rnd % 50}{1 + (rnd >> 8) % 12:02d}{1 + (rnd >> 16) % 28:02d}"
    if serial is None:
        serial = f"{1 + (rnd >> 24) % 999:03d}"  # 000 is never issued
    nine = birth[2:] + serial
    return birth + serial + luhn_digit(nine)


def new_session_id() -> str:
    return str(uuid.uuid4())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(data: bytes) -> pb.BlobDigest:
    return pb.BlobDigest(sha256=sha256_hex(data), size_bytes=len(data))


def manifest_entry(
    relative_path: str,
    data: bytes,
    *,
    kind: int = pb.MEDIA_KIND_IMAGE,
    media_type: str = "image/jpeg",
    capture_time: dt.datetime | None = None,
    device: tuple[str, str, str] = DEVICE,
) -> pb.ManifestEntry:
    entry = pb.ManifestEntry(
        sha256=sha256_hex(data), size_bytes=len(data), kind=kind, relative_path=relative_path,
        media_type=media_type, device=pb.Device(make=device[0], model=device[1], serial=device[2]),
    )
    if capture_time is not None:
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(capture_time)
        entry.capture_time.CopyFrom(ts)
    return entry


def open_request(
    files: Mapping[str, bytes],
    *,
    session_id: str | None = None,
    patient_id: str | None = None,
    department: str = DEPARTMENT,
    mode: int = pb.CAPTURE_MODE_PHOTO,
    agent_id: str = "test-agent",
    agent_version: str = "0.0-test",
    ehr_context: bool = False,
    evidence: Sequence[pb.IdentityEvidence] | None = None,
) -> pb.OpenSessionRequest:
    """An OpenSession request for ``files`` (relative path -> bytes, in capture
    order), with barcode evidence on the first and last file unless given."""
    patient_id = patient_id or personnummer()
    paths = list(files)
    base = dt.datetime(2025, 3, 14, 9, 30, tzinfo=dt.timezone.utc)
    manifest = [
        manifest_entry(p, files[p], capture_time=base + dt.timedelta(seconds=i))
        for i, p in enumerate(paths)
    ]
    if evidence is None:
        evidence = [
            pb.IdentityEvidence(relative_path=p, frame=0, method=pb.IDENTITY_METHOD_BARCODE,
                                symbology="Code128", text=patient_id, patient_id=patient_id,
                                x=10, y=20, width=300, height=80)
            for p in dict.fromkeys([paths[0], paths[-1]])
        ]
    return pb.OpenSessionRequest(
        session_id=session_id or new_session_id(), agent_id=agent_id, agent_version=agent_version,
        department_hsa_id=department, patient_id=patient_id, mode=mode, manifest=manifest,
        evidence=evidence, ehr_context=ehr_context,
    )


@contextlib.contextmanager
def ingest_stub(address: str) -> Iterator[pb_grpc.IngestStub]:
    """An Ingest stub on a plaintext channel to ``address`` (closed at the end)."""
    channel = grpc.insecure_channel(address, options=[
        ("grpc.max_send_message_length", 8 << 20), ("grpc.enable_retries", 0)])
    try:
        yield pb_grpc.IngestStub(channel)
    finally:
        channel.close()


def write_requests(
    session_id: str,
    data: bytes,
    *,
    offset: int = 0,
    end: int | None = None,
    chunk_size: int = CHUNK,
    finish: bool = True,
    blob: pb.BlobDigest | None = None,
) -> Iterator[pb.WriteRequest]:
    """The Write stream for ``data[offset:end]`` (the first message names the
    session and blob); ``finish_write`` on the last message when ``finish``."""
    end = len(data) if end is None else end
    blob = blob or digest(data)
    first = True
    position = offset
    while True:
        piece = data[position:min(position + chunk_size, end)]
        last = position + len(piece) >= end
        request = pb.WriteRequest(offset=position, data=piece, finish_write=finish and last)
        if first:
            request.session_id = session_id
            request.blob.CopyFrom(blob)
            first = False
        yield request
        position += len(piece)
        if last:
            return


def write_blob(
    stub: pb_grpc.IngestStub,
    session_id: str,
    data: bytes,
    *,
    offset: int = 0,
    end: int | None = None,
    chunk_size: int = CHUNK,
    finish: bool = True,
    timeout: float = TIMEOUT,
) -> pb.WriteResponse:
    """Send ``data[offset:end]`` of one blob in one Write call."""
    return stub.Write(
        write_requests(session_id, data, offset=offset, end=end, chunk_size=chunk_size, finish=finish),
        timeout=timeout,
    )


def query_status(stub: pb_grpc.IngestStub, session_id: str, data: bytes) -> pb.QueryWriteStatusResponse:
    return stub.QueryWriteStatus(pb.QueryWriteStatusRequest(session_id=session_id, blob=digest(data)),
                                 timeout=TIMEOUT)


def find_missing(stub: pb_grpc.IngestStub, session_id: str, blobs: Sequence[bytes]) -> set[str]:
    response = stub.FindMissingBlobs(
        pb.FindMissingBlobsRequest(session_id=session_id, blobs=[digest(b) for b in blobs]),
        timeout=TIMEOUT,
    )
    return {m.sha256 for m in response.missing}


def upload_missing(stub: pb_grpc.IngestStub, session_id: str, files: Mapping[str, bytes]) -> list[str]:
    """FindMissingBlobs, then write each missing blob (resuming where the
    archive says); returns the sha256s that were sent."""
    unique = {sha256_hex(b): b for b in files.values()}
    missing = find_missing(stub, session_id, list(unique.values()))
    for sha in missing:
        data = unique[sha]
        status = query_status(stub, session_id, data)
        if not status.complete:
            response = write_blob(stub, session_id, data, offset=status.committed_size)
            assert response.complete and response.committed_size == len(data), response
    return sorted(missing)


def commit(stub: pb_grpc.IngestStub, session_id: str) -> pb.CommitSessionResponse:
    return stub.CommitSession(pb.CommitSessionRequest(session_id=session_id), timeout=TIMEOUT)


def ingest_files(
    stub: pb_grpc.IngestStub, files: Mapping[str, bytes], **open_kwargs: object
) -> tuple[pb.OpenSessionRequest, pb.CommitSessionResponse]:
    """The whole exchange for one card: open, find missing, write, commit."""
    request = open_request(files, **open_kwargs)  # type: ignore[arg-type]
    stub.OpenSession(request, timeout=TIMEOUT)
    upload_missing(stub, request.session_id, files)
    return request, commit(stub, request.session_id)


def status_code(call: object) -> grpc.StatusCode:
    """The status code of a failed call: ``status_code(lambda: stub.X(...))``."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as e:
        return e.code()
    raise AssertionError("the call succeeded")
