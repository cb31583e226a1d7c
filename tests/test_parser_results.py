"""agent.card.parser_results: a reader process taken over by a crafted file cannot
make the daemon (root) run code by what it sends back; plain results still pass."""
from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import multiprocessing.queues
import os
import pathlib
import pickle
import subprocess
import sys

import pytest

from agent.card import parser_results
from agent.card.model import Evidence, Method, StageError
from agent.card.reasons import Reason

ROOT = pathlib.Path(__file__).resolve().parent.parent


class _RunsCode:
    """What a taken-over parser would send: unpickling it calls os.system."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _send_code_then_return(marker: str) -> str:
    # In the worker: write a pickle straight onto the pool's result pipe, as code
    # running in a hijacked reader could, ahead of this task's own answer.
    result_queue = next(o for o in gc.get_objects() if isinstance(o, multiprocessing.queues.SimpleQueue))
    result_queue._writer.send_bytes(pickle.dumps(_RunsCode(marker)))
    return "fine"


def _plain() -> tuple:
    return (Evidence(relative_path="DCIM/IMG_0001.JPG", frame=0, method=Method.BARCODE, text="191212121212",
                     patient_id="191212121212"), pathlib.PurePosixPath("a/b"), os.stat("/"), {"n": [1, 2.5, None]})


def _raise_stage_error() -> None:
    raise StageError(Reason.STRIP_FAILED, "not lossless")


def _pool(guarded: bool) -> concurrent.futures.ProcessPoolExecutor:
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
    return parser_results.guard(pool) if guarded else pool


def test_an_unguarded_pool_would_run_what_a_worker_sends(tmp_path):
    # The attack is real: without the guard the parent runs the worker's command.
    # In a process of its own: the unguarded pool's manager thread is left broken.
    marker = tmp_path / "ran-as-the-daemon"
    program = (
        "import os, sys, time\n"
        "from tests.test_parser_results import _pool, _send_code_then_return\n"
        "pool = _pool(guarded=False)\n"
        "pool.submit(_send_code_then_return, sys.argv[1])\n"
        "deadline = time.monotonic() + 60\n"
        "while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", program, str(marker)], cwd=ROOT, timeout=120, check=True)
    assert marker.exists()


def test_a_worker_sending_code_breaks_the_pool_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran-as-the-daemon"
    with _pool(guarded=True) as pool:
        with pytest.raises(concurrent.futures.process.BrokenProcessPool) as broken:
            pool.submit(_send_code_then_return, str(marker)).result(timeout=60)
    assert not marker.exists()
    assert "posix.system" in str(broken.value.__cause__) and "not data" in str(broken.value.__cause__)


def test_plain_results_and_raised_errors_come_back():
    with _pool(guarded=True) as pool:
        evidence, path, st, mapping = pool.submit(_plain).result(timeout=60)
        assert evidence.patient_id == "191212121212" and evidence.method is Method.BARCODE
        assert path == pathlib.PurePosixPath("a/b") and st.st_ino == os.stat("/").st_ino
        assert mapping == {"n": [1, 2.5, None]}
        with pytest.raises(StageError) as raised:
            pool.submit(_raise_stage_error).result(timeout=60)
        assert raised.value.reason == Reason.STRIP_FAILED


@pytest.mark.parametrize("module, name", [
    ("posix", "system"), ("builtins", "eval"), ("builtins", "getattr"), ("subprocess", "Popen"),
    ("agent.card.workers", "CardReaders"),  # one of ours, but with behaviour: not a record
    ("agent.card.wipe", "wipe"),  # one of our functions
    ("antigravity", "webbrowser"),  # a module not loaded: importing it would run it
])
def test_only_data_is_built(module, name):
    with pytest.raises(pickle.UnpicklingError, match="not data"):
        parser_results.DataUnpickler(__import__("io").BytesIO(b"")).find_class(module, name)


def test_the_card_readers_results_are_unpickled_as_data(tmp_path):
    from agent.card.model import Mode
    from agent.card.workers import CardReaders

    card, spool = tmp_path / "card", tmp_path / "spool"
    card.mkdir()
    spool.mkdir()
    with CardReaders(card, spool, Mode.PHOTO, budget_s=1.0, workers=1) as readers:
        assert type(readers._pool._result_queue._reader) is parser_results._DataConnection
