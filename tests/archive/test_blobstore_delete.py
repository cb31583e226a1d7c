"""BlobStore.delete (purge, R19) on a real temporary directory."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest

from archive_server.blobstore import FileBlobStore, PartialKey
from archive_server.errors import NotFound

SESSION = "0f8fad5b-d9cb-469f-a165-70867728950e"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    return FileBlobStore(tmp_path / "blobs")


def put(store: FileBlobStore, data: bytes) -> str:
    digest = sha(data)
    key = PartialKey(SESSION, digest)
    store.append(key, 0, data)
    store.commit(key, digest, len(data))
    return digest


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_delete_removes_only_that_blob(store):
    gone = put(store, b"purged case image")
    kept = put(store, b"another case's image")
    assert store.delete(gone) is True
    assert not store.has(gone)
    with pytest.raises(NotFound):
        store.open(gone)
    assert store.has(kept)
    with store.open(kept) as fh:
        assert fh.read() == b"another case's image"
    assert files_under(store.root) == [store.storage_key(kept)]


def test_delete_of_an_absent_blob_is_false_and_changes_nothing(store):
    put(store, b"kept")
    before = files_under(store.root)
    assert store.delete(sha(b"never stored")) is False
    gone = put(store, b"twice")
    assert store.delete(gone) is True
    assert store.delete(gone) is False
    assert files_under(store.root) == before


def test_delete_leaves_partial_uploads_of_the_same_content_alone(store):
    data = b"same bytes, uploading again elsewhere"
    digest = put(store, data)
    key = PartialKey("7c9e6679-7425-40de-944b-e07fc1f90ae7", digest)
    store.append(key, 0, data[:5])
    assert store.delete(digest)
    assert store.partial_size(key) == 5
    # The store still takes the same blob again after a purge (its directories stay).
    store.append(key, 5, data[5:])
    store.commit(key, digest, len(data))
    assert store.has(digest)


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
