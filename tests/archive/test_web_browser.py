"""The web client in a real browser (issue 11): headless Chromium (Debian's
package) through Playwright against a real ``bildsluss-archive serve --http``
process, on SQLite and PostgreSQL. A clinician logs in from the EHR's launch
link, sees the thumbnails decode, completes the form, signs and prints with a
reason; another department's user sees nothing; a confidential case shows
only "Konfidentiellt" until nödöppning with a reason; an administrator binds
an agent certificate."""
from __future__ import annotations

import pathlib

import pytest
import sqlalchemy as sa

from archive_server import admin
from archive_server.models import AuditEvent
from tests.archive.client import personnummer
from tests.archive.databases import temp_database
from tests.archive.world import LOCAL, OTHER, OWN, World
from tests.support.archive_process import ArchiveProcess
from tests.support.browser import thumbnails_decoded
from tests.support.pki import throwaway_certificate
from tests.support.mediagen import write_video
from tests.support.web import shown, PASSWORD, Site, ingest_media, jpeg_with_metadata, sysadmin

pytestmark = [pytest.mark.browser, pytest.mark.slow]
STUB_MOV = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "exif" / "QuickTime.mov"
CLINICIAN = ["case.read", "case.sign", "case.revise", "case.print", "case.emergency_open"]


@pytest.fixture(scope="module")
def served(db_backend, tmp_path_factory):
    """A World on the backend and a serve process on the same database and blob folder."""
    directory = tmp_path_factory.mktemp(f"browser-{db_backend}")
    with temp_database(db_backend, directory / "db") as url:
        world = World.create(url, directory / "data")
        archive = ArchiveProcess(data=directory / "data", db=url, blobs=str(directory / "data" / "blobs"),
                                 http="127.0.0.1:0").start()
        try:
            yield Site.create(world), f"http://{archive.http_address}"
        finally:
            archive.stop()
            world.close()


def a_case(site: Site, department: str = OWN, video: pathlib.Path | None = None) -> tuple[str, str]:
    patient = personnummer()
    files = {f"DCIM/100CANON/IMG_{n:04d}.JPG": (jpeg_with_metadata(n), "image", "image/jpeg") for n in (1, 2)}
    if video is not None:
        files[f"DCIM/100CANON/{video.name}"] = (video.read_bytes(), "video", "video/mp4")
        # and the corpus's QuickTime.mov, a header without frames: a tile, not a broken picture
        files["DCIM/100CANON/MVI_0009.MOV"] = (STUB_MOV.read_bytes(), "video", "video/quicktime")
    return ingest_media(site.world, files, patient=patient, department=department), patient


def log_in(page, user: str) -> None:
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login")


def test_clinician_from_launch_link_to_signed_and_printed(served, chromium, tmp_path):
    site, base = served
    user = site.person(OWN, CLINICIAN)
    clip = write_video(tmp_path / "MVI_0003.MP4", first=None, last=None, seconds=2.0, size=(320, 240))
    case_id, patient = a_case(site, video=clip)
    with chromium.new_context(base_url=base, accept_downloads=True) as context:
        page = context.new_page()
        page.goto(f"/launch?patient={patient[:8]}-{patient[8:]}&department={OWN}")
        assert "/login" in page.url
        log_in(page, user)
        page.wait_for_selector("#results")
        assert "/launch?" in page.url
        page.click(f"tr[data-case='{case_id}'] a")
        page.wait_for_selector("#case-patient")
        assert page.inner_text("#case-patient") == shown(patient)
        widths = thumbnails_decoded(page)
        assert len(widths) == 3 and all(w > 0 for w in widths)  # two photos and the film's frame
        assert page.eval_on_selector(".picture.video img", "img => img.naturalWidth") == 320
        assert page.eval_on_selector_all(".thumb .tile", "tiles => tiles.map(t => t.textContent)") == ["Film"]

        page.fill("textarea[name='field.what']", "Sår vänster underben")
        page.fill("textarea[name='field.why']", "Uppföljning")
        page.select_option("select[name='field.verbal_consent']", "ja")
        page.fill("textarea[name='field.captured_by']", "Anna Sköterska")
        page.fill("input[name='field.captured_at']", "2026-03-14T09:30")
        page.fill("#form-reason", "Komplettering")
        page.click("#save-form")
        page.wait_for_selector("#done")
        page.click("#sign")
        page.wait_for_selector("#done")
        assert page.inner_text("#case-status") == "Signerat"

        page.fill("#print-reason", "Remiss till plastikkirurgin")
        with page.expect_download() as download:
            page.click("#print")
        pdf = pathlib.Path(download.value.path()).read_bytes()
        assert pdf.startswith(b"%PDF")
    with site.world.db.read() as s:
        printed = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "case.print",
                                                        AuditEvent.case_id == case_id)).all()
    assert [(e.actor, e.why, e.outcome) for e in printed] == [(user, "Remiss till plastikkirurgin", "permitted")]


