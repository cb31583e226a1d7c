"""The card's reader processes (agent/card/workers.py, issue 12).

Real cards (tests/support/cardgen.py: real Canon EXIF and maker notes from the
shared corpus, real barcodes), real worker processes. The pool must read
exactly what the serial stages read; a worker that dies or hangs stops the card
unread (INTERNAL_ERROR, nothing sent, nothing deleted); progress arrives in order.
"""
from __future__ import annotations

import os
import pathlib
import threading
import time

import pytest

from agent import config as config_mod
from agent.card import identify as identify_stage
from agent.card import scan as scan_stage
from agent.card import workers
from agent.card.model import Mode, StageError
from agent.card.pipeline import IngestRequest, ingest_card
from agent.card.progress import NoProgress
from agent.card.reasons import Reason
from tests.support.cardgen import make_card, make_personnummer
from tests.support.e2e import DEPARTMENT, PATIENT, PATIENT_CANONICAL, snapshot

OTHER = make_personnummer("19820415", "238")


def _pooled(card: pathlib.Path, spool: pathlib.Path, mode: Mode):
    spool.mkdir(exist_ok=True)
    with workers.CardReaders(card, spool, mode, budget_s=2.0) as readers:
        scanned = readers.scan(card)
        return scanned, readers.start_identify(scanned)(None)


def _evidence(result: identify_stage.IdentifyResult) -> list[tuple]:
    return [(e.relative_path, e.frame, e.method, e.text, e.patient_id, e.invalid) for e in result.evidence]


@pytest.mark.parametrize("mode, options", [
    (Mode.PHOTO, dict(extra_patient_at=2, extra_patient=OTHER)),  # another patient in the middle
    (Mode.PHOTO, dict(label_on=("first",))),                      # the last label missing
    (Mode.ASSAULT, dict(label_on="all")),                         # every picture required
])
def test_the_pool_reads_what_the_serial_stages_read(tmp_path, mode, options):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=5, megapixels=2.0, seed=31, **options)
    serial_scan = scan_stage.scan(card)
    serial = identify_stage.identify(serial_scan, mode)

    pooled_scan, pooled = _pooled(card, tmp_path / "spool", mode)

    assert pooled_scan == serial_scan
    assert pooled.examined == serial.examined and pooled.problems == serial.problems
    assert _evidence(pooled) == _evidence(serial)


def test_a_broken_jpeg_is_refused_by_the_reduced_decode_as_by_the_full_one(tmp_path):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=3, megapixels=2.0, seed=32, housekeeping=False)
    broken = card / "DCIM/100CANON/IMG_0002.JPG"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # truncated: the entropy-coded data ends early
    pooled_scan, _ = _pooled(card, tmp_path / "spool", Mode.PHOTO)
    serial_scan = scan_stage.scan(card)
    refused = {s.relative_path: s for s in pooled_scan.skipped if s.status == "refused"}
    assert set(refused) == {"DCIM/100CANON/IMG_0002.JPG"} and refused[
        "DCIM/100CANON/IMG_0002.JPG"].reason is Reason.NOT_MEDIA
    assert [s.relative_path for s in serial_scan.skipped] == list(refused)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def test_a_worker_that_dies_stops_the_card_unread(tmp_path):
    (tmp_path / "card").mkdir()
    with pytest.raises(StageError) as caught, \
            workers.CardReaders(tmp_path / "card", tmp_path, Mode.PHOTO, budget_s=2.0) as readers:
        readers._result(readers._submit(os._exit, 3), "IMG_0001.JPG")
    assert caught.value.reason is Reason.INTERNAL_ERROR and "died" in caught.value.detail


def test_a_worker_that_hangs_is_stopped_and_the_card_not_judged(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "FILE_TIMEOUT_S", 1.0)
    (tmp_path / "card").mkdir()
    readers = workers.CardReaders(tmp_path / "card", tmp_path, Mode.PHOTO, budget_s=2.0)
    processes = []
    with pytest.raises(StageError) as caught, readers:
        future = readers._submit(_sleep, 120)
        processes = list(readers._pool._processes.values())
        readers._result(future, "IMG_0001.JPG")
    assert caught.value.reason is Reason.INTERNAL_ERROR and "not read within" in caught.value.detail
    assert processes
    for p in processes:
        p.join(timeout=10)
    assert not any(p.is_alive() for p in processes), "a hung reader outlived the card"


_original_probe = workers._probe_and_read


def _dies_on_the_third(root, entry, *args):
    if entry.rel.endswith("IMG_0003.JPG"):
        os._exit(9)
    return _original_probe(root, entry, *args)


