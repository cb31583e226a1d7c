"""The web client against the real ``serve --http`` process of the archive
tests (SQLite + a blob folder, PostgreSQL + S3 on SeaweedFS): a case ingested
over gRPC, then its page, thumbnail and stored bytes (whole and a range) over
HTTP with a bearer token, each an audited read."""
from __future__ import annotations

import hashlib
import io

import httpx
from PIL import Image

from archive_server import admin
from tests.archive.client import DEPARTMENT, ingest_files, personnummer
from tests.support.logins import LOCAL, log_in
from tests.support.web import jpeg_with_metadata


def test_case_page_thumbnail_and_ranges_from_the_running_archive(running_archive, stub, archive_db):
    patient = personnummer()
    photo = jpeg_with_metadata(7) + b"\x00" * 300_000  # past one read block of a stream
    _, committed = ingest_files(stub, {"DCIM/100CANON/IMG_0007.JPG": photo}, patient_id=patient)
    case_id, sha = committed.case_id, hashlib.sha256(photo).hexdigest()
    role = f"web-{case_id[:8]}"
    admin.add_role(archive_db, LOCAL, role, ["case.read"])
    admin.add_user(archive_db, LOCAL, role, DEPARTMENT, role)
    token = log_in(archive_db, running_archive.http_address, role)
    base = f"http://{running_archive.http_address}"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        page = client.get(f"/cases/{case_id}", headers={"Accept": "text/html"})
        assert page.status_code == 200 and f"/media/{sha}/thumb" in page.text
        thumb = client.get(f"/cases/{case_id}/media/{sha}/thumb")
        assert thumb.status_code == 200 and thumb.headers["cache-control"] == "no-store"
        with Image.open(io.BytesIO(thumb.content)) as img:
            assert img.format == "JPEG" and not img.getexif()
        whole = client.get(f"/api/v1/cases/{case_id}/media/{sha}")
        assert whole.content == photo
        part = client.get(f"/api/v1/cases/{case_id}/media/{sha}", headers={"Range": "bytes=200000-200099"})
        assert part.status_code == 206 and part.content == photo[200000:200100]
