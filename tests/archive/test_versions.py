"""Forms, signing and versions (R13, R14) on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from archive_server import admin, versions
from archive_server.authz import ReasonRequired
from archive_server.cases import search_cases, show_case
from archive_server.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.archive.client import personnummer
from tests.archive.world import COMPLETE_FORM, LOCAL, World


@pytest.fixture
def world(fresh_db_url, tmp_path):
    w = World.create(fresh_db_url, tmp_path)
    yield w
    w.close()


def test_an_ingested_card_is_an_unsigned_case_with_an_empty_form(world):
    case_id = world.ingest(files=world.files(3))
    case = show_case(world.db, LOCAL, case_id)
    assert (case["version"], case["status"], case["media_count"]) == (1, "unsigned", 3)
    assert case["form_template"] == "klinisk-dokumentation" and case["form"] == {}
    with pytest.raises(versions.FormIncomplete, match="what, why, verbal_consent, captured_by, captured_at"):
        versions.sign_case(world.db, LOCAL, case_id)
    assert show_case(world.db, LOCAL, case_id)["status"] == "unsigned"


def test_signing_locks_and_a_revision_makes_the_next_version(world):
    first, second = personnummer("19450101"), personnummer("19460202")
    case_id = world.ingest(patient=first, files=world.files(3))
    draft = versions.revise_case(world.db, LOCAL, case_id, reason="formuläret ifyllt", fields=COMPLETE_FORM)
    assert (draft["version"], draft["new_version"]) == (1, False)  # unsigned: edited in place
    assert versions.sign_case(world.db, LOCAL, case_id)["version"] == 1
    with pytest.raises(FailedPrecondition, match="already signed"):
        versions.sign_case(world.db, LOCAL, case_id)
    v1 = show_case(world.db, LOCAL, case_id)
    dropped = v1["media"][0]["sha256"]

    fix = versions.revise_case(world.db, LOCAL, case_id, reason="fel patient och en bild för mycket",
                               patient=second, fields=[("note", "rättad")], drop_media=[dropped])
    assert (fix["version"], fix["new_version"], fix["status"]) == (2, True, "unsigned")
    assert fix["changes"]["patient"] == {"from": first, "to": second}
    assert fix["changes"]["media_dropped"] == [dropped]

    # The signed version is unchanged and still readable; search answers with v2.
    assert show_case(world.db, LOCAL, case_id, version=1) == {**v1, "latest_version": 2}
    latest = show_case(world.db, LOCAL, case_id)
    assert (latest["version"], latest["patient"], latest["media_count"]) == (2, second, 2)
    assert latest["version_created_by"] == LOCAL.actor and latest["reason"].startswith("fel patient")
    assert [c["version"] for c in search_cases(world.db, LOCAL, second)] == [2]
    assert search_cases(world.db, LOCAL, first) == []

    history = versions.case_history(world.db, LOCAL, case_id)
    assert [(h["version"], h["status"]) for h in history] == [(1, "signed"), (2, "unsigned")]
    assert history[0]["signed_by"] == LOCAL.actor and history[1]["signed_by"] is None

    diff = versions.diff_versions(world.db, LOCAL, case_id, 1, 2)
    assert diff["fields"]["patient"] == {"from": first, "to": second}
    assert diff["fields"]["form.note"] == {"from": None, "to": "rättad"}
    assert diff["fields"]["status"] == {"from": "signed", "to": "unsigned"}
    assert [m["sha256"] for m in diff["media_removed"]] == [dropped]
    assert diff["media_added"] == [] and diff["media_kept"] == 2
    assert versions.diff_versions(world.db, LOCAL, case_id, 2, 2)["fields"] == {}

    # v2 can be signed again and revised into v3; every step is in the audit log.
    versions.sign_case(world.db, LOCAL, case_id)
    versions.revise_case(world.db, LOCAL, case_id, reason="anteckning", fields=[("note", "")])
    assert [h["version"] for h in versions.case_history(world.db, LOCAL, case_id)] == [1, 2, 3]
    steps = [(e.action, e.details.get("version")) for e in world.events(case_id=case_id)
             if e.action in ("case.sign", "case.revise") and e.outcome == "permitted"]
    assert steps == [("case.revise", 1), ("case.sign", 1), ("case.revise", 2), ("case.sign", 2), ("case.revise", 3)]
    assert [e.details["reason"] for e in world.events(case_id=case_id, outcome="failed")] == ["FAILED_PRECONDITION"]
    revision = [e for e in world.events(case_id=case_id) if e.action == "case.revise"][1]
    assert revision.why == "fel patient och en bild för mycket" and revision.patient == second


def test_revisions_are_checked_against_the_form(world):
    case_id = world.ingest()
    for fields, message in [
        ([("nope", "x")], "no field 'nope'"),
        ([("verbal_consent", "kanske")], "yes or no"),
        ([("captured_at", "igår")], "must be a time"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            versions.revise_case(world.db, LOCAL, case_id, reason="r", fields=fields)
    with pytest.raises(ReasonRequired):
        versions.revise_case(world.db, LOCAL, case_id, reason="  ", fields=[("note", "x")])
    with pytest.raises(InvalidArgument, match="nothing to change"):
        versions.revise_case(world.db, LOCAL, case_id, reason="r")
    with pytest.raises(InvalidArgument, match="not media of case"):
        versions.revise_case(world.db, LOCAL, case_id, reason="r", drop_media=["0" * 64])
    every = [m["sha256"] for m in show_case(world.db, LOCAL, case_id)["media"]]
    with pytest.raises(FailedPrecondition, match="at least one media item"):
        versions.revise_case(world.db, LOCAL, case_id, reason="r", drop_media=every)
    with pytest.raises(InvalidArgument, match="patient_id"):
        versions.revise_case(world.db, LOCAL, case_id, reason="r", patient="12")
    with pytest.raises(NotFound, match="no version 7"):
        show_case(world.db, LOCAL, case_id, version=7)
    assert show_case(world.db, LOCAL, case_id)["form"] == {}
    refused = [e for e in world.events(case_id=case_id) if e.action == "case.revise"]
    assert refused and all(e.outcome != "permitted" for e in refused)


def test_a_custom_form_is_shared_and_typed(world):
    admin.add_form(world.db, LOCAL, "sar", "Sårdokumentation",
                   ["area:choice(ben|arm|bål):required", "size_mm:int:required", "healed:bool"])
    with pytest.raises(FailedPrecondition, match="exists already"):
        admin.add_form(world.db, LOCAL, "sar", "igen", ["x:text"])
    with pytest.raises(InvalidArgument, match="type must be one of"):
        admin.add_form(world.db, LOCAL, "bad", "Bad", ["x:colour"])
    case_id = world.ingest()
    with pytest.raises(InvalidArgument, match="whole number"):
        versions.revise_case(world.db, LOCAL, case_id, reason="r", form_template="sar", fields=[("size_mm", "stor")])
    versions.revise_case(world.db, LOCAL, case_id, reason="byt formulär", form_template="sar",
                         fields=[("area", "ben"), ("size_mm", "12")])
    case = show_case(world.db, LOCAL, case_id)
    assert case["form_template"] == "sar" and case["form"] == {"area": "ben", "size_mm": 12}
    assert versions.sign_case(world.db, LOCAL, case_id)["status"] == "signed"
    assert {f["form"] for f in admin.list_forms(world.db, LOCAL)} == {"klinisk-dokumentation", "sar"}


def test_a_teaching_copy_refused_for_one_image_writes_nothing_and_is_audited(world, tmp_path):
    """R20: every copy is made before any is written; an image that cannot be
    de-identified (here: bytes that are no image) refuses the whole request."""
    from archive_server.cases import record_consent, teaching_copy

    files = {"DCIM/IMG_0001.JPG": world.files(1).popitem()[1], "DCIM/IMG_0002.JPG": b"not an image at all"}
    case_id = world.ingest(files=files)
    scan = tmp_path / "samtycke.pdf"
    scan.write_bytes(b"%PDF-1.4\n% skannat samtycke\n")
    record_consent(world.db, world.blobs, LOCAL, case_id, scan)
    out = tmp_path / "teaching"
    with pytest.raises(FailedPrecondition, match="cannot be de-identified safely.*no teaching copy was written"):
        teaching_copy(world.db, world.blobs, LOCAL, case_id, out)
    assert not out.exists()
    event = world.last_event()
    assert (event.action, event.outcome) == ("case.teaching_copy", "failed")