def test_a_card_whose_reader_crashed_is_never_archived(tmp_path, monkeypatch):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=4, megapixels=2.0, seed=33)
    before = snapshot(card)
    monkeypatch.setattr(workers, "_probe_and_read", _dies_on_the_third)
    cfg = config_mod.from_dict({"agent": {"spool_dir": str(tmp_path / "spool")},
                                "archive": {"insecure": True, "address": "127.0.0.1:1"}})
    outcome = ingest_card(IngestRequest(root=card, department=DEPARTMENT, mode=Mode.PHOTO), cfg)
    assert outcome.reason is Reason.INTERNAL_ERROR and not outcome.wiped and outcome.case_id is None
    assert outcome.outcome.value == "failed" and outcome.exit_code == 1
    assert snapshot(card) == before
    assert list(outcome.timings) == ["scan"]


class _Recorder(NoProgress):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def stage(self, stage, info):
        self.events.append(("stage", stage, dict(info)))

    def reached(self, checkpoint):
        self.events.append(("reached", checkpoint.state, {}))


def test_progress_arrives_in_order(archive, tmp_path):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=5, megapixels=2.0, seed=34)
    cfg = config_mod.from_dict({"agent": {"spool_dir": str(tmp_path / "spool")},
                                "archive": {"insecure": True, "address": archive.address}})
    seen = _Recorder()
    outcome = ingest_card(IngestRequest(root=card, department=DEPARTMENT, mode=Mode.PHOTO), cfg, progress=seen)
    assert outcome.wiped and outcome.patient == PATIENT_CANONICAL, outcome.detail
    assert [state for kind, state, _ in seen.events if kind == "reached"] == [
        "scanned", "identified", "decided", "stripped", "uploading", "confirmed", "wiped"]
    # Per stage, files done never go backwards and end at the stage's total.
    for stage in ("scan", "identify", "strip", "upload"):
        done = [(i["files_done"], i["files_total"]) for kind, s, i in seen.events
                if kind == "stage" and s == stage and "files_done" in i]
        assert done, f"no per-file progress for {stage}"
        assert [d for d, _ in done] == sorted(d for d, _ in done) and done[-1][0] == done[-1][1]
    # The card is decided before anything is sent (R4), and wiped after every receipt (R10).
    order = [state for kind, state, _ in seen.events]
    assert order.index("decided") < order.index("upload") < order.index("confirmed") < order.index("wipe")
    assert list(outcome.timings)[:3] == ["scan", "identify", "strip"]



def test_the_copies_stripped_ahead_are_read_back_while_the_card_is_read(archive, tmp_path, monkeypatch):
    """Every JPEG copy a reader stripped during the scan is read back by exiftool
    before the scan ends, the last short batch too (5 copies, fewer than a batch):
    the strip stage after the scan only takes them (issue 12's card speed)."""
    from agent.card import strip as strip_stage

    real = strip_stage.read_back
    calls: list[tuple[str, int]] = []

    def read_back(written, reader):
        todo = [w for w in written if w.needs_readback and not w.read_back_done]
        calls.append((threading.current_thread().name, len(todo)))
        return real(written, reader)

    monkeypatch.setattr(strip_stage, "read_back", read_back)
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=5, megapixels=2.0, seed=35)
    cfg = config_mod.from_dict({"agent": {"spool_dir": str(tmp_path / "spool")},
                                "archive": {"insecure": True, "address": archive.address}})
    outcome = ingest_card(IngestRequest(root=card, department=DEPARTMENT, mode=Mode.PHOTO), cfg)
    assert outcome.wiped and outcome.patient == PATIENT_CANONICAL, outcome.detail
    during_scan = [n for thread, n in calls if thread.startswith("exiftool")]
    after_scan = [n for thread, n in calls if not thread.startswith("exiftool")]
    assert sum(during_scan) == 5, calls
    assert after_scan == [0], calls

def _open_pipes() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            out.add(target)
    return out


def test_readers_hold_none_of_the_exiftool_process_pipes(tmp_path):
    """A confined reader that could write to the agent's exiftool (which runs unconfined)
    could make it write files: the workers start before exiftool and inherit nothing of it."""
    from agent.card.metadata import MetadataReader

    (tmp_path / "card").mkdir()
    with workers.CardReaders(tmp_path / "card", tmp_path, Mode.PHOTO, budget_s=2.0) as readers, \
            MetadataReader() as reader:
        reader.run("-ver")
        process = reader._tool._process
        exiftool = {os.readlink(f"/proc/{process.pid}/fd/{fd}") for fd in (0, 1)}
        seen = set()
        for _ in range(4 * readers.workers):  # every worker, most likely
            seen |= readers._result(readers._submit(_open_pipes), "pipes")
    assert exiftool and not exiftool & seen
