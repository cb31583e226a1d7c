"""The Cases gRPC service (archive.proto) on a real archive process, SQLite and
PostgreSQL: the user from a verified bearer token (never a name in the
metadata), the same rights and audit as the command line, status codes as the
proto documents them."""
from __future__ import annotations

import os
import uuid

import grpc
import pytest

from archive_server import admin
from archive_server.authz import Principal
from bildsluss.v1 import archive_pb2 as pb
from bildsluss.v1 import archive_pb2_grpc as pb_grpc
from tests.archive.client import ingest_files, ingest_stub, personnummer
from tests.archive.world import COMPLETE_FORM
from tests.support.logins import bearer, log_in

LOCAL = Principal(actor="cli:test", user=None)


@pytest.fixture
def cases(running_archive):
    channel = grpc.insecure_channel(running_archive.address)
    yield pb_grpc.CasesStub(channel)
    channel.close()


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failed:
        call()
    return failed.value.code()


def test_the_cases_service(running_archive, archive_db, cases):
    tag = uuid.uuid4().hex[:6]
    own, other = f"SE2321000016-G{tag[:4].upper()}", f"SE2321000016-H{tag[:4].upper()}"
    nurse, doctor = f"nurse-{tag}", f"doctor-{tag}"
    admin.add_department(archive_db, LOCAL, own, "Sårmottagningen")
    admin.add_department(archive_db, LOCAL, other, "Ortopeden")
    admin.add_role(archive_db, LOCAL, f"grpc-nurse-{tag}", ["case.read", "case.sign", "case.revise"])
    admin.add_role(archive_db, LOCAL, f"grpc-doctor-{tag}", ["case.read", "case.emergency_open"])
    admin.add_user(archive_db, LOCAL, nurse, own, f"grpc-nurse-{tag}")
    admin.add_user(archive_db, LOCAL, doctor, own, f"grpc-doctor-{tag}")
    patient, hidden = personnummer("19440404"), personnummer("19301113")  # hidden: no other test uses the day
    with ingest_stub(running_archive.address) as ingest:
        files = {f"DCIM/IMG_{i}.JPG": os.urandom(200) for i in range(2)}
        case_id = ingest_files(ingest, files, patient_id=patient, department=own)[1].case_id
        elsewhere = ingest_files(ingest, {"a.jpg": os.urandom(50)}, department=other)[1].case_id
        secret = ingest_files(ingest, {"b.jpg": os.urandom(50)}, patient_id=hidden, department=own)[1].case_id
    admin.set_confidential(archive_db, LOCAL, hidden, True)

    tokens = {user: log_in(archive_db, running_archive.http_address, user) for user in (nurse, doctor)}

    def as_user(user: str) -> tuple[tuple[str, str], ...]:
        return bearer(tokens[user])

    assert code_of(lambda: cases.List(pb.ListCasesRequest(), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED

    listed = cases.List(pb.ListCasesRequest(), metadata=as_user(nurse), timeout=10).cases
    assert [c.case_id for c in listed] == [case_id, secret]
    assert listed[0].patient_id == patient and listed[0].media_count == 2
    assert listed[0].status == pb.CASE_STATUS_UNSIGNED
    assert listed[1] == pb.CaseView(case_id=secret, confidential=True, display="Konfidentiellt")

    assert code_of(lambda: cases.Get(pb.GetCaseRequest(case_id=elsewhere), metadata=as_user(nurse),
                                     timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as confidential:
        cases.Get(pb.GetCaseRequest(case_id=secret), metadata=as_user(nurse), timeout=10)
    assert confidential.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert hidden not in confidential.value.details() and "Konfidentiellt" in confidential.value.details()

    assert code_of(lambda: cases.Sign(pb.SignCaseRequest(case_id=case_id), metadata=as_user(nurse),
                                      timeout=10)) == grpc.StatusCode.FAILED_PRECONDITION
    filled = cases.Revise(pb.ReviseCaseRequest(case_id=case_id, reason="ifyllt", fields=dict(COMPLETE_FORM)),
                          metadata=as_user(nurse), timeout=10)
    assert filled.version == 1 and filled.form["verbal_consent"] == "ja"
    signed = cases.Sign(pb.SignCaseRequest(case_id=case_id), metadata=as_user(nurse), timeout=10)
    assert (signed.status, signed.signed_by) == (pb.CASE_STATUS_SIGNED, nurse)
    drop = signed.media[0].sha256
    v2 = cases.Revise(pb.ReviseCaseRequest(case_id=case_id, reason="fel bild", drop_media=[drop]),
                      metadata=as_user(nurse), timeout=10)
    assert (v2.version, v2.latest_version, v2.media_count, v2.reason) == (2, 2, 1, "fel bild")
    assert code_of(lambda: cases.Revise(pb.ReviseCaseRequest(case_id=case_id, fields={"note": "x"}),
                                        metadata=as_user(nurse), timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    history = cases.History(pb.HistoryRequest(case_id=case_id), metadata=as_user(nurse), timeout=10).versions
    assert [(v.version, v.status) for v in history] == [(1, pb.CASE_STATUS_SIGNED), (2, pb.CASE_STATUS_UNSIGNED)]
    compared = cases.Compare(pb.CompareRequest(case_id=case_id, from_version=1, to_version=2),
                             metadata=as_user(nurse), timeout=10)
    assert [m.sha256 for m in compared.media_removed] == [drop] and compared.media_kept == 1
    assert {c.name for c in compared.changes} >= {"status", "reason"}

    assert code_of(lambda: cases.EmergencyOpen(pb.EmergencyOpenRequest(case_id=secret, reason="akut"),
                                               metadata=as_user(nurse), timeout=10)) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: cases.EmergencyOpen(pb.EmergencyOpenRequest(case_id=secret), metadata=as_user(doctor),
                                               timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    opened = cases.EmergencyOpen(pb.EmergencyOpenRequest(case_id=secret, reason="medvetslös"),
                                 metadata=as_user(doctor), timeout=10)
    assert opened.patient_id == hidden and opened.confidential

    from archive_server.reports import list_events

    told = [(e["who"], e["action"], e["outcome"]) for e in list_events(archive_db, LOCAL) if e["who"] in (nurse, doctor)]
    assert (nurse, "case.search", "permitted") in told and (nurse, "case.show", "refused") in told
    assert (nurse, "case.sign", "failed") in told and (nurse, "case.sign", "permitted") in told
    assert (doctor, "case.emergency_open", "permitted") in told and (doctor, "case.show", "refused") in told
