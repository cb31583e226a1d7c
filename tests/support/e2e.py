"""Helpers shared by the end-to-end and system tests: run the agent, look at cards and cases."""
from __future__ import annotations

import hashlib
import json
import re
import pathlib
import subprocess
import sys
from collections.abc import Callable, Mapping

from agent.card.progress import NoProgress
from tests.support.archive_process import ArchiveProcess

DEPARTMENT = "SE2321000016-15CQ"
PATIENT = "19121212-1212"
PATIENT_CANONICAL = "191212121212"
BIN = pathlib.Path(sys.executable).parent
AGENT = [str(BIN / "bildsluss-agent")]
ARCHIVE = [str(BIN / "bildsluss-archive")]

# Tag groups and tags that must never reach the archive (R7), as exiftool -G1 names them.
FORBIDDEN_GROUPS = ("GPS", "MakerNotes", "Canon", "Nikon", "Olympus", "Sony", "Panasonic",
                    "FujiFilm", "Pentax", "XMP", "IPTC", "Photoshop", "IFD1", "ExifIFD")
FORBIDDEN_TAGS = ("Make", "Model", "SerialNumber", "InternalSerialNumber", "BodySerialNumber",
                  "GPSLatitude", "GPSLongitude", "ThumbnailImage", "PreviewImage", "DateTimeOriginal")


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Everything about the card that a wipe or a write would change."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_file() and not path.is_symlink():
            out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            out[rel] = ("dir" if path.is_dir() else "other", st.st_mode)
    return out


def media_on(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.JPG") if not p.name.startswith("._"))


def ingest(card: pathlib.Path, address: str, tmp_path: pathlib.Path, *extra: str) -> tuple[int, dict]:
    return _ingest([str(card)], address, tmp_path, extra)


def ingest_camera(port: str, address: str, tmp_path: pathlib.Path, *extra: str,
                  env: dict | None = None) -> tuple[int, dict]:
    """``bildsluss-agent ingest --camera PORT`` (issue 16), checked like a card's run."""
    return _ingest(["--camera", port], address, tmp_path, extra, env)


def _ingest(target: list[str], address: str, tmp_path: pathlib.Path, extra, env=None) -> tuple[int, dict]:
    result = subprocess.run(
        [*AGENT, "ingest", *target, "--archive", address, "--department", DEPARTMENT,
         "--insecure", "--json", "--spool", str(tmp_path / "spool"), *extra],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.stdout.strip(), f"no JSON on stdout; stderr:\n{result.stderr}"
    outcome = json.loads(result.stdout)
    # The outcome names the numbers the card showed; the logs never do in full (issue 13).
    for number in {e["patient"] for e in outcome.get("evidence", []) if e.get("patient")}:
        if len(number) == 12 and number.isdigit():
            assert not re.search(rf"{number[2:8]}[-+ ]?{number[8:]}", result.stderr), \
                f"the agent logged the full number {number}:\n{result.stderr}"
    assert not (tmp_path / "spool").exists() or not any((tmp_path / "spool").iterdir()), \
        "the spool must be empty after a one-shot ingest (R11)"
    return result.returncode, outcome


def store_args(archive: ArchiveProcess) -> list[str]:
    """How the admin CLI reaches the archive's database: --db when it has one, else --data."""
    return ["--db", archive.db] if archive.db else ["--data", str(archive.data)]


def cases(archive: ArchiveProcess, patient: str) -> list[dict]:
    out = subprocess.run([*ARCHIVE, "cases", *store_args(archive), "--patient", patient, "--json"],
                         capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def exif_tags(path: pathlib.Path) -> dict:
    out = subprocess.run(["exiftool", "-j", "-G1", "-a", "-u", "-b", str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]


class OnStage(NoProgress):
    """A card run's progress that calls ``fn(stage, info)`` for every stage (to act mid-card)."""

    def __init__(self, fn: Callable[[str, dict], object]) -> None:
        self.fn = fn

    def stage(self, stage: str, info: Mapping[str, object]) -> None:
        self.fn(stage, dict(info))
