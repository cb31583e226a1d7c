"""The clinician's pages and the JSON API over HTTP (issue 11), in this
process on a real database (SQLite and PostgreSQL) and blob store: search and
the launch link, the case page, thumbnails without metadata, the full view and
DICOM frames, completing, signing, revising, comparing, printing; another
department sees nothing; a confidential case until nödöppning; and bad input:
each refused with a clear page or JSON error, nothing changed, the attempt audited."""
from __future__ import annotations

import io
import pathlib
import re

import pypdf
import pytest
import sqlalchemy as sa
from PIL import Image

from archive_server import admin
from archive_server.models import Case, CaseVersion
from tests.archive.client import personnummer
from tests.archive.world import LOCAL, OTHER, OWN
from tests.support.web import fresh_site, shown, Site, csrf_of, ingest_media, jpeg_with_metadata

CORPUS = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
ULTRASOUND = CORPUS / "dicom" / "ultrasound" / "OBXXXX1A_rle_2frame.dcm"
CLINICIAN = ["case.read", "case.sign", "case.revise", "case.print"]
FORM = {"field.what": "Sår vänster underben", "field.why": "Uppföljning", "field.verbal_consent": "ja",
        "field.captured_by": "Anna Sköterska", "field.captured_at": "2026-03-14T09:30"}


@pytest.fixture(scope="module")
def site(db_backend, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"webcases-{db_backend}")
    with fresh_site(db_backend, directory) as site:
        yield site


def new_case(site: Site, department: str = OWN, patient: str | None = None, dicom: bool = False) -> tuple[str, str]:
    patient = patient or personnummer()
    files = {"DCIM/100CANON/IMG_0001.JPG": (jpeg_with_metadata(1), "image", "image/jpeg"),
             "DCIM/100CANON/MVI_0002.MP4": (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "video", "video/mp4")}
    if dicom:
        files["US/IM_0001.DCM"] = (ULTRASOUND.read_bytes(), "dicom", "application/dicom")
    return ingest_media(site.world, files, patient=patient, department=department), patient


def sha_of_kind(site: Site, case_id: str, kind: str) -> str:
    from archive_server.models import MediaItem

    with site.world.db.read() as s:
        return s.scalars(sa.select(MediaItem.blob_sha256).join(CaseVersion).where(
            CaseVersion.case_id == case_id, MediaItem.kind == kind)).first()


