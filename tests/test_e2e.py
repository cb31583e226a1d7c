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
import time

import pytest
from PIL import Image

from tests.support.archive_process import ArchiveProcess
from tests.support.cardgen import make_card, make_personnummer
from tests.support.e2e import (
    OnStage,
    AGENT, ARCHIVE, DEPARTMENT, FORBIDDEN_GROUPS, FORBIDDEN_TAGS, PATIENT, PATIENT_CANONICAL,
    cases, exif_tags, ingest, media_on, snapshot,
)

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
    # Every stage the card went through, in order, with its wall seconds (issue 12).
    assert list(out["timings"]) == ["scan", "identify", "strip", "upload", "commit", "verify", "wipe"]
    assert all(isinstance(v, float) and v >= 0 for v in out["timings"].values())
    # The card: no media left, folders and camera housekeeping untouched, except the
    # AppleDouble files of the wiped pictures, which go with them (agent/wipe.py).
    assert media_on(card) == []
    belonged = {p for p in housekeeping if pathlib.PurePath(p).name[2:] in
                {pathlib.PurePath(j).name for j in jpegs} and pathlib.PurePath(p).name.startswith("._")}
    assert belonged, "the generated card should carry an AppleDouble file of a picture"
    assert set(snapshot(card)) == housekeeping - belonged
    # The archive: exactly one case for the patient, with every file.
    found = cases(archive, PATIENT_CANONICAL)
    assert [c["case_id"] for c in found] == [out["case_id"]]
    # R6's decision is kept with the case: one device entry per archived file,
    # naming the fields it was judged from, and never a patient.
    kept = found[0]["fields"]["identity_evidence"]
    devices = {e["relative_path"]: e for e in kept if e["method"] == "device"}
    assert sorted(devices) == jpegs
    assert all(e["text"].startswith("accepted") and not e["patient_id"] for e in devices.values())
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
    # Which files show which (masked) number, so that staff can sort a card of two patients.
    pictures = [f["path"] for f in out["files"] if f["status"] == "refused"]
    other = "19820415-****"
    expected = {"mixed": {"19121212-****": [pictures[0], pictures[3]], other: [pictures[2]]},
                "first_last": {"19121212-****": [pictures[0]], other: [pictures[3]]}}.get(kind, {})
    assert {s["patient"]: s["files"] for s in out["patients_shown"]} == expected
    assert "191212121212" not in json.dumps(out["patients_shown"])
    # A refused card was stripped into the spool while it was read, but nothing was sent (R4).
    assert list(out["timings"]) == ["scan", "identify", "strip"]


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


@pytest.mark.parametrize("streams", [1, 4])
def test_archive_killed_mid_upload_defers_and_a_retry_completes(tmp_path, streams):
    """The archive dies after the first file is stored: deferred, card untouched; back up, the card goes through.
    One Write stream at a time: exactly the two files not stored are sent again; several at once
    (the default): at least the stored one is not."""
    from agent.config import AgentConfig, ArchiveConfig
    from agent.card.pipeline import IngestRequest, ingest_card

    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=3, seed=41)
    before = snapshot(card)
    data = tmp_path / "archive"
    port = _free_port()
    archive = ArchiveProcess(data=data, listen=f"127.0.0.1:{port}").start()
    uploads: list[dict] = []

    def kill_after_first_file(stage: str, info: dict) -> None:
        if stage == "upload" and info.get("files_done") == 1:
            uploads.append(info)
            archive.kill()

    cfg = AgentConfig(agent_id="e2e-agent", spool_dir=tmp_path / "spool", archive=ArchiveConfig(
        address=archive.address, insecure=True, connect_timeout_s=1.0, retry_budget_s=1.5,
        upload_streams=streams))
    request = IngestRequest(root=card, department=DEPARTMENT)
    try:
        outcome = ingest_card(request, cfg, progress=OnStage(kill_after_first_file))
    finally:
        archive.stop()

    assert uploads and uploads[0]["files_total"] == 3, "the archive was not killed mid-upload"
    assert outcome.outcome == "deferred" and outcome.reason.value == "ARCHIVE_UNAVAILABLE", outcome
    assert outcome.exit_code == 4 and not outcome.wiped and outcome.case_id is None
    assert snapshot(card) == before
    assert not any((tmp_path / "spool").iterdir()), "the spool must be emptied (R11)"

    with ArchiveProcess(data=data, listen=f"127.0.0.1:{port}") as again:
        sent: list[dict] = []
        retried = ingest_card(request, cfg, progress=OnStage(lambda stage, info: sent.append(info)
                              if stage == "upload" and "files_done" in info else None))
        assert retried.outcome == "archived" and retried.wiped, retried
        # The first file survived the crash durably: only the others are sent again
        # (with parallel streams, some of them may have been stored before the kill too).
        if streams == 1:
            assert sent and sent[-1]["files_total"] == 2
        else:
            assert not sent or sent[-1]["files_total"] <= 2
        assert len(cases(again, PATIENT_CANONICAL)) == 1


