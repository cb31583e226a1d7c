"""The administrator's and the log operator's pages over HTTP (issue 11), in
this process on a real database (SQLite and PostgreSQL): departments, grants,
roles, confidential marks, agent certificates bound from an uploaded PEM and
revoked; the audit search with the chain's state, CSV export, statistics per
department and month; each refused to a user without the right, audited."""
from __future__ import annotations

import sqlalchemy as sa

import pytest

from archive_server.models import AgentBinding, AuditEvent, Case, Department
from tests.archive.client import personnummer
from tests.archive.world import OTHER, OWN
from tests.support.pki import throwaway_certificate
from tests.support.web import fresh_site, Site, csrf_of, sysadmin


@pytest.fixture(scope="module")
def site(db_backend, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"webadmin-{db_backend}")
    with fresh_site(db_backend, directory) as site:
        yield site


def test_administrator_manages_departments_users_roles_marks_and_agents(site):
    client = site.logged_in(sysadmin(site))
    page = client.get("/admin")
    assert page.status_code == 200 and OWN in page.text and 'id="agents"' in page.text
    token = csrf_of(page.text)
    assert client.post("/admin/departments", data={"hsa_id": "SE2321000016-7XYZ", "name": "Ögonkliniken",
                                                   "csrf": token}).headers["location"] == "/admin?done=department+added"
    assert client.post("/admin/roles", data={"name": "sjukskoterska", "rights": ["case.read", "case.sign"],
                                              "csrf": token}).status_code == 303
    # (in a department where the administrator holds those rights: nobody hands out more than they have)
    assert client.post("/admin/users", data={"username": "karin", "department": OWN,
                                             "role": "sjukskoterska", "csrf": token}).status_code == 303
    page = client.get("/admin")
    assert "Ögonkliniken" in page.text and "karin" in page.text and "case.read, case.sign" in page.text

    patient = personnummer()
    case_id = site.world.ingest(patient=patient, department=OWN)
    marked = client.post("/admin/confidential", data={"patient": patient, "on": "1", "csrf": token})
    assert marked.status_code == 303
    with site.world.db.read() as s:
        assert s.get(Case, case_id).confidential is True

    pem = throwaway_certificate("kamera-pc-7")
    bound = client.post("/admin/agents", data={"agent_id": "kamera-pc-7", "department": OWN, "csrf": token},
                        files={"certificate": ("agent.pem", pem, "application/x-pem-file")})
    assert bound.headers["location"] == "/admin?done=agent+bound"
    page = client.get("/admin")
    assert 'data-agent="kamera-pc-7"' in page.text
    not_pem = client.post("/admin/agents", data={"agent_id": "kamera-pc-8", "department": OWN, "csrf": token},
                          files={"certificate": ("agent.pem", b"not a certificate", "text/plain")})
    assert not_pem.status_code == 400
    assert client.post("/admin/agents/kamera-pc-7/revoke", data={"csrf": token}).status_code == 303
    with site.world.db.read() as s:
        binding = s.get(AgentBinding, "kamera-pc-7")
        assert binding.revoked_at is not None and s.get(AgentBinding, "kamera-pc-8") is None
    actions = [e.action for e in site.world.events() if e.outcome == "permitted"]
    for action in ("department.added", "role.added", "user.access_granted", "patient.confidential_on",
                   "agent.bound", "agent.revoked"):
        assert action in actions


def test_a_clinician_gets_no_administration(site):
    clinician = site.person(OWN, ["case.read"])
    client = site.logged_in(clinician)
    page = client.get("/admin")
    assert page.status_code == 403 and "Ingen behörighet" in page.text
    token = csrf_of(client.get("/cases").text)
    before = site.last_seq()
    refused = client.post("/admin/departments", data={"hsa_id": "SE2321000016-7ZZZ", "name": "X", "csrf": token})
    assert refused.status_code == 403
    bind = client.post("/admin/agents", data={"agent_id": "pc-9", "department": OWN, "csrf": token},
                       files={"certificate": ("a.pem", throwaway_certificate("pc-9"), "application/x-pem-file")})
    assert bind.status_code == 403
    forged = client.post("/admin/departments", data={"hsa_id": "SE2321000016-7ZZZ", "name": "X", "csrf": "1" * 64})
    assert forged.status_code == 403
    assert client.get("/audit").status_code == 403 and client.get("/statistics").status_code == 403
    with site.world.db.read() as s:
        assert s.scalar(sa.select(Department).where(Department.hsa_id == "SE2321000016-7ZZZ")) is None
        assert s.get(AgentBinding, "pc-9") is None
    told = [(e.actor, e.action, e.outcome) for e in site.events_since(before)]
    assert (clinician, "department.added", "refused") in told and (clinician, "agent.bound", "refused") in told
    assert (clinician, "web.form", "refused") in told and (clinician, "audit.verified", "refused") in told


def test_log_operator_searches_exports_and_sees_the_chain(site):
    patient = personnummer()
    case_id = site.world.ingest(patient=patient, department=OTHER)
    reader = site.person(OTHER, ["case.read"])
    site.logged_in(reader).get(f"/cases/{case_id}")
    operator = site.person(OWN, ["audit.read", "statistics.read"])
    client = site.logged_in(operator)
    page = client.get("/audit")
    assert page.status_code == 200 and "Loggkedjan är obruten" in page.text
    token = csrf_of(page.text)
    found = client.post("/audit", data={"patient": patient, "action": "case.show", "user": reader, "csrf": token})
    assert found.status_code == 200 and found.text.count('class="event"') == 1 and reader in found.text
    assert patient not in client.get("/audit").text  # the number is posted, never in a URL or the plain form
    csv = client.post("/audit/export", data={"patient": patient, "csrf": token})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0].startswith("seq,at,who,action") and any(",case.show," in line for line in lines[1:])
    stats = client.get("/statistics")
    assert stats.status_code == 200 and OTHER in stats.text
    assert client.get("/statistics.csv").text.startswith("department,month,cases,events,refused_or_failed")

    # A row changed behind the archive's back: the page says the chain is broken.
    with site.world.db.write() as s:
        event = s.scalars(sa.select(AuditEvent).where(AuditEvent.case_id == case_id)).first()
        seq, why = event.seq, event.why
        event.why = "ändrad i efterhand"
    try:
        broken = client.get("/audit")
        assert "Loggkedjan är BRUTEN vid händelse" in broken.text and str(seq) in broken.text
    finally:
        with site.world.db.write() as s:
            s.get(AuditEvent, seq).why = why
