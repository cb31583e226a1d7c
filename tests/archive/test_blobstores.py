"""The blob store contract, on both backends: a real temporary folder, and a
real S3 server (SeaweedFS, one per test session) with a prefix per test."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

from archive_server.blobstores import FolderBlobStore, PartialKey, open_blobstore
from archive_server.db import Database
from archive_server.errors import ConfigError, DataLoss, NotFound, OutOfRange, Unavailable
from tests.archive.databases import temp_database

SESSION_A = "0f8fad5b-d9cb-469f-a165-70867728950e"
SESSION_B = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
PART = 5 << 20  # the S3 store's part size in these tests (S3's smallest)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path):
    if request.param == "folder":
        yield FolderBlobStore(tmp_path / "blobs")
        return
    from archive_server.blobstores.s3 import S3Options

    server = request.getfixturevalue("s3_server")
    with temp_database("sqlite", tmp_path / "db") as url:
        db = Database(url)
        db.upgrade_schema()
        yield open_blobstore(server.fresh_url(), db, S3Options(part_size=PART))
        db.dispose()


def put(store, data: bytes, session: str = SESSION_A, chunk: int = 1 << 20) -> str:
    key = PartialKey(session, sha(data))
    with store.begin_write(key) as w:
        for i in range(0, len(data), chunk):
            w.write(i, data[i:i + chunk])
        return w.commit(key.sha256, len(data))


def keys(store) -> list[tuple[str, str]]:
    return [(o.kind, o.key) for o in store.iterate()]


def test_write_commit_stat_and_read_back(store):
    data = os.urandom(3 << 20)
    digest = sha(data)
    assert store.stat(digest) is None and store.committed_size(PartialKey(SESSION_A, digest)) == 0
    storage_key = put(store, data)
    assert storage_key == f"{digest[:2]}/{digest[2:4]}/{digest}" == store.storage_key(digest)
    assert store.stat(digest).size == len(data)
    with store.open(digest) as fh:
        assert fh.read() == data
    assert store.committed_size(PartialKey(SESSION_A, digest)) == 0
    assert keys(store) == [("blob", storage_key)]


@pytest.mark.slow  # ~2 s on S3: three parts
def test_a_blob_of_several_parts_resumes_in_another_writer_at_the_committed_size(store):
    data = os.urandom(2 * PART + 12345)
    key = PartialKey(SESSION_A, sha(data))
    with store.begin_write(key) as w:
        w.write(0, data[:PART + 1000])
    # The folder keeps every byte; S3 keeps whole parts (the rest was in the
    # first writer's memory only). Either way the committed size is durable.
    committed = store.committed_size(key)
    assert committed in (PART, PART + 1000)
    with store.begin_write(key) as w:  # another process would see the same
        assert w.committed_size == committed == w.offset
        with pytest.raises(OutOfRange) as info:
            w.write(0, data[:10])
        assert info.value.committed_size == committed
        w.write(committed, data[committed:])
        w.commit(key.sha256, len(data))
    with store.open(key.sha256) as fh:
        assert fh.read() == data
    assert [k for k, _ in keys(store)] == ["blob"]


def test_wrong_offset_is_out_of_range_with_the_committed_size(store):
    key = PartialKey(SESSION_A, sha(b"abcdef"))
    with store.begin_write(key) as w:
        w.write(0, b"abc")
        for offset in (0, 2, 4):
            with pytest.raises(OutOfRange):
                w.write(offset, b"def")


def test_mismatch_is_data_loss_and_stores_nothing(store):
    data = b"the real bytes"
    key = PartialKey(SESSION_A, sha(data))
    with store.begin_write(key) as w:
        w.write(0, b"the fake bytes")
        with pytest.raises(DataLoss):
            w.commit(key.sha256, len(data))
    assert store.committed_size(key) == 0 and store.stat(key.sha256) is None
    with store.begin_write(key) as w:
        w.write(0, data[:5])
        with pytest.raises(DataLoss):  # too short
            w.commit(key.sha256, len(data))
    assert store.stat(key.sha256) is None
    assert [k for k, _ in keys(store)] == []


@pytest.mark.slow  # ~2 s on S3
def test_a_multipart_upload_that_does_not_hash_to_its_name_is_discarded(store):
    data = os.urandom(PART + 100)
    key = PartialKey(SESSION_A, sha(data))
    bad = bytearray(data)
    bad[7] ^= 1
    with store.begin_write(key) as w:
        w.write(0, bytes(bad))
        with pytest.raises(DataLoss):
            w.commit(key.sha256, len(data))
    assert store.committed_size(key) == 0 and store.stat(key.sha256) is None
    assert put(store, data)


def test_the_empty_blob(store):
    empty = sha(b"")
    with store.begin_write(PartialKey(SESSION_A, empty)) as w:
        w.commit(empty, 0)
    assert store.stat(empty).size == 0


def test_partials_are_per_session(store):
    data = os.urandom(1000)
    a, b = PartialKey(SESSION_A, sha(data)), PartialKey(SESSION_B, sha(data))
    with store.begin_write(a) as wa, store.begin_write(b) as wb:
        wa.write(0, data[:600])
        wb.write(0, data[:100])
        wa.write(600, data[600:])
        wa.commit(a.sha256, len(data))
    store.discard_session(SESSION_B)
    assert store.committed_size(b) == 0
    assert [k for k, _ in keys(store)] == ["blob"]


def test_committing_an_already_stored_blob_again_is_harmless(store):
    data = os.urandom(500)
    put(store, data, SESSION_A)
    put(store, data, SESSION_B)
    with store.open(sha(data)) as fh:
        assert fh.read() == data


def test_delete_removes_only_that_blob_and_says_whether_it_was_there(store):
    gone, kept = os.urandom(100), os.urandom(100)
    put(store, gone)
    put(store, kept)
    assert store.delete(sha(gone)) is True
    assert store.delete(sha(gone)) is False
    assert store.stat(sha(gone)) is None and store.stat(sha(kept)) is not None
    with pytest.raises(NotFound):
        store.open(sha(gone))
    assert store.delete(sha(b"never stored")) is False
    with pytest.raises(ValueError):
        store.delete("../" + "0" * 61)


def test_quarantine_moves_a_blob_out_of_its_name(store):
    data = os.urandom(100)
    put(store, data)
    moved = store.quarantine(sha(data))
    assert moved and moved.startswith("quarantine/")
    assert store.stat(sha(data)) is None
    assert store.quarantine(sha(data)) is None
    assert ("quarantine", moved) in keys(store)


def test_iterate_lists_blobs_in_hash_order_and_names_foreign_objects(store):
    blobs = sorted(sha(put_data) for put_data in [os.urandom(10) for _ in range(5)] if put(store, put_data))
    if isinstance(store, FolderBlobStore):
        (store.root / "notes.txt").write_text("an operator's")
        (store.root / "ab").mkdir(exist_ok=True)
        (store.root / "ab" / "stray").write_text("x")
    else:
        for name in ("notes.txt", "ab/stray"):
            store.client.put_object(Bucket=store.bucket, Key=store._key(name), Body=b"x")
    found = list(store.iterate())
    assert [o.sha256 for o in found if o.kind == "blob"] == blobs
    assert sorted(o.key for o in found if o.kind == "foreign") == ["ab/stray", "notes.txt"]


def test_concurrent_writers_of_one_partial_never_interleave(store):
    """Two writers of the same partial (a retried stream while the old one still
    runs): the stored blob is whole, or a writer is told the committed size."""
    data = os.urandom(256 * 1024)
    key = PartialKey(SESSION_A, sha(data))
    chunk = 8192
    done = threading.Event()

    def writer() -> None:
        while not done.is_set():
            with store.begin_write(key) as w:
                try:
                    offset = w.offset
                    while offset < len(data):
                        w.write(offset, data[offset:offset + chunk])
                        offset += chunk
                    w.commit(key.sha256, len(data))
                    done.set()
                except (OutOfRange, DataLoss):
                    continue

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with store.open(key.sha256) as fh:
        assert fh.read() == data


def test_bad_keys_are_refused(store):
    for bad in (PartialKey("../../etc", sha(b"x")), PartialKey(SESSION_A, "../" + "a" * 61)):
        with pytest.raises(ValueError):
            store.begin_write(bad)


def test_urls(tmp_path):
    assert open_blobstore(str(tmp_path / "a")).root == (tmp_path / "a").resolve()
    assert open_blobstore((tmp_path / "b").as_uri()).root == (tmp_path / "b").resolve()
    for bad in ("ftp://example.org/x", "s3://", "s3://bucket/../x", "file://host/x"):
        with pytest.raises(ConfigError):
            open_blobstore(bad)


def test_an_s3_store_that_cannot_be_reached_is_unavailable(tmp_path, monkeypatch):
    from archive_server.blobstores.s3 import S3Options

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    store = open_blobstore("s3://nowhere/p", None, S3Options(endpoint_url="http://127.0.0.1:9", region="us-east-1"))
    with pytest.raises(Unavailable):
        store.check()
    with pytest.raises(Unavailable):
        store.stat(sha(b"x"))
