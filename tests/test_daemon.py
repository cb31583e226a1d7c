"""The daemon with the watch backend: real ``bildsluss-agent run`` processes, a real archive.

A card is a folder that appears under the watched root (moved in whole, as an
automounter mounts a volume). No root needed. The journal is read back to see
what the daemon did; the archive's ``cases --json`` to see what it filed.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time

import pytest

from tests.support.archive_process import ArchiveProcess
from tests.support.cardgen import make_card, make_personnummer
from tests.support.daemon import KILLED, DaemonProcess, daemons, media_count, states  # noqa: F401
from tests.support.e2e import AGENT, cases, media_on, snapshot
from tests.support.mediagen import write_ultrasound_image


def _card(staging: pathlib.Path, patient: str, seed: int, n_images: int = 3) -> pathlib.Path:
    make_card(staging, patient=patient, n_images=n_images, megapixels=0.8, seed=seed)
    return staging


def _insert(card: pathlib.Path, root: pathlib.Path, name: str) -> pathlib.Path:
    target = root / name
    os.rename(card, target)  # whole, as an automounter's mount appears
    return target


def _done(cards: list[dict]) -> bool:
    return bool(cards) and all(c["state"] in ("done", "refused") for c in cards)


@pytest.fixture
def watch_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    return root


def test_a_card_folder_is_archived_and_wiped_with_nobody_typing(daemons, archive, tmp_path, watch_root):
    patient = make_personnummer("19610303", "118")
    card = _card(tmp_path / "staging", patient, seed=11)
    daemon = daemons(tmp_path / "d", archive.address, watch=watch_root)
    daemon.start(pause_at="uploading")
    spool = tmp_path / "d" / "spool"
    try:
        daemon.wait_for("the daemon to be ready", lambda _: daemon.socket.exists())
        inserted = _insert(card, watch_root, "EOS_DIGITAL")
        daemon.wait_paused()
        # While it uploads, the stripped copies are the agent's user's only (R11).
        (session,) = spool.iterdir()
        assert oct(session.stat().st_mode & 0o777) == "0o700"
        copies = [p for p in session.rglob("*") if p.is_file()]
        assert len(copies) == 3 and {oct(p.stat().st_mode & 0o777) for p in copies} == {"0o600"}
        daemon.resume()
        cards = daemon.wait_for("the card to be done", _done)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert states(cards) == ["done"], cards
    assert daemon.history(cards[0]["id"]) == [
        "detected", "scanned", "identified", "decided", "stripped", "uploading", "confirmed",
        "wiped", "done"]
    assert media_on(inserted) == []
    (case,) = cases(archive, patient.replace("-", ""))
    assert case["case_id"] == cards[0]["case_id"]
    assert not any(spool.iterdir()), "spool must be empty once confirmed (R11)"
    assert oct((tmp_path / "d" / "state" / "journal.sqlite3").stat().st_mode & 0o777) == "0o600"


def test_cards_inserted_together_are_queued_not_lost(daemons, archive, tmp_path, watch_root):
    patients = [make_personnummer("19720404", "227"), make_personnummer("19830505", "336")]
    staged = [_card(tmp_path / f"staging{i}", p, seed=20 + i, n_images=2) for i, p in enumerate(patients)]
    daemon = daemons(tmp_path / "d", archive.address, watch=watch_root).start()
    try:
        daemon.wait_for("the daemon to be ready", lambda _: daemon.socket.exists())
        inserted = [_insert(c, watch_root, f"CARD{i}") for i, c in enumerate(staged)]
        cards = daemon.wait_for("both cards to be done", lambda cs: len(cs) == 2 and _done(cs))
    finally:
        daemon.stop()
    assert states(cards) == ["done", "done"]
    for card, patient in zip(inserted, patients):
        assert media_on(card) == []
        assert len(cases(archive, patient.replace("-", ""))) == 1


# Every point at which the daemon is killed, in the order a card reaches them.
KILL_POINTS = ["detected", "scanned", "identified", "decided", "stripped", "uploading", "upload:1",
               "confirmed", "wiped"]


def test_kill_9_at_every_step_ends_archived_and_wiped_with_one_case(daemons, tmp_path, watch_root):
    """One card, the daemon SIGKILLed at each journal state in turn (a bounded loop)."""
    patient = make_personnummer("19540606", "445")
    with ArchiveProcess(tmp_path / "archive") as archive:
        card = _insert(_card(tmp_path / "staging", patient, seed=31), watch_root, "CARD")
        before = snapshot(card)
        daemon = daemons(tmp_path / "d", archive.address, watch=watch_root)
        for point in KILL_POINTS[1:]:  # "detected" is written before any step: covered by "scanned"
            daemon.start(kill_at=point)
            assert daemon.wait_exit(timeout=90) == KILLED, f"not killed at {point}\n{daemon.log_tail()}"
            daemon.stop()
            assert not daemon.kill_file.exists(), f"the hook at {point} did not fire"
            left = snapshot(card)
            # Never half: until the wipe every file is as it was; after it, no media.
            assert left == before or media_on(card) == [], f"half a card after a kill at {point}"
            assert len(cases(archive, patient.replace("-", ""))) <= 1
        daemon.start()
        cards = daemon.wait_for("the card to be done", _done, timeout=90)
        daemon.stop()
    assert states(cards) == ["done"], "one journal row: every restart resumed the same card"
    history = daemon.history(cards[0]["id"])
    assert history.count("confirmed") >= 2, history  # killed after confirming, confirmed again
    assert media_on(card) == []
    assert len(cases(archive, patient.replace("-", ""))) == 1


def test_kill_during_the_wipe_is_finished_after_the_restart(daemons, tmp_path, watch_root):
    """Killed after the archive confirmed, with half the files deleted (as a crash mid-wipe
    leaves them): the restart asks for the receipts again and wipes the rest; the identity
    labels on the deleted first image are not needed again."""
    patient = make_personnummer("19450707", "554")
    with ArchiveProcess(tmp_path / "archive") as archive:
        card = _insert(_card(tmp_path / "staging", patient, seed=41, n_images=4), watch_root, "CARD")
        daemon = daemons(tmp_path / "d", archive.address, watch=watch_root)
        daemon.start(kill_at="confirmed")
        assert daemon.wait_exit(timeout=90) == KILLED
        daemon.stop()
        media = media_on(card)
        assert len(media) == 4
        apple_double = card / media[0].replace("IMG_0001", "._IMG_0001")
        assert apple_double.exists()  # a Mac's copy of the first image's metadata
        for rel in media[:2]:  # the first image (with the label) among them
            (card / rel).unlink()
        daemon.start()
        cards = daemon.wait_for("the card to be done", _done, timeout=60)
        daemon.stop()
        (case,) = cases(archive, patient.replace("-", ""))
    assert states(cards) == ["done"] and cards[0]["case_id"] == case["case_id"]
    assert media_on(card) == []
    assert not apple_double.exists(), "the housekeeping of files wiped before the crash goes too"
    assert media_count(case) == 4


def test_a_card_changed_after_a_crash_is_read_anew_not_wiped_on_old_receipts(
        daemons, tmp_path, watch_root):
    """Killed after confirmation; then a file is replaced by another picture: the card is
    no longer part of what the archive confirmed, so nothing is wiped on the old receipts."""
    patient = make_personnummer("19350808", "663")
    with ArchiveProcess(tmp_path / "archive") as archive:
        card = _insert(_card(tmp_path / "staging", patient, seed=51), watch_root, "CARD")
        daemon = daemons(tmp_path / "d", archive.address, watch=watch_root)
        daemon.start(kill_at="confirmed")
        assert daemon.wait_exit(timeout=90) == KILLED
        daemon.stop()
        other = tmp_path / "other"
        make_card(other, patient=None, n_images=1, megapixels=0.8, seed=52, label_on=())
        middle = media_on(card)[1]
        shutil.copyfile(other / media_on(other)[0], card / middle)
        daemon.start()
        cards = daemon.wait_for("the card to be finished", _done, timeout=60)
        daemon.stop()
        found = cases(archive, patient.replace("-", ""))
    # Read anew: the new content is one patient's card again and becomes a second case
    # (new content, new session) - but the old receipts never wiped the changed card.
    history = daemon.history(cards[0]["id"])
    assert history.index("confirmed") < len(history) - 1 - history[::-1].index("scanned"), \
        f"the changed card was not scanned anew after the first confirmation: {history}"
    assert cards[0]["state"] == "done", cards
    assert len(found) == 2 and cards[0]["case_id"] in {c["case_id"] for c in found}
    assert media_on(card) == []


def test_a_folder_swapped_for_a_symlink_before_the_wipe_deletes_nothing_outside(
        daemons, archive, tmp_path, watch_root):
    """Issue 13: in --watch mode anyone who may write the watched folder can swap a
    card's folder for a symlink after the archive confirmed (here: at the
    ``confirmed`` step), pointing at byte-identical copies elsewhere. The wipe
    must not follow it: the copies outside stay and the card is not reported wiped."""
    patient = make_personnummer("19660101", "228")
    card = _insert(_card(tmp_path / "staging", patient, seed=61, n_images=2), watch_root, "CARD")
    top = media_on(card)[0].split("/")[0]
    outside = tmp_path / "elsewhere" / top
    shutil.copytree(card / top, outside, copy_function=shutil.copy2)
    copies = sorted(str(p.relative_to(outside)) for p in outside.rglob("*") if p.is_file())
    daemon = daemons(tmp_path / "d", archive.address, watch=watch_root)
    daemon.start(pause_at="confirmed")
    try:
        daemon.wait_paused()
        os.rename(card / top, card / f"{top}.real")
        os.symlink(outside, card / top)
        daemon.resume()
        cards = daemon.wait_for("the card to stop", lambda cs: cs and cs[0]["state"] != "confirmed"
                                and cs[0]["state"] in ("interrupted", "done", "refused"))
    finally:
        daemon.stop()
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*") if p.is_file()) == copies, \
        "the wipe deleted files outside the card"
    assert cards[0]["state"] == "interrupted" and cards[0]["reason"] == "CARD_CHANGED", cards
    assert len(media_on(card / f"{top}.real")) == 2


def test_archive_down_defers_the_card_then_it_completes(daemons, tmp_path, watch_root):
    patient = make_personnummer("19910909", "772")
    archive = ArchiveProcess(tmp_path / "archive").start()
    address = archive.address
    archive.stop()  # the archive is down when the card goes in (R12)
    daemon = daemons(tmp_path / "d", address, watch=watch_root).start()
    try:
        card = _insert(_card(tmp_path / "staging", patient, seed=61), watch_root, "CARD")
        before = snapshot(card)
        cards = daemon.wait_for("the card to be deferred",
                                lambda cs: bool(cs) and cs[0]["attempts"] >= 2, timeout=60)
        assert cards[0]["state"] in ("deferred", "detected", "scanned", "identified", "decided",
                                     "stripped", "uploading")
        assert cards[0]["reason"] == "ARCHIVE_UNAVAILABLE"
        assert snapshot(card) == before, "a deferred card is untouched"
        status = subprocess.run([*AGENT, "status", "--json", "--socket", str(daemon.socket)],
                                capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert '"reachable": false' in status.stdout
        archive = ArchiveProcess(tmp_path / "archive", listen=address).start()
        try:
            cards = daemon.wait_for("the card to be done", _done, timeout=60)
            found = cases(archive, patient.replace("-", ""))
        finally:
            archive.stop()
    finally:
        daemon.stop()
    assert states(cards) == ["done"]
    assert "deferred" in daemon.history(cards[0]["id"])
    assert media_on(card) == [] and len(found) == 1


# --------------------------------------------------------------------------- EHR context (R5)

US = make_personnummer("19880229", "214")
US_OTHER = make_personnummer("19600202", "445")


def _ultrasound(staging: pathlib.Path, number: str, seed: int) -> pathlib.Path:
    for i in range(2):
        write_ultrasound_image(staging / f"EXPORT/US{i + 1:04d}.JPG", number, seed=seed + i)
    return staging


def _expect(daemon: DaemonProcess, patient: str, *extra: str) -> None:
    result = subprocess.run([*AGENT, "expect", patient, "--mode", "ultrasound", "--socket",
                             str(daemon.socket), *extra], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_expect_matching_mismatching_and_expired_ultrasound_cards(
        daemons, archive, tmp_path, watch_root):
    daemon = daemons(tmp_path / "d", archive.address, watch=watch_root).start()
    try:
        daemon.wait_for("the daemon to be ready", lambda _: daemon.socket.exists())
        # Matching context: archived.
        _expect(daemon, US)
        match = _insert(_ultrasound(tmp_path / "s1", US, 301), watch_root, "US1")
        cards = daemon.wait_for("card 1", lambda cs: len(cs) == 1 and _done(cs))
        # Another patient open in the record: refused, untouched.
        _expect(daemon, US_OTHER)
        wrong = _insert(_ultrasound(tmp_path / "s2", US, 303), watch_root, "US2")
        before_wrong = snapshot(wrong)
        cards = daemon.wait_for("card 2", lambda cs: len(cs) == 2 and _done(cs))
        # The context expired before the card came: refused, untouched.
        _expect(daemon, US, "--ttl", "1s")
        time.sleep(1.5)  # waiting out the context's lifetime, not a timing assertion
        late = _insert(_ultrasound(tmp_path / "s3", US, 305), watch_root, "US3")
        before_late = snapshot(late)
        cards = daemon.wait_for("card 3", lambda cs: len(cs) == 3 and _done(cs))
    finally:
        daemon.stop()
    assert [(c["state"], c["reason"]) for c in cards] == [
        ("done", None), ("refused", "EXPECTED_PATIENT_MISMATCH"), ("refused", "EHR_CONTEXT_EXPIRED")]
    # Each card took the context waiting for it (the outcomes above say which); the
    # journal keeps the expected number only while a card is open (issue 13).
    assert [c["expect"] for c in cards] == [None, None, None]
    assert not list(match.rglob("*.JPG")), "the matching card is wiped"
    assert snapshot(wrong) == before_wrong and snapshot(late) == before_late
    (case,) = cases(archive, US.replace("-", ""))
    assert case["case_id"] == cards[0]["case_id"] and case["fields"]["ehr_context"] is True


# --------------------------------------------------------------------------- systemd


def test_systemd_hears_ready_watchdog_and_stopping_and_sigterm_stops_cleanly(
        daemons, archive, tmp_path, watch_root):
    import socket

    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(30)
    daemon = daemons(tmp_path / "d", archive.address, watch=watch_root)
    # WATCHDOG_USEC 0.4 s: a ping every 0.2 s
    daemon.start(env_override={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"})
    try:
        seen: list[str] = []
        while not (any("READY=1" in m for m in seen) and seen.count("WATCHDOG=1") >= 2):
            seen.append(listener.recv(4096).decode())
        assert daemon.alive()
        assert daemon.stop() == 0, daemon.log_tail()
        while "STOPPING=1" not in seen:
            seen.append(listener.recv(4096).decode())
    finally:
        daemon.stop()
        listener.close()
    ready = next(m for m in seen if "READY=1" in m)
    assert "STATUS=waiting for cards" in ready


def test_run_explains_what_is_wrong_instead_of_starting(daemons, archive, tmp_path, watch_root):
    import socket

    daemon = daemons(tmp_path / "d", archive.address, watch=watch_root)
    missing = subprocess.run([*AGENT, "run", "--config", str(daemon.config_path), "--watch",
                              str(tmp_path / "no-such-folder")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "not a folder" in missing.stderr
    no_backend = subprocess.run([*AGENT, "run", "--config", str(daemon.config_path)],
                                capture_output=True, text=True, timeout=60)
    assert no_backend.returncode == 2 and "--udev" in no_backend.stderr
    with socket.socket() as taken:  # the status page's port is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = daemon.config_path.read_text().replace('status_http = ""', f'status_http = "127.0.0.1:{port}"')
        daemon.config_path.write_text(text)
        busy = subprocess.run([*AGENT, "run", "--config", str(daemon.config_path), "--watch",
                               str(watch_root)], capture_output=True, text=True, timeout=60)
    assert busy.returncode == 1 and "could not start" in busy.stderr, busy.stderr
    assert not daemon.socket.exists(), "a daemon that did not start leaves no control socket behind"
