"""Fixtures for the archive tests: databases on both backends and a real
``bildsluss-archive serve`` process.

    db_backend       "sqlite" | "postgresql" (session, parametrized)
    archive_db_url   a database for the whole test session, on db_backend
    fresh_db_url     an empty database for one test, on db_backend
    running_archive  a serve process on archive_db_url (session): .address, .data, .db
    stub             an Ingest stub connected to running_archive
    archive_db       a Database on archive_db_url, to look inside from a test
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from archive_server.db import Database
from bildsluss.v1 import ingest_pb2_grpc as pb_grpc
from tests.archive.client import ingest_stub
from tests.archive.databases import BACKENDS, temp_database
from tests.support.archive_process import ArchiveProcess


@pytest.fixture(scope="session", params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def archive_db_url(db_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with temp_database(db_backend, tmp_path_factory.mktemp(f"db-{db_backend}")) as url:
        yield url


@pytest.fixture
def fresh_db_url(db_backend: str, tmp_path: pathlib.Path) -> Iterator[str]:
    with temp_database(db_backend, tmp_path / "db") as url:
        yield url


@pytest.fixture(scope="session")
def running_archive(
    archive_db_url: str, db_backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ArchiveProcess]:
    data = tmp_path_factory.mktemp(f"archive-{db_backend}") / "data"
    config = data.parent / "archive.toml"
    # The region's reserve numbers (Region Stockholm's format) are accepted as patient ids.
    config.write_text('[identity]\nreserve_formats = ["sll"]\n')
    proc = ArchiveProcess(data=data, db=archive_db_url, extra_args=("--config", str(config))).start()
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, f"archive exited with {code} on SIGTERM; log: {proc.stderr_path}"


@pytest.fixture
def stub(running_archive: ArchiveProcess) -> Iterator[pb_grpc.IngestStub]:
    assert running_archive.address
    with ingest_stub(running_archive.address) as s:
        yield s


@pytest.fixture(scope="session")
def archive_db(archive_db_url: str) -> Iterator[Database]:
    db = Database(archive_db_url, pool_size=2, max_overflow=2)
    yield db
    db.dispose()
