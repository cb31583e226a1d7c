"""Issue 10, the agent half: on a TLS archive the certificate is the agent.

A real ``bildsluss-archive serve`` with mutual TLS on loopback and a PKI made
by openssl (as a region's own would be); agents call it over real TLS channels
with their own certificates. Every attack of the issue that concerns agents is
tried and refused, audited with the certificate's fingerprint, and changes
nothing: filing into another or an invented department, speaking as another
agent, using another agent's session, attaching another department's image by
quoting its sha256, heartbeats for another agent or with a three-hour interval,
an unbound, revoked or foreign certificate.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from collections.abc import Iterator

import grpc
import pytest
import sqlalchemy as sa

from archive_server.agentcerts import fingerprint_pem
from archive_server.db import Database
from archive_server.models import AgentStatus, AuditEvent, Blob, Case, Department, IngestSession
from bildsluss.v1 import agents_pb2 as apb
from bildsluss.v1 import agents_pb2_grpc as apb_grpc
from bildsluss.v1 import ingest_pb2 as pb
from bildsluss.v1 import ingest_pb2_grpc as pb_grpc
from tests.archive.client import (
    commit, digest, find_missing, ingest_files, open_request, query_status, sha256_hex, upload_missing,
    write_blob, write_requests,
)
from tests.archive.world import OTHER, OWN, jpeg, run_cli
from tests.support.pki import bound_pki, issue, make_pki, serve_tls

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")
TIMEOUT = 30


@dataclasses.dataclass
class TlsArchive:
    address: str
    pki: pathlib.Path
    data: pathlib.Path
    db: Database

    @property
    def store(self) -> list[str]:
        return ["--data", str(self.data)]

    def channel(self, name: str, pki: pathlib.Path | None = None) -> grpc.Channel:
        pki = pki or self.pki
        creds = grpc.ssl_channel_credentials(
            root_certificates=(self.pki / "ca.crt").read_bytes(),
            private_key=(pki / f"{name}.key").read_bytes(),
            certificate_chain=(pki / f"{name}.crt").read_bytes())
        return grpc.secure_channel(self.address, creds, options=[("grpc.enable_retries", 0)])

    def fingerprint(self, name: str) -> str:
        return fingerprint_pem((self.pki / f"{name}.crt").read_bytes())

    def refusals(self, after: int) -> list[AuditEvent]:
        with self.db.read() as s:
            return list(s.scalars(sa.select(AuditEvent).where(
                AuditEvent.seq > after, AuditEvent.action == "agent.refused").order_by(AuditEvent.seq)))

    def last_seq(self) -> int:
        with self.db.read() as s:
            return s.scalar(sa.select(sa.func.coalesce(sa.func.max(AuditEvent.seq), 0)))

    def count(self, model: type, *where: object) -> int:
        with self.db.read() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsArchive]:
    root = tmp_path_factory.mktemp("tls-archive")
    pki, store = bound_pki(root, {OWN: "Hudkliniken", OTHER: "Akutmottagningen"},
                           {"pc-own": OWN, "pc-other": OTHER, "pc-gone": OWN}, unbound=("unbound",))
    data = root / "data"
    db = Database(f"sqlite:///{data / 'archive.sqlite3'}", pool_size=2, max_overflow=2)
    with serve_tls(pki, *store) as address:
        yield TlsArchive(address, pki, data, db)
    db.dispose()


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def card(n: int = 2) -> dict[str, bytes]:
    return {f"DCIM/100CANON/IMG_{i:04d}.JPG": jpeg(int.from_bytes(os.urandom(3), "big")) for i in range(n)}


# -- the certificate is the agent ---------------------------------------------------------


def test_a_bound_agent_files_into_its_own_department_and_the_case_names_its_certificate(archive):
    with archive.channel("pc-own") as ch:
        request, response = ingest_files(pb_grpc.IngestStub(ch), card(), agent_id="pc-own", department=OWN)
    with archive.db.read() as s:
        case = s.get(Case, response.case_id)
        assert s.get(Department, case.department_id).hsa_id == OWN
        event = s.scalars(sa.select(AuditEvent).where(AuditEvent.case_id == response.case_id)).one()
    assert (event.actor, event.action) == ("agent:pc-own", "case.ingested")
    assert event.details["certificate"] == archive.fingerprint("pc-own")


@pytest.mark.parametrize("claims, code, reason", [
    (dict(agent_id="pc-own", department=OTHER), "PERMISSION_DENIED", "WRONG_DEPARTMENT"),
    (dict(agent_id="pc-own", department="SE2321000016-NEW9"), "PERMISSION_DENIED", "WRONG_DEPARTMENT"),
    (dict(agent_id="pc-other", department=OTHER), "PERMISSION_DENIED", "WRONG_AGENT"),
])
def test_a_request_naming_another_agent_or_department_is_refused_and_audited(archive, claims, code, reason):
    before, sessions = archive.last_seq(), archive.count(IngestSession)
    request = open_request(card(), **claims)
    with archive.channel("pc-own") as ch:
        error = refused(lambda: pb_grpc.IngestStub(ch).OpenSession(request, timeout=TIMEOUT))
    assert error.code().name == code and reason.lower().split("_")[1] in error.details().lower()
    assert archive.count(IngestSession) == sessions
    # Departments are never created implicitly on a TLS archive.
    assert archive.count(Department, Department.hsa_id == "SE2321000016-NEW9") == 0
    (event,) = archive.refusals(before)
    assert (event.actor, event.outcome, event.department) == ("agent:pc-own", "refused", OWN)
    assert event.details["reason"] == reason and event.details["fingerprint"] == archive.fingerprint("pc-own")
    assert event.details["method"] == "Ingest.OpenSession"


def test_an_unbound_certificate_is_unauthenticated_on_every_call(archive):
    before = archive.last_seq()
    request = open_request(card(), agent_id="unbound", department=OWN)
    beat = apb.HeartbeatRequest(agent_id="unbound", department_hsa_id=OWN, state=apb.AGENT_STATE_IDLE,
                                interval_s=5.0)
    with archive.channel("unbound") as ch:
        ingest, registry = pb_grpc.IngestStub(ch), apb_grpc.AgentRegistryStub(ch)
        for call in (lambda: ingest.OpenSession(request, timeout=TIMEOUT),
                     lambda: ingest.CommitSession(pb.CommitSessionRequest(session_id=request.session_id),
                                                  timeout=TIMEOUT),
                     lambda: registry.Heartbeat(beat, timeout=TIMEOUT)):
            error = refused(call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
            assert "admin agent add" in error.details()
    fingerprint = archive.fingerprint("unbound")
    events = archive.refusals(before)
    assert [e.details["method"] for e in events] == [
        "Ingest.OpenSession", "Ingest.CommitSession", "AgentRegistry.Heartbeat"]
    assert {(e.actor, e.details["reason"]) for e in events} == {(f"cert:{fingerprint}", "CERTIFICATE_NOT_BOUND")}
    assert archive.count(IngestSession, IngestSession.session_id == request.session_id) == 0


def test_a_certificate_of_another_ca_never_reaches_the_services(archive, tmp_path):
    stranger = tmp_path / "stranger-pki"
    make_pki(stranger)  # a CA of its own, its client certificate says clientAuth too
    sessions = archive.count(IngestSession)
    with archive.channel("client", pki=stranger) as ch:
        error = refused(lambda: pb_grpc.IngestStub(ch).OpenSession(open_request(card()), timeout=5))
    # Refused in the TLS handshake, before any service: nothing to identify, nothing changed.
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert archive.count(IngestSession) == sessions


def test_revoking_an_agent_refuses_it_and_binding_a_new_certificate_rotates_the_key(archive):
    run_cli(archive.store, "admin", "agent", "revoke", "pc-gone")
    before = archive.last_seq()
    with archive.channel("pc-gone") as ch:
        error = refused(lambda: ingest_files(pb_grpc.IngestStub(ch), card(), agent_id="pc-gone", department=OWN))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in error.details()
    (event,) = archive.refusals(before)
    assert (event.actor, event.details["reason"]) == ("agent:pc-gone", "AGENT_REVOKED")

    issue(archive.pki, "pc-gone-2")
    run_cli(archive.store, "admin", "agent", "add", "pc-gone", "--department", OWN,
            "--cert", str(archive.pki / "pc-gone-2.crt"))
    with archive.channel("pc-gone-2") as ch:
        ingest_files(pb_grpc.IngestStub(ch), card(), agent_id="pc-gone", department=OWN)
    with archive.channel("pc-gone") as ch:  # the old key is worth nothing now
        error = refused(lambda: ingest_files(pb_grpc.IngestStub(ch), card(), agent_id="pc-gone", department=OWN))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "not bound" in error.details()


def test_another_agents_session_is_out_of_reach(archive):
    files = card()
    request = open_request(files, agent_id="pc-own", department=OWN)
    data = next(iter(files.values()))
    with archive.channel("pc-own") as ch:
        pb_grpc.IngestStub(ch).OpenSession(request, timeout=TIMEOUT)
    before = archive.last_seq()
    with archive.channel("pc-other") as ch:
        other = pb_grpc.IngestStub(ch)
        for call in (lambda: find_missing(other, request.session_id, [data]),
                     lambda: query_status(other, request.session_id, data),
                     lambda: write_blob(other, request.session_id, data),
                     lambda: commit(other, request.session_id)):
            error = refused(call)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    events = archive.refusals(before)
    assert len(events) == 4 and {e.details["reason"] for e in events} == {"SESSION_OF_ANOTHER_AGENT"}
    assert archive.count(Blob, Blob.sha256 == sha256_hex(data)) == 0
    with archive.channel("pc-own") as ch:  # the owner's card goes through untouched
        stub = pb_grpc.IngestStub(ch)
        upload_missing(stub, request.session_id, files)
        assert len(commit(stub, request.session_id).receipts) == 2


# -- dedup never crosses a department -------------------------------------------------------


def test_quoting_another_departments_sha256_attaches_nothing(archive):
    """The attack: another department's image, named by its sha256, no byte sent."""
    secret = jpeg(424242)
    with archive.channel("pc-other") as ch:
        ingest_files(pb_grpc.IngestStub(ch), {"DCIM/IMG_0001.JPG": secret}, agent_id="pc-other", department=OTHER)
    files = {"DCIM/IMG_0001.JPG": secret}
    request = open_request(files, agent_id="pc-own", department=OWN)
    cases_before = archive.count(Case)
    with archive.channel("pc-own") as ch:
        stub = pb_grpc.IngestStub(ch)
        stub.OpenSession(request, timeout=TIMEOUT)
        assert find_missing(stub, request.session_id, [secret]) == {sha256_hex(secret)}
        assert query_status(stub, request.session_id, secret) == pb.QueryWriteStatusResponse(
            committed_size=0, complete=False)
        error = refused(lambda: commit(stub, request.session_id))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "not durably stored" in error.details()
        # "finished" without the bytes: nothing to verify, nothing held.
        empty = pb.WriteRequest(session_id=request.session_id, blob=digest(secret), offset=0, finish_write=True)
        assert refused(lambda: stub.Write(iter([empty]), timeout=TIMEOUT)).code() == grpc.StatusCode.DATA_LOSS
        assert archive.count(Case) == cases_before
        # With the bytes it is this department's too; underneath they are stored once.
        assert upload_missing(stub, request.session_id, files) == [sha256_hex(secret)]
        response = commit(stub, request.session_id)
    assert response.receipts[0].sha256 == sha256_hex(secret)
    assert archive.count(Blob, Blob.sha256 == sha256_hex(secret)) == 1
    assert len(list((archive.data / "blobs").rglob(sha256_hex(secret)))) == 1


