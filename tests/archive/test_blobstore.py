"""The filesystem blob store on a real temporary directory."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

from archive_server.blobstore import FileBlobStore, PartialKey, open_blobstore
from archive_server.errors import ConfigError, DataLoss, NotFound, OutOfRange

SESSION_A = "0f8fad5b-d9cb-469f-a165-70867728950e"
SESSION_B = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    return FileBlobStore(tmp_path / "blobs")


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_append_commit_and_read_back(store):
    data = os.urandom(3 << 20)
    key = PartialKey(SESSION_A, sha(data))
    assert store.partial_size(key) == 0 and not store.has(key.sha256)
    offset = 0
    for i in range(0, len(data), 1 << 20):
        offset = store.append(key, offset, data[i:i + (1 << 20)])
    assert offset == len(data) == store.partial_size(key)
    store_key = store.commit(key, key.sha256, len(data))
    assert store_key == f"{key.sha256[:2]}/{key.sha256[2:4]}/{key.sha256}"
    assert store.has(key.sha256)
    with store.open(key.sha256) as fh:
        assert fh.read() == data
    assert store.partial_size(key) == 0
    assert files_under(store.root) == [store_key]


def test_wrong_offset_is_out_of_range_with_the_committed_size(store):
    key = PartialKey(SESSION_A, sha(b"abcdef"))
    store.append(key, 0, b"abc")
    for offset in (0, 2, 4):
        with pytest.raises(OutOfRange) as info:
            store.append(key, offset, b"def")
        assert info.value.committed_size == 3
    assert store.partial_size(key) == 3


def test_mismatch_is_data_loss_and_discards_the_partial(store):
    data = b"the real bytes"
    key = PartialKey(SESSION_A, sha(data))
    store.append(key, 0, b"the fake bytes")
    with pytest.raises(DataLoss):
        store.commit(key, key.sha256, len(data))
    assert store.partial_size(key) == 0 and not store.has(key.sha256)
    store.append(key, 0, data[:5])
    with pytest.raises(DataLoss):  # too short
        store.commit(key, key.sha256, len(data))
    assert files_under(store.root) == []


def test_commit_without_bytes_is_data_loss_except_for_the_empty_blob(store):
    with pytest.raises(DataLoss):
        store.commit(PartialKey(SESSION_A, sha(b"x")), sha(b"x"), 1)
    empty = sha(b"")
    store.commit(PartialKey(SESSION_A, empty), empty, 0)
    assert store.has(empty)


def test_partials_are_per_session(store):
    data = os.urandom(1000)
    a, b = PartialKey(SESSION_A, sha(data)), PartialKey(SESSION_B, sha(data))
    store.append(a, 0, data[:600])
    store.append(b, 0, data[:100])
    assert store.partial_size(a) == 600 and store.partial_size(b) == 100
    store.append(a, 600, data[600:])
    store.commit(a, a.sha256, len(data))
    assert store.partial_size(b) == 100  # untouched by the other session
    store.discard_session(SESSION_B)
    assert store.partial_size(b) == 0
    assert not (store.root / "partial" / SESSION_B).exists()


def test_committing_an_already_stored_blob_again_is_harmless(store):
    data = os.urandom(500)
    for session in (SESSION_A, SESSION_B):
        key = PartialKey(session, sha(data))
        store.append(key, 0, data)
        store.commit(key, key.sha256, len(data))
    with store.open(sha(data)) as fh:
        assert fh.read() == data


def test_concurrent_appenders_never_interleave(store):
    """Two writers of the same partial (a retried stream while the old one still
    runs): every byte lands exactly once, in order, or the writer is told the
    committed size."""
    data = os.urandom(64 * 1024)
    key = PartialKey(SESSION_A, sha(data))
    chunk = 1024

    def writer() -> None:
        while True:
            size = store.partial_size(key)
            if size >= len(data):
                return
            try:
                store.append(key, size, data[size:size + chunk])
            except OutOfRange:
                continue

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.commit(key, key.sha256, len(data))
    with store.open(key.sha256) as fh:
        assert fh.read() == data


def test_an_append_after_commit_never_touches_the_stored_blob(store):
    data = os.urandom(100)
    key = PartialKey(SESSION_A, sha(data))
    store.append(key, 0, data)
    store.commit(key, key.sha256, len(data))
    with pytest.raises(OutOfRange) as info:  # a late writer starts a new, empty partial
        store.append(key, 100, b"more")
    assert info.value.committed_size == 0
    with store.open(key.sha256) as fh:
        assert fh.read() == data


def test_sweep_removes_only_stale_partials(store):
    old = PartialKey(SESSION_A, sha(b"old"))
    new = PartialKey(SESSION_B, sha(b"new"))
    store.append(old, 0, b"ol")
    store.append(new, 0, b"ne")
    past = 1_000_000_000
    os.utime(store.partial_path(old), (past, past))
    assert store.sweep_partials(3600) == 1
    assert store.partial_size(old) == 0 and store.partial_size(new) == 2
    assert not (store.root / "partial" / SESSION_A).exists()


def test_missing_blob_is_not_found(store):
    with pytest.raises(NotFound):
        store.open(sha(b"nothing"))


def test_urls(tmp_path):
    assert open_blobstore(str(tmp_path / "a")).root == (tmp_path / "a").resolve()
    assert open_blobstore((tmp_path / "b").as_uri()).root == (tmp_path / "b").resolve()
    with pytest.raises(ConfigError):
        open_blobstore("s3://bucket/prefix")
    with pytest.raises(ConfigError):
        open_blobstore("ftp://example.org/x")


def test_bad_keys_are_refused(store):
    with pytest.raises(ValueError):
        store.partial_path(PartialKey("../../etc", sha(b"x")))
    with pytest.raises(ValueError):
        store.partial_path(PartialKey(SESSION_A, "../" + "a" * 61))