def test_clinician_finds_completes_signs_revises_compares_and_prints(site):
    user = site.person(OWN, CLINICIAN)
    case_id, patient = new_case(site, dicom=True)
    client = site.logged_in(user)

    launched = client.get(f"/launch?patient={patient[:8]}-{patient[8:]}&department={OWN}")
    assert launched.status_code == 200 and f'data-case="{case_id}"' in launched.text
    searched = client.post("/cases", data={"patient": patient, "csrf": csrf_of(launched.text)})
    assert f'data-case="{case_id}"' in searched.text
    by_status = client.post("/cases", data={"department": OWN, "status": "signed", "csrf": csrf_of(launched.text)})
    assert case_id not in by_status.text

    page = client.get(f"/cases/{case_id}")
    assert page.status_code == 200 and shown(patient) in page.text and "Osignerat" in page.text
    image, dicom = sha_of_kind(site, case_id, "image"), sha_of_kind(site, case_id, "dicom")
    thumb = client.get(f"/cases/{case_id}/media/{image}/thumb")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.headers["cache-control"] == "no-store"
    with Image.open(io.BytesIO(thumb.content)) as img:
        assert max(img.size) <= 320 and not img.getexif() and "comment" not in img.info and "icc_profile" not in img.info
    assert b"SecretCam" not in thumb.content and b"19121212" not in thumb.content
    frame = client.get(f"/cases/{case_id}/media/{dicom}/frame/1")
    assert frame.status_code == 200 and frame.content.startswith(b"\x89PNG")
    assert "Bildruta 1 / 2" in client.get(f"/cases/{case_id}/view/{dicom}").text
    assert client.get(f"/cases/{case_id}/media/{dicom}/frame/2").status_code == 400
    view = client.get(f"/cases/{case_id}/view/{sha_of_kind(site, case_id, 'video')}")
    assert "<video" in view.text

    token = csrf_of(page.text)
    incomplete = client.post(f"/cases/{case_id}/sign", data={"csrf": token})
    assert incomplete.status_code == 409 and "Formuläret är inte komplett" in incomplete.text
    script = "<script>alert(1)</script>"
    saved = client.post(f"/cases/{case_id}/form", data={**FORM, "field.note": script, "reason": "Komplettering",
                                                         "csrf": token})
    assert saved.status_code == 303
    page = client.get(f"/cases/{case_id}")
    assert script not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert client.post(f"/cases/{case_id}/sign", data={"csrf": token}).status_code == 303
    assert "Signerat" in client.get(f"/cases/{case_id}").text

    no_reason = client.post(f"/cases/{case_id}/form", data={"field.why": "Ny indikation", "csrf": token})
    assert no_reason.status_code == 400 and "Orsak krävs" in no_reason.text
    revised = client.post(f"/cases/{case_id}/form", data={**FORM, "field.why": "Ny indikation",
                                                           "reason": "Fel indikation", "csrf": token})
    assert revised.headers["location"].endswith("done=new_version")
    compared = client.get(f"/cases/{case_id}/compare?a=1&b=2")
    assert compared.status_code == 200 and "Ny indikation" in compared.text and "Uppföljning" in compared.text

    assert client.post(f"/cases/{case_id}/print", data={"reason": " ", "csrf": token}).status_code == 400
    printed = client.post(f"/cases/{case_id}/print", data={"reason": "Remiss till plastikkirurgin", "csrf": token})
    assert printed.status_code == 200 and printed.content.startswith(b"%PDF")
    assert printed.headers["cache-control"] == "no-store"
    prints = site.world.events(action="case.print")
    assert [(e.outcome, e.why) for e in prints if e.case_id == case_id] == [
        ("refused", None), ("permitted", "Remiss till plastikkirurgin")]


def test_another_department_sees_nothing(site):
    case_id, patient = new_case(site)
    image = sha_of_kind(site, case_id, "image")
    stranger = site.logged_in(site.person(OTHER, CLINICIAN))
    before = site.last_seq()
    assert f'data-case="{case_id}"' not in stranger.get(f"/launch?patient={patient}").text
    page = stranger.get(f"/cases/{case_id}")
    assert page.status_code == 403 and shown(patient) not in page.text and patient not in page.text and "Ingen åtkomst till avdelningen" in page.text
    assert stranger.get(f"/cases/{case_id}/media/{image}/thumb").status_code == 403
    api = stranger.get(f"/api/v1/cases/{case_id}", headers={"Accept": "application/json"})
    assert api.status_code == 403 and api.json()["reason"] == "NO_DEPARTMENT_ACCESS"
    assert stranger.get(f"/api/v1/cases/{case_id}/media/{image}").status_code == 403
    refused = [(e.action, e.details.get("reason")) for e in site.events_since(before) if e.outcome == "refused"]
    assert refused == [("case.show", "NO_DEPARTMENT_ACCESS"), ("case.media", "NO_DEPARTMENT_ACCESS"),
                       ("case.show", "NO_DEPARTMENT_ACCESS"), ("case.media", "NO_DEPARTMENT_ACCESS")]


