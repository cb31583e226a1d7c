"""Structured logs carry their syslog priority, for journald (issue 17: `journalctl -p warning`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

PROGRAM = """
import logging
from bildsluss_common import logs
logs.setup("debug")
log = logging.getLogger("bildsluss.test")
log.debug("d"); log.info("i"); log.warning("w", extra={"card": "sdb1"}); log.error("e")
"""


def _log_lines(tmp_path, journal: bool) -> list[str]:
    err = tmp_path / "stderr"
    with open(err, "w") as fh:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal:  # what systemd sets when stderr is its journal stream
            st = os.fstat(fh.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", PROGRAM], stderr=fh, env=env, check=True, timeout=60)
    return err.read_text().splitlines()


def test_every_line_carries_its_syslog_priority(tmp_path):
    lines = _log_lines(tmp_path, journal=False)
    entries = [json.loads(line) for line in lines]  # plain JSON off the journal
    assert [(e["msg"], e["level"], e["priority"]) for e in entries] == [
        ("d", "debug", 7), ("i", "info", 6), ("w", "warning", 4), ("e", "error", 3)]
    assert entries[2]["card"] == "sdb1"


def test_on_the_journal_each_line_starts_with_the_priority_prefix(tmp_path):
    lines = _log_lines(tmp_path, journal=True)
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    assert json.loads(lines[2][3:])["msg"] == "w"


def test_another_stream_named_in_journal_stream_gets_no_prefix(tmp_path, monkeypatch):
    from bildsluss_common import logs

    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert logs.stderr_is_journal() is False
