"""``GET /metrics`` of a REAL archive process (SQLite + folder and PostgreSQL +
S3): after a real ingest exchange and real heartbeats the Prometheus text
carries the per-process counters (cases and bytes by department, RPC latency
by method and code) and the fleet and audit chain read from the database; the
text parses as Prometheus exposition. Access: only loopback without a token,
only with the token when ``metrics_token_file`` is set."""
from __future__ import annotations

import pathlib
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from agent.config import AgentConfig, ArchiveConfig as AgentArchiveConfig, DaemonConfig
from agent.daemon.heartbeat import Heartbeater
from agent.desk.status import StatusBoard
from archive_server.config import ArchiveConfig
from archive_server.db import Database
from archive_server.web.app import create_app
from archive_server.web.context import WebContext
from tests.archive.client import ingest_files, personnummer
from tests.archive.world import jpeg
from tests.support.archive_process import ArchiveProcess

DEPARTMENT = "SE2321000016-15CQ"


def scrape(address: str, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"http://{address}/metrics", headers=headers, timeout=30)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_metrics_of_a_real_archive_after_an_ingest_and_heartbeats(running_archive, stub):
    assert running_archive.http_address
    before = samples(scrape(running_archive.http_address).text)
    files = {f"DCIM/IMG_{i}.JPG": jpeg(1000 + i + uuid.uuid4().int % 1000) for i in range(2)}
    patient = personnummer()
    ingest_files(stub, files, patient_id=patient, department=DEPARTMENT)
    agent_id = f"pc-metrics-{uuid.uuid4().hex[:6]}"
    board = StatusBoard(agent_id, "0.1.0", DEPARTMENT)
    beater = Heartbeater(AgentConfig(agent_id=agent_id, department=DEPARTMENT, daemon=DaemonConfig(heartbeat_s=1.0),
                                     archive=AgentArchiveConfig(address=running_archive.address, insecure=True,
                                                                call_timeout_s=10.0)), board)
    beater.start()
    try:
        deadline = time.monotonic() + 60
        while beater.sent < 1:
            assert time.monotonic() < deadline, "no heartbeat accepted"
            time.sleep(0.1)
        # The fleet is read from the database at most every 10 s: scrape until it shows the agent.
        response = scrape(running_archive.http_address)
        while f'agent="{agent_id}"' not in response.text:
            assert time.monotonic() < deadline + 30, "the agent never showed in /metrics"
            time.sleep(1)
            response = scrape(running_archive.http_address)
    finally:
        beater.stop()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = samples(response.text)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return found[key] - before.get(key, 0.0)

    assert grew("bildsluss_archive_cases_ingested_total", department=DEPARTMENT) == 1
    assert grew("bildsluss_archive_ingest_bytes_total", department=DEPARTMENT) == sum(map(len, files.values()))
    commit = "/bildsluss.v1.Ingest/CommitSession"
    assert grew("bildsluss_archive_rpc_duration_seconds_count", method=commit, code="OK") >= 1
    assert value(found, "bildsluss_archive_rpc_duration_seconds_bucket", method=commit, code="OK", le="+Inf") >= 1
    assert value(found, "bildsluss_agent_liveness", agent=agent_id, department=DEPARTMENT, liveness="alive") == 1
    assert value(found, "bildsluss_agent_liveness", agent=agent_id, department=DEPARTMENT, liveness="silent") == 0
    assert abs(value(found, "bildsluss_agent_clock_skew_seconds", agent=agent_id, department=DEPARTMENT)) < 5
    assert value(found, "bildsluss_agent_heartbeat_interval_seconds", agent=agent_id, department=DEPARTMENT) == 1.0
    assert value(found, "bildsluss_agents", department=DEPARTMENT, liveness="alive") >= 1
    assert value(found, "bildsluss_audit_chain_length") > before.get(("bildsluss_audit_chain_length", ()), 0)
    assert value(found, "bildsluss_archive_database_up") == 1 and value(found, "bildsluss_archive_blobstore_up") == 1
    assert value(found, "bildsluss_fleet_scrape_ok") == 1
    # No patient number in any form (it is random here: "1912" matched a timestamp's digits once).
    assert patient not in response.text and patient[2:] not in response.text and "patient" not in response.text


def test_a_token_file_guards_metrics(tmp_path: pathlib.Path):
    token = uuid.uuid4().hex + uuid.uuid4().hex
    (tmp_path / "metrics.token").write_text(token + "\n")
    config = tmp_path / "archive.toml"
    config.write_text(f'metrics_token_file = "{tmp_path / "metrics.token"}"\n')
    archive = ArchiveProcess(tmp_path / "data", http="127.0.0.1:0", extra_args=("--config", str(config))).start()
    try:
        assert archive.http_address
        refused = scrape(archive.http_address)
        assert refused.status_code == 401 and refused.json()["reason"] == "METRICS_TOKEN"
        assert scrape(archive.http_address, "wrong" * 8).status_code == 401
        ok = scrape(archive.http_address, token)
        assert ok.status_code == 200 and "bildsluss_archive_database_up" in ok.text
    finally:
        assert archive.stop() == 0


@pytest.mark.parametrize("content", ["", "short"])
def test_an_empty_or_short_token_file_stops_the_archive_with_exit_2(tmp_path: pathlib.Path, content: str):
    (tmp_path / "metrics.token").write_text(content)
    config = tmp_path / "archive.toml"
    config.write_text(f'metrics_token_file = "{tmp_path / "metrics.token"}"\n')
    archive = ArchiveProcess(tmp_path / "data", http="127.0.0.1:0", extra_args=("--config", str(config)),
                             ready_timeout_s=30)
    with pytest.raises(RuntimeError, match="metrics_token_file"):
        archive.start()
    assert archive.proc is None


def test_without_a_token_only_loopback_clients_are_answered(tmp_path: pathlib.Path):
    db = Database(f"sqlite:///{tmp_path / 'archive.sqlite3'}")
    db.upgrade_schema()
    try:
        app = create_app(WebContext.for_archive(db, ArchiveConfig(data_dir=tmp_path)))

        def get_from(host: str) -> httpx.Response:
            with TestClient(app, client=(host, 50000)) as client:
                return client.get("/metrics")

        response = get_from("10.1.2.3")
        assert response.status_code == 403 and response.json()["reason"] == "METRICS_LOOPBACK_ONLY"
        assert get_from("127.0.0.1").status_code == 200
    finally:
        db.dispose()
