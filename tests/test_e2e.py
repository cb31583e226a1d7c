"""End to end: realistic cards through `bildsluss-agent ingest` into a real archive process.

Every refusal and failure leaves the card byte-identical (R4, R10); a good card
ends up as one case whose exported files carry no metadata (R7) and show the
same pixels, and the card is left with no media.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest
from PIL import Image

from tests.support.archive_process import ArchiveProcess
from tests.support.cardgen import make_card, make_personnummer

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


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    with ArchiveProcess(data=tmp_path_factory.mktemp("e2e") / "archive") as proc:
        yield proc


def ingest(card: pathlib.Path, address: str, tmp_path: pathlib.Path, *extra: str) -> tuple[int, dict]:
    result = subprocess.run(
        [*AGENT, "ingest", str(card), "--archive", address, "--department", DEPARTMENT,
         "--insecure", "--json", "--spool", str(tmp_path / "spool"), *extra],
        capture_output=True, text=True, timeout=300,
    )
    assert result.stdout.strip(), f"no JSON on stdout; stderr:\n{result.stderr}"
    outcome = json.loads(result.stdout)
    assert not (tmp_path / "spool").exists() or not any((tmp_path / "spool").iterdir()), \
        "the spool must be empty after a one-shot ingest (R11)"
    return result.returncode, outcome


def cases(archive: ArchiveProcess, patient: str) -> list[dict]:
    out = subprocess.run([*ARCHIVE, "cases", "--data", str(archive.data), "--patient", patient, "--json"],
                         capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def exif_tags(path: pathlib.Path) -> dict:
    out = subprocess.run(["exiftool", "-j", "-G1", "-a", "-u", "-b", str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]


def test_good_card_is_archived_clean_and_the_card_emptied(archive, tmp_path):
    card = tmp_path / "card"
    spec = make_card(card, patient=PATIENT, n_images=4, seed=11)
    originals = tmp_path / "originals"
    shutil.copytree(card, originals, symlinks=True)
    jpegs = media_on(card)
    assert len(jpegs) == 4
    housekeeping = {p for p in snapshot(card) if p not in jpegs}
    # The generator wrote real metadata, or the assertions below prove nothing.
    before = exif_tags(originals / jpegs[0])
    assert any(k.startswith("GPS:") for k in before) and "IFD0:Make" in before

    code, out = ingest(card, archive.address, tmp_path)

    assert code == 0, out
    assert out["outcome"] == "archived" and out["reason"] is None and out["wiped"] is True
    assert out["patient"] == PATIENT_CANONICAL
    archived = {f["path"]: f for f in out["files"] if f["status"] == "archived"}
    assert sorted(archived) == jpegs
    assert all(len(f["sha256"]) == 64 for f in archived.values())
    assert {e["patient"] for e in out["evidence"] if e["patient"]} == {PATIENT_CANONICAL}
    # The card: no media left, folders and camera housekeeping untouched.
    assert media_on(card) == []
    assert set(snapshot(card)) == housekeeping
    # The archive: exactly one case for the patient, with every file.
    found = cases(archive, PATIENT_CANONICAL)
    assert [c["case_id"] for c in found] == [out["case_id"]]
    export = tmp_path / "export"
    subprocess.run([*ARCHIVE, "export", out["case_id"], str(export), "--data", str(archive.data)],
                   check=True, capture_output=True)
    for rel in jpegs:
        exported = export / rel
        assert hashlib.sha256(exported.read_bytes()).hexdigest() == archived[rel]["sha256"]
        tags = exif_tags(exported)
        leaked = [k for k in tags if k.split(":")[0] in FORBIDDEN_GROUPS
                  or k.split(":")[-1] in FORBIDDEN_TAGS]
        assert leaked == [], f"{rel} still carries {leaked}"
        with Image.open(originals / rel) as a, Image.open(exported) as b:
            assert a.size == b.size and a.tobytes() == b.tobytes(), f"{rel}: pixels changed"
    assert spec is not None


def _card_kinds():
    other = make_personnummer("19820415", "238")
    return {
        "mixed": (dict(extra_patient_at=2, extra_patient=other), "MIXED_PATIENTS", []),
        "first_last": (dict(last_patient=other), "FIRST_LAST_MISMATCH", []),
        "no_id": (dict(label_on=()), "NO_ID_FOUND", []),
        "expected": ({}, "EXPECTED_PATIENT_MISMATCH", ["--expect", other]),
    }


@pytest.mark.parametrize("kind", sorted(_card_kinds()))
def test_refused_cards_stay_byte_identical(archive, tmp_path, kind):
    options, reason, extra = _card_kinds()[kind]
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=4, seed=21, **options)
    before = snapshot(card)

    code, out = ingest(card, archive.address, tmp_path, *extra)

    assert code == 3, out
    assert out["outcome"] == "refused" and out["reason"] == reason
    assert out["wiped"] is False and out["case_id"] is None and out["message"]
    assert all(f["status"] in ("refused", "ignored") and f["sha256"] is None for f in out["files"])
    assert snapshot(card) == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_archive_down_defers_and_leaves_the_card(tmp_path):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=3, seed=31)
    before = snapshot(card)
    config = tmp_path / "agent.toml"
    config.write_text("[archive]\nconnect_timeout_s = 1.0\nretry_budget_s = 1.0\n")

    code, out = ingest(card, f"127.0.0.1:{_free_port()}", tmp_path, "--config", str(config))

    assert code == 4, out
    assert out["outcome"] == "deferred" and out["reason"] == "ARCHIVE_UNAVAILABLE"
    assert out["wiped"] is False and out["case_id"] is None
    assert {f["status"] for f in out["files"]} <= {"pending", "ignored"}
    assert snapshot(card) == before


def test_archive_killed_mid_upload_leaves_the_card(tmp_path):
    """The archive dies while the agent uploads: deferred, card untouched, then a retry succeeds."""
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=3, seed=41)
    before = snapshot(card)
    data = tmp_path / "archive"
    port = _free_port()
    proc = ArchiveProcess(data=data, listen=f"127.0.0.1:{port}").start()
    config = tmp_path / "agent.toml"
    # Tiny chunks so that the upload is still running when the archive is killed.
    config.write_text("[archive]\nconnect_timeout_s = 2.0\nretry_budget_s = 2.0\nchunk_bytes = 4096\n")
    agent = subprocess.Popen(
        [*AGENT, "ingest", str(card), "--archive", proc.address, "--department", DEPARTMENT,
         "--insecure", "--json", "--spool", str(tmp_path / "spool"), "--config", str(config),
         "--log-level", "INFO"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Kill the archive as soon as the agent starts uploading.
    for line in agent.stderr:
        if '"stage": "upload"' in line or "identified patient" in line:
            break
    proc.kill()
    stdout, _ = agent.communicate(timeout=120)
    out = json.loads(stdout)
    assert agent.returncode == 4, out
    assert out["reason"] == "ARCHIVE_UNAVAILABLE"
    assert out["wiped"] is False
    assert snapshot(card) == before
    # The archive comes back on the same port and data: the same card now goes through.
    with ArchiveProcess(data=data, listen=f"127.0.0.1:{port}") as again:
        code, out = ingest(card, again.address, tmp_path)
        assert code == 0, out
        assert len(cases(again, PATIENT_CANONICAL)) == 1


def test_retry_after_a_crash_between_commit_and_wipe_makes_no_second_case(archive, tmp_path):
    """The card is ingested twice (as after a crash before the wipe): one case, same id."""
    from agent.config import AgentConfig, ArchiveConfig
    from agent.pipeline import IngestRequest, ingest_card

    patient = make_personnummer("19550505", "123")
    card = tmp_path / "card"
    make_card(card, patient=patient, n_images=3, seed=51)
    before = snapshot(card)

    class Crash(Exception):
        pass

    def crash_before_verify(stage: str, info: dict) -> None:
        if stage == "verify":
            raise Crash("agent died after the archive committed")

    cfg = AgentConfig(agent_id="e2e-agent", spool_dir=tmp_path / "spool",
                      archive=ArchiveConfig(address=archive.address, insecure=True))
    request = IngestRequest(root=card, department=DEPARTMENT)
    first = ingest_card(request, cfg, progress=crash_before_verify)
    assert first.outcome == "failed" and first.reason.value == "INTERNAL_ERROR"
    assert snapshot(card) == before
    committed = cases(archive, patient.replace("-", ""))
    assert len(committed) == 1

    second = ingest_card(request, cfg)
    assert second.outcome == "archived" and second.wiped, second
    assert second.case_id == committed[0]["case_id"]
    assert len(cases(archive, patient.replace("-", ""))) == 1
    assert media_on(card) == []


def test_unsafe_and_foreign_files_refuse_the_card(archive, tmp_path):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=3, seed=61)
    folder = card / "DCIM" / "100CANON"
    (folder / "IMG_0099.JPG").write_bytes(b"MZ\x90\x00" + os.urandom(2000))  # an executable in disguise
    before = snapshot(card)
    code, out = ingest(card, archive.address, tmp_path)
    assert code == 3 and out["reason"] == "NOT_MEDIA", out
    bad = [f for f in out["files"] if f["path"].endswith("IMG_0099.JPG")]
    assert bad and bad[0]["status"] == "refused" and bad[0]["reason"] == "NOT_MEDIA"
    assert snapshot(card) == before

    (folder / "IMG_0099.JPG").unlink()
    (folder / "IMG_0100.JPG").symlink_to("/etc/passwd")
    before = snapshot(card)
    code, out = ingest(card, archive.address, tmp_path)
    assert code == 3 and out["reason"] == "UNSAFE_PATH", out
    assert snapshot(card) == before
    assert pathlib.Path("/etc/passwd").exists()


def test_usage_errors_exit_2_and_touch_nothing(tmp_path):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=2, seed=71)
    before = snapshot(card)
    for args in (
        ["--department", "not-an-hsa-id", "--insecure"],
        ["--department", DEPARTMENT],  # neither --insecure nor TLS
        ["--department", DEPARTMENT, "--insecure", "--expect", "19121212-1213"],  # bad Luhn
        ["--department", DEPARTMENT, "--insecure", "--mode", "selfie"],
    ):
        result = subprocess.run([*AGENT, "ingest", str(card), "--archive", "127.0.0.1:1", *args],
                                capture_output=True, text=True)
        assert result.returncode == 2, (args, result.stderr)
        assert "error" in result.stderr
    assert snapshot(card) == before
