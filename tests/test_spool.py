"""The spool's session folders (R11: nothing stays on the capture PC): a killed
one-shot ``ingest`` leaves its folder of stripped copies; the next run removes it,
never a folder a live run holds."""
from __future__ import annotations

import fcntl
import os

from agent.card.spool import Spool


def test_the_next_session_removes_a_killed_runs_folder_and_keeps_a_live_ones(tmp_path):
    spool = Spool(tmp_path / "spool")
    with spool.session("killed") as killed:
        (killed / "IMG_0001.JPG").write_bytes(b"a stripped copy of a patient's picture")
    # A killed run: its folder is still there (SIGKILL skips the removal), its lock gone.
    killed.mkdir(mode=0o700)
    (killed / "IMG_0001.JPG").write_bytes(b"a stripped copy of a patient's picture")
    live = spool.root / "live"
    live.mkdir(mode=0o700)
    held = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)  # another run, alive
    try:
        with spool.session("next") as folder:
            assert sorted(p.name for p in spool.root.iterdir()) == ["live", "next"]
            assert folder.is_dir()
        assert not folder.exists()
        assert live.is_dir() and not killed.exists()
    finally:
        os.close(held)
