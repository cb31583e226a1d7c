"""The card journal: a durable state machine, written before each step, that survives a restart."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from agent.daemon.journal import Journal, JournalError

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "state" / "journal.sqlite3")
    yield j
    j.close()


def test_a_card_runs_through_its_states_and_keeps_what_each_step_established(journal):
    card = journal.open_card("fs:ext4:1234", "/sys/devices/virtual/block/loop3", "uevent",
                             mode="photo", expect=None)
    assert card.state == "detected" and not card.finished and not card.confirmed
    journal.advance(card.id, "scanned", manifest={"DCIM/IMG_0001.JPG": "ab" * 32})
    journal.advance(card.id, "decided", decision={"patient": "191212121212", "evidence": []})
    journal.advance(card.id, "stripped", session_id="s-1", stripped=[{"path": "DCIM/IMG_0001.JPG"}])
    journal.advance(card.id, "uploading")
    journal.advance(card.id, "confirmed", case_id="case-1")
    done = journal.advance(card.id, "done")
    assert done.finished and done.confirmed and done.case_id == "case-1"
    assert done.manifest == {"DCIM/IMG_0001.JPG": "ab" * 32}
    assert done.decision["patient"] == "191212121212" and done.session_id == "s-1"
    assert journal.history(card.id) == ["detected", "scanned", "decided", "stripped", "uploading",
                                        "confirmed", "done"]
    assert journal.unfinished() == []


def test_a_finished_card_stays_finished_and_unknown_states_or_fields_are_refused(journal):
    card = journal.open_card("k", "r", "watch", mode="photo", expect=None)
    with pytest.raises(JournalError, match="unknown state"):
        journal.advance(card.id, "uploaded")
    with pytest.raises(JournalError, match="unknown journal field"):
        journal.advance(card.id, "scanned", patient="191212121212")
    journal.advance(card.id, "refused", reason="MIXED_PATIENTS")
    with pytest.raises(JournalError, match="refused -> scanned"):
        journal.advance(card.id, "scanned")
    with pytest.raises(JournalError, match="no card"):
        journal.advance(card.id + 100, "scanned")


def test_confirmation_survives_interruptions_and_is_cleared_only_by_a_new_scan(journal):
    """After a crash a confirmed card is finished without being read again; the journal must
    still know the archive confirmed it, or a half-wiped card could never be finished. Only
    a new scan (the card's content read anew) needs a new confirmation."""
    card = journal.open_card("k", "r", "watch", mode="photo", expect="191212121212")
    journal.advance(card.id, "scanned", manifest={"a": "1"})
    journal.advance(card.id, "confirmed", case_id="c")
    journal.advance(card.id, "interrupted", reason="CARD_REMOVED")
    journal.advance(card.id, "detected")
    again = journal.advance(card.id, "confirmed", case_id="c")
    assert again.confirmed and again.expect == "191212121212" and again.manifest == {"a": "1"}
    journal.advance(card.id, "interrupted", reason="CARD_CHANGED")
    assert journal.get(card.id).confirmed
    anew = journal.advance(card.id, "scanned", manifest={"b": "2"})
    assert not anew.confirmed and anew.manifest == {"b": "2"}
    assert [c.id for c in journal.unfinished("k")] == [card.id]
    assert journal.unfinished("other") == []


def test_the_journal_survives_a_killed_process_and_is_private(tmp_path):
    path = tmp_path / "journal.sqlite3"
    code = (
        "import os, pathlib, signal\n"
        "from agent.daemon.journal import Journal\n"
        f"j = Journal(pathlib.Path({str(path)!r}))\n"
        "c = j.open_card('fs:vfat:AB12-CD34', 'reader', 'uevent', mode='photo', expect=None)\n"
        "j.advance(c.id, 'stripped', session_id='s-9')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True)
    assert result.returncode == -9, result.stderr
    journal = Journal(path)
    (card,) = journal.unfinished("fs:vfat:AB12-CD34")
    assert card.state == "stripped" and card.session_id == "s-9"
    assert path.stat().st_mode & 0o777 == 0o600
    journal.close()
