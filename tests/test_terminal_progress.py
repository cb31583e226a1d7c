"""The progress bar of `bildsluss-agent ingest` on a terminal (agent/desk/terminal.py, issue 12).

The command runs on a real pseudo-terminal (standard error) against a real
archive; standard output stays one JSON object.
"""
from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess

from rich.console import Console

from agent.card.progress import Wiped
from agent.desk.terminal import TerminalProgress
from tests.support.cardgen import make_card
from tests.support.e2e import AGENT, DEPARTMENT, PATIENT, PATIENT_CANONICAL

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_each_stage_gets_a_row_with_its_files_and_bytes():
    out = io.StringIO()
    shown = TerminalProgress(Console(file=out, force_terminal=True, width=120))
    with shown:
        shown.stage("scan", {"root": "/media/card"})
        shown.stage("scan", {"files_total": 4, "files_done": 4})
        shown.stage("identify", {"files": 4})
        shown.stage("strip", {"files": 4, "bytes": 8 << 20})
        shown.stage("strip", {"files_total": 4, "files_done": 4, "bytes_total": 8 << 20, "bytes_done": 8 << 20})
        shown.stage("identify", {"files_total": 4, "files_done": 4})
        shown.stage("upload", {"files": 4, "bytes": 6 << 20})
        shown.stage("upload", {"files_done": 2, "files_total": 4, "bytes_done": 3 << 20, "bytes_total": 6 << 20})
        shown.stage("commit", {})
        shown.stage("wipe", {"files": 4})
        shown.reached(Wiped())
    text = _ANSI.sub("", out.getvalue())
    for row in ("reading", "identity", "stripping", "sending", "archiving", "wiping"):
        assert row in text
    assert "8.0/8.0 MiB" in text and "4/4" in text
    assert all(t.completed == t.total for t in shown.bar.tasks), "a wiped card shows every stage done"


def test_ingest_on_a_terminal_shows_the_bar_and_json_stays_clean(archive, tmp_path):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=3, megapixels=2.0, seed=41)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*AGENT, "ingest", str(card), "--archive", archive.address, "--department", DEPARTMENT,
             "--insecure", "--json", "--spool", str(tmp_path / "spool")],
            stdout=subprocess.PIPE, stderr=follower, env={**os.environ, "COLUMNS": "120"})
        os.close(follower)
        shown = b""
        while True:
            ready, _, _ = select.select([leader], [], [], 300)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            shown += chunk
        stdout, _ = proc.communicate(timeout=300)
    finally:
        os.close(leader)
    assert proc.returncode == 0, shown.decode(errors="replace")[-2000:]
    outcome = json.loads(stdout)  # only the outcome on standard output
    assert outcome["patient"] == PATIENT_CANONICAL and outcome["wiped"]
    text = _ANSI.sub("", shown.decode(errors="replace"))
    assert "sending" in text and "wiping" in text and "3/3" in text
