"""The status board: card lifecycle, counts, masking, subscribers, and the
words staff read (plain data in, plain data out)."""
from __future__ import annotations

import json
import threading

import pytest

from agent.card.reasons import STAFF_MESSAGES, STAFF_MESSAGES_SV, TITLES_SV, Reason
from agent.desk.status import RECENT_KEPT, SUBSCRIBER_BACKLOG, StatusBoard, staff_view
from bildsluss_common.identity.masking import mask_patient

PATIENT = "191212121212"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def outcome(kind: str = "archived", reason: str | None = None, *, wiped: bool = True, files: int = 3) -> dict:
    return {"outcome": kind, "reason": reason, "message": "sentence for staff", "patient": PATIENT,
            "case_id": "c-1" if kind == "archived" else None, "wiped": wiped and kind == "archived",
            "files": [{"path": f"DCIM/{i}.JPG", "status": "archived"} for i in range(files)]
            + [{"path": "MISC/x.THM", "status": "ignored"}]}


@pytest.fixture
def board() -> StatusBoard:
    return StatusBoard("pc-1", "0.1.0", "SE2321000016-15CQ", clock=Clock())


def test_a_card_goes_from_queue_to_work_to_recent(board):
    board.card_detected("sdb1", "usb-1", "udev")
    snap = board.snapshot()
    assert [q["card"] for q in snap["queue"]] == ["sdb1"] and snap["cards"] == []
    assert snap["state"] == "busy"

    board.card_state("sdb1", "scanned")
    board.progress("sdb1", "upload", {"files": 3, "bytes": 3000})
    board.progress("sdb1", "upload", {"files_done": 1, "files_total": 3, "bytes_done": 1000, "bytes_total": 3000})
    snap = board.snapshot()
    assert snap["queue"] == []
    (card,) = snap["cards"]
    assert card["state"] == "scanned" and card["stage"] == "upload"
    assert card["progress"] == {"files_done": 1, "files_total": 3, "bytes_done": 1000, "bytes_total": 3000}
    assert snap["readers"] == [{"reader": "usb-1", "card": "sdb1", "queued": 0}]

    board.card_finished("sdb1", outcome())
    snap = board.snapshot()
    assert snap["cards"] == [] and snap["state"] == "idle"
    (recent,) = snap["recent"]
    assert recent["outcome"] == "archived" and recent["wiped"] is True
    assert recent["files"] == 3, "ignored housekeeping files are not media"
    assert snap["counts"]["archived"] == 1 and snap["counts"]["detected"] == 1
    assert snap["last_error"] is None


def test_no_full_patient_number_anywhere_in_a_snapshot(board):
    board.card_detected("sdb1", "usb-1", "udev")
    board.card_state("sdb1", "identified", patient=PATIENT, expect="19121212-1212")
    assert PATIENT not in json.dumps(board.snapshot())
    board.card_finished("sdb1", outcome("refused", "EXPECTED_PATIENT_MISMATCH"))
    text = json.dumps(board.snapshot())
    assert PATIENT not in text and "1212-1212" not in text
    assert board.snapshot()["recent"][0]["patient"] == "19121212-****"


@pytest.mark.parametrize("number, shown", [
    ("191212121212", "19121212-****"),
    ("991981000010", "99198100-****"),  # a 12-digit reservnummer alike
    ("SLL12345AB", "SLL1******"),
    ("AB12", "****"),
    (None, None),
    ("", None),
])
def test_mask_patient(number, shown):
    assert mask_patient(number) == shown


def test_recent_keeps_the_last_twenty_newest_first(board):
    for i in range(RECENT_KEPT + 5):
        board.card_detected(f"c{i}", "usb-1", "udev")
        board.card_finished(f"c{i}", outcome("refused", "NO_ID_FOUND"))
    recent = board.snapshot()["recent"]
    assert len(recent) == RECENT_KEPT
    assert recent[0]["card"] == f"c{RECENT_KEPT + 4}" and recent[-1]["card"] == "c5"
    assert board.snapshot()["counts"]["refused"] == RECENT_KEPT + 5


