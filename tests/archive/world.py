"""An archive in this process for the access-control tests (issue 6): a real
database (SQLite or PostgreSQL), a real blob directory, cases filed through
the real ingest code (:class:`IngestCore`, the same exchange an agent makes),
and departments, roles and users made through the admin functions.

    world = World.create(db_url, tmp_path)
    case_id = world.ingest(patient="191212121212", department=OWN)
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import pathlib
import subprocess

import sqlalchemy as sa
from PIL import Image

from archive_server import admin
from archive_server.authz import Principal
from archive_server.blobstores import BlobStore, open_blobstore
from archive_server.cli import main as cli_main
from archive_server.config import ArchiveConfig
from archive_server.db import Database
from archive_server.ingest import IngestCore
from archive_server.models import AuditEvent
from bildsluss.v1 import ingest_pb2 as pb
from tests.archive.client import open_request, personnummer, write_requests

OWN = "SE2321000016-15CQ"
OTHER = "SE2321000016-A1B2"
LOCAL = Principal(actor="cli:test", user=None)
# Form data that completes the default form (klinisk-dokumentation).
COMPLETE_FORM = [("what", "Sår vänster underben"), ("why", "Uppföljning av sårläkning"),
                 ("verbal_consent", "ja"), ("captured_by", "Anna Sköterska"),
                 ("captured_at", "2026-03-14T09:30")]


def jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small real JPEG, different for each seed (each of its bits a black or white
    pixel of the second row: the colour and the one white pixel alone repeat every
    256 seeds, and a random card's file once deduplicated against a test's "secret")."""
    img = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    img.putpixel((seed % size[0], 0), (255, 255, 255))
    for bit in range(min(seed.bit_length(), size[0])):
        img.putpixel((bit, 1), (255, 255, 255) if seed >> bit & 1 else (0, 0, 0))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


@dataclasses.dataclass
class World:
    db: Database
    blobs: BlobStore
    core: IngestCore
    data: pathlib.Path
    _seed: int = 0

    @classmethod
    def create(cls, db_url: str, data: pathlib.Path, blobs_url: str | None = None) -> "World":
        data.mkdir(parents=True, exist_ok=True)
        db = Database(db_url, pool_size=4, max_overflow=2)
        db.upgrade_schema()
        blobs = open_blobstore(blobs_url or str(data / "blobs"), db)
        core = IngestCore(db, blobs, ArchiveConfig(data_dir=data))
        world = cls(db, blobs, core, data)
        for hsa, name in ((OWN, "Hudkliniken"), (OTHER, "Akutmottagningen")):
            admin.add_department(db, LOCAL, hsa, name)
        return world

    def close(self) -> None:
        self.db.dispose()

    def files(self, n: int = 2) -> dict[str, bytes]:
        out = {}
        for _ in range(n):
            self._seed += 1
            out[f"DCIM/100CANON/IMG_{self._seed:04d}.JPG"] = jpeg(self._seed)
        return out

    def ingest(self, *, patient: str | None = None, department: str = OWN,
               files: dict[str, bytes] | None = None) -> str:
        """File a card as a new unsigned case through the ingest exchange."""
        files = files or self.files()
        request = open_request(files, patient_id=patient or personnummer(), department=department)
        self.core.open_session(request)
        for data in {d for d in files.values()}:
            self.core.write(iter(write_requests(request.session_id, data)))
        return self.core.commit_session(pb.CommitSessionRequest(session_id=request.session_id)).case_id

    def user(self, name: str, department: str, role: str) -> Principal:
        admin.add_user(self.db, LOCAL, name, department, role)
        return Principal.named(name)

    def role(self, name: str, rights: list[str]) -> str:
        admin.add_role(self.db, LOCAL, name, rights)
        return name

    def last_event(self) -> AuditEvent:
        with self.db.read() as s:
            return s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()

    def events(self, **where: str) -> list[AuditEvent]:
        with self.db.read() as s:
            query = sa.select(AuditEvent).order_by(AuditEvent.seq)
            for key, value in where.items():
                query = query.where(getattr(AuditEvent, key) == value)
            return list(s.scalars(query))


def run_cli(store: list[str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``bildsluss-archive ARGS STORE…``: its exit code, stdout and stderr. Run
    in this process (``cli.main``, the code the console script runs), because
    a process start costs about a second on the development machine."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main([*args, *store])
        except SystemExit as exit:  # argparse usage errors
            code = exit.code if isinstance(exit.code, int) else 2
    result = subprocess.CompletedProcess(["bildsluss-archive", *args], code, out.getvalue(), err.getvalue())
    if ok:
        assert result.returncode == 0, result.stderr
    return result
