"""A database that goes away makes calls UNAVAILABLE (retryable) and health
NOT_SERVING; when it comes back, the archive serves again without a restart.

The database is PostgreSQL behind a small TCP relay that the test cuts.
"""
from __future__ import annotations

import os
import socket
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from tests.archive.client import ingest_files, ingest_stub, open_request, status_code
from tests.archive.databases import PG_URL, temp_database
from tests.support.archive_process import ArchiveProcess

pytestmark = pytest.mark.postgres


class Relay:
    """Forwards 127.0.0.1:port to the PostgreSQL server until cut()."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


SERVICES = ("bildsluss.v1.Ingest", "bildsluss.v1.AgentRegistry", "bildsluss.v1.Cases")


def _health(address: str, service: str = "bildsluss.v1.Ingest") -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status


def _wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_database_outage_is_unavailable_and_recovers(tmp_path):
    with temp_database("postgresql", tmp_path / "db") as url:
        parsed = make_url(url)
        relay = Relay((make_url(PG_URL).host or "127.0.0.1", make_url(PG_URL).port or 5432))
        relayed = parsed.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        config = tmp_path / "archive.toml"
        config.write_text("health_check_interval_s = 0.2\n")
        try:
            with ArchiveProcess(data=tmp_path / "data", db=relayed,
                                extra_args=("--config", str(config))) as archive:
                address = archive.address
                assert address
                serving = health_pb2.HealthCheckResponse.SERVING
                with ingest_stub(address) as stub:
                    assert ingest_files(stub, {"a.jpg": os.urandom(100)})[1].case_id
                    relay.cut()
                    request = open_request({"b.jpg": os.urandom(100)})
                    assert status_code(lambda: stub.OpenSession(request, timeout=20)) == \
                        grpc.StatusCode.UNAVAILABLE
                    _wait_for(lambda: all(_health(address, name) != serving for name in SERVICES))
                    relay.restore()
                    _wait_for(lambda: all(_health(address, name) == serving for name in SERVICES))
                    stub.OpenSession(request, timeout=20)
        finally:
            relay.close()


@pytest.mark.s3
def test_object_store_outage_is_unavailable_the_agent_defers_and_the_card_is_untouched(tmp_path, s3_server):
    """S3 down (issue 14): calls that need it are UNAVAILABLE, health NOT_SERVING,
    the agent defers the card and leaves it as it was; back up, the card goes through."""
    from agent.config import AgentConfig, ArchiveConfig
    from agent.card.pipeline import IngestRequest, ingest_card
    from tests.support.cardgen import make_card
    from tests.support.e2e import DEPARTMENT, PATIENT, snapshot

    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=2, seed=5)
    before = snapshot(card)
    relay = Relay(("127.0.0.1", s3_server.port))
    config = tmp_path / "archive.toml"
    config.write_text("health_check_interval_s = 0.2\n")
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        with temp_database("postgresql", tmp_path / "db") as url, ArchiveProcess(
                data=tmp_path / "data", db=url, blobs=s3_server.fresh_url(),
                env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}"},
                extra_args=("--config", str(config))) as archive:
            address = archive.address
            assert address
            relay.cut()
            _wait_for(lambda: _health(address) != serving)
            with ingest_stub(address) as stub:
                assert status_code(lambda: ingest_files(stub, {"a.jpg": os.urandom(100)})) == \
                    grpc.StatusCode.UNAVAILABLE
            cfg = AgentConfig(agent_id="pc-s3-down", spool_dir=tmp_path / "spool", archive=ArchiveConfig(
                address=address, insecure=True, connect_timeout_s=2.0, retry_budget_s=2.0))
            request = IngestRequest(root=card, department=DEPARTMENT)
            outcome = ingest_card(request, cfg)
            assert outcome.outcome == "deferred" and outcome.reason.value == "ARCHIVE_UNAVAILABLE", outcome
            assert outcome.exit_code == 4 and not outcome.wiped
            assert snapshot(card) == before
            relay.restore()
            _wait_for(lambda: _health(address) == serving)
            again = ingest_card(request, cfg)
            assert again.outcome == "archived" and again.wiped, again
    finally:
        relay.close()
