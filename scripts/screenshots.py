#!/usr/bin/env python3
"""Screenshots of the web client's main pages into docs/web-*.png, made from a
real archive so they stay true: a World (SQLite + blob folder) with a few
cases, ``bildsluss-archive serve --http`` on it, and Debian's headless
Chromium through Playwright (never a browser download).

    .venv/bin/python scripts/screenshots.py [--out docs]
"""
from __future__ import annotations

import argparse
import io
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw  # noqa: E402

from archive_server import admin  # noqa: E402
from tests.archive.client import personnummer  # noqa: E402
from tests.archive.world import LOCAL, OWN, World  # noqa: E402
from tests.support.archive_process import ArchiveProcess  # noqa: E402
from tests.support.browser import CHROMIUM  # noqa: E402
from tests.support.web import PASSWORD, Site, ingest_media, sysadmin  # noqa: E402

PATIENT, HIDDEN = "191212121212", personnummer("19560716", "238")
ULTRASOUND = ROOT.parent / "shared" / "corpus" / "dicom" / "ultrasound" / "US1_UNCR.dcm"
CLINICIAN = ["case.read", "case.sign", "case.revise", "case.print", "case.emergency_open"]


def photo(seed: int) -> bytes:
    """A made-up clinical photograph: skin tones and a darker patch."""
    img = Image.new("RGB", (1200, 900), (224 - seed * 6, 180 - seed * 4, 160 - seed * 3))
    draw = ImageDraw.Draw(img)
    draw.ellipse((420 + seed * 30, 300, 760 + seed * 20, 560), fill=(150, 70, 70))
    draw.rectangle((40, 40, 360, 110), fill=(255, 255, 255))
    draw.text((60, 60), f"Mätsticka {seed} cm", fill=(0, 0, 0))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def seed(site: Site) -> tuple[str, str, str]:
    files = {f"DCIM/100CANON/IMG_{n:04d}.JPG": (photo(n), "image", "image/jpeg") for n in (1, 2, 3)}
    files["US/IM_0001.DCM"] = (ULTRASOUND.read_bytes(), "dicom", "application/dicom")
    # A film and a dictation after the DICOM item (the shots below click it as the 4th).
    from tests.support.mediagen import write_m4a, write_video

    clip = write_video(site.world.data / "MVI_0005.MP4", first=None, last=None, seconds=3.0, camera=None)
    dictation = write_m4a(site.world.data / "DIKT_0006.M4A", seconds=42.0)
    files["VIDEO/MVI_0005.MP4"] = (clip.read_bytes(), "video", "video/mp4")
    files["VOICE/DIKT_0006.M4A"] = (dictation.read_bytes(), "audio", "audio/mp4")
    case_id = ingest_media(site.world, files, patient=PATIENT, department=OWN)
    ingest_media(site.world, {"DCIM/100CANON/IMG_0009.JPG": (photo(4), "image", "image/jpeg")},
                 patient=PATIENT, department=OWN)
    hidden = ingest_media(site.world, {"DCIM/100CANON/IMG_0010.JPG": (photo(5), "image", "image/jpeg")},
                          patient=HIDDEN, department=OWN)
    admin.set_confidential(site.world.db, LOCAL, HIDDEN, True)
    # An annotation layer on the first photo, and a consented teaching copy of the case.
    import hashlib

    from archive_server import annotations, teaching
    from archive_server.cases import record_consent

    annotations.annotate(site.world.db, LOCAL, case_id, hashlib.sha256(photo(1)).hexdigest(), [
        {"type": "arrow", "x1": 0.2, "y1": 0.7, "x2": 0.4, "y2": 0.5},
        {"type": "circle", "cx": 0.49, "cy": 0.48, "r": 0.16},
        {"type": "text", "x": 0.62, "y": 0.3, "text": "sårkant"},
        {"type": "length", "x1": 0.35, "y1": 0.72, "x2": 0.63, "y2": 0.72, "value": 3.5, "unit": "cm"}],
        reason="Markera sårkanten")
    scan = site.world.data / "samtycke.pdf"
    scan.write_bytes(b"%PDF-1.4 skannat samtycke")
    record_consent(site.world.db, site.world.blobs, LOCAL, case_id, scan)
    teaching.copy_case(site.world.db, site.world.blobs, LOCAL, case_id, title="Bensår, dag 3")
    return case_id, hidden, site.person(OWN, CLINICIAN, name="anna")


