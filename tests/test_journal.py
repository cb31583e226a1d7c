"""The card journal: a durable state machine, written before each step, that survives a restart."""
from __future__ import annotations

import os
import pathlib
import re
import stat
import subprocess
import sys
import time

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
    assert journal.get(card.id).decision["patient"] == "191212121212"
    done = journal.advance(card.id, "done")
    assert done.finished and done.confirmed and done.case_id == "case-1"
    assert done.manifest == {"DCIM/IMG_0001.JPG": "ab" * 32} and done.session_id == "s-1"
    assert done.decision is None, "a finished card keeps no patient number"
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


# --- what the journal keeps of a patient (issue 13) -------------------------------------------

A, B = "191212121212", "198204152385"


def _leaks(raw: bytes, number: str) -> bool:
    """Any written form of the number (12 or 10 digits, with or without a separator)."""
    return re.search(rf"{number[2:8]}[-+ ]?{number[8:]}".encode(), raw) is not None


def _files(path: pathlib.Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_a_finished_card_keeps_no_patient_number_in_any_byte_of_the_journal(tmp_path):
    """Before: expect, the decision (patient and evidence) and the refusal's detail
    stayed in the journal forever. Now they are cleared when the card is finished,
    and the database files (with their WAL) hold no form of either number."""
    path = tmp_path / "state" / "journal.sqlite3"
    journal = Journal(path)
    card = journal.open_card("k", "r", "watch", mode="ultrasound", expect=A)
    journal.advance(card.id, "scanned", manifest={"US1.dcm": "ab" * 32})
    evidence = [{"file": "US1.dcm", "text": "19121212-1212", "patient": A},
                {"file": "US2.dcm", "text": "820415-2385", "patient": B}]
    journal.advance(card.id, "identified", decision={"patient": None, "ehr_context": True, "evidence": evidence})
    assert _leaks(_files(path), A), "precondition: an open card keeps its number"
    refused = journal.advance(card.id, "refused", reason="MIXED_PATIENTS",
                              detail=f"2 patients on the card: {A} on US1.dcm; {B} on US2.dcm")
    assert refused.expect is None and refused.decision is None
    assert refused.detail == "2 patients on the card: 19121212**** on US1.dcm; 19820415**** on US2.dcm"
    assert refused.reason == "MIXED_PATIENTS" and refused.manifest == {"US1.dcm": "ab" * 32}
    raw = _files(path)
    assert not _leaks(raw, A) and not _leaks(raw, B)
    journal.close()


def test_an_open_card_keeps_its_number_and_its_detail_is_masked(journal):
    card = journal.open_card("k", "r", "watch", mode="photo", expect=A)
    deferred = journal.advance(card.id, "deferred", detail=f"archive down while filing {A}")
    assert deferred.expect == A and deferred.detail == "archive down while filing 19121212****"


def test_finished_cards_are_pruned_after_the_configured_time_open_ones_never(journal):
    old, recent, still_open = (journal.open_card(k, "r", "watch", mode="photo", expect=None)
                               for k in ("old", "recent", "open"))
    journal.advance(old.id, "done")
    journal.advance(recent.id, "refused", reason="NO_ID_FOUND")
    journal.advance(still_open.id, "deferred")
    now = time.time()
    assert journal.prune(3600, now=now + 10) == 0
    assert journal.prune(3600, now=now + 7200) == 2
    assert [c.card_key for c in journal.all()] == ["open"]
    assert journal.history(old.id) == [], "the transitions go with the card"


def test_an_older_journal_is_cleared_when_opened(tmp_path):
    """Rows an earlier version finished with the patient's number in them are cleared on start."""
    import sqlite3

    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO cards (card_key, reader, source, state, expect, decision, detail,"
                   " created_at, updated_at) VALUES ('k', 'r', 'w', 'done', ?, ?, ?, 0, 0)",
                   (A, f'{{"patient": "{A}"}}', f"shows {B}"))
    journal = Journal(path)
    (card,) = journal.all()
    assert card.expect is None and card.decision is None and card.detail == "shows 19820415****"
    journal.close()
    assert not _leaks(_files(path), A) and not _leaks(_files(path), B)


def test_the_state_folder_is_unlistable_and_the_journal_files_0600_whatever_the_umask(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    old = os.umask(0o022)
    try:
        journal = Journal(state / "journal.sqlite3")
        journal.open_card("k", "r", "watch", mode="photo", expect=None)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
    journal.close()
    # 0711: the parser user passes through to the spool below; nobody else lists it or
    # reads the journal.
    assert stat.S_IMODE(state.stat().st_mode) == 0o711
    assert modes and set(modes.values()) == {0o600}, modes
