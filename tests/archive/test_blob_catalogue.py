"""Issue 13, storage: a database row is never proof that a blob exists; purge
never races an upload of the same bytes; fsck finds and repairs what it can,
while the archive serves. On SQLite + folder and PostgreSQL + S3."""
from __future__ import annotations

import json
import os
import threading

import pytest
import sqlalchemy as sa

from archive_server import admin
from archive_server import blobs as catalogue
from archive_server.errors import Aborted, DataLoss, FailedPrecondition, OutOfRange
from archive_server.models import Blob, SessionBlob
from bildsluss.v1 import ingest_pb2 as pb
from tests.archive.client import digest, open_request, sha256_hex, write_requests
from tests.archive.world import LOCAL, World, run_cli


@pytest.fixture
def world(fresh_db_url, fresh_blobs_url, tmp_path):
    w = World.create(fresh_db_url, tmp_path / "data", fresh_blobs_url)
    yield w
    w.close()


def missing(world: World, session_id: str, files: dict[str, bytes]) -> set[str]:
    response = world.core.find_missing(pb.FindMissingBlobsRequest(
        session_id=session_id, blobs=[digest(d) for d in files.values()]))
    return {b.sha256 for b in response.missing}


def write(world: World, session_id: str, data: bytes) -> pb.WriteResponse:
    return world.core.write(iter(write_requests(session_id, data)))


def commit(world: World, session_id: str) -> pb.CommitSessionResponse:
    return world.core.commit_session(pb.CommitSessionRequest(session_id=session_id))


def corrupt(world: World, sha: str, data: bytes) -> None:
    """Damage the stored bytes (same size), as a disk or an operator might."""
    if hasattr(world.blobs, "path"):
        world.blobs.path(sha).write_bytes(data)
    else:
        world.blobs.client.put_object(Bucket=world.blobs.bucket, Key=world.blobs._key(world.blobs.storage_key(sha)),
                                      Body=data)


def put_raw(world: World, relative: str, data: bytes) -> None:
    if hasattr(world.blobs, "path"):
        target = world.blobs.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    else:
        world.blobs.client.put_object(Bucket=world.blobs.bucket, Key=world.blobs._key(relative), Body=data)


# -- (a) a row is not proof ---------------------------------------------------------------


def test_a_blob_whose_bytes_are_gone_is_missing_and_is_uploaded_again(world):
    files = world.files(2)
    first = world.ingest(files=files)
    lost = next(iter(files.values()))
    sha = sha256_hex(lost)
    assert world.blobs.delete(sha)  # disk fault, old backup restored, operator error
    with world.db.read() as s:
        assert s.get(Blob, sha) is not None  # the row still says stored

    again = open_request(files)
    world.core.open_session(again)
    assert missing(world, again.session_id, files) == {sha}
    status = world.core.query_write_status(pb.QueryWriteStatusRequest(session_id=again.session_id,
                                                                      blob=digest(lost)))
    assert not status.complete
    with pytest.raises(FailedPrecondition, match=sha):
        commit(world, again.session_id)
    assert write(world, again.session_id, lost).complete
    assert world.blobs.stat(sha).size == len(lost)
    assert missing(world, again.session_id, files) == set()
    assert commit(world, again.session_id).case_id not in ("", first)


def test_a_blob_cut_short_in_the_store_is_missing(world):
    data = os.urandom(5000)
    world.ingest(files={"a.jpg": data})
    corrupt(world, sha256_hex(data), data[:100])
    request = open_request({"b.jpg": data})
    world.core.open_session(request)
    assert missing(world, request.session_id, {"b.jpg": data}) == {sha256_hex(data)}
    assert write(world, request.session_id, data).complete  # replaces the damaged copy
    with world.blobs.open(sha256_hex(data)) as fh:
        assert fh.read() == data


# -- (b) purge never races an upload of the same bytes ---------------------------------------