def fleet(site: Site, address: str) -> list:
    """Capture-PC agents for the ops page: two beating (one with a refused card and
    one card uploading), one that stopped (silent), one bound but never seen."""
    import time

    from agent.config import AgentConfig, ArchiveConfig as AgentArchive, DaemonConfig
    from agent.daemon.heartbeat import Heartbeater
    from agent.desk.status import StatusBoard
    from archive_server import agentcerts
    from tests.support.pki import throwaway_certificate

    agentcerts.bind_agent(site.world.db, LOCAL, "hud-pc-4", OWN, throwaway_certificate("hud-pc-4"))
    beaters = []
    for agent_id in ("hud-pc-1", "hud-pc-2", "hud-pc-3"):
        board = StatusBoard(agent_id, "0.1.0", OWN)
        if agent_id == "hud-pc-1":
            board.card_detected("sdb1", "usb-1", "udev")
            board.card_finished("sdb1", {"outcome": "refused", "reason": "UNREGISTERED_DEVICE",
                                         "message": "a phone", "files": [{"status": "refused"}] * 3})
            board.card_detected("sdc1", "usb-2", "udev")
            board.progress("sdc1", "upload", {"files_done": 7, "files_total": 12, "bytes_done": 7, "bytes_total": 12})
        config = AgentConfig(agent_id=agent_id, department=OWN, daemon=DaemonConfig(heartbeat_s=1.0),
                             archive=AgentArchive(address=address, insecure=True, call_timeout_s=10.0))
        beater = Heartbeater(config, board, host=agent_id)
        beater.start()
        beaters.append(beater)
    while not all(b.sent for b in beaters):
        time.sleep(0.1)
    beaters.pop().stop()  # hud-pc-3 falls silent
    time.sleep(4)
    return beaters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bildsluss-shots-") as tmp:
        data = pathlib.Path(tmp) / "data"
        world = World.create(f"sqlite:///{tmp}/archive.sqlite3", data)
        site = Site.create(world)
        case_id, hidden, anna = seed(site)
        boss = sysadmin(site, "sara")
        archive = ArchiveProcess(data=data, db=f"sqlite:///{tmp}/archive.sqlite3", blobs=str(data / "blobs"),
                                 http="127.0.0.1:0").start()
        base = f"http://{archive.http_address}"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
                shots: list[str] = []

                def shot(page, name: str) -> None:
                    path = args.out / f"web-{name}.png"
                    page.screenshot(path=str(path), full_page=True)
                    shots.append(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))

                def login(page, user: str) -> None:
                    page.fill("input[name=username]", user)
                    page.fill("input[name=password]", PASSWORD)
                    page.click("#login")

                context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 860}, locale="sv-SE")
                page = context.new_page()
                page.goto(f"/launch?patient={PATIENT}&department={OWN}")
                shot(page, "login")
                login(page, anna)
                page.wait_for_selector("#results")
                shot(page, "launch")
                page.goto(f"/cases/{case_id}")
                page.wait_for_selector(".thumb img")
                page.wait_for_load_state("networkidle")
                shot(page, "case")
                page.click(".thumb:nth-child(4)")
                page.wait_for_selector("#full")
                page.wait_for_load_state("networkidle")
                shot(page, "dicom")
                page.goto(f"/cases/{case_id}")
                page.click(".thumb:nth-child(1)")
                page.wait_for_selector("#layer .shape")
                page.wait_for_load_state("networkidle")
                shot(page, "annotations")
                page.goto(f"/cases/{hidden}")
                shot(page, "confidential")
                context.close()

                context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 860}, locale="sv-SE")
                page = context.new_page()
                page.goto("/admin")
                login(page, boss)
                page.wait_for_selector("#agents")
                shot(page, "admin")
                page.goto("/audit")
                page.click("#audit-form button[type=submit]")
                page.wait_for_selector("#events")
                shot(page, "audit")
                page.goto("/statistics")
                shot(page, "statistics")
                page.goto("/teaching")
                page.wait_for_load_state("networkidle")
                shot(page, "teaching")
                assert archive.address
                beaters = fleet(site, archive.address)
                try:
                    page.goto("/ops")
                    page.wait_for_selector("tr.liveness-silent")
                    shot(page, "ops")
                    page.click("tr[data-agent='hud-pc-1'] a")
                    page.wait_for_selector("#history")
                    shot(page, "ops-agent")
                finally:
                    for beater in beaters:
                        beater.stop()
                context.close()
                browser.close()
        finally:
            archive.stop()
            world.close()
    print("\n".join(shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