def test_deferred_card_is_held_counted_once_and_becomes_the_last_error(board):
    board.card_detected("sdb1", "usb-1", "udev")
    board.card_deferred("sdb1", "ARCHIVE_UNAVAILABLE", "keep the card", retry_at=1_800_000_060.0)
    first = board.snapshot()["event"]
    board.card_deferred("sdb1", "ARCHIVE_UNAVAILABLE", "keep the card", retry_at=1_800_000_120.0)
    snap = board.snapshot()
    assert first["kind"] == "deferred" and first["first"] is True
    assert snap["event"]["first"] is False, "a retry is not news for staff"
    assert snap["counts"]["deferred"] == 1 and snap["state"] == "deferred"
    assert snap["cards"][0]["retry_at"] == 1_800_000_120.0
    assert snap["last_error"]["code"] == "ARCHIVE_UNAVAILABLE"
    # the archive came back: the card works again, its reason is cleared
    board.card_state("sdb1", "uploading")
    card = board.snapshot()["cards"][0]
    assert card["reason"] is None and card["retry_at"] is None and board.snapshot()["state"] == "busy"


def test_malformed_progress_is_ignored_not_raised(board):
    board.card_detected("sdb1", "usb-1", "udev")
    board.progress("sdb1", "scan", {"root": "/run/bildsluss/cards/sdb1", "files": None, "bytes": "lots"})
    board.progress("sdb1", "upload", {"files_done": [1], "files_total": 2.0})
    card = board.snapshot()["cards"][0]
    assert card["stage"] == "upload" and card["progress"] == {"files_total": 2}


def test_a_card_resumed_from_the_journal_needs_no_detection_first(board):
    board.card_state("vol-1234", "interrupted", reason=Reason.CARD_REMOVED)
    snap = board.snapshot()
    assert snap["cards"][0]["reason"] == "CARD_REMOVED" and snap["counts"]["interrupted"] == 1


def test_archive_reachability_is_news_only_when_it_changes(board):
    q = board.subscribe()
    assert q.get_nowait()["archive"]["reachable"] is None  # the state at subscription
    board.archive_reachable(False, "UNAVAILABLE: connection refused")
    board.archive_reachable(False, "UNAVAILABLE: connection refused")
    board.archive_reachable(True)
    events = [q.get_nowait()["event"] for _ in range(q.qsize())]
    assert [(e["kind"], e["reachable"]) for e in events] == [("archive", False), ("archive", True)]
    assert board.snapshot()["last_error"]["code"] == "ARCHIVE_UNAVAILABLE"


def test_a_slow_subscriber_never_blocks_the_board_and_keeps_the_newest(board):
    q = board.subscribe()
    board.card_detected("sdb1", "usb-1", "udev")
    for i in range(SUBSCRIBER_BACKLOG * 3):
        board.progress("sdb1", "upload", {"files_done": i, "files_total": 1000})
    assert q.qsize() == SUBSCRIBER_BACKLOG
    items = [q.get_nowait() for _ in range(q.qsize())]
    assert items[-1]["cards"][0]["progress"]["files_done"] == SUBSCRIBER_BACKLOG * 3 - 1
    board.unsubscribe(q)
    board.card_state("sdb1", "uploading")
    assert q.empty()


def test_concurrent_reports_keep_counts_consistent():
    board = StatusBoard("pc-1", "0.1.0", None)

    def reader(n: int) -> None:
        for i in range(100):
            key = f"r{n}-{i}"
            board.card_detected(key, f"r{n}", "udev")
            board.progress(key, "upload", {"files_done": 1, "files_total": 1})
            board.card_finished(key, outcome("archived" if i % 2 else "refused", None if i % 2 else "NO_ID_FOUND"))

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    snaps = []
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        snaps.append(board.snapshot())  # must never raise while others write
    for t in threads:
        t.join()
    counts = board.snapshot()["counts"]
    assert counts == {"detected": 400, "archived": 200, "refused": 200, "deferred": 0, "interrupted": 0,
                      "failed": 0}
    assert board.snapshot()["cards"] == []


# -- the words staff read ------------------------------------------------------------


def panel(board: StatusBoard, context: dict | None = None) -> dict:
    view = staff_view(board.snapshot(), context)
    assert len(view["panels"]) == 1
    return view["panels"][0]


