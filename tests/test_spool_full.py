"""A full spool defers the card (issue 17): SPOOL_FULL, exit 4, the card untouched, ops told.

Before, a full disk surfaced as an OSError of the strip stage and the card was refused as
CARD_UNREADABLE ("the card is damaged"). The spool here is a real, small tmpfs.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from agent import config as config_mod
from agent.card.model import Mode
from agent.card.outcome import exit_code
from agent.card.pipeline import IngestRequest, ingest_card
from agent.card.progress import NoProgress
from agent.card.reasons import Reason
from agent.card.spool import HEADROOM_BYTES
from tests.support.cardgen import make_card
from tests.support.e2e import AGENT, DEPARTMENT, PATIENT, snapshot

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs as the spool")]


@pytest.fixture
def small_disk(tmp_path):
    def mount(size_bytes: int):
        mnt = tmp_path / f"disk-{size_bytes}"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(mnt)],
                       check=True)
        mounted.append(mnt)
        return mnt

    mounted: list = []
    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_spool_without_room_defers_the_card_before_it_is_started(tmp_path, small_disk):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=3, seed=5)
    before = snapshot(card)
    spool = small_disk(8 << 20) / "spool"
    # The archive is never asked: nothing listens on port 1.
    done = subprocess.run([*AGENT, "ingest", str(card), "--archive", "127.0.0.1:1", "--insecure",
                           "--department", DEPARTMENT, "--json", "--spool", str(spool)],
                          capture_output=True, text=True, timeout=300)
    outcome = json.loads(done.stdout)
    assert done.returncode == 4, done.stderr
    assert (outcome["outcome"], outcome["reason"], outcome["wiped"]) == ("deferred", "SPOOL_FULL", False)
    assert "no room" in outcome["message"] and "needed" in outcome["detail"]
    assert {f["status"] for f in outcome["files"]} == {"pending", "ignored"}  # housekeeping ignored
    assert snapshot(card) == before
    # Ops: an error-priority log line with the reason (journalctl -p err, heartbeats' last error).
    errors = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(e["priority"] <= 3 and e.get("reason") == "SPOOL_FULL" for e in errors), done.stderr


def test_a_disk_that_fills_while_stripping_defers_the_card(tmp_path, small_disk):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=3, seed=6)
    before = snapshot(card)
    card_bytes = sum(p.stat().st_size for p in card.rglob("*") if p.is_file())
    # Room for the card and the headroom, not for twice that: the JPEGs are not
    # stripped ahead while the card is read (agent.card.pipeline), but after the check.
    disk = small_disk(card_bytes + HEADROOM_BYTES + (4 << 20))
    cfg = config_mod.from_dict({"agent": {"spool_dir": str(disk / "spool")},
                                "archive": {"insecure": True, "address": "127.0.0.1:1"}})

    class FillTheDisk(NoProgress):
        def stage(self, stage, info):
            if stage == "strip":  # something else on the PC takes the room after the check
                with open(disk / "other-program.bin", "wb") as fh:
                    st = os.statvfs(disk)
                    os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize - 4096)

    outcome = ingest_card(IngestRequest(root=card, department=DEPARTMENT, mode=Mode.PHOTO), cfg,
                          progress=FillTheDisk())
    assert (outcome.outcome, outcome.reason) == ("deferred", Reason.SPOOL_FULL), outcome.detail
    assert exit_code(outcome.outcome, outcome.wiped) == 4 and "No space left" in outcome.detail
    assert snapshot(card) == before
    assert not any((disk / "spool").iterdir()), "the session folder is removed (R11)"
