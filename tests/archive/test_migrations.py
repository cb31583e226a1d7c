"""Alembic migrations: from empty and from a create_all-made database to head,
the result compared with the models; a newer database refused; concurrent
upgrades (two ``serve`` starting together) both succeed."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from archive_server import schema
from archive_server.cli import main
from archive_server.db import Database
from archive_server.models import Base
from tests.support.archive_process import ArchiveProcess

DATA = pathlib.Path(__file__).parent / "data"


def schema_diff(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_empty_database_upgrades_to_head_matching_the_models(fresh_db_url):
    db = Database(fresh_db_url)
    try:
        result = db.upgrade_schema()
        assert result.before is None and result.after == schema.head()
        assert schema.current(db.engine) == schema.head()
        assert schema_diff(db.engine) == []
        assert db.upgrade_schema().changed is False
    finally:
        db.dispose()


def test_database_made_by_create_all_is_stamped_and_upgraded_keeping_its_data(fresh_db_url, db_backend):
    db = Database(fresh_db_url)
    try:
        ddl = (DATA / f"create_all_7bbdf86.{db_backend}.sql").read_text()
        with db.engine.begin() as conn:
            for statement in ddl.split(";\n\n"):
                body = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
                if body.strip(" ;\n"):
                    conn.exec_driver_sql(body.strip().rstrip(";"))
            conn.exec_driver_sql(
                "INSERT INTO departments (hsa_id, name, created_at, registered_by) "
                "VALUES ('SE2321000016-15CQ', 'Hud', '2026-01-01 00:00:00+00:00', 'admin')")
            conn.exec_driver_sql(
                "INSERT INTO blobs (sha256, size, storage_key, stored_at) "
                f"VALUES ('{'a' * 64}', 3, 'aa/aa/{'a' * 64}', '2026-01-01 00:00:00+00:00')")
        assert schema.current(db.engine) is None
        result = db.upgrade_schema()
        assert result.before == schema.BASELINE and result.after == schema.head()
        assert schema_diff(db.engine) == []
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT name FROM departments").scalar() == "Hud"
            assert conn.exec_driver_sql("SELECT size FROM blobs").scalar() == 3
    finally:
        db.dispose()


def test_a_database_newer_than_the_code_is_refused_and_left_alone(fresh_db_url, capsys):
    db = Database(fresh_db_url)
    try:
        db.upgrade_schema()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_from_the_future'")
        with pytest.raises(schema.SchemaTooNew, match="newer release"):
            db.upgrade_schema()
    finally:
        db.dispose()
    assert main(["db", "upgrade", "--db", fresh_db_url]) == 2
    err = capsys.readouterr().err
    assert "9999_from_the_future" in err and "newer release" in err
    assert main(["cases", "--json", "--db", fresh_db_url]) == 2
    with sa.create_engine(fresh_db_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "9999_from_the_future"


def test_db_current_and_upgrade_commands(fresh_db_url, capsys):
    assert main(["db", "current", "--json", "--db", fresh_db_url]) == 0
    assert '"current": null' in capsys.readouterr().out
    assert main(["db", "upgrade", "--db", fresh_db_url]) == 0
    assert f"upgraded from empty to {schema.head()}" in capsys.readouterr().out
    assert main(["db", "current", "--json", "--db", fresh_db_url]) == 0
    assert '"at_head": true' in capsys.readouterr().out


def together(calls: list) -> list[BaseException]:
    """Run the calls in threads released at the same moment; their errors."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_upgrades_in_threads_all_succeed(fresh_db_url):
    dbs = [Database(fresh_db_url) for _ in range(4)]
    errors = together([db.upgrade_schema for db in dbs])
    for db in dbs:
        db.dispose()
    assert errors == []


@pytest.mark.slow  # ~3 s: two server processes
def test_two_serve_processes_starting_together_on_an_empty_database_both_come_up(fresh_db_url, tmp_path):
    # Issue 13: on PostgreSQL one of two archives starting at once failed to
    # create the schema (3 of 3 tries) before migrations ran under a lock.
    # Generous start-up time: two processes importing at once on a busy machine.
    procs = [ArchiveProcess(tmp_path / f"a{i}" / "data", db=fresh_db_url, ready_timeout_s=180) for i in range(2)]
    try:
        assert together([p.start for p in procs]) == []
    finally:
        for p in procs:
            p.stop()


def test_alembic_check_finds_nothing_to_generate(tmp_path):
    # What a developer runs after changing a model: `alembic check` must agree.
    url = f"sqlite:///{tmp_path / 'check.sqlite3'}"
    Database(url).upgrade_schema()
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = archive_server:migrations\nsqlalchemy.url = {url}\n")
    run = subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), "check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
