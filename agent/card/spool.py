"""The local spool: private folders holding stripped copies while they upload (R11).

One folder per ingest session (0700; 0711 while the card's parsers run as
the parser user, who writes only in its own ``parse`` folder inside it), its
files 0600: readable by the agent's user only. The spool root is 0711: the
parser user may enter it to reach its folder, nobody but root may list it. Every run removes its folder whatever the outcome, so nothing stays
on the capture PC once the archive confirmed the files (or the card was
refused or deferred: the card itself still holds the media, untouched). What
survives a reboot is the daemon's journal (``agent.daemon.journal``), not the spool;
folders a killed run left behind are removed when the daemon starts.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pathlib
import shutil
from collections.abc import Iterator

log = logging.getLogger(__name__)

# Room kept free beyond the card's own size: exiftool's and ffmpeg's temporary copies,
# the journal, and the rest of the PC (a full disk stops the desktop too).
HEADROOM_BYTES = 64 << 20
# Write errors that mean the spool's disk (or the agent's quota) is full.
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class SpoolFull(Exception):
    """The spool's file system has no room for a card's stripped copies.

    Raised before a card is started (:meth:`Spool.check_room`); the pipeline defers the
    card (``SPOOL_FULL``, exit 4, card untouched) and the log and heartbeat tell ops, who
    free space on the capture PC (docs/operations.md, "SPOOL_FULL").
    """


class Spool:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def _ensure_root(self) -> None:
        # 0711: enter, not list (the parser user reaches its folder; names stay hidden).
        self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(self.root, 0o711)

    def free_bytes(self) -> int:
        self._ensure_root()
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def usage(self) -> tuple[int | None, int | None]:
        """(bytes held below the spool, bytes free on its file system), for
        operations (heartbeats, metrics); None where it cannot be read. Never
        creates the folder."""
        try:
            st = os.statvfs(self.root)
        except OSError:
            return None, None
        used = 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                try:
                    used += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    pass  # removed while we walked
        return used, st.f_bavail * st.f_frsize

    def check_room(self, card_bytes: int) -> None:
        """Raise SpoolFull unless the card's copies and the headroom fit."""
        free = self.free_bytes()
        need = card_bytes + HEADROOM_BYTES
        if free < need:
            raise SpoolFull(f"{free} bytes free in {self.root}, {need} needed "
                            f"({card_bytes} for the card + {HEADROOM_BYTES} headroom)")

    @contextlib.contextmanager
    def session(self, session_id: str) -> Iterator[pathlib.Path]:
        """A fresh private folder for one card (or a camera's download), locked
        while this run lives and removed on exit whatever happens. The folders of
        killed runs (their lock is free: a one-shot ``ingest`` or a camera import
        killed mid-card) are removed first (R11)."""
        self._ensure_root()
        with self._root_locked():  # no other run's fresh folder is taken for stale
            self.remove_stale()
            folder = self.root / session_id
            folder.mkdir(mode=0o700)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            self.remove(folder)
            os.close(fd)

    @contextlib.contextmanager
    def _root_locked(self) -> Iterator[None]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def remove_stale(self) -> list[pathlib.Path]:
        """Remove the folders in the spool whose run is gone (no lock held on them).
        A live run (a card's session, a camera's download folder) holds its lock."""
        removed = []
        for folder in self.leftovers():
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run's
            else:
                self.remove(folder)  # under its lock: no run can take it meanwhile
                removed.append(folder)
            finally:
                os.close(fd)
        if removed:
            log.warning("removed the spool folders of runs that were killed", extra={
                "folders": [str(f) for f in removed]})
        return removed

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
