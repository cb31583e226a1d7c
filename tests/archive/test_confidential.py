"""Confidential patients (R17): no listing, show, history, diff, print,
export, audit list or error message shows a confidential patient's number,
form data or dates to a user without emergency access; emergency access needs
the right *and* the department, and a reason, and is logged. SQLite and
PostgreSQL.
"""
from __future__ import annotations

import datetime as dt
import json
import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from archive_server import admin, reports, versions
from archive_server.authz import NotPermitted, Principal, ReasonRequired
from archive_server.cases import CONFIDENTIAL, export_case, print_case, search_cases, show_case
from archive_server.errors import ArchiveError
from tests.archive.client import luhn_digit
from tests.archive.databases import BACKENDS, temp_database
from tests.archive.world import LOCAL, OTHER, OWN, World

MASKED_KEYS = {"case_id", "confidential", "display"}
# Prefixed so that a drawn text is never one of the archive's own words
# (hypothesis did draw "confidential", which every masked listing says).
SECRET_TEXT = st.text(alphabet=string.ascii_letters + "åäöÅÄÖ", min_size=8, max_size=20).map(lambda s: "Qz" + s)


@st.composite
def patients(draw: Callable[..., Any]) -> str:
    born = draw(st.dates(min_value=dt.date(1920, 1, 1), max_value=dt.date(2024, 12, 31)))
    serial = draw(st.integers(min_value=1, max_value=999))
    nine = born.strftime("%y%m%d") + f"{serial:03d}"
    return born.strftime("%Y%m%d") + f"{serial:03d}" + luhn_digit(nine)


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory) -> Iterator[tuple[World, dict[str, Principal]]]:
    tmp = tmp_path_factory.mktemp(f"conf-{request.param}")
    with temp_database(request.param, tmp / "db") as url:
        w = World.create(url, tmp / "data")
        clinician = w.role("clinician", ["case.read", "case.sign", "case.revise", "case.print", "case.export",
                                         "consent.record", "teaching.copy"])
        doctor = w.role("doctor", ["case.read", "case.emergency_open"])
        people = {
            "nurse": w.user("nurse", OWN, clinician),
            "doctor": w.user("doctor", OWN, doctor),
            "elsewhere": w.user("elsewhere", OTHER, doctor),
            "stranger": Principal.named("stranger"),
        }
        yield w, people
        w.close()


def _secrets(patient: str, texts: list[str], captured: dt.datetime) -> list[str]:
    return [patient, f"{patient[:8]}-{patient[8:]}", f"{patient[2:8]}-{patient[8:]}", patient[2:],
            *texts, captured.date().isoformat(), captured.strftime("%Y%m%d")]


def _refusal(call: Callable[[], Any]) -> str:
    with pytest.raises(ArchiveError) as refused:
        call()
    assert isinstance(refused.value, (NotPermitted, ReasonRequired)), refused.value
    return str(refused.value)


# No shrinking: each example files real cases, and a failing example is printed as drawn.
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(patient=patients(), what=SECRET_TEXT, note=SECRET_TEXT,
       captured=st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2040, 1, 1)))
