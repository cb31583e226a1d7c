"""The web client in this process for its HTTP tests: a :class:`World`
(real database on SQLite or PostgreSQL, real blob store, cases filed through
the real ingest code), the Starlette app over it, and browsers as
``TestClient``s on https://testserver (the session cookie is ``Secure``)."""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from collections.abc import Iterator
import re
import uuid

import sqlalchemy as sa
from starlette.testclient import TestClient

from archive_server import admin
from archive_server.config import ArchiveConfig, LoginConfig
from archive_server.logins import Logins, set_password
from archive_server.models import AuditEvent
from archive_server.web import create_app
from archive_server.web.context import WebContext
from tests.archive.databases import temp_database
from tests.archive.world import LOCAL, World

PASSWORD = "ett långt lösenord 4711"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
HTML = {"Accept": "text/html"}


@dataclasses.dataclass
class Site:
    world: World
    context: WebContext

    @classmethod
    def create(cls, world: World) -> "Site":
        config = ArchiveConfig(data_dir=world.data)
        context = WebContext(db=world.db, config=config, logins=Logins(world.db, LoginConfig()),
                             blobs=world.blobs)
        return cls(world, context)

    def browser(self) -> TestClient:
        return TestClient(create_app(self.context), base_url="https://testserver", follow_redirects=False,
                          headers=HTML)

    def person(self, department: str, rights: list[str], name: str | None = None) -> str:
        """A user with a role of ``rights`` in ``department`` and a password."""
        tag = uuid.uuid4().hex[:6]
        name = name or f"user-{tag}"
        admin.add_role(self.world.db, LOCAL, f"role-{tag}", rights)
        admin.add_user(self.world.db, LOCAL, name, department, f"role-{tag}")
        set_password(self.world.db, LOCAL, name, PASSWORD, LoginConfig())
        return name

    def logged_in(self, user: str) -> TestClient:
        client = self.browser()
        page = client.get("/login")
        response = client.post("/login", data={"username": user, "password": PASSWORD, "next": "/cases",
                                               "csrf": csrf_of(page.text)})
        assert response.status_code == 303, response.text
        return client

    def last_seq(self) -> int:
        with self.world.db.read() as s:
            return int(s.scalar(sa.select(sa.func.max(AuditEvent.seq))) or 0)

    def events_since(self, seq: int) -> list[AuditEvent]:
        with self.world.db.read() as s:
            return list(s.scalars(sa.select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq)))


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def ingest_media(world: World, files: dict[str, tuple[bytes, str, str]], *, patient: str, department: str) -> str:
    """File a card whose media are of the given kinds: path -> (bytes, kind, media type),
    kind one of image, video, audio, dicom; through the real ingest exchange."""
    from archive_server.ingest import KINDS
    from bildsluss.v1 import ingest_pb2 as pb
    from tests.archive.client import open_request, write_requests

    request = open_request({p: data for p, (data, _, _) in files.items()}, patient_id=patient, department=department)
    by_name = {v: k for k, v in KINDS.items()}
    for entry in request.manifest:
        _, kind, media_type = files[entry.relative_path]
        entry.kind, entry.media_type = by_name[kind], media_type
    world.core.open_session(request)
    for data in {d for d, _, _ in files.values()}:
        world.core.write(iter(write_requests(request.session_id, data)))
    return world.core.commit_session(pb.CommitSessionRequest(session_id=request.session_id)).case_id


def jpeg_with_metadata(seed: int = 1) -> bytes:
    """A JPEG carrying EXIF (camera make, a GPS-like comment) and a comment segment."""
    import io

    from PIL import Image

    img = Image.new("RGB", (400, 300), ((seed * 40) % 256, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x010E] = "Patient 19121212-1212"  # ImageDescription
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif.tobytes(), comment=b"kommentar 19121212-1212")
    return out.getvalue()


def sysadmin(site: Site, name: str | None = None) -> str:
    """A user with the built-in sysadmin role in OWN and a password."""
    tag = uuid.uuid4().hex[:6]
    name = name or f"admin-{tag}"
    from tests.archive.world import OWN

    admin.add_user(site.world.db, LOCAL, name, OWN, "sysadmin")
    set_password(site.world.db, LOCAL, name, PASSWORD, LoginConfig())
    return name


def shown(patient: str) -> str:
    """A 12-digit number as the pages show it (YYYYMMDD-NNNN)."""
    return f"{patient[:8]}-{patient[8:]}"


@contextlib.contextmanager
def fresh_site(db_backend: str, directory: pathlib.Path) -> Iterator[Site]:
    """A :class:`Site` over a new :class:`World` in a database of its own (a module's fixture)."""
    with temp_database(db_backend, directory / "db") as url:
        world = World.create(url, directory / "data")
        try:
            yield Site.create(world)
        finally:
            world.close()
