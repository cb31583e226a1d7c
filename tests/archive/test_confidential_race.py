"""Issue 13, on PostgreSQL: marking a patient confidential while an upload for
them is committing never leaves the new case unmasked (R17).

Under READ COMMITTED the commit read "not confidential" while the mark was not
yet committed, and the mark updated the patient's cases before the new one was
committed: the case came out unmasked. Both now take the patient's lock
(``db.lock_patient``) before they read or write the mark.

Two real connections, interleaved at fault points (``archive_server/faults.py``):
a real ``serve`` process holds its CommitSession open at one while this process
marks the patient through the admin function, and the other way round.
"""
from __future__ import annotations

import os
import pathlib
import threading
import time

import pytest
import sqlalchemy as sa

from archive_server.admin import set_confidential
from archive_server.db import Database
from archive_server.faults import ENV
from archive_server.models import Case
from tests.archive.client import commit, ingest_stub, open_request, personnummer, upload_missing
from tests.archive.databases import temp_database
from tests.archive.world import LOCAL
from tests.support.archive_process import ArchiveProcess

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(tmp_path):
    with temp_database("postgresql", tmp_path / "db") as url:
        yield url


def wait_for(path: pathlib.Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def case_of(db: Database, patient: str) -> Case:
    with db.read() as s:
        return s.scalars(sa.select(Case).where(Case.patient_id == patient)).one()


class Thread(threading.Thread):
    """A thread that keeps its function's result or exception for the test."""

    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc

    def outcome(self):
        self.join(120)
        assert not self.is_alive(), "still blocked"
        if self.error:
            raise self.error
        return self.result


def _ingest_thread(stub, patient: str) -> tuple[Thread, str]:
    files = {"DCIM/IMG_0001.JPG": os.urandom(3000)}
    request = open_request(files, patient_id=patient)
    stub.OpenSession(request, timeout=30)
    upload_missing(stub, request.session_id, files)
    thread = Thread(lambda: commit(stub, request.session_id))
    return thread, request.session_id


def test_marked_while_the_commit_holds_its_transaction(pg_url, tmp_path):
    """The commit has read the mark (none yet) and holds its transaction open; the
    mark is made meanwhile; then the commit finishes. The new case is confidential."""
    go = tmp_path / "go"
    archive = ArchiveProcess(data=tmp_path / "data", db=pg_url,
                             env={ENV: f"commit.patient_locked=wait:{go}"}).start()
    db = Database(pg_url, pool_size=2, max_overflow=0)
    patient = personnummer()
    try:
        with ingest_stub(archive.address) as stub:
            committing, _ = _ingest_thread(stub, patient)
            committing.start()
            wait_for(pathlib.Path(f"{go}.reached"))
            marking = Thread(lambda: set_confidential(db, LOCAL, patient, True))
            marking.start()
            marking.join(3)  # unfixed, the mark is done by now; fixed, it waits for the lock
            go.touch()
            committing.outcome()
            marking.outcome()
        assert case_of(db, patient).confidential is True
    finally:
        go.touch()
        archive.stop()
        db.dispose()


def test_committed_while_the_mark_holds_its_transaction(pg_url, tmp_path, monkeypatch):
    """The mark has updated the patient's cases (none yet) and holds its transaction
    open; a commit for the patient runs meanwhile; then the mark finishes. The new
    case is confidential."""
    go = tmp_path / "go"
    archive = ArchiveProcess(data=tmp_path / "data", db=pg_url).start()
    db = Database(pg_url, pool_size=2, max_overflow=0)
    patient = personnummer()
    monkeypatch.setenv(ENV, f"confidential.cases_marked=wait:{go}")
    try:
        with ingest_stub(archive.address) as stub:
            committing, _ = _ingest_thread(stub, patient)
            marking = Thread(lambda: set_confidential(db, LOCAL, patient, True))
            marking.start()
            wait_for(pathlib.Path(f"{go}.reached"))
            committing.start()
            committing.join(3)  # unfixed, the case is committed by now; fixed, it waits
            go.touch()
            marking.outcome()
            committing.outcome()
        assert case_of(db, patient).confidential is True
    finally:
        go.touch()
        archive.stop()
        db.dispose()