def test_staff_view_tells_each_outcome_in_plain_words(board):
    assert panel(board)["headline"] == "Sätt i ett kort"

    board.card_detected("a", "usb-1", "udev")
    board.card_state("a", "uploading")
    board.progress("a", "upload", {"files_done": 2, "files_total": 5, "bytes_done": 2_000_000,
                                   "bytes_total": 5_000_000})
    busy = panel(board)
    assert busy["tone"] == "busy" and busy["headline"] == "Arbetar – ta inte ur kortet"
    assert busy["progress"] == "2 av 5 filer · 2.0 av 5.0 MB" and busy["text"] == "Skickar till arkivet."

    board.card_finished("a", outcome())
    done = panel(board)
    assert (done["tone"], done["headline"]) == ("ok", "Klart – kortet är tomt")
    assert "19121212-****" in done["text"] and PATIENT not in done["text"]

    board.card_detected("b", "usb-1", "udev")
    board.card_finished("b", outcome("refused", "MIXED_PATIENTS"))
    refused = panel(board)
    assert refused["headline"] == "Nekat: flera patienter på kortet"
    assert refused["text"].startswith(STAFF_MESSAGES_SV[Reason.MIXED_PATIENTS])

    board.card_detected("c", "usb-1", "udev")
    board.card_deferred("c", "ARCHIVE_UNAVAILABLE", "keep it", retry_at=1_800_000_060.0)
    assert panel(board)["headline"] == "Arkivet nås inte – använd inte kortet"

    board.card_finished("c", outcome("archived", "WIPE_FAILED", wiped=False))
    assert "använd inte kortet" in panel(board)["headline"]


def test_staff_view_archive_line_context_and_queue(board):
    board.card_detected("a", "usb-1", "udev")
    board.card_state("a", "scanned")
    board.card_detected("b", "usb-1", "udev")
    board.archive_reachable(False, "UNAVAILABLE")
    view = staff_view(board.snapshot(), {"patient": "19121212-****", "mode": "ultrasound",
                                         "expires_at": 1_800_000_600.0, "expired": False})
    assert view["archive"]["tone"] == "warn" and "Arkivet nås inte" in view["archive"]["text"]
    assert "19121212-****" in view["context"]["text"] and "ultraljud" in view["context"]["text"]
    assert view["panels"][0]["queued"] == "1 kort väntar på tur"
    unknown = staff_view({**board.snapshot(), "recent": [{"reader": "usb-1", "outcome": "refused",
                                                           "reason": "SOMETHING_NEW", "message": "m"}],
                          "cards": [], "readers": [{"reader": "usb-1", "card": None, "queued": 0}]})
    assert unknown["panels"][0]["headline"] == "Nekat: SOMETHING_NEW" and unknown["panels"][0]["text"].startswith("m")


def test_every_reason_has_a_sentence_in_english_and_swedish():
    assert set(STAFF_MESSAGES) == set(Reason) == set(STAFF_MESSAGES_SV) == set(TITLES_SV)
    assert Reason("EHR_CONTEXT_EXPIRED") is Reason.EHR_CONTEXT_EXPIRED
    assert "record" in STAFF_MESSAGES[Reason.EHR_CONTEXT_EXPIRED]


def test_each_mode_has_its_own_sentence_for_a_frame_without_the_number():
    from agent.card.reasons import staff_message, staff_message_sv

    assault = staff_message(Reason.ID_MISSING_ON_FRAME, "assault")
    ultrasound = staff_message(Reason.ID_MISSING_ON_FRAME, "ultrasound")
    plain = staff_message(Reason.ID_MISSING_ON_FRAME)
    assert "assault" in assault and "ultrasound" in ultrasound and "assault" not in ultrasound
    assert "assault" not in plain and len({assault, ultrasound, plain}) == 3
    assert staff_message(Reason.ID_MISSING_ON_FRAME, "photo") == plain
    assert "misshandel" in staff_message_sv(Reason.ID_MISSING_ON_FRAME, "assault")
    assert "ultraljud" in staff_message_sv(Reason.ID_MISSING_ON_FRAME, "ultrasound")
    assert "misshandel" not in staff_message_sv(Reason.ID_MISSING_ON_FRAME)


def test_a_card_held_for_a_full_spool_says_so_not_that_the_archive_is_away():
    from agent.desk.notify import notification_for
    from agent.desk.status import outcome_panel

    panel = outcome_panel({"outcome": "deferred", "reason": "SPOOL_FULL", "message": None})
    assert panel["headline"] == "Datorn har inte plats – använd inte kortet"
    assert "kontakta IT" in panel["text"]
    note = notification_for({"kind": "deferred", "reason": "SPOOL_FULL", "first": True})
    assert note.summary == "Datorn har inte plats – använd inte kortet"
    assert outcome_panel({"outcome": "deferred", "reason": "ARCHIVE_UNAVAILABLE"})["headline"].startswith("Arkivet")
