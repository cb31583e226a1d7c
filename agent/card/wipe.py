"""Wipe stage: delete the archived media from the card, then what belonged to it (R10).

Runs only after every file was confirmed (see :mod:`agent.card.verify`). Before the
first deletion every media file is checked again against the scan: same
regular file, same size and modification time, and the same SHA-256 of its
bytes, read from the card itself (the file's cached pages are dropped with
``posix_fadvise(DONTNEED)`` first, so a card swapped or changed behind the page
cache is seen). The scan's hash is the hash of what was stripped and sent
(the strip stage checks its copy against it). A card that changed (another
card in the same slot, a file edited or replaced) is left entirely as it is
(CARD_CHANGED).

Then the housekeeping that belongs to the wiped media goes too, because it
carries the last patient's identity or pictures and the next patient must
start on an empty card (R10); it is removed only *after* its media were
deleted, and never when deleting one of them failed:

* a ``DICOMDIR`` whose every referenced file was deleted now (or is gone): it
  holds the patient's name and ID;
* a video's ``.THM`` thumbnail and ``.LRV`` low-resolution proxy with the same
  name stem in the same folder, and a wiped file's AppleDouble ``._NAME``;
* thumbnail caches in a folder whose media were all deleted: ``Thumbs.db``,
  ``ehthumbs.db``, ``.DS_Store``.

Camera databases and indexes that hold no pictures (``MISC/``, Canon ``*.CTG``,
Nikon ``NC_FLLST.DAT``, Sony ``AVF_INFO``/``PRIVATE/``, AVCHD indexes),
folders and anything else that was not archived stay. A DICOMDIR that cannot
be read is left and reported as a failed deletion (it may name the patient).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import pathlib
import stat
from collections.abc import Sequence
from typing import Protocol

from agent.card.model import MediaFile, MediaKind, StageError
from agent.card.reasons import Reason

_READ_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class WipeResult:
    deleted: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (relative path, why)
    housekeeping: tuple[str, ...] = ()  # removed with its media (see the module docstring)

    @property
    def complete(self) -> bool:
        return not self.failed


def sha256_of(path: pathlib.Path) -> str:
    """SHA-256 of the file's bytes as the device holds them: its cached pages
    are dropped first, so the read goes to the card, not to the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # a file system without fadvise: the read still checks the bytes
        digest = hashlib.sha256()
        while chunk := os.read(fd, _READ_CHUNK):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


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
    try:
        digest = sha256_of(media.path)
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.ENODEV, errno.ENXIO):
            raise StageError(Reason.CARD_REMOVED, f"{media.relative_path}: {exc.strerror}") from None
        return f"cannot read: {exc.strerror}"
    if digest != media.sha256:
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
    removed, not_removed = remove_housekeeping(root, media, deleted, [p for p, _ in failed])
    failed.extend(not_removed)
    folders.update((root / r).parent for r in removed)
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
    return WipeResult(tuple(deleted), tuple(failed), tuple(removed))


_THUMBNAIL_CACHES = {"thumbs.db", "ehthumbs.db", ".ds_store"}
_SIDECARS = (".thm", ".lrv")


def _regular_on_card(path: pathlib.Path, device: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_dev == device


def _dicomdir_references(path: pathlib.Path) -> list[str] | None:
    """The files a DICOMDIR refers to, as paths relative to its folder;
    None when it cannot be read as a DICOMDIR."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        records = ds.DirectoryRecordSequence
    except Exception:  # noqa: BLE001 - pydicom raises many types for bad data
        return None
    refs = []
    for record in records:
        file_id = record.get("ReferencedFileID")
        if file_id:
            parts = [file_id] if isinstance(file_id, str) else list(file_id)
            refs.append("/".join(str(p).strip() for p in parts))
    return refs


def _parent(relative: str) -> str:
    return relative.rsplit("/", 1)[0] if "/" in relative else ""


class _OnCard(Protocol):
    """A media file by its place on the card: a scanned file, or one an earlier run sent."""

    @property
    def relative_path(self) -> str: ...
    @property
    def kind(self) -> MediaKind: ...


def remove_housekeeping(root: pathlib.Path, media: Sequence[_OnCard], deleted: Sequence[str],
                        failed: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Remove the housekeeping that belongs to the deleted media (module docstring).

    Returns (removed relative paths, [(relative path, why not)]).
    """
    root = pathlib.Path(root)
    try:
        device = os.stat(root).st_dev
    except OSError:
        return [], []
    done = {r.lower() for r in deleted}
    not_done = {r.lower() for r in failed}
    failed_folders = {_parent(r) for r in not_done}
    candidates: dict[str, pathlib.Path] = {}  # relative path -> path

    def rel(path: pathlib.Path) -> str:
        return str(path.relative_to(root))

    problems: list[tuple[str, str]] = []
    for m in media:
        if m.relative_path.lower() not in done:
            continue
        media_path = root / m.relative_path
        folder, stem = media_path.parent, media_path.stem.lower()
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            lower = name.lower()
            path = folder / name
            sidecar = (lower.rsplit(".", 1)[0] == stem and "." + lower.rsplit(".", 1)[-1] in _SIDECARS)
            if sidecar or lower == "._" + media_path.name.lower():
                candidates[rel(path)] = path
            elif lower in _THUMBNAIL_CACHES and _parent(rel(path).lower()) not in failed_folders:
                candidates[rel(path)] = path
    # DICOMDIRs in the folders above wiped DICOM files (usually the card's root).
    folders = {root}
    for m in media:
        if m.relative_path.lower() in done and m.kind is MediaKind.DICOM:
            folders.update(p for p in (root / m.relative_path).parents if p == root or root in p.parents)
    for folder in folders:
        try:
            names = [n for n in os.listdir(folder) if n.lower() == "dicomdir"]
        except OSError:
            continue
        for name in names:
            path = folder / name
            if not _regular_on_card(path, device):
                continue
            refs = _dicomdir_references(path)
            if refs is None:
                problems.append((rel(path), "a DICOMDIR that cannot be read; it may still name the patient"))
                continue
            base = "" if folder == root else rel(folder).lower() + "/"
            targets = [base + r.lower() for r in refs]
            if any(t in not_done for t in targets):
                continue  # its media are still there: so is the index
            if not any(t in done for t in targets):
                continue  # indexes other files, none of them ours
            if all(t in done or not os.path.lexists(folder / r) for t, r in zip(targets, refs)):
                candidates[rel(path)] = path
    removed: list[str] = []
    for relative, path in sorted(candidates.items()):
        if relative.lower() in done or not _regular_on_card(path, device):
            continue
        try:
            os.unlink(path)
        except OSError as exc:
            problems.append((relative, exc.strerror or str(exc)))
            continue
        removed.append(relative)
    return removed, problems