def test_confidential_case_until_emergency_open_with_a_reason(site):
    case_id, patient = new_case(site)
    admin.set_confidential(site.world.db, LOCAL, patient, True)
    image = sha_of_kind(site, case_id, "image")
    client = site.logged_in(site.person(OWN, [*CLINICIAN, "case.emergency_open"]))
    listed = client.get(f"/launch?patient={patient}")
    assert "Konfidentiellt" in listed.text and shown(patient) not in listed.text.split('id="results"')[1]
    page = client.get(f"/cases/{case_id}")
    assert page.status_code == 403 and "Konfidentiellt" in page.text and shown(patient) not in page.text and patient not in page.text
    assert client.get(f"/cases/{case_id}/media/{image}/thumb").status_code == 403
    token = csrf_of(page.text)
    assert client.post(f"/cases/{case_id}/emergency", data={"reason": "  ", "csrf": token}).status_code == 400
    opened = client.post(f"/cases/{case_id}/emergency", data={"reason": "Akut vård, medvetslös", "csrf": token})
    assert opened.status_code == 303 and "bildsluss_nod_" in opened.headers["set-cookie"]
    page = client.get(f"/cases/{case_id}")
    assert page.status_code == 200 and shown(patient) in page.text and "Nödöppning pågår" in page.text
    assert client.get(f"/cases/{case_id}/media/{image}/thumb").status_code == 200
    opens = [e for e in site.world.events(action="case.emergency_open") if e.case_id == case_id]
    assert len(opens) == 2 and all(e.why == "Akut vård, medvetslös" for e in opens)
    media = [e for e in site.world.events(action="case.media") if e.case_id == case_id]
    assert media[-1].details["emergency"] is True and media[-1].why == "Akut vård, medvetslös"
    # The grant is this session's: another login of the same user starts masked again.
    assert site.logged_in(opens[-1].actor).get(f"/cases/{case_id}").status_code == 403


def test_bad_input_is_refused_clearly_changes_nothing_and_is_audited(site):
    user = site.person(OWN, CLINICIAN)
    case_id, _ = new_case(site)
    client = site.logged_in(user)
    token = csrf_of(client.get("/cases").text)
    before = site.last_seq()

    unknown = client.get("/cases/3f1e0c9a-0000-4000-8000-000000000000")
    assert unknown.status_code == 404 and "Finns inte" in unknown.text
    garbage = client.get("/cases/" + "x" * 300)
    assert garbage.status_code == 404
    invalid = client.get("/launch?patient=19121212-1213")
    assert invalid.status_code == 400 and "Ogiltigt personnummer" in invalid.text
    forged = client.post(f"/cases/{case_id}/sign", data={"csrf": "f" * 64})
    assert forged.status_code == 403 and "säkerhetskontroll" in forged.text
    huge = client.post(f"/cases/{case_id}/form", data={**FORM, "field.note": "x" * 9000, "reason": "r", "csrf": token})
    assert huge.status_code == 400
    long_text = client.post(f"/cases/{case_id}/form", data={**FORM, "field.note": "x" * 4500, "reason": "r",
                                                             "csrf": token})
    assert long_text.status_code == 400
    api = client.get("/api/v1/cases/not-a-case", headers={"Accept": "application/json"})
    assert api.status_code == 404 and api.json()["error"] == "NOT_FOUND"

    with site.world.db.read() as s:
        case = s.get(Case, case_id)
        assert (case.status, case.current_version) == ("unsigned", 1)
        assert s.scalars(sa.select(CaseVersion.form).where(CaseVersion.case_id == case_id)).one() in ({}, None)
    told = [(e.action, e.outcome, e.details.get("reason")) for e in site.events_since(before)]
    assert ("case.show", "failed", "NOT_FOUND") in told
    assert ("web.form", "refused", "NOT_FOUND") in told  # the garbage id
    assert ("case.launch", "refused", "INVALID_PATIENT") in told
    assert ("web.form", "refused", "CSRF_INVALID") in told
    assert ("web.form", "refused", "FIELD_TOO_LONG") in told
    assert ("case.revise", "refused", "INVALID_ARGUMENT") in told
    assert not any(a == "case.sign" for a, _, _ in told)


def test_json_api_lists_shows_and_serves_media(site):
    user = site.person(OWN, ["case.read"])
    case_id, patient = new_case(site)
    hidden, hidden_patient = new_case(site)
    admin.set_confidential(site.world.db, LOCAL, hidden_patient, True)
    client = site.logged_in(user)
    json_ = {"Accept": "application/json"}
    listed = client.get(f"/api/v1/cases?patient={patient}", headers=json_).json()["cases"]
    assert [c["case_id"] for c in listed] == [case_id]
    masked = client.get(f"/api/v1/cases?patient={hidden_patient}", headers=json_).json()["cases"]
    assert masked == [{"case_id": hidden, "confidential": True, "display": "Konfidentiellt"}]
    one = client.get(f"/api/v1/cases/{case_id}", headers=json_)
    assert one.status_code == 200 and one.json()["patient"] == patient
    image = sha_of_kind(site, case_id, "image")
    media = client.get(f"/api/v1/cases/{case_id}/media/{image}", headers=json_)
    assert media.status_code == 200 and media.content == jpeg_with_metadata(1)
    assert media.headers["cache-control"] == "no-store" and media.headers["content-type"] == "image/jpeg"
    reads = [e for e in site.world.events(action="case.media") if e.case_id == case_id]
    assert reads[-1].details["use"] == "original" and reads[-1].actor == user
    assert client.get(f"/api/v1/cases/{hidden}", headers=json_).json()["reason"] == "CONFIDENTIAL"
    spec = client.get("/api/v1/openapi.json", headers=json_).json()
    assert spec["openapi"].startswith("3.") and "/cases/{case_id}/media/{sha256}" in spec["paths"]


