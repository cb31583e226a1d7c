"""Wipe stage: delete the archived media from the card, and only them (R10).

Runs only after every file was confirmed (see :mod:`agent.verify`). Before the
first deletion every media file is checked again against the scan: same
regular file, same size and modification time, same SHA-256 of its bytes. A
card that changed (another card in the same slot, a file edited or replaced)
is left entirely as it is (CARD_CHANGED). Folders, housekeeping files and
anything that was not archived stay.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import pathlib
import stat
from collections.abc import Sequence

from agent.model import MediaFile, StageError
from agent.reasons import Reason

_READ_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class WipeResult:
    deleted: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (relative path, why)

    @property
    def complete(self) -> bool:
        return not self.failed


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _unchanged(media: MediaFile) -> str | None:
    """Why the file on the card is no longer what was scanned, or None."""
    try:
        st = os.lstat(media.path)
    except FileNotFoundError:
        return "file is gone"
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.ENODEV, errno.ENXIO):
            raise StageError(Reason.CARD_REMOVED, f"{media.relative_path}: {exc.strerror}") from None
        return f"cannot read: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "no longer a regular file"
    if st.st_size != media.size or st.st_mtime_ns != media.mtime_ns:
        return "size or modification time changed"
    if sha256_of(media.path) != media.sha256:
        return "content changed"
    return None


def check_card_unchanged(root: pathlib.Path, media: Sequence[MediaFile]) -> None:
    """Raise CARD_REMOVED or CARD_CHANGED unless every file is as scanned."""
    if not root.is_dir():
        raise StageError(Reason.CARD_REMOVED, f"{root} is no longer there")
    changed = [(m.relative_path, why) for m in media if (why := _unchanged(m))]
    if media and len(changed) == len(media) and all(why == "file is gone" for _, why in changed):
        # Every file vanished at once: the card was pulled (the empty mount
        # point stays behind) or another, empty card sits in the slot.
        raise StageError(Reason.CARD_REMOVED, f"none of the {len(media)} media files is on {root} any more")
    if changed:
        detail = "; ".join(f"{path}: {why}" for path, why in changed)
        raise StageError(Reason.CARD_CHANGED, detail)


def wipe(root: pathlib.Path, media: Sequence[MediaFile]) -> WipeResult:
    """Delete the given (archived, verified) media files from the card.

    Raises StageError before deleting anything if the card changed since the
    scan. Failures during deletion are collected, not raised: what is deleted
    is already safe in the archive, and staff must learn what is left.
    """
    check_card_unchanged(root, media)
    deleted: list[str] = []
    failed: list[tuple[str, str]] = []
    folders: set[pathlib.Path] = set()
    for m in media:
        try:
            os.unlink(m.path)
        except OSError as exc:
            failed.append((m.relative_path, exc.strerror or str(exc)))
            continue
        deleted.append(m.relative_path)
        folders.add(m.path.parent)
    for folder in folders:
        # Make the deletions durable before telling staff the card is empty.
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass  # some card file systems (vfat on some kernels) refuse dir fsync
        finally:
            os.close(fd)
    return WipeResult(tuple(deleted), tuple(failed))
