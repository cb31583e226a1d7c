"""The local spool: private folders holding stripped copies while they upload (R11).

One folder per ingest session (0700), its files 0600: readable by the agent's
user only. Every run removes its folder whatever the outcome, so nothing stays
on the capture PC once the archive confirmed the files (or the card was
refused or deferred: the card itself still holds the media, untouched). What
survives a reboot is the daemon's journal (``agent.daemon.journal``), not the spool;
folders a killed run left behind are removed when the daemon starts.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
from collections.abc import Iterator


class Spool:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def _ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)

    @contextlib.contextmanager
    def session(self, session_id: str) -> Iterator[pathlib.Path]:
        """A fresh private folder for one card, removed on exit whatever happens."""
        self._ensure_root()
        folder = self.root / session_id
        folder.mkdir(mode=0o700)
        try:
            yield folder
        finally:
            self.remove(folder)

    @staticmethod
    def remove(folder: pathlib.Path) -> None:
        # Stripped copies hold patient images: remove them even on errors.
        shutil.rmtree(folder, ignore_errors=True)

    def remove_leftovers(self) -> list[pathlib.Path]:
        """Remove the session folders of killed runs (no run is active when the daemon starts)."""
        stale = self.leftovers()
        for folder in stale:
            self.remove(folder)
        return stale

    def leftovers(self) -> list[pathlib.Path]:
        """Session folders that a crashed run left behind (for status and cleanup)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir())