def test_every_api_route_is_in_the_openapi_document():
    from archive_server.web import api
    from archive_server.web.api.openapi import PATHS

    routes = [r for mount in api.ROUTES for r in getattr(mount, "routes", [])]
    described = {r.path for r in routes if r.path != "/openapi.json"}
    assert described and described <= set(PATHS)


def test_annotations_are_a_versioned_layer_never_in_the_stored_file(site):
    import hashlib
    import json

    user = site.person(OWN, CLINICIAN)
    case_id, _ = new_case(site)
    image = sha_of_kind(site, case_id, "image")
    client = site.logged_in(user)
    view = client.get(f"/cases/{case_id}/view/{image}")
    assert view.status_code == 200 and 'id="annotate-form"' in view.text
    token = csrf_of(view.text)
    shapes = [{"type": "arrow", "x1": 0.1, "y1": 0.1, "x2": 0.5, "y2": 0.5},
              {"type": "circle", "cx": 0.5, "cy": 0.5, "r": 0.2},
              {"type": "text", "x": 0.2, "y": 0.8, "text": "<b>sårkant</b>"},
              {"type": "length", "x1": 0.1, "y1": 0.9, "x2": 0.6, "y2": 0.9, "value": 3.5, "unit": "cm"}]
    url = f"/cases/{case_id}/view/{image}/annotations"
    assert client.post(url, data={"shapes": json.dumps(shapes), "csrf": token}).status_code == 400  # no reason
    saved = client.post(url, data={"shapes": json.dumps(shapes), "reason": "Markera sårkant", "csrf": token})
    assert saved.status_code == 303
    view = client.get(saved.headers["location"])
    assert view.text.count('class="shape"') == 4 and "&lt;b&gt;sårkant&lt;/b&gt;" in view.text
    assert "3,5 cm" in view.text and "3.5 cm" not in view.text  # shown with a decimal comma
    one = client.get(f"/api/v1/cases/{case_id}", headers={"Accept": "application/json"}).json()
    assert (one["version"], len(one["annotations"][image])) == (1, 4)
    assert one["annotations"][image][3]["value"] == 3.5  # the API keeps the machine number

    # The printout draws the layer over the picture; the stored file stays as it was.
    printed = client.post(f"/cases/{case_id}/print", data={"reason": "Remiss med markeringar", "csrf": token})
    assert printed.status_code == 200
    text = " ".join(" ".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(printed.content)).pages).split())
    assert "<b>sårkant</b>" in text and "längd 3,5 cm" in text and "3.5" not in text
    original = client.get(f"/api/v1/cases/{case_id}/media/{image}").content
    assert hashlib.sha256(original).hexdigest() == image and original == jpeg_with_metadata(1)
    with site.world.blobs.open(image) as stored:  # the blob itself, not only what the API answers
        assert stored.read() == jpeg_with_metadata(1)

    for bad in ([{"type": "arrow", "x1": 2, "y1": 0, "x2": 0, "y2": 0}], [{"type": "laser"}],
                [{"type": "length", "x1": 0, "y1": 0, "x2": 1, "y2": 1, "value": 3, "unit": "tum"}], "not json"):
        sent = bad if isinstance(bad, str) else json.dumps(bad)
        refused = client.post(url, data={"shapes": sent, "reason": "x", "csrf": token})
        assert refused.status_code == 400
    refusals = [e.details["reason"] for e in site.world.events(action="case.annotate", outcome="refused")
                if e.case_id == case_id]
    assert refusals == ["REASON_REQUIRED", *["BAD_ANNOTATION"] * 4]

    # Signed, the layer changes only as a new version, like the form.
    client.post(f"/cases/{case_id}/form", data={**FORM, "reason": "Komplettering", "csrf": token})
    assert client.post(f"/cases/{case_id}/sign", data={"csrf": token}).status_code == 303
    again = client.post(url, data={"shapes": json.dumps(shapes[:1]), "reason": "Bara pilen", "csrf": token})
    assert again.status_code == 303
    two = client.get(f"/api/v1/cases/{case_id}", headers={"Accept": "application/json"}).json()
    assert (two["version"], two["status"], len(two["annotations"][image])) == (2, "unsigned", 1)
    first = client.get(f"/api/v1/cases/{case_id}?version=1", headers={"Accept": "application/json"}).json()
    assert len(first["annotations"][image]) == 4 and first["status"] == "signed"
    compared = client.get(f"/cases/{case_id}/compare?a=1&b=2")
    assert f"annotations.{image[:12]}" in compared.text


