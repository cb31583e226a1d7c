"""Taking a stripped copy back from the parser that wrote it (issue 13).

In the daemon the strip stage's parsing (the JPEG rewrite, WAV, pydicom, and
exiftool and ffmpeg for PNG/TIFF and video) runs in the card's confined reader
processes (:mod:`agent.card.workers`), as ``bildsluss-parse``: each copy is
written into the parser's own folder (``parse/`` in the card's spool folder)
together with its SHA-256 and size as the parser's checks saw them. Root then
takes the copy back, never trusting the parser's folder:

- the name is opened relative to a directory descriptor root holds on that
  folder, with ``O_NOFOLLOW`` (a symbolic link is refused, not followed) and
  ``O_NONBLOCK`` (a FIFO does not block);
- the opened file must be a regular file, owned by the parser's user, with one
  link (a hard link to a file elsewhere is refused);
- its bytes are copied into root's own new file in the spool folder (0600,
  ``O_EXCL``) while they are hashed; the copy is what is sent, and the hash
  root computed is what the manifest and the archive get. A parser that keeps
  the file open, writes to it or swaps it afterwards changes only its own file,
  which is removed at once;
- the bytes root read must be the ones the parser checked (its SHA-256 and
  size); anything else is refused, as is every failure above, with
  ``STRIP_FAILED``.

The read-back (exiftool, confined too) then reads root's copy, not the
parser's: while it reads, the copy is root's, group-readable for the parser's
group only (0640); the strip stage makes it 0600 again afterwards (R11).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import pathlib
import stat
import uuid

from agent.card.model import MediaFile
from agent.card.strip.common import CHUNK, Written, fail

# The names a parser's copy may have (``<hex>.<ext>``): the suffix root's copy keeps.
_SUFFIXES = {".jpg", ".png", ".tif", ".mp4", ".mov", ".m4a", ".avi", ".mts", ".mp3", ".wav", ".dcm"}


class TakeBack:
    """Takes the copies a parser wrote into ``scratch`` back into ``spool_dir`` (see
    the module notes). ``owner``: the user the parser runs as; ``share_gid``: the
    parser's group, which may read root's copies until the read-back is done
    (None: root's copies stay 0600, the read-back runs as root's own user)."""

    def __init__(self, scratch: pathlib.Path, spool_dir: pathlib.Path, *, owner: int,
                 share_gid: int | None = None) -> None:
        self.scratch, self.spool_dir = pathlib.Path(scratch), pathlib.Path(spool_dir)
        self.owner, self.share_gid = owner, share_gid
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        self._scratch_fd = os.open(self.scratch, flags)
        try:
            self._spool_fd = os.open(self.spool_dir, flags)
        except BaseException:
            os.close(self._scratch_fd)
            raise

    def close(self) -> None:
        for fd in (self._scratch_fd, self._spool_fd):
            if fd >= 0:
                os.close(fd)
        self._scratch_fd = self._spool_fd = -1

    def __enter__(self) -> TakeBack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, written: Written, media: MediaFile) -> Written:
        """Root's copy of the parser's ``written`` (of root's ``media``); the parser's
        file is removed. Raises STRIP_FAILED for a copy that is not taken back."""
        name = written.out.name
        suffix = pathlib.PurePath(name).suffix
        if written.out.parent != self.scratch or suffix not in _SUFFIXES or name.startswith("."):
            raise fail(media, f"the stripped copy is not in the parser's folder: {written.out}")
        try:
            src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                          dir_fd=self._scratch_fd)
        except OSError as exc:
            why = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be opened: {exc.strerror}"
            raise fail(media, f"the stripped copy {why}") from None
        own = f"{uuid.uuid4().hex}{suffix}"
        made = False
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise fail(media, "the stripped copy is not a regular file")
            if st.st_uid != self.owner:
                raise fail(media, f"the stripped copy is owned by uid {st.st_uid}, not the parser's")
            if st.st_nlink != 1:
                raise fail(media, f"the stripped copy has {st.st_nlink} links")
            dst = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=self._spool_fd)
            made = True
            digest, size = hashlib.sha256(), 0
            try:
                while chunk := os.read(src, CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(dst, view):]
                if self.share_gid is not None:
                    os.fchown(dst, -1, self.share_gid)
                    os.fchmod(dst, 0o640)
            finally:
                os.close(dst)
            sha = digest.hexdigest()
            if (sha, size) != (written.sha256, written.size):
                raise fail(media, "the stripped copy changed after it was checked")
        except BaseException:
            if made:
                os.unlink(own, dir_fd=self._spool_fd)
            raise
        finally:
            os.close(src)
        os.unlink(name, dir_fd=self._scratch_fd)
        return dataclasses.replace(written, media=media, out=self.spool_dir / own, sha256=sha, size=size)

    def discard(self, written: Written) -> None:
        """Remove a parser's copy that is not taken back (a file the strip stage does not use)."""
        name = written.out.name
        if written.out.parent == self.scratch and name and not name.startswith("."):
            try:
                os.unlink(name, dir_fd=self._scratch_fd)
            except OSError:
                pass

    def private(self, written: Written) -> None:
        """Root's copy 0600 again, once the read-back is done (R11)."""
        if self.share_gid is not None:
            os.chmod(written.out.name, 0o600, dir_fd=self._spool_fd)
