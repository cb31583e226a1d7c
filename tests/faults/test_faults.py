"""The fault suite (issue 13): the archive process killed (SIGKILL) at every fault
point of CommitSession, Write and a purge, the disk full during a blob write, a
corrupted stored blob, PostgreSQL's connection killed mid-commit. After every
agent run the card is untouched or every file that left it is stored and filed
(``rig.Rig.check``); ``files_lost`` must be 0.

The points are ``archive_server.faults.POINTS``, armed through
``BILDSLUSS_FAULT_POINTS`` in the archive's environment only. Figures are printed
(``pytest -s``) and appended to ``$BILDSLUSS_FAULT_REPORT`` when set.
"""
from __future__ import annotations

import pathlib
import resource
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from archive_server.faults import ENV, POINTS
from tests.archive.databases import PG_URL, temp_database
from tests.faults.rig import Rig
from tests.support.e2e import DEPARTMENT

pytestmark = pytest.mark.faults

INGEST_POINTS = [p for p in POINTS if p.startswith(("write.", "commit."))]
PURGE_POINTS = [p for p in POINTS if p.startswith("purge.")]


def arm(point: str) -> str:
    # A chunk point fires at the second chunk: mid-stream, with bytes already durable.
    return f"{point}=kill@2" if point == "write.chunk_written" else f"{point}=kill"


def test_killed_at_every_point_of_write_and_commit(tmp_path):
    rig = Rig(tmp_path)
    card = rig.card()
    pending = list(INGEST_POINTS)
    misses = 0
    try:
        while pending:
            point = pending[0]
            rig.start(arm(point))
            outcome = rig.ingest(card)
            # An archived card got its answers, so a point that fired did so by then or just
            # after its last answer (partials discarded): a short wait tells a miss. A card that
            # was not archived saw the archive fail: give its death the full wait.
            if rig.died_by_kill(wait_s=3.0 if outcome.outcome.value == "archived" else 15.0):
                rig.figures.points_tried.append(point)
                pending.pop(0)
                assert outcome.outcome.value in ("deferred", "archived"), outcome
            else:
                misses += 1  # this card's state no longer passes the point: a fresh card
                assert misses <= len(INGEST_POINTS), f"{point} never fired"
            if outcome.wiped:
                card = rig.card()
        rig.start()
        rig.until_archived(card)
    finally:
        rig.stop()
        rig.figures.report("kill: Write and CommitSession")
    assert rig.figures.points_tried == INGEST_POINTS
    assert rig.figures.files_lost == 0, rig.figures.lost


def test_killed_at_every_point_of_a_purge(tmp_path):
    """A case is purged (the CLI process killed at the point); the serve process
    restarts (finishing stalled purges) and a card with the same bytes is ingested:
    it ends stored and filed, and the killed purge left the case whole or gone."""
    rig = Rig(tmp_path)
    try:
        rig.start()
        first = rig.card()
        rig.until_archived(first)
        made = rig.cli("admin", "user", "add", "fault-admin", "--department", DEPARTMENT, "--role", "sysadmin")
        assert made.returncode == 0, made.stderr
        for point in PURGE_POINTS:
            card = rig.card()
            twin = card.copy(rig.tmp / f"{card.root.name}-twin")
            case_id = rig.until_archived(card).case_id
            purge = rig.cli("purge", case_id, "--as", "fault-admin", "--decision", "Gallringsbeslut F:1",
                            env={ENV: arm(point)})
            assert purge.returncode == -9, (point, purge.returncode, purge.stderr[-2000:])
            rig.figures.points_tried.append(point)
            rig.start()  # housekeeping finishes what the purge tombstoned
            assert rig.until_archived(twin).wiped
    finally:
        rig.stop()
        rig.figures.report("kill: purge")
    assert rig.figures.points_tried == PURGE_POINTS
    assert rig.figures.files_lost == 0, rig.figures.lost