def test_consent_then_a_teaching_copy_into_the_collection_without_the_patient(site):
    user = site.person(OWN, [*CLINICIAN, "consent.record", "teaching.copy", "teaching.read"])
    case_id, patient = new_case(site)
    client = site.logged_in(user)
    token = csrf_of(client.get(f"/cases/{case_id}").text)
    before = client.get("/teaching")
    assert before.status_code == 200 and 'id="teaching-empty"' in before.text or "data-item" in before.text
    known = set(re.findall(r'data-item="([^"]+)"', before.text))
    no_consent = client.post(f"/cases/{case_id}/teaching", data={"title": "Bensår", "csrf": token})
    assert no_consent.status_code == 409  # a teaching copy needs the written consent first
    scan = b"%PDF-1.4 skannat samtycke " + patient.encode()
    stored = client.post(f"/cases/{case_id}/consent", data={"csrf": token},
                         files={"document": ("samtycke.pdf", scan, "application/pdf")})
    assert stored.status_code == 303
    copied = client.post(f"/cases/{case_id}/teaching", data={"title": "Bensår, dag 3", "csrf": token})
    assert copied.status_code == 303 and copied.headers["location"].endswith("done=teaching")
    page = client.get("/teaching")
    new = set(re.findall(r'data-item="([^"]+)"', page.text)) - known
    assert len(new) == 1 and "Bensår, dag 3" in page.text and shown(patient) not in page.text
    picture = client.get(f"/teaching/{new.pop()}/image")
    assert picture.status_code == 200 and picture.headers["cache-control"] == "no-store"
    with Image.open(io.BytesIO(picture.content)) as img:
        assert not img.getexif() and "comment" not in img.info
    assert b"SecretCam" not in picture.content and patient.encode() not in picture.content
    outsider = site.logged_in(site.person(OWN, ["case.read"]))
    assert outsider.get("/teaching").status_code == 403
    added = [e for e in site.world.events(action="teaching.added") if e.details.get("case_id") == case_id]
    assert len(added) == 1 and added[0].actor == user


def test_media_answers_one_byte_range_for_seeking(site):
    user = site.person(OWN, ["case.read"])
    case_id, _ = new_case(site)
    image = sha_of_kind(site, case_id, "image")
    whole = jpeg_with_metadata(1)
    client = site.logged_in(user)
    url = f"/api/v1/cases/{case_id}/media/{image}"
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == whole[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(whole)}" and part.headers["accept-ranges"] == "bytes"
    tail = client.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == whole[-5:]
    rest = client.get(url, headers={"Range": f"bytes={len(whole) - 3}-"})
    assert rest.content == whole[-3:]
    assert client.get(url, headers={"Range": f"bytes={len(whole)}-"}).status_code == 416
    assert client.get(url, headers={"Range": "bytes=0-1,5-6"}).content == whole  # several: the whole
    reads = [e for e in site.world.events(action="case.media") if e.case_id == case_id]
    assert len(reads) == 5 and all(e.outcome == "permitted" for e in reads)