@pytest.mark.slow  # ~3 s: waits for a write that must block on the purge
def test_an_upload_between_a_purges_commit_and_its_delete_never_gets_a_receipt_for_deleted_bytes(
        world, monkeypatch):
    data = os.urandom(20_000)
    sha = sha256_hex(data)
    case = world.ingest(files={"DCIM/a.jpg": data})
    request = open_request({"DCIM/b.jpg": data})  # another card, the same bytes
    world.core.open_session(request)
    race: dict[str, object] = {}
    real_delete = world.blobs.delete

    def delete_after_a_racing_upload(digest_: str) -> bool:
        def upload() -> None:
            try:
                race["write"] = write(world, request.session_id, data).complete
            except (Aborted, DataLoss, OutOfRange) as e:
                race["write"] = type(e).__name__
        t = threading.Thread(target=upload)
        t.start()
        t.join(timeout=1.5)  # before: completes at once; now: waits for the purge's lock
        deleted = real_delete(digest_)
        race["thread"] = t
        return deleted

    monkeypatch.setattr(world.blobs, "delete", delete_after_a_racing_upload)
    admin.purge_case(world.db, world.blobs, LOCAL, case, "Gallringsbeslut 2026:9")
    monkeypatch.undo()
    race["thread"].join(timeout=60)  # type: ignore[attr-defined]
    if race["write"] is True:
        # A confirmed upload: its bytes must still be there.
        assert world.blobs.stat(sha) is not None, "receipt-able blob deleted by the purge"
    else:
        assert race["write"] in ("Aborted", "DataLoss")
        assert write(world, request.session_id, data).complete  # the agent retries
    receipts = commit(world, request.session_id).receipts
    assert [r.sha256 for r in receipts] == [sha]
    with world.blobs.open(sha) as fh:
        assert fh.read() == data


def test_a_tombstoned_blob_is_not_adopted_until_the_purge_finishes(world):
    data = os.urandom(3000)
    sha = sha256_hex(data)
    world.ingest(files={"a.jpg": data})
    with world.db.write() as s:
        catalogue.mark_purging(s, [sha])
    request = open_request({"b.jpg": data})
    world.core.open_session(request)
    assert missing(world, request.session_id, {"b.jpg": data}) == {sha}
    with pytest.raises(Aborted):
        write(world, request.session_id, data)
    # A tombstone whose blob is still used is undone, not deleted.
    assert catalogue.finish_purges(world.db, world.blobs) == 0
    assert world.blobs.stat(sha) is not None
    assert write(world, request.session_id, data).complete


# -- (c) fsck -----------------------------------------------------------------------------------


