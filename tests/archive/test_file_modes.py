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


def _a_group_to_use() -> tuple[str, int]:
    """A group this process may give its files that is not its own primary group."""
    import grp

    mine = os.getegid()
    if os.geteuid() == 0:
        candidates = [g for g in grp.getgrall() if g.gr_gid not in (0, mine)]
    else:
        candidates = [grp.getgrgid(g) for g in os.getgroups() if g != mine]
    if not candidates:
        pytest.skip("no second group this user may use")
    return candidates[0].gr_name, candidates[0].gr_gid


def test_a_configured_group_reads_what_the_archive_writes_and_nobody_else(tmp_path):
    """file_group: folders 2750 and files 0640 of that group (database, WAL, blobs,
    exports and printouts), whatever the umask; others still read nothing."""
    name, gid = _a_group_to_use()
    data = tmp_path / "archive"
    config = tmp_path / "archive.toml"
    config.write_text(f'file_group = "{name}"\n')
    with umask(0o077):  # the strictest umask would take the group's read away
        archive = ArchiveProcess(data=data, extra_args=("--config", str(config))).start()
    try:
        with ingest_stub(archive.address) as stub:
            ingest_files(stub, {"DCIM/100/IMG_0001.JPG": os.urandom(5000)})
        found = {p: (mode(p), p.stat().st_gid) for p in [data, *sorted(data.rglob("*"))]}
        folders = {p: m for p, m in found.items() if p.is_dir()}
        files = {p: m for p, m in found.items() if not p.is_dir()}
        assert set(folders.values()) == {(0o2750, gid)}, folders
        assert set(files.values()) == {(0o640, gid)}, files
        assert any(len(p.name) == 64 for p in files) and data / "archive.sqlite3-wal" in files
    finally:
        archive.stop()


def test_an_unknown_file_group_is_a_config_error(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "archive.toml"
    config.write_text('file_group = "no-such-group-here"\n')
    out = subprocess.run([sys.executable, "-m", "archive_server.cli", "serve", "--config", str(config),
                          "--data", str(tmp_path / "data"), "--insecure", "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "no-such-group-here" in out.stderr and "not a group" in out.stderr
    assert not (tmp_path / "data" / "archive.sqlite3").exists()


def test_exports_and_printouts_of_a_configured_group(world, tmp_path):
    from archive_server.localfiles import use_group

    name, gid = _a_group_to_use()
    case_id = world.ingest(files={"DCIM/100CANON/IMG_0001.JPG": world.files(1).popitem()[1]})
    dest = tmp_path / "export"
    use_group(name)
    try:
        with umask(0o077):
            written = export_case(world.db, world.blobs, case_id, dest, LOCAL)
            print_case(world.db, world.blobs, LOCAL, case_id, reason="Remiss", out=tmp_path / "case.pdf")
    finally:
        use_group(None)
    made = [*written, tmp_path / "case.pdf"]
    assert {(mode(p), p.stat().st_gid) for p in made} == {(0o640, gid)}
    folders = [dest, *(p for p in dest.rglob("*") if p.is_dir())]
    assert {(mode(p), p.stat().st_gid) for p in folders} == {(0o2750, gid)}
