"""Fixtures for the archive tests: databases on both backends and a real
``bildsluss-archive serve`` process.

    db_backend       "sqlite" | "postgresql" (session, parametrized)
    blob_backend     the blob store paired with it: SQLite with a folder, PostgreSQL
                     with S3 (SeaweedFS), the two shapes the archive is run in
    archive_db_url   a database for the whole test session, on db_backend
    fresh_db_url     an empty database for one test, on db_backend
    fresh_blobs_url  an empty blob store for one test, on blob_backend
    running_archive  a serve process on archive_db_url (session): .address, .http_address, .data,
                     .db, .blobs
    stub             an Ingest stub connected to running_archive
    archive_db       a Database on archive_db_url, to look inside from a test
    archive_store    the BlobStore running_archive writes to, to look inside
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from archive_server.blobstores import BlobStore, open_blobstore
from archive_server.db import Database
from bildsluss.v1 import ingest_pb2_grpc as pb_grpc
from tests.archive.client import ingest_stub
from tests.archive.databases import BACKENDS, temp_database
from tests.support.archive_process import ArchiveProcess
# One headless Chromium per test worker for every browser test module (a
# fixture imported into two modules would be two, and Playwright's sync API
# cannot run two at once in one process).
from tests.support.browser import chromium  # noqa: F401


@pytest.fixture(scope="session", params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


BLOBS_FOR = {"sqlite": "folder", "postgresql": "s3"}
S3_PART = 5 << 20


class Durable:
    """How much of what was sent running_archive's store keeps when a stream
    ends early: every byte (folder), or whole parts (S3, ``part``)."""

    def __init__(self, part: int) -> None:
        self.part = part

    def __call__(self, sent: int) -> int:
        return sent // self.part * self.part if self.part else sent


@pytest.fixture(scope="session")
def durable(blob_backend: str) -> Durable:
    return Durable(S3_PART if blob_backend == "s3" else 0)


@pytest.fixture(scope="session")
def blob_backend(db_backend: str) -> str:
    return BLOBS_FOR[db_backend]


def blobs_url(backend: str, directory: pathlib.Path, request: pytest.FixtureRequest) -> str:
    """A new, empty blob store: a folder in ``directory``, or a prefix of its
    own in the session's SeaweedFS bucket."""
    if backend == "folder":
        return str(directory / "blobs")
    return str(request.getfixturevalue("s3_server").fresh_url())


@pytest.fixture
def fresh_blobs_url(blob_backend: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> str:
    return blobs_url(blob_backend, tmp_path, request)


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
    archive_db_url: str, db_backend: str, blob_backend: str, tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[ArchiveProcess]:
    data = tmp_path_factory.mktemp(f"archive-{db_backend}") / "data"
    blobs = blobs_url(blob_backend, data, request)
    config = data.parent / "archive.toml"
    # The region's reserve numbers (Region Stockholm's format) are accepted as
    # patient ids; S3's smallest part, so that resume tests cross parts cheaply.
    # Every test's sessions come from one agent id ("test-agent"), many at once and
    # many left open: its per-agent limits are lifted here (tests/archive/test_limits.py
    # tests them on an archive of its own).
    config.write_text('agent_max_open_sessions = 100000\nagent_max_write_streams = 24\n'
                      f'[identity]\nreserve_formats = ["sll"]\n\n[blobs]\npart_size_mib = {S3_PART >> 20}\n')
    proc = ArchiveProcess(data=data, db=archive_db_url, blobs=blobs, http="127.0.0.1:0",
                          extra_args=("--config", str(config))).start()
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


@pytest.fixture(scope="session")
def archive_store(running_archive: ArchiveProcess, archive_db: Database) -> BlobStore:
    assert running_archive.blobs
    return open_blobstore(running_archive.blobs, archive_db)