def fsck(world: World, *args: str) -> tuple[int, dict]:
    result = run_cli(["--db", world.db.url, "--data", str(world.data), "--blobs", world.blobs.url],
                     "fsck", "--json", "--grace", "0", *args, ok=False)
    assert result.returncode in (0, 4), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_fsck_finds_missing_corrupt_orphaned_foreign_and_stalled_purges_and_repairs_them(world):
    files = world.files(4)
    world.ingest(files=files)
    lost, damaged, fine, _ = files.values()
    code, clean = fsck(world)
    assert code == 0 and clean["clean"] and clean["bytes_hashed"] == sum(len(d) for d in files.values())

    world.blobs.delete(sha256_hex(lost))
    corrupt(world, sha256_hex(damaged), bytes(len(damaged)))
    orphan = os.urandom(700)
    put_raw(world, world.blobs.storage_key(sha256_hex(orphan)), orphan)
    put_raw(world, "README.txt", b"someone else's")
    stalled = os.urandom(800)
    put_raw(world, world.blobs.storage_key(sha256_hex(stalled)), stalled)
    assert catalogue.tombstone(world.db, sha256_hex(stalled), len(stalled))

    code, report = fsck(world)
    assert code == 4 and not report["clean"]
    assert report["counts"] == {"missing": 1, "corrupt": 1, "orphaned": 1, "foreign": 1, "purging": 1}
    by_kind = {f["kind"]: f for f in report["findings"]}
    assert by_kind["missing"]["sha256"] == sha256_hex(lost)
    assert by_kind["corrupt"]["sha256"] == sha256_hex(damaged)
    assert by_kind["orphaned"]["sha256"] == sha256_hex(orphan)
    assert by_kind["foreign"]["key"] == "README.txt"
    assert by_kind["purging"]["sha256"] == sha256_hex(stalled)
    assert world.blobs.stat(sha256_hex(orphan)) is not None  # a check changes nothing

    code, repaired = fsck(world, "--repair")
    assert code == 4  # the lost blob cannot be repaired here
    assert {f["kind"]: f["repaired"] is not None for f in repaired["findings"]} == {
        "missing": False, "corrupt": True, "orphaned": True, "foreign": False, "purging": True}
    assert world.blobs.stat(sha256_hex(orphan)) is None and world.blobs.stat(sha256_hex(stalled)) is None
    assert world.blobs.stat(sha256_hex(damaged)) is None  # quarantined: the next upload restores it

    # The agent of a card with those bytes is told both are missing and sends them.
    request = open_request({"x.jpg": lost, "y.jpg": damaged, "z.jpg": fine})
    world.core.open_session(request)
    assert missing(world, request.session_id, {"a": lost, "b": damaged, "c": fine}) == {
        sha256_hex(lost), sha256_hex(damaged)}
    for data in (lost, damaged):
        assert write(world, request.session_id, data).complete
    commit(world, request.session_id)
    code, after = fsck(world)
    assert code == 0 and after["counts"]["foreign"] == 1 and after["quarantined_objects"] == 1


@pytest.mark.slow  # ~5-10 s: uploads racing repeated repairs
def test_fsck_repair_while_uploads_run_never_loses_a_receipted_blob(world):
    stop = threading.Event()
    errors: list[BaseException] = []

    def repair_loop() -> None:
        while not stop.is_set():
            try:
                fsck(world, "--repair", "--quick")
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                return

    checker = threading.Thread(target=repair_loop)
    checker.start()
    receipted: dict[str, bytes] = {}
    try:
        for _ in range(8):
            files = world.files(3)
            request = open_request(files)
            world.core.open_session(request)
            for data in files.values():
                for _attempt in range(20):  # what the agent does: retry ABORTED / DATA_LOSS
                    try:
                        if write(world, request.session_id, data).complete:
                            break
                    except (Aborted, DataLoss, OutOfRange):
                        continue
            for _attempt in range(20):
                try:
                    response = commit(world, request.session_id)
                    break
                except FailedPrecondition:
                    for data in files.values():
                        if sha256_hex(data) in missing(world, request.session_id, files):
                            write(world, request.session_id, data)
            for r in response.receipts:
                receipted[r.sha256] = next(d for d in files.values() if sha256_hex(d) == r.sha256)
    finally:
        stop.set()
        checker.join(timeout=120)
    assert errors == []
    for sha, data in receipted.items():
        with world.blobs.open(sha) as fh:
            assert fh.read() == data
    with world.db.read() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Blob).where(Blob.state != "stored")) == 0


def test_a_blob_and_its_senders_mark_are_one_transaction(world, monkeypatch):
    """One durable database commit per uploaded blob (issue 12): the blob's row
    and "this session sent it" are written together, so that neither is ever
    there without the other."""
    files = world.files(1)
    request = open_request(files)
    world.core.open_session(request)
    data = next(iter(files.values()))
    writes = 0
    real_write = world.db.write

    def counting():
        nonlocal writes
        writes += 1
        return real_write()

    monkeypatch.setattr(world.db, "write", counting)
    assert write(world, request.session_id, data).complete
    assert writes == 1
    with world.db.read() as s:
        assert s.get(SessionBlob, (request.session_id, sha256_hex(data))) is not None
    assert missing(world, request.session_id, files) == set()
