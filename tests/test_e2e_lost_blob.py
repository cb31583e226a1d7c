"""End to end (issue 13): a stored blob file deleted by hand (disk fault, old
backup restored, operator error) is never taken as archived. A card holding the
same bytes makes the agent send them again, and the card is wiped only after the
archive's receipts, with the stored copy back and whole.

A real archive process (SQLite + blob folder) and the real agent pipeline.
"""
from __future__ import annotations

import hashlib
import shutil

import pytest

from agent.card.pipeline import IngestRequest, ingest_card
from agent.config import AgentConfig, ArchiveConfig
from archive_server.blobstores.base import blob_key
from tests.support.archive_process import ArchiveProcess
from tests.support.cardgen import make_card, make_personnummer
from tests.support.e2e import DEPARTMENT, OnStage, cases, ingest, media_on, snapshot


@pytest.fixture
def archive(tmp_path):
    with ArchiveProcess(data=tmp_path / "archive") as proc:
        yield proc


def _stored(archive: ArchiveProcess, sha: str):
    return archive.data / "blobs" / blob_key(sha)


def _archived(out: dict) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in out["files"] if f["status"] == "archived"}


def test_a_lost_stored_blob_is_sent_again_by_a_card_with_the_same_bytes(archive, tmp_path):
    patient = make_personnummer("19700707", "456")
    card = tmp_path / "card"
    make_card(card, patient=patient, n_images=3, seed=61)
    again = tmp_path / "again"
    shutil.copytree(card, again, symlinks=True)
    code, first = ingest(card, archive.address, tmp_path / "run1")
    assert code == 0 and first["wiped"], first
    shas = _archived(first)
    lost_path = sorted(shas)[0]
    lost = _stored(archive, shas[lost_path])
    assert lost.is_file()
    lost.unlink()  # by hand: the database still has its row

    # The same bytes on another card (one folder renamed: another manifest, another session).
    folder = again / lost_path.split("/")[0]
    folder.rename(again / (folder.name + "_COPY"))
    before = snapshot(again)
    code, second = ingest(again, archive.address, tmp_path / "run2")

    assert code == 0, second
    assert second["outcome"] == "archived" and second["wiped"] is True
    assert media_on(again) == [] and before
    # Re-sent: the stored file is back, with the right bytes.
    assert hashlib.sha256(lost.read_bytes()).hexdigest() == shas[lost_path]
    assert len(cases(archive, patient.replace("-", ""))) == 2


def test_a_blob_lost_after_its_session_committed_is_restored_from_the_card(archive, tmp_path):
    """The same card again (its earlier run died after the commit, before the wipe)
    resumes its committed session; a stored copy lost meanwhile is sent again
    before the wipe, and no second case is made."""
    patient = make_personnummer("19800808", "789")
    card = tmp_path / "card"
    make_card(card, patient=patient, n_images=3, seed=62)
    before = snapshot(card)
    cfg = AgentConfig(agent_id="e2e-agent", spool_dir=tmp_path / "spool",
                      archive=ArchiveConfig(address=archive.address, insecure=True))
    request = IngestRequest(root=card, department=DEPARTMENT)

    def die_before_verify(stage: str, info: dict) -> None:
        if stage == "verify":
            raise RuntimeError("agent died after the archive committed")

    first = ingest_card(request, cfg, progress=OnStage(die_before_verify))
    assert first.outcome == "failed" and snapshot(card) == before
    [case] = cases(archive, patient.replace("-", ""))
    blobs = sorted((archive.data / "blobs").glob("??/??/*"))
    assert len(blobs) == 3
    lost = blobs[1]
    sha = lost.name
    lost.unlink()

    second = ingest_card(request, cfg)
    assert second.outcome == "archived" and second.wiped, second
    assert second.case_id == case["case_id"]
    assert hashlib.sha256(lost.read_bytes()).hexdigest() == sha
    assert len(cases(archive, patient.replace("-", ""))) == 1
    assert media_on(card) == []


def test_a_blob_lost_between_find_missing_and_commit_is_sent_again(archive, tmp_path):
    """FindMissingBlobs said the archive had it; the file vanished before the commit.
    CommitSession answers FAILED_PRECONDITION; the agent sends it and commits again."""
    patient = make_personnummer("19900909", "012")
    card = tmp_path / "card"
    make_card(card, patient=patient, n_images=2, seed=63)
    original = tmp_path / "original"
    shutil.copytree(card, original, symlinks=True)
    cfg = AgentConfig(agent_id="e2e-agent", spool_dir=tmp_path / "spool",
                      archive=ArchiveConfig(address=archive.address, insecure=True))
    done = ingest_card(IngestRequest(root=card, department=DEPARTMENT), cfg)
    assert done.outcome == "archived" and done.wiped
    stored = sorted((archive.data / "blobs").glob("??/??/*"))
    # The same bytes, another card: every blob is held, none need sending ...
    folder = next(p for p in original.iterdir() if p.is_dir() and any(p.rglob("*.JPG")))
    folder.rename(original / (folder.name + "_COPY"))
    deleted: list = []

    def delete_before_commit(stage: str, info: dict) -> None:
        if stage == "commit" and not deleted:
            stored[0].unlink()  # ... until one goes, between FindMissingBlobs and the commit
            deleted.append(stored[0])

    again = ingest_card(IngestRequest(root=original, department=DEPARTMENT), cfg,
                        progress=OnStage(delete_before_commit))
    assert deleted
    assert again.outcome == "archived" and again.wiped, again
    assert hashlib.sha256(stored[0].read_bytes()).hexdigest() == stored[0].name