def test_dedup_within_a_department_still_skips_the_bytes(archive):
    shared = jpeg(515151)
    with archive.channel("pc-own") as ch:
        stub = pb_grpc.IngestStub(ch)
        ingest_files(stub, {"a.jpg": shared}, agent_id="pc-own", department=OWN)
        request = open_request({"b.jpg": shared}, agent_id="pc-own", department=OWN)
        stub.OpenSession(request, timeout=TIMEOUT)
        assert find_missing(stub, request.session_id, [shared]) == set()
        assert stub.Write(iter(write_requests(request.session_id, shared)), timeout=TIMEOUT).complete
        assert len(commit(stub, request.session_id).receipts) == 1


# -- heartbeats ---------------------------------------------------------------------------------


def beat(agent_id: str, department: str, interval_s: float = 5.0) -> apb.HeartbeatRequest:
    return apb.HeartbeatRequest(agent_id=agent_id, department_hsa_id=department, agent_version="0.1.0",
                                host="pc", state=apb.AGENT_STATE_IDLE, interval_s=interval_s)


def test_heartbeats_only_for_the_certificates_own_agent_and_department(archive):
    before = archive.last_seq()
    with archive.channel("pc-own") as ch:
        registry = apb_grpc.AgentRegistryStub(ch)
        assert registry.Heartbeat(beat("pc-own", OWN), timeout=TIMEOUT).next_interval_s == 5.0
        for request in (beat("pc-other", OTHER, 3600.0), beat("pc-own", OTHER)):
            error = refused(lambda request=request: registry.Heartbeat(request, timeout=TIMEOUT))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    assert [e.details["reason"] for e in archive.refusals(before)] == ["WRONG_AGENT", "WRONG_DEPARTMENT"]
    agents = {a["agent_id"]: a for a in map(json.loads, run_cli(
        archive.store, "agents", "--json").stdout.splitlines())}
    assert agents["pc-own"]["department"] == OWN
    assert "pc-other" not in agents or agents["pc-other"]["interval_s"] != 3600.0


def test_a_three_hour_interval_is_cut_to_five_minutes(archive):
    with archive.channel("pc-other") as ch:
        response = apb_grpc.AgentRegistryStub(ch).Heartbeat(beat("pc-other", OTHER, 3600.0), timeout=TIMEOUT)
    assert response.next_interval_s == 300.0
    with archive.db.read() as s:
        assert s.get(AgentStatus, "pc-other").interval_s == 300.0


def test_admin_agent_list_shows_bindings_revocation_and_last_seen(archive):
    rows = {r["agent_id"]: r for r in map(json.loads, run_cli(
        archive.store, "admin", "agent", "list", "--json").stdout.splitlines())}
    assert rows["pc-own"]["fingerprint"] == archive.fingerprint("pc-own") and rows["pc-own"]["revoked"] is False
    assert rows["pc-own"]["department"] == OWN and rows["pc-own"]["last_seen"] is not None
    assert rows["pc-other"]["department"] == OTHER
    assert set(rows["pc-own"]) >= {"agent_id", "department", "fingerprint", "revoked", "last_seen"}
