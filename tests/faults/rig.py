"""The fault suite's rig: a real archive process on one data folder, restarted at
will (with a fault point armed, ``archive_server/faults.py``), real cards through
the real agent pipeline, and the one invariant checked after every run:

    the card is untouched, or every file that left it is stored in the archive
    (its bytes hash to the receipt's SHA-256) and filed in a case.

``files_lost`` counts the files that left a card without such a copy; the suite
requires it to be 0. ``points_tried`` counts the fault points that fired (the
archive process died by SIGKILL there, or held there while the test acted).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import pathlib
import shutil
import signal
import subprocess

import sqlalchemy as sa

from agent.card.pipeline import IngestOutcome, IngestRequest, ingest_card
from agent.config import AgentConfig, ArchiveConfig
from archive_server.blobstores.base import blob_key
from archive_server.db import Database
from archive_server.faults import ENV
from archive_server.models import MediaItem
from tests.support.archive_process import ArchiveProcess
from tests.support.cardgen import make_card, make_personnummer
from tests.support.e2e import ARCHIVE, DEPARTMENT

_seeds = itertools.count(700)


@dataclasses.dataclass
class Figures:
    points_tried: list[str] = dataclasses.field(default_factory=list)
    runs: int = 0
    cards_archived: int = 0
    files_lost: int = 0
    lost: list[str] = dataclasses.field(default_factory=list)

    def report(self, name: str) -> None:
        """Printed (pytest -s shows it) and added to $BILDSLUSS_FAULT_REPORT."""
        line = {"suite": name, "points_tried": len(self.points_tried), "points": self.points_tried,
                "agent_runs": self.runs, "cards_archived": self.cards_archived, "files_lost": self.files_lost}
        print(json.dumps(line))
        if os.environ.get("BILDSLUSS_FAULT_REPORT"):
            with open(os.environ["BILDSLUSS_FAULT_REPORT"], "a") as fh:
                fh.write(json.dumps(line) + "\n")


class Card:
    """A generated card, and what the agent said of it run by run."""

    def __init__(self, root: pathlib.Path) -> None:
        seed = next(_seeds)
        self.root = root
        self.patient = make_personnummer("19650101", f"{seed % 1000:03d}")
        make_card(root, patient=self.patient, n_images=2, megapixels=0.5, seed=seed, housekeeping=False)
        self.originals = {p: _sha(root / p) for p in _media(root)}
        self.archived: dict[str, str] = {}  # path -> stripped sha256, from outcomes that said archived

    def copy(self, root: pathlib.Path) -> "Card":
        """The same bytes on another card (another folder name: another session)."""
        other = Card.__new__(Card)
        shutil.copytree(self.root, root, symlinks=True)
        (root / "DCIM").rename(root / "DCIM2") if (root / "DCIM").is_dir() else None
        other.root, other.patient = root, self.patient
        other.originals = {p: _sha(root / p) for p in _media(root)}
        other.archived = {}
        return other

    def left(self) -> list[str]:
        """Media files no longer on the card as scanned."""
        return [p for p, sha in self.originals.items()
                if not (self.root / p).is_file() or _sha(self.root / p) != sha]


class Rig:
    def __init__(self, tmp: pathlib.Path, *, db: str | None = None) -> None:
        self.tmp = tmp
        self.data = tmp / "archive"
        self.db_url = db
        self.archive: ArchiveProcess | None = None
        self.figures = Figures()
        self._runs = itertools.count()

    # -- the archive process -------------------------------------------------------

    def start(self, fault: str | None = None) -> ArchiveProcess:
        self.stop()
        env = {ENV: fault} if fault else {}
        self.archive = ArchiveProcess(data=self.data, db=self.db_url, env=env).start()
        return self.archive

    def stop(self) -> None:
        if self.archive is not None:
            self.archive.stop()
            self.archive = None

    def died_by_kill(self, *, wait_s: float = 15.0) -> bool:
        """The archive process was killed (SIGKILL at its armed point), waiting up to ``wait_s``
        for it to end."""
        proc = self.archive.proc if self.archive else None
        if proc is None:
            return False
        try:
            code = proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return False
        return code == -signal.SIGKILL

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        store = ["--db", self.db_url] if self.db_url else ["--data", str(self.data)]
        return subprocess.run([*ARCHIVE, *args, *store], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **(env or {})})

    # -- cards -----------------------------------------------------------------------

    def card(self) -> Card:
        return Card(self.tmp / f"card-{next(_seeds)}")

    def ingest(self, card: Card, **archive: object) -> IngestOutcome:
        """One agent run of ``card`` against the running archive, then the invariant."""
        assert self.archive is not None and self.archive.address
        n = next(self._runs)
        config = AgentConfig(agent_id="fault-agent", spool_dir=self.tmp / f"spool-{n}", archive=ArchiveConfig(
            address=self.archive.address, insecure=True, retry_budget_s=3.0, connect_timeout_s=3.0,
            call_timeout_s=20.0, chunk_bytes=64 << 10, **archive))  # type: ignore[arg-type]
        outcome = ingest_card(IngestRequest(root=card.root, department=DEPARTMENT), config)
        self.figures.runs += 1
        if outcome.outcome.value == "archived":
            card.archived.update({f.path: f.sha256 for f in outcome.files if f.sha256})
            if outcome.wiped:
                self.figures.cards_archived += 1
        self.check(card)
        return outcome

    def check(self, card: Card) -> None:
        """The invariant (module docstring): count every file lost."""
        for path in card.left():
            sha = card.archived.get(path)
            if sha is None or not self.stored_and_filed(sha):
                self.figures.files_lost += 1
                self.figures.lost.append(f"{card.root.name}/{path}")
        card.originals = {p: s for p, s in card.originals.items() if p not in card.left()}

    def stored_and_filed(self, sha: str) -> bool:
        path = self.data / "blobs" / blob_key(sha)
        if not path.is_file() or _sha(path) != sha:
            return False
        db = Database(self.db_url or f"sqlite:///{self.data / 'archive.sqlite3'}", pool_size=1, max_overflow=0)
        try:
            with db.read() as s:
                return s.scalar(sa.select(sa.func.count()).select_from(MediaItem)
                                .where(MediaItem.blob_sha256 == sha)) > 0
        finally:
            db.dispose()

    def until_archived(self, card: Card) -> IngestOutcome:
        """Run the card against a clean archive until it is archived and wiped."""
        if self.archive is None or self.archive.proc is None or self.archive.proc.poll() is not None:
            self.start()
        outcome = self.ingest(card)
        assert outcome.outcome.value == "archived" and outcome.wiped, outcome
        return outcome


def _media(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.suffix.upper() in (".JPG", ".JPEG") and not p.name.startswith("._"))


def _sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
