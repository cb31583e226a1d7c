"""Issue 13, denial of service: what one agent may hold of the archive at once
(``archive_server/limits.py``), against a real ``serve`` process.

Before: one agent could declare a 1,600 GiB session, open 300 sessions and send
a 7 MiB chunk, and 32 idle Write streams took every worker thread so that the
health check timed out.
"""
from __future__ import annotations

import os
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bildsluss.v1 import ingest_pb2 as pb
from bildsluss.v1 import ingest_pb2_grpc as pb_grpc
from tests.archive.client import digest, open_request, personnummer, query_status, status_code
from tests.support.archive_process import ArchiveProcess

LIMITS = """
agent_max_open_sessions = 3
agent_max_declared_bytes = 8388608
"""


def serve(tmp_path, name: str, toml: str) -> ArchiveProcess:
    config = tmp_path / f"{name}.toml"
    config.write_text(toml)
    return ArchiveProcess(data=tmp_path / name, extra_args=("--config", str(config))).start()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    proc = serve(tmp_path_factory.mktemp("limits"), "archive", LIMITS)
    yield proc
    proc.stop()


@pytest.fixture
def channel(archive):
    with grpc.insecure_channel(archive.address, options=[("grpc.max_send_message_length", 16 << 20)]) as ch:
        yield ch


def new_session(stub, agent: str, files: dict[str, bytes]) -> str:
    request = open_request(files, agent_id=agent, patient_id=personnummer())
    stub.OpenSession(request, timeout=30)
    return request.session_id


def refusal(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    raise AssertionError("the call was accepted")


def test_a_chunk_over_1_mib_is_invalid_argument(channel):
    stub = pb_grpc.IngestStub(channel)
    data = os.urandom((1 << 20) + 1)
    session = new_session(stub, "agent-chunk", {"a.jpg": data})
    code, detail = refusal(lambda: stub.Write(iter([pb.WriteRequest(
        session_id=session, blob=digest(data), offset=0, data=data, finish_write=True)]), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 1048576 (1 MiB)" in detail
    assert query_status(stub, session, data).committed_size == 0  # nothing of it kept
    ok = stub.Write(iter([pb.WriteRequest(session_id=session, blob=digest(data), offset=0, data=data[:1 << 20]),
                          pb.WriteRequest(offset=1 << 20, data=data[1 << 20:], finish_write=True)]), timeout=30)
    assert ok.complete


def test_a_session_declaring_more_than_an_agent_may_hold_is_invalid_argument(channel):
    stub = pb_grpc.IngestStub(channel)
    request = open_request({"a.jpg": b"x"}, agent_id="agent-huge")
    request.manifest[0].size_bytes = 16 << 30
    for n in range(1, 100):  # 100 x 16 GiB: the review's 1,600 GiB session
        request.manifest.add(sha256=f"{n:064x}", size_bytes=16 << 30, kind=pb.MEDIA_KIND_IMAGE,
                             relative_path=f"DCIM/{n:04d}.JPG", media_type="image/jpeg")
    code, detail = refusal(lambda: stub.OpenSession(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "agent_max_declared_bytes" in detail


def test_open_sessions_and_declared_bytes_per_agent_are_resource_exhausted(channel):
    stub = pb_grpc.IngestStub(channel)
    big = {"a.jpg": os.urandom(10)}
    request = open_request(big, agent_id="agent-bytes")
    request.manifest[0].size_bytes = 5 << 20
    stub.OpenSession(request, timeout=30)
    second = open_request(big, agent_id="agent-bytes")
    second.manifest[0].size_bytes = 4 << 20
    code, detail = refusal(lambda: stub.OpenSession(second, timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "agent_max_declared_bytes" in detail
    for n in range(3):
        new_session(stub, "agent-sessions", {f"{n}.jpg": os.urandom(10)})
    code, detail = refusal(lambda: new_session(stub, "agent-sessions", {"x.jpg": os.urandom(10)}))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "agent_max_open_sessions = 3" in detail
    # Another agent is not held by them; reopening a known session is not a new one.
    new_session(stub, "agent-other", {"y.jpg": os.urandom(10)})
    assert stub.OpenSession(request, timeout=30).session_id == request.session_id


class IdleStream:
    """A Write stream that sends its first message (or none) and then nothing."""

    def __init__(self, stub, first: pb.WriteRequest | None) -> None:
        self.release = threading.Event()

        def messages():
            if first is not None:
                yield first
            self.release.wait()

        self.future = stub.Write.future(messages(), timeout=300)

    def code(self) -> grpc.StatusCode | None:
        return self.future.exception().code() if self.future.done() else None


def wait_until(predicate, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_health_answers_while_32_idle_streams_are_open(channel):
    stub = pb_grpc.IngestStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    streams = [IdleStream(stub, None) for _ in range(32)]
    try:
        # 24 (max_write_streams) hold their threads; the other 8 are refused at once.
        wait_until(lambda: sum(s.future.done() for s in streams) == 8, "8 streams refused")
        assert {s.code() for s in streams if s.future.done()} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        for _ in range(3):
            answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        # Every other call is served too.
        session = new_session(stub, "agent-meanwhile", {"m.jpg": b"meanwhile"})
        assert query_status(stub, session, b"meanwhile").committed_size == 0
    finally:
        for s in streams:
            s.release.set()
            s.future.cancel()


def test_one_agent_has_at_most_four_streams(channel):
    stub = pb_grpc.IngestStub(channel)
    files = {f"{n}.jpg": os.urandom(100) for n in range(6)}
    session = new_session(stub, "agent-streams", files)
    streams = [IdleStream(stub, pb.WriteRequest(session_id=session, blob=digest(d), offset=0, data=d[:10]))
               for d in files.values()]
    try:
        wait_until(lambda: sum(s.future.done() for s in streams) == 2, "2 streams refused")
        refused = [s for s in streams if s.future.done()]
        assert {s.code() for s in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "agent_max_write_streams = 4" in refused[0].future.exception().details()
    finally:
        for s in streams:
            s.release.set()
            s.future.cancel()


def test_an_idle_stream_is_cancelled_and_what_it_sent_stays_resumable(tmp_path):
    archive = serve(tmp_path, "idle", "write_idle_timeout_s = 1.5\n")
    try:
        with grpc.insecure_channel(archive.address) as channel:
            stub = pb_grpc.IngestStub(channel)
            data = os.urandom(5000)
            session = new_session(stub, "agent-idle", {"a.jpg": data})
            first = pb.WriteRequest(session_id=session, blob=digest(data), offset=0, data=data[:1000])
            streams = [IdleStream(stub, first), IdleStream(stub, None)]
            wait_until(lambda: all(s.future.done() for s in streams), "idle streams cancelled")
            assert {s.code() for s in streams} == {grpc.StatusCode.CANCELLED}
            assert query_status(stub, session, data).committed_size == 1000
            rest = stub.Write(iter([pb.WriteRequest(session_id=session, blob=digest(data), offset=1000,
                                                    data=data[1000:], finish_write=True)]), timeout=30)
            assert rest.complete
            for s in streams:
                s.release.set()
    finally:
        archive.stop()


def test_status_code_helper_still_maps(channel):
    """The refusals above are plain status codes: nothing new for clients to parse."""
    stub = pb_grpc.IngestStub(channel)
    assert status_code(lambda: stub.QueryWriteStatus(pb.QueryWriteStatusRequest(
        session_id="0" * 36, blob=digest(b"x")), timeout=10)) in (
        grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