def test_retry_after_a_crash_between_commit_and_wipe_makes_no_second_case(archive, tmp_path):
    """The card is ingested twice (as after a crash before the wipe): one case, same id."""
    from agent.config import AgentConfig, ArchiveConfig
    from agent.card.pipeline import IngestRequest, ingest_card

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
    first = ingest_card(request, cfg, progress=OnStage(crash_before_verify))
    assert first.outcome == "failed" and first.reason.value == "INTERNAL_ERROR"
    assert snapshot(card) == before
    committed = cases(archive, patient.replace("-", ""))
    assert len(committed) == 1

    second = ingest_card(request, cfg)
    assert second.outcome == "archived" and second.wiped, second
    assert second.case_id == committed[0]["case_id"]
    assert len(cases(archive, patient.replace("-", ""))) == 1
    assert media_on(card) == []


def test_the_stripped_copies_are_removed_while_the_card_is_wiped(archive, tmp_path):
    """Issue 12: once the archive confirmed every file, the spool's stripped copies
    (patient images, R11) go on a thread beside the wipe, not after it. The
    wiper here waits for them to be gone before it wipes: it would wait in vain
    if they were removed only after it."""
    from agent.card.pipeline import IngestRequest, ingest_card
    from agent.card.wipe import wipe
    from agent.config import AgentConfig, ArchiveConfig

    patient = make_personnummer("19610606", "234")
    card = tmp_path / "card"
    make_card(card, patient=patient, n_images=3, seed=52)
    spool = tmp_path / "spool"
    seen: list[list[pathlib.Path]] = []

    def copies() -> list[pathlib.Path]:
        return [p for p in spool.rglob("*") if p.is_file() and p.suffix.upper() == ".JPG"]

    def waiting_wiper(root, media):
        deadline = time.monotonic() + 30
        while copies() and time.monotonic() < deadline:
            time.sleep(0.02)
        seen.append(copies())
        return wipe(root, media)

    stripped_seen: list[int] = []

    def count_copies(stage: str, info: dict) -> None:
        if stage == "upload":
            stripped_seen.append(len(copies()))

    cfg = AgentConfig(agent_id="e2e-agent", spool_dir=spool,
                      archive=ArchiveConfig(address=archive.address, insecure=True))
    outcome = ingest_card(IngestRequest(root=card, department=DEPARTMENT), cfg,
                          progress=OnStage(count_copies), wiper=waiting_wiper)
    assert outcome.outcome == "archived" and outcome.wiped, outcome
    assert stripped_seen and stripped_seen[0] == 3  # the copies were there to be sent
    assert seen == [[]]
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


def test_plaintext_towards_another_machine_is_refused_with_the_reason(tmp_path):
    """--insecure would send images and numbers readable on the network: only to
    this machine, for every address of the target (exit 2, card untouched)."""
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=2, seed=72)
    before = snapshot(card)
    for target, host in (("192.0.2.7:50051", "192.0.2.7"),
                         ("ipv4:127.0.0.1:50051,192.0.2.8:50051", "192.0.2.8")):
        result = subprocess.run([*AGENT, "ingest", str(card), "--archive", target, "--department", DEPARTMENT,
                                 "--insecure", "--json"], capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert f"refusing plaintext (--insecure) to {target}: {host} is not this machine" in result.stderr
        assert result.stdout == ""
    assert snapshot(card) == before


@pytest.mark.postgres
def test_the_same_card_paths_on_postgresql(tmp_path):
    """The archive on PostgreSQL: a good card is archived and exported; a mixed one refused."""
    from tests.archive.databases import temp_database

    with temp_database("postgresql", tmp_path) as url, \
            ArchiveProcess(data=tmp_path / "archive", db=url) as archive:
        card = tmp_path / "card"
        make_card(card, patient=PATIENT, n_images=3, seed=81)
        code, out = ingest(card, archive.address, tmp_path)
        assert code == 0 and out["wiped"], out
        assert [c["case_id"] for c in cases(archive, PATIENT_CANONICAL)] == [out["case_id"]]
        export = tmp_path / "export"
        subprocess.run([*ARCHIVE, "export", out["case_id"], str(export), "--db", url,
                        "--data", str(archive.data)], check=True, capture_output=True)
        assert sorted(str(p.relative_to(export)) for p in export.rglob("*.JPG")) == sorted(
            f["path"] for f in out["files"] if f["status"] == "archived")

        mixed = tmp_path / "mixed"
        make_card(mixed, patient=PATIENT, n_images=3, seed=82, extra_patient_at=1,
                  extra_patient=make_personnummer("19820415", "238"))
        before = snapshot(mixed)
        code, out = ingest(mixed, archive.address, tmp_path)
        assert code == 3 and out["reason"] == "MIXED_PATIENTS", out
        assert snapshot(mixed) == before
        assert len(cases(archive, PATIENT_CANONICAL)) == 1


def test_archive_refusing_the_department_leaves_the_card(tmp_path):
    """The archive answers and refuses (unknown department): ARCHIVE_REJECTED, exit 3, nothing deleted."""
    config = tmp_path / "archive.toml"
    config.write_text("accept_unknown_departments = false\n")
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=2, seed=91)
    before = snapshot(card)
    with ArchiveProcess(data=tmp_path / "archive", extra_args=("--config", str(config))) as archive:
        code, out = ingest(card, archive.address, tmp_path)
        assert code == 3, out
        assert out["outcome"] == "refused" and out["reason"] == "ARCHIVE_REJECTED"
        assert "FAILED_PRECONDITION" in out["detail"] and out["case_id"] is None
        assert cases(archive, PATIENT_CANONICAL) == []
    assert snapshot(card) == before
