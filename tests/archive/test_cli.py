"""bildsluss-archive's command line: departments, audit verify, errors, serve's guards."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest
import sqlalchemy as sa

from archive_server.audit import verify_audit_chain
from archive_server.db import Database
from archive_server.models import AuditEvent
from tests.archive.client import ingest_files, ingest_stub, open_request, status_code
from tests.support.archive_process import ArchiveProcess

ARCHIVE = [sys.executable, "-m", "archive_server.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ARCHIVE, *args], capture_output=True, text=True, timeout=60)


def test_audit_verify_detects_an_edited_row(fresh_db_url, tmp_path):
    db = ["--data", str(tmp_path / "data"), "--db", fresh_db_url]
    assert run("departments", "add", "SE2321000016-15CQ", "--name", "Hud", *db).returncode == 0
    assert run("departments", "add", "SE2321000016-15CQ", "--name", "Hudkliniken", *db).returncode == 0
    assert run("departments", "add", "SE2321000016-A1B2", "--name", "Akuten", *db).returncode == 0
    ok = run("audit", "verify", *db)
    assert ok.returncode == 0 and "3 event" in ok.stdout, ok.stderr

    engine = sa.create_engine(fresh_db_url)
    with engine.begin() as conn:  # a silent edit, straight in the database
        details = conn.execute(sa.text("SELECT details FROM audit_events WHERE seq = 2")).scalar_one()
        if isinstance(details, str):
            details = json.loads(details)
        details["name"] = "Something else"
        conn.execute(sa.text("UPDATE audit_events SET details = :d WHERE seq = 2"),
                     {"d": json.dumps(details)})
    engine.dispose()

    broken = run("audit", "verify", *db)
    assert broken.returncode == 1
    assert "event 2" in broken.stderr and len(broken.stderr.strip().splitlines()) == 1


def test_audit_chain_detects_removed_rows(fresh_db_url):
    database = Database(fresh_db_url)
    database.upgrade_schema()
    from archive_server.audit import append_audit

    for i in range(4):
        with database.write() as s:
            append_audit(s, "test", "test.event", details={"i": i})
    with database.read() as s:
        assert verify_audit_chain(s).ok
    with database.write() as s:
        s.execute(sa.delete(AuditEvent).where(AuditEvent.seq == 4))
    with database.read() as s:
        check = verify_audit_chain(s)
    assert not check and check.first_bad_seq == 4
    with database.write() as s:
        s.execute(sa.delete(AuditEvent).where(AuditEvent.seq == 2))
    with database.read() as s:
        assert verify_audit_chain(s).first_bad_seq == 2
    database.dispose()


def test_departments_add_list_and_validate(fresh_db_url, tmp_path):
    db = ["--db", fresh_db_url, "--data", str(tmp_path)]
    assert run("departments", "add", "SE2321000016-15CQ", "--name", "Hudkliniken", *db).returncode == 0
    listed = run("departments", "list", "--json", *db)
    assert [json.loads(x)["hsa_id"] for x in listed.stdout.splitlines()] == ["SE2321000016-15CQ"]
    bad = run("departments", "add", "not-an-hsa-id", "--name", "X", *db)
    assert bad.returncode == 1 and "HSA" in bad.stderr


def test_errors_are_one_line_with_exit_1_and_usage_is_exit_2(fresh_db_url, tmp_path):
    db = ["--db", fresh_db_url, "--data", str(tmp_path)]
    unknown = run("export", "3f1e2d4c-0000-4000-8000-000000000000", str(tmp_path / "out"), *db)
    assert unknown.returncode == 1 and "unknown case" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert run("export", *db).returncode == 2
    assert run("frobnicate").returncode == 2
    empty = run("cases", "--json", *db)
    assert empty.returncode == 0 and empty.stdout == ""


@pytest.mark.parametrize("args", [
    ["--listen", "0.0.0.0:0"],  # plaintext off loopback without --insecure
    ["--listen", "0.0.0.0:0", "--insecure"],  # plaintext is for loopback only, flag or not
    ["--listen", "127.0.0.1:0"],  # plaintext needs the explicit flag even on loopback
    ["--tls-cert", "/nonexistent.crt"],  # half a TLS configuration
    ["--insecure", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c"],
])
def test_serve_refuses_unsafe_transport(tmp_path, args):
    result = run("serve", "--data", str(tmp_path), *args)
    assert result.returncode == 2 and "error" in result.stderr


def test_unknown_departments_refused_when_configured(fresh_db_url, tmp_path):
    config = tmp_path / "archive.toml"
    config.write_text("accept_unknown_departments = false\n")
    with ArchiveProcess(data=tmp_path / "data", db=fresh_db_url,
                        extra_args=("--config", str(config))) as archive:
        assert archive.address
        with ingest_stub(archive.address) as stub:
            request = open_request({"a.jpg": os.urandom(10)}, department="SE2321000016-ZZZZ")
            assert status_code(lambda: stub.OpenSession(request, timeout=10)) == \
                grpc.StatusCode.FAILED_PRECONDITION
            assert run("departments", "add", "SE2321000016-ZZZZ", "--name", "Nya avdelningen",
                       "--db", fresh_db_url).returncode == 0
            _, response = ingest_files(stub, {"a.jpg": os.urandom(10)}, department="SE2321000016-ZZZZ")
            assert response.case_id
    found = run("cases", "--db", fresh_db_url, "--data", str(tmp_path / "data"))
    assert found.returncode == 0 and "SE2321000016-ZZZZ" in found.stdout


def test_auto_registered_department_is_audited(fresh_db_url, tmp_path):
    with ArchiveProcess(data=tmp_path / "data", db=fresh_db_url) as archive:
        assert archive.address
        with ingest_stub(archive.address) as stub:
            ingest_files(stub, {"a.jpg": os.urandom(10)}, department="SE2321000016-NEW1")
    database = Database(fresh_db_url)
    with database.read() as s:
        actions = s.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.seq)).all()
        assert verify_audit_chain(s).ok
    database.dispose()
    assert actions == ["department.registered", "case.ingested"]
