"""The folder blob store's own rules (paths, symlinks, fsync, sweep) on a real
temporary directory; the contract both backends keep is in test_blobstores.py."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest

from archive_server.blobstores import FolderBlobStore, PartialKey
from archive_server.errors import DataLoss, OutOfRange

SESSION = "0f8fad5b-d9cb-469f-a165-70867728950e"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    return FolderBlobStore(tmp_path / "blobs")


def put(store: FolderBlobStore, data: bytes) -> str:
    digest = sha(data)
    key = PartialKey(SESSION, digest)
    with store.begin_write(key) as w:
        w.write(0, data)
        w.commit(digest, len(data))
    return digest


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_delete_leaves_partial_uploads_of_the_same_content_alone(store):
    data = b"same bytes, uploading again elsewhere"
    digest = put(store, data)
    key = PartialKey("7c9e6679-7425-40de-944b-e07fc1f90ae7", digest)
    with store.begin_write(key) as w:
        w.write(0, data[:5])
    assert store.delete(digest)
    assert store.committed_size(key) == 5
    # The store still takes the same blob again after a purge (its directories stay).
    with store.begin_write(key) as w:
        w.write(5, data[5:])
        w.commit(digest, len(data))
    assert store.stat(digest) is not None


def test_an_append_after_commit_never_touches_the_stored_blob(store):
    data = os.urandom(100)
    key = PartialKey(SESSION, sha(data))
    with store.begin_write(key) as w:
        w.write(0, data)
        w.commit(key.sha256, len(data))
    with store.begin_write(key) as late, pytest.raises(OutOfRange) as info:
        late.write(100, b"more")  # a late writer starts a new, empty partial
    assert info.value.committed_size == 0
    with store.open(key.sha256) as fh:
        assert fh.read() == data


def test_sweep_removes_only_stale_partials(store):
    old = PartialKey(SESSION, sha(b"old"))
    new = PartialKey("7c9e6679-7425-40de-944b-e07fc1f90ae7", sha(b"new"))
    for key, data in ((old, b"ol"), (new, b"ne")):
        with store.begin_write(key) as w:
            w.write(0, data)
    past = 1_000_000_000
    os.utime(store.partial_path(old), (past, past))
    assert store.sweep_partials(3600) == 1
    assert store.committed_size(old) == 0 and store.committed_size(new) == 2
    assert not (store.root / "partial" / SESSION).exists()


@pytest.mark.parametrize("bad", [
    "",
    "ABCDEF" + "0" * 58,           # upper case is not how the store names blobs
    "0" * 63,
    "0" * 65,
    "../" + "0" * 61,
    "../../etc/passwd",
    "/" + "0" * 63,
    "0" * 62 + "/x",
    "0" * 63 + "\n",
])
def test_malformed_digest_is_refused_before_touching_anything(store, bad):
    put(store, b"kept")
    before = files_under(store.root)
    with pytest.raises(ValueError):
        store.delete(bad)
    assert files_under(store.root) == before


def test_a_symlink_in_the_blobs_place_is_removed_not_its_target(store, tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"not the store's")
    digest = sha(b"whatever")
    link = store.path(digest)
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    assert store.delete(digest) is True
    assert not os.path.lexists(link)
    assert outside.read_bytes() == b"not the store's"


def test_a_store_directory_that_leads_outside_is_refused(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    digest = sha(b"victim")
    (elsewhere / digest[2:4]).mkdir(parents=True)
    victim = elsewhere / digest[2:4] / digest
    victim.write_bytes(b"victim")
    (store.root / digest[:2]).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the store"):
        store.delete(digest)
    assert victim.read_bytes() == b"victim"


def test_delete_fsyncs_the_blobs_directory(store, monkeypatch):
    """Durability: the directory entry's removal is flushed (the real fsync
    runs; the spy only records which kind of file it was given)."""
    digest = put(store, b"durably gone")
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    assert store.delete(digest)
    assert str(store.path(digest).parent) in synced


def _reads(monkeypatch) -> list[int]:
    """Bytes read back from partial files (the real pread runs)."""
    read: list[int] = []
    real_pread = os.pread

    def spy(fd, n, offset):
        block = real_pread(fd, n, offset)
        read.append(len(block))
        return block

    monkeypatch.setattr(os, "pread", spy)
    return read


def test_commit_reads_back_only_the_bytes_its_writer_did_not_append(store, monkeypatch):
    """Hashed while received (issue 12): a blob sent in one Write is not read
    again at its commit; a resumed one only for the part an earlier Write sent."""
    read = _reads(monkeypatch)
    data = os.urandom(3 << 20)
    put(store, data)
    assert sum(read) == 0
    resumed = os.urandom(3 << 20)
    key = PartialKey(SESSION, sha(resumed))
    with store.begin_write(key) as first:
        first.write(0, resumed[:1_000_000])
    with store.begin_write(key) as second:
        second.write(1_000_000, resumed[1_000_000:2_000_000])
        second.write(2_000_000, resumed[2_000_000:])
        assert second.commit(key.sha256, len(resumed))
    assert sum(read) == 1_000_000
    assert store.path(key.sha256).read_bytes() == resumed


def test_bytes_another_writer_appended_meanwhile_are_hashed_from_the_file(store):
    data = os.urandom(300_000)
    key = PartialKey(SESSION, sha(data))
    with store.begin_write(key) as a, store.begin_write(key) as b:
        a.write(0, data[:100_000])
        b.write(100_000, data[100_000:200_000])
        a.write(200_000, data[200_000:])
        a.commit(key.sha256, len(data))
    assert store.path(key.sha256).read_bytes() == data


def test_a_partial_removed_and_begun_anew_under_a_writer_is_hashed_anew(store):
    """The writer's digest belongs to the file it appended to: a partial swept and
    begun again by another writer (other bytes at the same place) is read whole,
    and bytes that do not hash to the name are refused, never stored under it."""
    data = os.urandom(200_000)
    other = os.urandom(1000) + data[1000:]
    key = PartialKey(SESSION, sha(data))
    with store.begin_write(key) as a:
        a.write(0, data[:1000])
        store.discard(key)
        with store.begin_write(key) as b:
            b.write(0, other)
        with pytest.raises(DataLoss):
            a.commit(key.sha256, len(data))
    assert store.stat(key.sha256) is None