def test_another_departments_user_sees_nothing(served, chromium):
    site, base = served
    case_id, patient = a_case(site)
    stranger = site.person(OTHER, CLINICIAN)
    with chromium.new_context(base_url=base) as context:
        page = context.new_page()
        page.goto(f"/launch?patient={patient}")
        log_in(page, stranger)
        page.wait_for_selector("#no-results")
        page.goto(f"/cases/{case_id}")
        assert page.inner_text("#error-reason") == "NO_DEPARTMENT_ACCESS"
        assert shown(patient) not in page.content() and patient not in page.content()


def test_confidential_case_until_emergency_open(served, chromium):
    site, base = served
    case_id, patient = a_case(site)
    admin.set_confidential(site.world.db, LOCAL, patient, True)
    user = site.person(OWN, CLINICIAN)
    with chromium.new_context(base_url=base) as context:
        page = context.new_page()
        page.goto(f"/cases/{case_id}")
        log_in(page, user)
        page.wait_for_selector("#confidential")
        assert page.inner_text("#confidential") == "Konfidentiellt"
        assert shown(patient) not in page.content() and not page.query_selector(".thumb img")
        page.click("#emergency-open")  # no reason: the browser's required field stops it
        assert page.query_selector("#confidential") is not None
        page.fill("#emergency-reason", "Akut vård, patienten medvetslös")
        page.click("#emergency-open")
        page.wait_for_selector("#emergency-banner")
        assert page.inner_text("#case-patient") == shown(patient)
        assert all(w > 0 for w in thumbnails_decoded(page))
    with site.world.db.read() as s:
        opened = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "case.emergency_open",
                                                       AuditEvent.case_id == case_id)).all()
    assert opened and {e.why for e in opened} == {"Akut vård, patienten medvetslös"}


def test_administrator_binds_an_agent_certificate(served, chromium, tmp_path):
    site, base = served
    pem = tmp_path / "kamera-pc-12.pem"
    pem.write_bytes(throwaway_certificate("kamera-pc-12"))
    with chromium.new_context(base_url=base) as context:
        page = context.new_page()
        page.goto("/admin")
        log_in(page, sysadmin(site))
        page.wait_for_selector("#bind-form")
        page.fill("#agent-id", "kamera-pc-12")
        page.select_option("#agent-department", OWN)
        page.set_input_files("#agent-certificate", str(pem))
        page.click("#bind")
        page.wait_for_selector("#done")
        row = page.wait_for_selector("tr[data-agent='kamera-pc-12']")
        fingerprint = row.query_selector(".fingerprint").inner_text()
    with site.world.db.read() as s:
        bound = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "agent.bound",
                                                      AuditEvent.target == "agent:kamera-pc-12")).one()
    assert bound.details["fingerprint"] == fingerprint and bound.department == OWN


def test_clinician_draws_an_arrow_on_a_picture(served, chromium):
    site, base = served
    user = site.person(OWN, CLINICIAN)
    case_id, _ = a_case(site)
    with chromium.new_context(base_url=base) as context:
        page = context.new_page()
        page.goto(f"/cases/{case_id}")
        log_in(page, user)
        page.click(".thumb >> nth=0")
        page.wait_for_selector("#annotate-form")
        page.wait_for_load_state("load")
        box = page.query_selector("#layer").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=5)
        page.mouse.up()
        assert len(page.query_selector_all("#layer .shape")) == 1
        page.fill("#annotate-reason", "Markera sårkanten")
        page.click("#annotate-save")
        page.wait_for_selector("#annotate .ok")
        assert len(page.query_selector_all("#layer line.shape")) == 1
    with site.world.db.read() as s:
        from archive_server.models import Case, CaseVersion

        version = s.scalars(sa.select(CaseVersion).join(Case).where(Case.id == case_id)).one()
        (shapes,) = version.annotations.values()
    assert shapes[0]["type"] == "arrow" and abs(shapes[0]["x1"] - 0.2) < 0.02 and abs(shapes[0]["y2"] - 0.5) < 0.02


def test_consent_and_a_teaching_copy_reach_the_collection(served, chromium, tmp_path):
    site, base = served
    user = site.person(OWN, [*CLINICIAN, "consent.record", "teaching.copy", "teaching.read"])
    case_id, patient = a_case(site)
    scan = tmp_path / "samtycke.pdf"
    scan.write_bytes(b"%PDF-1.4 skannat samtycke")
    title = f"Bensår {case_id[:8]}"
    with chromium.new_context(base_url=base) as context:
        page = context.new_page()
        page.goto(f"/cases/{case_id}")
        log_in(page, user)
        page.wait_for_selector("#teaching")
        page.set_input_files("#consent-document", str(scan))
        page.click("#consent-save")
        page.wait_for_selector("#done")
        page.fill("#teaching-title", title)
        page.click("#teaching-copy")
        page.wait_for_selector("#done")
        page.goto("/teaching")
        items = page.query_selector_all(f"a.thumb:has-text('{title}')")
        assert len(items) == 2  # both photos of the case
        assert all(w > 0 for w in thumbnails_decoded(page))
        assert shown(patient) not in page.content() and patient not in page.content()
