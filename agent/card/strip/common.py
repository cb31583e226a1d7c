"""What every strip format shares: reading the card's bytes as scanned, writing
the private spool copy (0600, new files only), the checked-copy record the
read-back works on, and the one way a format refuses a file (STRIP_FAILED)."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import uuid

from agent.card.model import MediaFile, StageError
from agent.card.reasons import Reason

CHUNK = 1 << 20
FFMPEG_TIMEOUT_S = 600

EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/tiff": ".tif",
    "video/mp4": ".mp4", "video/quicktime": ".mov", "audio/mp4": ".m4a",
    "video/x-msvideo": ".avi", "video/mp2t": ".mts", "audio/mpeg": ".mp3",
}


def fail(media: MediaFile, what: str) -> StageError:
    return StageError(Reason.STRIP_FAILED, f"{media.relative_path}: {what}")


def read_card(media: MediaFile) -> bytes:
    """The card file's bytes, checked against the scan's SHA-256."""
    try:
        fd = os.open(media.path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: file is gone") from None
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read()
    finally:
        os.close(fd)
    if hashlib.sha256(data).hexdigest() != media.sha256:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: content changed since the scan")
    return data


def copy_from_card(media: MediaFile, dest: pathlib.Path) -> None:
    """Copy the card's file to ``dest`` (0600), checking it is what the scan saw."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    digest = hashlib.sha256()
    try:
        src = os.open(media.path, flags)
    except FileNotFoundError:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: file is gone") from None
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            while chunk := os.read(src, CHUNK):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
        finally:
            os.close(out)
    finally:
        os.close(src)
    if digest.hexdigest() != media.sha256:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: content changed since the scan")


def write_new(path: pathlib.Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def fsync(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: pathlib.Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclasses.dataclass
class Written:
    """A stripped copy written and checked, waiting for the batched read-back."""

    media: MediaFile
    out: pathlib.Path
    orientation: int | None = None  # what the read-back must find (images)
    needs_readback: bool = True
    # Read back already, while the card was read (strip_ahead's copies): not again.
    read_back_done: bool = False
    sha256: str = ""
    size: int = 0


def spool_pair(media: MediaFile, spool_dir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A private working copy of the card file, and the name its stripped copy gets.

    The caller removes the working copy when done (and the output on failure)."""
    token = uuid.uuid4().hex
    ext = EXTENSIONS[media.media_type]
    work = spool_dir / f".{token}-original{ext}"
    try:
        copy_from_card(media, work)
    except BaseException:
        work.unlink(missing_ok=True)  # a partial copy of patient media never stays in the spool
        raise
    return work, spool_dir / f"{token}{ext}"
