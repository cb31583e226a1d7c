"""The Ingest protocol against a real archive process, on SQLite and PostgreSQL.

Each test uses its own session ids and patients, so they share one server.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from archive_server import admin
from archive_server.models import AuditEvent, Blob, Case, IngestSession
from bildsluss.v1 import ingest_pb2 as pb
from tests.archive.client import (
    commit,
    digest,
    find_missing,
    ingest_files,
    open_request,
    personnummer,
    query_status,
    sha256_hex,
    status_code,
    upload_missing,
    write_blob,
    write_requests,
)
from tests.archive.world import LOCAL

ARCHIVE = [sys.executable, "-m", "archive_server.cli"]


def files_of(*sizes: int, prefix: str = "DCIM/100CANON/IMG_") -> dict[str, bytes]:
    return {f"{prefix}{i:04d}.JPG": os.urandom(n) for i, n in enumerate(sizes, start=1)}


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*ARCHIVE, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def storage_args(archive) -> list[str]:
    return ["--data", str(archive.data), "--db", archive.db, "--blobs", archive.blobs]


def test_happy_path_files_a_case_that_search_and_export_return(running_archive, stub, tmp_path):
    files = files_of(3 << 20, 1000, 0 + 1)  # one blob spans several chunks
    request = open_request(files)
    assert stub.OpenSession(request, timeout=10) == pb.OpenSessionResponse(
        session_id=request.session_id, committed=False)
    assert find_missing(stub, request.session_id, list(files.values())) == {
        sha256_hex(b) for b in files.values()}
    for data in files.values():
        assert query_status(stub, request.session_id, data) == pb.QueryWriteStatusResponse(
            committed_size=0, complete=False)
        response = write_blob(stub, request.session_id, data)
        assert response == pb.WriteResponse(committed_size=len(data), complete=True)
        assert query_status(stub, request.session_id, data).complete
    assert find_missing(stub, request.session_id, list(files.values())) == set()

    response = commit(stub, request.session_id)

    assert response.case_id and response.case_version == 1
    assert [(r.relative_path, r.sha256, r.size_bytes) for r in response.receipts] == [
        (path, sha256_hex(data), len(data)) for path, data in files.items()]
    assert all(r.blob_id and r.media_item_id for r in response.receipts)
    assert len({r.media_item_id for r in response.receipts}) == len(files)

    found = [json.loads(line) for line in cli(
        "cases", *storage_args(running_archive), "--patient", request.patient_id, "--json").stdout.splitlines()]
    assert len(found) == 1
    case = found[0]
    assert case["case_id"] == response.case_id
    assert case["patient"] == request.patient_id and case["department"] == request.department_hsa_id
    assert case["status"] == "unsigned" and case["version"] == 1 and case["confidential"] is False
    assert case["media"] == len(files)  # the contract: a count; the items are media_items
    assert [(m["path"], m["sha256"], m["size"], m["kind"]) for m in case["media_items"]] == [
        (p, sha256_hex(d), len(d), "image") for p, d in files.items()]
    assert [m["media_item_id"] for m in case["media_items"]] == [r.media_item_id for r in response.receipts]
    assert case["media_items"][0]["capture_time"].startswith("2025-03-14T09:30:00")
    fields = case["fields"]
    assert fields["mode"] == "photo" and fields["ehr_context"] is False
    assert fields["devices"] == [{"make": "Canon", "model": "Canon EOS 250D", "serial": "083051006721"}]
    assert len(fields["identity_evidence"]) == 2 and len(fields["files"]) == 3

    dest = tmp_path / "export"
    cli("export", response.case_id, str(dest), *storage_args(running_archive))
    for path, data in files.items():
        assert (dest / path).read_bytes() == data
    again = cli("export", response.case_id, str(dest), *storage_args(running_archive), check=False)
    assert again.returncode == 1 and "overwrite" in again.stderr
    for path, data in files.items():
        assert (dest / path).read_bytes() == data

    cli("audit", "verify", *storage_args(running_archive))


def test_ingest_search_and_export_are_audited(running_archive, stub, archive_db, tmp_path):
    files = files_of(500)
    request, response = ingest_files(stub, files)
    cli("cases", *storage_args(running_archive), "--patient", request.patient_id, "--json")
    cli("export", response.case_id, str(tmp_path / "out"), *storage_args(running_archive))
    with archive_db.read() as s:
        events = s.scalars(sa.select(AuditEvent).where(AuditEvent.case_id == response.case_id)
                           .order_by(AuditEvent.seq)).all()
        searches = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "case.search")).all()
    assert [e.action for e in events] == ["case.ingested", "case.exported"]
    assert events[0].actor == "agent:test-agent"
    assert events[0].details["session_id"] == request.session_id
    assert events[1].actor.startswith("cli:")
    assert any(e.details["patient_id"] == request.patient_id
               and e.details["results"] == [response.case_id] for e in searches)


def test_retried_open_and_commit_make_one_case(stub, archive_db):
    files = files_of(2000, 3000)
    request = open_request(files)
    first = stub.OpenSession(request, timeout=10)
    request.agent_version = "0.0-upgraded"  # an upgraded agent resuming the same card
    assert stub.OpenSession(request, timeout=10) == first
    # The same card read again may yield one reading more: still the same session.
    request.evidence.append(request.evidence[0])
    assert stub.OpenSession(request, timeout=10) == first
    upload_missing(stub, request.session_id, files)
    response = commit(stub, request.session_id)
    assert commit(stub, request.session_id) == response
    assert stub.OpenSession(request, timeout=10).committed is True
    assert commit(stub, request.session_id) == response
    with archive_db.read() as s:
        cases = s.scalars(sa.select(Case).where(Case.patient_id == request.patient_id)).all()
    assert [c.id for c in cases] == [response.case_id]


def test_same_session_id_with_other_content_is_already_exists(stub):
    files = files_of(100)
    request = open_request(files)
    stub.OpenSession(request, timeout=10)
    other = open_request(files, session_id=request.session_id)  # another patient
    assert status_code(lambda: stub.OpenSession(other, timeout=10)) == grpc.StatusCode.ALREADY_EXISTS
    changed = open_request(files_of(100), session_id=request.session_id, patient_id=request.patient_id)
    assert status_code(lambda: stub.OpenSession(changed, timeout=10)) == grpc.StatusCode.ALREADY_EXISTS


def test_upload_resumes_after_a_dropped_stream(stub, durable):
    # Folder: every byte received is kept. S3: whole parts are (the rest was
    # in the dropped stream's process only). Either way, resume where told.
    unit = durable.part or 300_000
    data = os.urandom(2 * unit + 100_000)
    files = {"DCIM/IMG_0001.JPG": data}
    request = open_request(files)
    stub.OpenSession(request, timeout=10)
    sent = unit + (50_000 if durable.part else 0)
    release = threading.Event()

    def half_then_hang():
        yield from write_requests(request.session_id, data, end=sent, chunk_size=100_000, finish=False)
        release.wait(30)  # the stream stays open, as when a card reader or network stalls

    call = stub.Write.future(half_then_hang(), timeout=30)
    deadline = time.monotonic() + 20
    while query_status(stub, request.session_id, data).committed_size < unit:
        assert time.monotonic() < deadline, "the first part never arrived"
        time.sleep(0.05)
    call.cancel()  # drop the stream
    release.set()
    assert call.cancelled() or call.code() == grpc.StatusCode.CANCELLED

    status = query_status(stub, request.session_id, data)
    assert status == pb.QueryWriteStatusResponse(committed_size=durable(sent), complete=False)
    assert write_blob(stub, request.session_id, data, offset=status.committed_size).complete
    response = commit(stub, request.session_id)
    assert response.receipts[0].sha256 == sha256_hex(data)


def test_half_closed_stream_answers_the_committed_size(stub, durable):
    data = os.urandom(10_000)
    request = open_request({"a.jpg": data})
    stub.OpenSession(request, timeout=10)
    response = write_blob(stub, request.session_id, data, end=4000, finish=False)
    assert response == pb.WriteResponse(committed_size=durable(4000), complete=False)
    assert write_blob(stub, request.session_id, data, offset=durable(4000)).complete


def test_write_at_a_wrong_offset_is_out_of_range(stub, durable):
    data = os.urandom(10_000)
    request = open_request({"a.jpg": data})
    stub.OpenSession(request, timeout=10)
    write_blob(stub, request.session_id, data, end=4000, finish=False)
    committed = durable(4000)
    for offset in {0, 3000, 5000} - {committed}:
        with pytest.raises(grpc.RpcError) as info:
            write_blob(stub, request.session_id, data, offset=offset)
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert str(committed) in info.value.details()
        assert ("bildsluss-committed-size", str(committed)) in tuple(info.value.trailing_metadata())
    assert query_status(stub, request.session_id, data).committed_size == committed
    assert write_blob(stub, request.session_id, data, offset=committed).complete


def test_corrupted_bytes_are_data_loss_and_nothing_is_recorded(archive_store, stub, archive_db):
    data = os.urandom(50_000)
    request = open_request({"a.jpg": data})
    stub.OpenSession(request, timeout=10)
    corrupted = bytearray(data)
    corrupted[20_000] ^= 0xFF
    stream = write_requests(request.session_id, bytes(corrupted), chunk_size=10_000, blob=digest(data))
    with pytest.raises(grpc.RpcError) as info:
        stub.Write(stream, timeout=30)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    sha = sha256_hex(data)
    assert query_status(stub, request.session_id, data) == pb.QueryWriteStatusResponse(
        committed_size=0, complete=False)
    with archive_db.read() as s:
        assert s.get(Blob, sha) is None
    assert archive_store.stat(sha) is None
    assert not [o for o in archive_store.iterate() if request.session_id in o.key]
    assert status_code(lambda: commit(stub, request.session_id)) == grpc.StatusCode.FAILED_PRECONDITION
    # Sent again correctly, it goes through.
    assert write_blob(stub, request.session_id, data).complete
    assert commit(stub, request.session_id).receipts[0].sha256 == sha


def test_short_upload_finished_early_is_data_loss(stub):
    data = os.urandom(5000)
    request = open_request({"a.jpg": data})
    stub.OpenSession(request, timeout=10)
    stream = write_requests(request.session_id, data, end=3000)  # finish_write at 3000 of 5000
    assert status_code(lambda: stub.Write(stream, timeout=10)) == grpc.StatusCode.DATA_LOSS
    assert query_status(stub, request.session_id, data).committed_size == 0


def test_data_beyond_the_declared_size_is_invalid(stub):
    data = os.urandom(5000)
    request = open_request({"a.jpg": data})
    stub.OpenSession(request, timeout=10)
    longer = data + b"x" * 100
    stream = write_requests(request.session_id, longer, blob=digest(data))
    assert status_code(lambda: stub.Write(stream, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT


def test_blob_not_in_the_manifest_is_failed_precondition(stub):
    data = os.urandom(1000)
    request = open_request({"a.jpg": data})
    stub.OpenSession(request, timeout=10)
    stranger = os.urandom(1000)
    fp = grpc.StatusCode.FAILED_PRECONDITION
    assert status_code(lambda: write_blob(stub, request.session_id, stranger)) == fp
    assert status_code(lambda: query_status(stub, request.session_id, stranger)) == fp
    assert status_code(lambda: find_missing(stub, request.session_id, [stranger])) == fp
    wrong_size = pb.BlobDigest(sha256=sha256_hex(data), size_bytes=999)
    assert status_code(lambda: stub.QueryWriteStatus(
        pb.QueryWriteStatusRequest(session_id=request.session_id, blob=wrong_size), timeout=10)) == fp


def test_commit_with_a_missing_blob_is_failed_precondition_and_files_nothing(stub, archive_db):
    files = files_of(1000, 2000)
    request = open_request(files)
    stub.OpenSession(request, timeout=10)
    first, second = files.values()
    write_blob(stub, request.session_id, first)
    with pytest.raises(grpc.RpcError) as info:
        commit(stub, request.session_id)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "IMG_0002.JPG" in info.value.details() and sha256_hex(second) in info.value.details()
    with archive_db.read() as s:
        assert s.scalars(sa.select(Case).where(Case.patient_id == request.patient_id)).all() == []
        sess = s.execute(sa.select(IngestSession).where(
            IngestSession.session_id == request.session_id)).scalar_one()
        assert sess.status == "open" and sess.case_id is None
    write_blob(stub, request.session_id, second)
    assert len(commit(stub, request.session_id).receipts) == 2


def test_unknown_session_is_not_found(stub):
    ghost = open_request({"a.jpg": b"x"}).session_id
    nf = grpc.StatusCode.NOT_FOUND
    assert status_code(lambda: commit(stub, ghost)) == nf
    assert status_code(lambda: find_missing(stub, ghost, [b"x"])) == nf
    assert status_code(lambda: query_status(stub, ghost, b"x")) == nf
    assert status_code(lambda: write_blob(stub, ghost, b"x")) == nf


def test_write_after_commit_answers_stored_blobs_and_refuses_others(stub):
    """A committed session's stored blob is complete at once (nothing re-received);
    only a lost one is received again (tests/test_e2e_lost_blob.py); a blob outside
    its manifest is FAILED_PRECONDITION."""
    files = files_of(100)
    request, _ = ingest_files(stub, files)
    data = next(iter(files.values()))
    assert write_blob(stub, request.session_id, data) == pb.WriteResponse(committed_size=len(data),
                                                                           complete=True)
    assert status_code(lambda: write_blob(stub, request.session_id, os.urandom(100))) == \
        grpc.StatusCode.FAILED_PRECONDITION


def test_a_purged_session_id_opened_again_is_held_to_its_new_manifest(stub, archive_db, archive_store):
    """The archive keeps each session's parsed manifest by session id and
    fingerprint (issue 12): a session id whose case was purged (R19) and that is
    opened again for another card is checked against that card's manifest."""
    old, new = files_of(300), files_of(400)
    request, response = ingest_files(stub, old)
    admin.purge_case(archive_db, archive_store, LOCAL, response.case_id, "Gallringsbeslut 2026:12")
    again = open_request(new, session_id=request.session_id, patient_id=request.patient_id)
    assert stub.OpenSession(again, timeout=10).committed is False
    (old_data,), (new_data,) = old.values(), new.values()
    assert status_code(lambda: write_blob(stub, request.session_id, old_data)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    assert write_blob(stub, request.session_id, new_data).complete
    receipts = commit(stub, request.session_id).receipts
    assert [r.sha256 for r in receipts] == [sha256_hex(new_data)]


def test_known_blobs_are_not_sent_again(stub, archive_db):
    shared = os.urandom(4000)
    first, r1 = ingest_files(stub, {"a.jpg": shared})
    files = {"x/b.jpg": shared, "x/c.jpg": os.urandom(10)}
    request = open_request(files, patient_id=first.patient_id)
    stub.OpenSession(request, timeout=10)
    assert find_missing(stub, request.session_id, list(files.values())) == {sha256_hex(files["x/c.jpg"])}
    status = query_status(stub, request.session_id, shared)
    assert status == pb.QueryWriteStatusResponse(committed_size=len(shared), complete=True)
    assert write_blob(stub, request.session_id, shared).complete  # answered at once
    upload_missing(stub, request.session_id, files)
    r2 = commit(stub, request.session_id)
    assert r2.case_id != r1.case_id
    assert r2.receipts[0].blob_id == r1.receipts[0].blob_id


def test_same_bytes_twice_on_one_card(stub):
    data = os.urandom(3000)
    files = {"DCIM/IMG_0001.JPG": data, "DCIM/IMG_0002.JPG": data}
    _, response = ingest_files(stub, files)
    assert [r.relative_path for r in response.receipts] == list(files)
    assert response.receipts[0].media_item_id != response.receipts[1].media_item_id


def test_empty_blob(stub):
    files = {"empty.wav": b"", "label.jpg": os.urandom(100)}
    _, response = ingest_files(stub, files)
    assert [r.size_bytes for r in response.receipts] == [0, 100]


def test_concurrent_sessions_do_not_mix(running_archive, archive_db, tmp_path):
    """Cards of different patients upload at once, with the same file names and
    interleaved chunks; every case holds exactly its own bytes."""
    n = 6
    cards = [files_of(200_000, 150_000, 5_000) for _ in range(n)]
    results: list[object] = [None] * n

    def run(i: int) -> None:
        from tests.archive.client import ingest_stub

        try:
            with ingest_stub(running_archive.address) as s:
                request = open_request(cards[i])
                s.OpenSession(request, timeout=10)
                for data in cards[i].values():
                    s.Write(write_requests(request.session_id, data, chunk_size=16_384), timeout=30)
                results[i] = (request, commit(s, request.session_id))
        except BaseException as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, result in enumerate(results):
        assert isinstance(result, tuple), result
        request, response = result
        assert [(r.relative_path, r.sha256) for r in response.receipts] == [
            (p, sha256_hex(d)) for p, d in cards[i].items()]
        out = tmp_path / f"case{i}"
        cli("export", response.case_id, str(out), *storage_args(running_archive))
        for path, data in cards[i].items():
            assert hashlib.sha256((out / path).read_bytes()).digest() == hashlib.sha256(data).digest()
    assert len({r[1].case_id for r in results if isinstance(r, tuple)}) == n


def test_concurrent_commits_of_one_session_make_one_case(running_archive, stub, archive_db):
    files = files_of(1000, 1000)
    request = open_request(files)
    stub.OpenSession(request, timeout=10)
    upload_missing(stub, request.session_id, files)
    barrier = threading.Barrier(8)
    responses: list[pb.CommitSessionResponse] = []

    def run() -> None:
        from tests.archive.client import ingest_stub

        with ingest_stub(running_archive.address) as s:
            barrier.wait(10)
            responses.append(commit(s, request.session_id))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(responses) == 8 and all(r == responses[0] for r in responses)
    with archive_db.read() as s:
        assert len(s.scalars(sa.select(Case).where(Case.patient_id == request.patient_id)).all()) == 1
        ingested = s.scalars(sa.select(AuditEvent).where(
            AuditEvent.action == "case.ingested", AuditEvent.case_id == responses[0].case_id)).all()
        assert len(ingested) == 1


def test_health_reports_serving(running_archive):
    with grpc.insecure_channel(running_archive.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "bildsluss.v1.Ingest"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_stored_blob_is_durable_in_its_content_address(archive_store, stub, archive_db):
    files = files_of(70_000, 10)
    request, response = ingest_files(stub, files)
    for receipt, data in zip(response.receipts, files.values()):
        sha = receipt.sha256
        with archive_store.open(sha) as fh:
            assert fh.read() == data
        assert receipt.blob_id == f"{sha[:2]}/{sha[2:4]}/{sha}" == archive_store.storage_key(sha)
        with archive_db.read() as s:
            row = s.get(Blob, sha)
            assert row is not None and row.size == len(data)
    # Nothing else lies around: only content-addressed blobs, and the partial
    # uploads of other tests' unfinished sessions (none of this one's).
    for o in archive_store.iterate():
        assert o.kind in ("blob", "partial"), o
        assert request.session_id not in o.key


BAD_OPEN = {
    "session_id": dict(session_id="not-a-uuid"),
    "session_id_uppercase": dict(session_id="0F8FAD5B-D9CB-469F-A165-70867728950E"),
    "agent_id": dict(agent_id=""),
    "department": dict(department="SE2321000016"),
    "department_lower": dict(department="se2321000016-15cq"),
    "patient": dict(patient_id="19121212-1212"),
    "patient_short": dict(patient_id="1234"),
    "mode": dict(mode=pb.CAPTURE_MODE_UNSPECIFIED),
    "ehr_mode_without_context": dict(mode=pb.CAPTURE_MODE_AUDIO),
    "no_evidence": dict(evidence=[]),
}


@pytest.mark.parametrize("case", sorted(BAD_OPEN))
def test_malformed_open_session_is_invalid_argument(stub, case):
    request = open_request({"DCIM/IMG_0001.JPG": b"abc"}, **BAD_OPEN[case])
    assert status_code(lambda: stub.OpenSession(request, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("path", ["/abs.jpg", "a/../b.jpg", "..", "a\\b.jpg", "a\x00b.jpg", "a//b.jpg",
                                  "./a.jpg", ""])
def test_unsafe_paths_are_invalid_argument(stub, path):
    request = open_request({"ok.jpg": b"abc"})
    request.manifest[0].relative_path = path
    request.ClearField("evidence")
    request.evidence.add(relative_path="", method=pb.IDENTITY_METHOD_BARCODE,
                         text=request.patient_id, patient_id=request.patient_id)
    assert status_code(lambda: stub.OpenSession(request, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT


def test_other_malformed_manifests_are_invalid_argument(stub):
    ia = grpc.StatusCode.INVALID_ARGUMENT
    base = open_request({"a.jpg": b"abc", "b.jpg": b"def"})
    variants = []
    r = pb.OpenSessionRequest(); r.CopyFrom(base); r.ClearField("manifest"); r.ClearField("evidence")
    r.evidence.add(method=pb.IDENTITY_METHOD_BARCODE, text=r.patient_id, patient_id=r.patient_id)
    variants.append(r)  # empty manifest
    r = pb.OpenSessionRequest(); r.CopyFrom(base); r.manifest[1].relative_path = "a.jpg"
    variants.append(r)  # duplicate path
    r = pb.OpenSessionRequest(); r.CopyFrom(base); r.manifest[0].sha256 = r.manifest[0].sha256.upper()
    variants.append(r)  # bad digest
    r = pb.OpenSessionRequest(); r.CopyFrom(base); r.manifest[0].kind = pb.MEDIA_KIND_UNSPECIFIED
    variants.append(r)
    r = pb.OpenSessionRequest(); r.CopyFrom(base); r.evidence[0].patient_id = personnummer("19800101")
    variants.append(r)  # R4: evidence of another patient
    r = pb.OpenSessionRequest(); r.CopyFrom(base)
    r.evidence.add(relative_path="a.jpg", method=pb.IDENTITY_METHOD_DEVICE, text="accepted: Canon",
                   patient_id=r.patient_id)
    variants.append(r)  # a device decision that names a patient
    r = pb.OpenSessionRequest(); r.CopyFrom(base); r.ClearField("evidence")
    r.evidence.add(relative_path="a.jpg", method=pb.IDENTITY_METHOD_DEVICE, text="accepted: Canon")
    variants.append(r)  # device evidence alone never confirms the patient
    for i, r in enumerate(variants):
        assert status_code(lambda r=r: stub.OpenSession(r, timeout=10)) == ia, i


def test_reserve_numbers_and_ehr_context_are_accepted(stub):
    files = {"rec.wav": os.urandom(100)}
    # A Region Stockholm reservnummer: the session archive enables that format.
    request = open_request(files, patient_id="991981000010", mode=pb.CAPTURE_MODE_AUDIO,
                           ehr_context=True, evidence=[])
    request.manifest[0].kind = pb.MEDIA_KIND_AUDIO
    request.manifest[0].media_type = "audio/wav"
    stub.OpenSession(request, timeout=10)
    upload_missing(stub, request.session_id, files)
    assert commit(stub, request.session_id).case_id


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


@pytest.mark.parametrize("spelling", [
    "{p}\n", " {p}", "{p} ", "{p}\t",             # whitespace around the canonical form
    "{dash}",                                        # YYYYMMDD-NNNN: a written form, not the stored one
    "{arabic}",                                      # the same digits in another script
    "{bad_check}",                                   # check digit wrong
    "19800101000{last}",                             # serial 000 is never issued
    "{p}0",                                          # 13 digits
])
def test_patient_id_is_the_canonical_form_exactly(stub, archive_db, spelling):
    """Issue 13: "198001012353\\n" and Arabic-Indic digits were accepted as patient ids.
    A second spelling of one patient is a second patient to string comparisons
    (confidential marks, search): only the canonical form is taken."""
    p = personnummer("19800101")
    wrong = str((int(p[-1]) + 1) % 10)
    text = spelling.format(p=p, dash=f"{p[:8]}-{p[8:]}", arabic=p.translate(ARABIC_INDIC),
                           bad_check=p[:-1] + wrong, last=p[-1])
    request = open_request({"a.jpg": b"abc"}, patient_id=p)
    request.patient_id = text
    for e in request.evidence:
        e.patient_id = text
    before = _count(archive_db, IngestSession)
    assert status_code(lambda: stub.OpenSession(request, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    assert _count(archive_db, IngestSession) == before


def test_a_confidential_patient_cannot_be_filed_unmasked_by_another_spelling(stub, archive_db):
    """Issue 13: with patient P confidential, a case for "P\\n" was shown unmasked.
    The archive refuses the spelling; the canonical spelling is filed and masked."""
    from archive_server import admin
    from archive_server.authz import Principal
    from archive_server.cases import search_cases

    p = personnummer("19770707")
    db, local = archive_db, Principal.local("test")
    try:
        admin.set_confidential(db, local, p, True)
        sneaky = open_request({"s.jpg": b"sneaky"}, patient_id=p)
        sneaky.patient_id = p + "\n"
        for e in sneaky.evidence:
            e.patient_id = p + "\n"
        assert status_code(lambda: stub.OpenSession(sneaky, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
        files = {"c.jpg": b"canonical"}
        request = open_request(files, patient_id=p)
        stub.OpenSession(request, timeout=10)
        upload_missing(stub, request.session_id, files)
        case_id = commit(stub, request.session_id).case_id
        shown = [c for c in search_cases(db, local) if c["case_id"] == case_id]
        assert shown == [{"case_id": case_id, "confidential": True, "display": "Konfidentiellt"}]
    finally:
        admin.set_confidential(db, local, p, False)


def _count(db, model) -> int:
    with db.read() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model))


class _CountingStub:
    """The agent's stub, counting the calls it makes (each still goes to the archive)."""

    def __init__(self, stub) -> None:
        self._stub = stub
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name):
        method = getattr(self._stub, name)

        def call(*args, **kwargs):
            with self._lock:
                self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)

        return call


def test_the_agent_asks_where_to_resume_only_for_a_blob_the_archive_holds_part_of(
        running_archive, stub, tmp_path, durable):
    """Issue 12: a blob FindMissingBlobs has just reported missing is written from
    0 without a QueryWriteStatus first; one the archive holds part of (a run that
    stopped mid-blob) is refused OUT_OF_RANGE, and then resumed where it stands."""
    from agent.card.model import MediaFile, MediaKind, StrippedFile
    from agent.card.upload import ArchiveClient
    from agent.config import ArchiveConfig

    part = durable.part or 1_000_000
    files = files_of(part + 300_000, 200_000, 150_000)
    request = open_request(files)
    stub.OpenSession(request, timeout=10)
    started = next(iter(files.values()))
    write_blob(stub, request.session_id, started, end=part, finish=False)
    assert query_status(stub, request.session_id, started).committed_size == part

    stripped = []
    for path, data in files.items():
        copy = tmp_path / path.replace("/", "_")
        copy.write_bytes(data)
        media = MediaFile(path=copy, relative_path=path, kind=MediaKind.IMAGE, media_type="image/jpeg",
                          size=len(data), sha256=sha256_hex(data), mtime_ns=0)
        stripped.append(StrippedFile(source=media, spool_path=copy, sha256=media.sha256, size=len(data)))
    with ArchiveClient(ArchiveConfig(address=running_archive.address, insecure=True)) as client:
        counting = _CountingStub(client._stub)
        client._stub = counting
        client.upload(request.session_id, stripped)
        receipts = client.commit(request.session_id).receipts
    assert counting.calls.get("QueryWriteStatus") == 1  # the resumed blob's, after OUT_OF_RANGE
    assert counting.calls["Write"] == len(files) + 1
    assert sorted(r.sha256 for r in receipts) == sorted(sha256_hex(d) for d in files.values())