def test_nothing_of_a_confidential_patient_leaks(world, tmp_path_factory, patient, what, note, captured):
    w, people = world
    admin.set_confidential(w.db, LOCAL, patient, False)  # hypothesis may draw a patient twice
    case_id = w.ingest(patient=patient)
    versions.revise_case(w.db, LOCAL, case_id, reason="ifyllt", fields=[
        ("what", what), ("note", note), ("captured_at", captured.isoformat()), ("why", "kontroll"),
        ("verbal_consent", "ja"), ("captured_by", "Sköterska")])
    versions.sign_case(w.db, LOCAL, case_id)
    versions.revise_case(w.db, LOCAL, case_id, reason="v2", fields=[("note", note + "x")])
    admin.set_confidential(w.db, LOCAL, patient, True)
    secrets = _secrets(patient, [what, note], captured)
    out = tmp_path_factory.mktemp("out")

    seen: list[str] = []
    for who in [LOCAL, people["nurse"], people["doctor"], people["elsewhere"]]:
        listing = search_cases(w.db, who)
        mine = [c for c in listing if c["case_id"] == case_id]
        if who is people["elsewhere"]:
            assert mine == []  # no access to the department: not listed at all
        else:
            assert mine == [{"case_id": case_id, "confidential": True, "display": CONFIDENTIAL}]
        seen.append(json.dumps(mine, ensure_ascii=False))
        by_patient = search_cases(w.db, who, patient)
        assert all(set(c) == MASKED_KEYS and c["display"] == CONFIDENTIAL for c in by_patient)
        assert [c for c in by_patient if c["case_id"] == case_id] == mine
        seen.append(json.dumps(by_patient, ensure_ascii=False))
    nurse, elsewhere = people["nurse"], people["elsewhere"]
    seen += [
        _refusal(lambda: show_case(w.db, nurse, case_id)),
        _refusal(lambda: show_case(w.db, nurse, case_id, version=1)),
        _refusal(lambda: versions.case_history(w.db, nurse, case_id)),
        _refusal(lambda: versions.diff_versions(w.db, nurse, case_id, 1, 2)),
        _refusal(lambda: versions.sign_case(w.db, nurse, case_id)),
        _refusal(lambda: versions.revise_case(w.db, nurse, case_id, reason="x", fields=[("note", "y")])),
        _refusal(lambda: print_case(w.db, w.blobs, nurse, case_id, reason="polis", out=out / "p.pdf")),
        _refusal(lambda: export_case(w.db, w.blobs, case_id, out / "e", nurse)),
        _refusal(lambda: show_case(w.db, nurse, case_id, emergency_reason="akut")),  # no emergency right
        _refusal(lambda: show_case(w.db, people["doctor"], case_id, emergency_reason="  ")),  # no reason
        _refusal(lambda: show_case(w.db, elsewhere, case_id, emergency_reason="akut")),  # not their department
        _refusal(lambda: reports.list_events(w.db, nurse, patient=patient)),
        _refusal(lambda: reports.list_events(w.db, people["stranger"])),
        _refusal(lambda: show_case(w.db, people["stranger"], case_id)),
    ]
    assert not any(out.iterdir())
    for text in seen:
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked in {text!r}"


def test_emergency_access_needs_right_department_and_reason_and_is_logged(world):
    w, people = world
    patient = "193204218881"
    case_id = w.ingest(patient=patient)
    admin.set_confidential(w.db, LOCAL, patient, True)
    with pytest.raises(NotPermitted) as elsewhere:
        show_case(w.db, people["elsewhere"], case_id, emergency_reason="akut")
    assert elsewhere.value.reason == "NO_DEPARTMENT_ACCESS" and OWN in str(elsewhere.value)
    with pytest.raises(NotPermitted) as nurse:
        show_case(w.db, people["nurse"], case_id, emergency_reason="akut")
    assert "case.emergency_open" in str(nurse.value)

    opened = show_case(w.db, people["doctor"], case_id, emergency_reason="medvetslös, behöver tidigare bilder")
    assert opened["patient"] == patient and opened["confidential"] is True and opened["media_count"] == 2
    event = w.last_event()
    assert (event.actor, event.action, event.outcome, event.case_id) == ("doctor", "case.emergency_open",
                                                                         "permitted", case_id)
    assert event.why == "medvetslös, behöver tidigare bilder" and event.patient == patient
    refusals = [(e.actor, e.details["reason"]) for e in w.events(case_id=case_id, outcome="refused")]
    assert refusals == [("elsewhere", "NO_DEPARTMENT_ACCESS"), ("nurse", "NOT_PERMITTED")]


def test_cases_ingested_later_are_confidential_and_off_lifts_it(world):
    w, people = world
    patient = "194105139994"
    earlier = w.ingest(patient=patient)
    admin.set_confidential(w.db, LOCAL, patient, True)
    later = w.ingest(patient=patient, department=OTHER)
    assert search_cases(w.db, LOCAL, patient) == [
        {"case_id": c, "confidential": True, "display": CONFIDENTIAL} for c in (earlier, later)]
    admin.set_confidential(w.db, LOCAL, patient, False)
    assert [c["patient"] for c in search_cases(w.db, LOCAL, patient)] == [patient, patient]
    assert show_case(w.db, people["nurse"], earlier)["patient"] == patient


def test_a_case_revised_onto_a_confidential_patient_becomes_confidential(world):
    w, people = world
    hidden, other = "195011110011", "196212240029"
    admin.set_confidential(w.db, LOCAL, hidden, True)
    case_id = w.ingest(patient=other)
    versions.revise_case(w.db, people["nurse"], case_id, reason="fel patient", patient=hidden)
    assert [c for c in search_cases(w.db, people["nurse"]) if c["case_id"] == case_id] == [
        {"case_id": case_id, "confidential": True, "display": CONFIDENTIAL}]
    # Lifting the mark of the first patient does not expose it: version 1 named
    # another patient, but the case now belongs to the confidential one.
    admin.set_confidential(w.db, LOCAL, other, False)
    with pytest.raises(NotPermitted, match="confidential"):
        show_case(w.db, people["nurse"], case_id)