def test_a_corrupted_stored_blob_is_never_taken_as_the_copy(tmp_path):
    """A stored blob's bytes rot (same size): a card holding the same bytes must
    not be wiped on the strength of the rotten copy."""
    rig = Rig(tmp_path)
    try:
        rig.start()
        card = rig.card()
        twin = card.copy(rig.tmp / "twin")
        outcome = rig.until_archived(card)
        sha = sorted(f.sha256 for f in outcome.files if f.sha256)[0]
        stored = rig.data / "blobs" / sha[:2] / sha[2:4] / sha
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0xFF
        stored.write_bytes(bytes(data))
        rig.figures.points_tried.append("corrupted blob")
        second = rig.ingest(twin)
        assert second.outcome.value == "archived" and second.wiped, second
        assert rig.stored_and_filed(sha)  # the card's good copy replaced the rotten one
    finally:
        rig.stop()
        rig.figures.report("corrupted stored blob")
    assert rig.figures.files_lost == 0, rig.figures.lost


@pytest.fixture
def pg_url(tmp_path):
    with temp_database("postgresql", tmp_path / "db") as url:
        yield url


@pytest.mark.postgres
def test_disk_full_during_a_blob_write(pg_url, tmp_path):
    """The blob folder cannot take the bytes (RLIMIT_FSIZE on the archive process:
    every write past 16 KiB fails with EFBIG, as on a full disk); the database is
    PostgreSQL, which the limit does not touch. Deferred, card untouched; once
    there is room, archived."""
    rig = Rig(tmp_path, db=pg_url)
    try:
        archive = rig.start()
        card = rig.card()
        pid = archive.proc.pid
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (16 << 10, hard))
        outcome = rig.ingest(card)
        assert outcome.outcome.value == "deferred" and not outcome.wiped, outcome
        assert card.left() == []
        rig.figures.points_tried.append("disk full")
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
        assert rig.ingest(card).wiped
    finally:
        rig.stop()
        rig.figures.report("disk full")
    assert rig.figures.files_lost == 0, rig.figures.lost


@pytest.mark.postgres
def test_postgresql_connection_killed_mid_commit(pg_url, tmp_path):
    """CommitSession holds its transaction at ``commit.audited``; the test kills its
    PostgreSQL backend (pg_terminate_backend, found by the patient's advisory
    lock it holds), then lets it go on. Nothing half-committed; the card is
    deferred or archived, and archived in the end."""
    go = tmp_path / "go"
    # The archive's connections carry a name of this test's own: the backend killed
    # below must be this archive's, not another test's that holds an advisory lock
    # on the same server at the time (CI runs tests side by side).
    name = f"bildsluss-fault-{uuid.uuid4().hex[:12]}"
    rig = Rig(tmp_path, db=f"{pg_url}{'&' if '?' in pg_url else '?'}application_name={name}")
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        rig.start(f"commit.audited=wait:{go}")
        card = rig.card()
        outcomes = []
        agent = threading.Thread(target=lambda: outcomes.append(rig.ingest(card)), daemon=True)
        agent.start()
        reached = pathlib.Path(f"{go}.reached")
        deadline = time.monotonic() + 120
        while not reached.exists():
            assert time.monotonic() < deadline, "the commit never reached its fault point"
            time.sleep(0.05)
        with admin.connect() as conn:
            killed = conn.execute(sa.text(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = :name"),
                {"name": name}).scalars().all()
        assert killed == [True]
        rig.figures.points_tried.append("pg_terminate_backend mid-commit")
        go.touch()
        agent.join(180)
        assert outcomes and outcomes[0].outcome.value in ("deferred", "archived"), outcomes
        rig.start()
        if not outcomes[0].wiped:
            rig.until_archived(card)
    finally:
        go.touch()
        rig.stop()
        admin.dispose()
        rig.figures.report("postgresql connection killed")
    assert rig.figures.files_lost == 0, rig.figures.lost
