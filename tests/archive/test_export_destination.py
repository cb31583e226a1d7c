"""Issue 13: an export writes through the destination folder it checked, held open.

Before, the export checked its destination once and then wrote by path: a
folder swapped for a symlink between the check and the write sent the patient's
images wherever the link pointed. Now every folder and file below the held
destination is opened relative to it with O_NOFOLLOW. The swaps happen from
inside the export, between two files (the store is wrapped: the real store
reads the real blobs, and the wrapper swaps a folder just before a read).
"""
from __future__ import annotations

import os
import pathlib

import pytest

from archive_server.cases import export_case
from archive_server.errors import FailedPrecondition
from tests.archive.world import LOCAL, World

FILES = ("DCIM/100CANON/IMG_0001.JPG", "DCIM/100CANON/IMG_0002.JPG", "DCIM/101CANON/IMG_0003.JPG")


@pytest.fixture
def world(tmp_path):
    w = World.create(f"sqlite:///{tmp_path / 'db' / 'archive.sqlite3'}", tmp_path / "data")
    yield w
    w.close()


@pytest.fixture
def case_id(world):
    images = list(world.files(3).values())
    return world.ingest(files=dict(zip(FILES, images)))


class SwapBeforeRead:
    """The real blob store; ``swap`` runs once, before the ``nth`` blob is read."""

    def __init__(self, store, nth: int, swap) -> None:
        self.store, self.nth, self.swap, self.reads = store, nth, swap, 0

    def open(self, sha: str):
        self.reads += 1
        if self.reads == self.nth:
            self.swap()
        return self.store.open(sha)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


def everything_below(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_symlinked_folder_in_the_destination_is_refused_before_writing(world, case_id, tmp_path):
    dest, outside = tmp_path / "export", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "DCIM").symlink_to(outside)
    with pytest.raises(FailedPrecondition, match="symbolic link"):
        export_case(world.db, world.blobs, case_id, dest, LOCAL)
    assert everything_below(outside) == []


def test_a_subfolder_swapped_for_a_symlink_mid_export_writes_nothing_outside(world, case_id, tmp_path):
    dest, outside = tmp_path / "export", tmp_path / "outside"
    outside.mkdir()

    def swap() -> None:  # after two files of DCIM/100CANON: DCIM becomes a link
        os.rename(dest / "DCIM", tmp_path / "moved")
        (dest / "DCIM").symlink_to(outside)

    store = SwapBeforeRead(world.blobs, 3, swap)
    with pytest.raises(FailedPrecondition, match="symbolic link"):
        export_case(world.db, store, case_id, dest, LOCAL)
    assert store.reads == 3
    assert everything_below(outside) == []
    assert everything_below(tmp_path / "moved") == ["100CANON", "100CANON/IMG_0001.JPG",
                                                    "100CANON/IMG_0002.JPG"]


def test_the_destination_itself_swapped_mid_export_keeps_writing_where_it_was_checked(
        world, case_id, tmp_path):
    dest, outside = tmp_path / "export", tmp_path / "outside"
    outside.mkdir()

    def swap() -> None:
        os.rename(dest, tmp_path / "checked")
        dest.symlink_to(outside)

    export_case(world.db, SwapBeforeRead(world.blobs, 2, swap), case_id, dest, LOCAL)
    assert everything_below(outside) == []
    assert [p for p in everything_below(tmp_path / "checked") if p.endswith(".JPG")] == sorted(FILES)


def test_a_file_planted_as_a_symlink_mid_export_is_not_followed(world, case_id, tmp_path):
    dest, outside = tmp_path / "export", tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("untouched")

    def plant() -> None:
        (dest / "DCIM" / "101CANON").mkdir(parents=True)
        (dest / "DCIM" / "101CANON" / "IMG_0003.JPG").symlink_to(victim)

    with pytest.raises(FailedPrecondition):
        export_case(world.db, SwapBeforeRead(world.blobs, 3, plant), case_id, dest, LOCAL)
    assert victim.read_text() == "untouched"
