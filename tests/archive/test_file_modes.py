"""Issue 13: what the archive keeps and writes on its machine is private, whatever
the umask. Before, ``archive.sqlite3`` and its WAL, exports and printouts were
readable by every local user (0644 under the usual umask, 0666 under umask 0).

The data folder and the folders below it 0700; the database, its WAL and SHM,
every blob, export, printout 0600. A real ``serve`` process started with umask
0, an ingest over gRPC, and the export and print functions run with umask 0.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import stat

import pytest

from archive_server.cases import export_case, print_case
from tests.archive.client import ingest_files, ingest_stub
from tests.archive.world import LOCAL, World
from tests.support.archive_process import ArchiveProcess


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def modes_below(root: pathlib.Path) -> dict[str, int]:
    return {str(p.relative_to(root)): mode(p) for p in sorted(root.rglob("*"))}


def test_a_serving_archive_keeps_everything_private_under_umask_0(tmp_path):
    data = tmp_path / "parent" / "archive"
    with umask(0):
        archive = ArchiveProcess(data=data).start()
    try:
        with ingest_stub(archive.address) as stub:
            ingest_files(stub, {"DCIM/100/IMG_0001.JPG": os.urandom(5000),
                                "DCIM/100/IMG_0002.JPG": os.urandom(7000)})
        found = modes_below(data)
        assert mode(data) == 0o700
        for name in ("archive.sqlite3", "archive.sqlite3-wal", "archive.sqlite3-shm"):
            assert found.pop(name) == 0o600, name
        blobs = [p for p in found if len(pathlib.PurePath(p).name) == 64]
        assert len(blobs) == 2
        folders = {p for p in found if (data / p).is_dir()}
        assert folders and {found[p] for p in folders} == {0o700}, found
        others = {p: m for p, m in found.items() if p not in folders}
        assert set(others.values()) == {0o600}, others  # blobs and anything else in there
    finally:
        archive.stop()


def test_an_older_archives_open_files_are_tightened_at_start(tmp_path):
    """A data folder and database an older release (or umask) left readable."""
    data = tmp_path / "archive"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    with umask(0):
        ArchiveProcess(data=data).start().stop()
    os.chmod(data, 0o755)
    os.chmod(data / "archive.sqlite3", 0o644)
    os.chmod(data / "blobs", 0o755)
    archive = ArchiveProcess(data=data).start()
    try:
        assert mode(data) == 0o700
        assert mode(data / "archive.sqlite3") == 0o600
        assert mode(data / "blobs") == 0o700
    finally:
        archive.stop()


@pytest.fixture
def world(tmp_path):
    w = World.create(f"sqlite:///{tmp_path / 'db' / 'archive.sqlite3'}", tmp_path / "data")
    yield w
    w.close()


def test_exports_and_printouts_are_private_under_umask_0(world, tmp_path):
    case_id = world.ingest(files={"DCIM/100CANON/IMG_0001.JPG": world.files(1).popitem()[1],
                                  "DCIM/101CANON/sub/IMG_0002.JPG": world.files(1).popitem()[1]})
    dest = tmp_path / "export"
    with umask(0):
        written = export_case(world.db, world.blobs, case_id, dest, LOCAL)
        print_case(world.db, world.blobs, LOCAL, case_id, reason="Remiss", out=tmp_path / "case.pdf")
    assert len(written) == 2
    assert {mode(p) for p in written} == {0o600}
    assert mode(dest) == 0o700
    folders = [p for p in dest.rglob("*") if p.is_dir()]
    assert len(folders) == 4 and {mode(p) for p in folders} == {0o700}
    assert mode(tmp_path / "case.pdf") == 0o600
