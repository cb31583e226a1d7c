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

The card is hostile (a watched folder anyone may write, a card built to trick
us): every path is walked from a descriptor of the card's root, one name at a
time, with ``O_NOFOLLOW`` (a folder swapped for a symlink is refused, never
followed) and only on the root's file system. The check and the deletion go
through the *same* held folder descriptors, and each file is unlinked with
``unlinkat`` relative to its folder's descriptor only if it is still the inode
that was hashed, so a folder renamed or swapped after the check cannot send a
deletion outside the card.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import os
import pathlib
import stat
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from agent.card.model import MediaFile, MediaKind, StageError
from agent.card.reasons import Reason

_READ_CHUNK = 1 << 20
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_GONE = (errno.EIO, errno.ENODEV, errno.ENXIO)


@dataclasses.dataclass(frozen=True)
class WipeResult:
    deleted: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (relative path, why)
    housekeeping: tuple[str, ...] = ()  # removed with its media (see the module docstring)

    @property
    def complete(self) -> bool:
        return not self.failed


class NotOnCard(OSError):
    """A folder on the way is a symlink, not a folder, or on another file system."""


def _split(relative: str) -> tuple[str, str]:
    """``a/b/c.jpg`` -> (``a/b``, ``c.jpg``); refuses what could leave the folder."""
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise NotOnCard(errno.EINVAL, f"not a plain path on the card: {relative!r}")
    return "/".join(parts[:-1]), parts[-1]


# Files checked at once before the wipe (see check_media).
_CHECK_THREADS = 3


class CardTree:
    """The card's folders held open, each reached from the root's descriptor one
    name at a time (``O_NOFOLLOW``, ``O_DIRECTORY``, same device as the root).
    Use as a context manager; every descriptor is closed on exit."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = pathlib.Path(root)
        # The root itself is the mount point (or the folder) the caller named.
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        self.device = os.fstat(self._root_fd).st_dev
        self._fds: dict[str, int] = {"": self._root_fd}
        self._lock = threading.RLock()  # check_media hashes files on several threads

    def __enter__(self) -> CardTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def folder(self, relative: str) -> int:
        """The held descriptor of a folder (``""``: the root). Raises NotOnCard or OSError."""
        with self._lock:
            return self._folder(relative)

    def _folder(self, relative: str) -> int:
        fd = self._fds.get(relative)
        if fd is not None:
            return fd
        parent, name = _split(relative)
        parent_fd = self.folder(parent)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise NotOnCard(exc.errno, f"{relative} is not a folder (a symlink?)") from None
            raise
        if os.fstat(fd).st_dev != self.device:
            os.close(fd)
            raise NotOnCard(errno.EXDEV, f"{relative} is another file system mounted on the card")
        self._fds[relative] = fd
        return fd

    def lstat(self, relative: str) -> os.stat_result:
        parent, name = _split(relative)
        return os.stat(name, dir_fd=self.folder(parent), follow_symlinks=False)

    @contextlib.contextmanager
    def open_file(self, relative: str) -> Iterator[int]:
        """A regular file of the card, opened without following a symlink."""
        parent, name = _split(relative)
        fd = os.open(name, _FILE_FLAGS, dir_fd=self.folder(parent))
        try:
            yield fd
        finally:
            os.close(fd)

    def listdir(self, relative: str) -> list[str]:
        return os.listdir(self.folder(relative))

    def unlink(self, relative: str, expected: os.stat_result | None = None) -> None:
        """Delete a file relative to its held folder; with ``expected`` only if it
        is still that inode (raises NotOnCard otherwise)."""
        parent, name = _split(relative)
        folder = self.folder(parent)
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != self.device or (
                expected is not None and _identity(st) != _identity(expected)):
            raise NotOnCard(errno.ESTALE, "replaced since it was checked")
        os.unlink(name, dir_fd=folder)

    def fsync(self, relative: str) -> None:
        try:
            os.fsync(self.folder(relative))
        except OSError:
            pass  # some card file systems (vfat on some kernels) refuse dir fsync


def _identity(st: os.stat_result) -> tuple[int, ...]:
    # The inode number alone is not enough: a file deleted and another created
    # in its place often gets the same number; its change time differs.
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _hash_fd(fd: int) -> str:
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass  # a file system without fadvise: the read still checks the bytes
    digest = hashlib.sha256()
    while chunk := os.read(fd, _READ_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: pathlib.Path) -> str:
    """SHA-256 of the file's bytes as the device holds them: its cached pages
    are dropped first, so the read goes to the card, not to the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC)
    try:
        return _hash_fd(fd)
    finally:
        os.close(fd)


def _unchanged(tree: CardTree, media: MediaFile) -> tuple[str | None, os.stat_result | None]:
    """(why the file on the card is no longer what was scanned, or None; the inode checked)."""
    rel = media.relative_path
    try:
        st = tree.lstat(rel)
        if not stat.S_ISREG(st.st_mode):
            return "no longer a regular file", None
        if st.st_size != media.size or st.st_mtime_ns != media.mtime_ns:
            return "size or modification time changed", None
        with tree.open_file(rel) as fd:
            opened = os.fstat(fd)
            if _identity(opened) != _identity(st):
                return "replaced while it was checked", None
            digest = _hash_fd(fd)
    except NotOnCard as exc:
        return f"a folder on its path changed: {exc.strerror}", None
    except FileNotFoundError:
        return "file is gone", None
    except OSError as exc:
        if exc.errno in _GONE:
            raise StageError(Reason.CARD_REMOVED, f"{rel}: {exc.strerror}") from None
        if exc.errno == errno.ELOOP:
            return "no longer a regular file", None
        return f"cannot read: {exc.strerror}", None
    if digest != media.sha256:
        return "content changed", None
    return None, st


def check_media(tree: CardTree, media: Sequence[MediaFile]) -> dict[str, os.stat_result]:
    """The inode of every file as checked; raises CARD_REMOVED or CARD_CHANGED unless
    every file is as scanned."""
    checked: dict[str, os.stat_result] = {}
    changed: list[tuple[str, str]] = []
    # Several files read and hashed at once (hashlib and reads release the GIL):
    # the card reader and both cores work, instead of one file after another.
    with concurrent.futures.ThreadPoolExecutor(max_workers=_CHECK_THREADS,
                                               thread_name_prefix="wipe-check") as pool:
        results = list(pool.map(lambda m: _unchanged(tree, m), media))
    for m, (why, st) in zip(media, results):
        if why is not None or st is None:
            changed.append((m.relative_path, why or "not checked"))
        else:
            checked[m.relative_path] = st
    if media and len(changed) == len(media) and all(why == "file is gone" for _, why in changed):
        # Every file vanished at once: the card was pulled (the empty mount
        # point stays behind) or another, empty card sits in the slot.
        raise StageError(Reason.CARD_REMOVED, f"none of the {len(media)} media files is on {tree.root} any more")
    if changed:
        detail = "; ".join(f"{path}: {why}" for path, why in changed)
        raise StageError(Reason.CARD_CHANGED, detail)
    return checked


@contextlib.contextmanager
def _open_card(root: pathlib.Path) -> Iterator[CardTree]:
    try:
        tree = CardTree(root)
    except OSError as exc:
        raise StageError(Reason.CARD_REMOVED, f"{root} is no longer there ({exc.strerror})") from None
    with tree:
        yield tree


def check_card_unchanged(root: pathlib.Path, media: Sequence[MediaFile]) -> None:
    """Raise CARD_REMOVED or CARD_CHANGED unless every file is as scanned."""
    with _open_card(root) as tree:
        check_media(tree, media)


def wipe(root: pathlib.Path, media: Sequence[MediaFile]) -> WipeResult:
    """Delete the given (archived, verified) media files from the card.

    Raises StageError before deleting anything if the card changed since the
    scan. Failures during deletion are collected, not raised: what is deleted
    is already safe in the archive, and staff must learn what is left.
    """
    with _open_card(root) as tree:
        checked = check_media(tree, media)
        return delete_checked(tree, media, checked)


def delete_checked(tree: CardTree, media: Sequence[MediaFile],
                   checked: dict[str, os.stat_result]) -> WipeResult:
    """The deleting half of :func:`wipe`, through the folders the check held open:
    a file is unlinked only if it is still the inode that was hashed."""
    deleted: list[str] = []
    failed: list[tuple[str, str]] = []
    folders: set[str] = set()
    for m in media:
        try:
            tree.unlink(m.relative_path, checked[m.relative_path])
        except OSError as exc:
            failed.append((m.relative_path, exc.strerror or str(exc)))
            continue
        deleted.append(m.relative_path)
        folders.add(_parent(m.relative_path))
    removed, not_removed = _remove_housekeeping(tree, media, deleted, [p for p, _ in failed])
    failed.extend(not_removed)
    folders.update(_parent(r) for r in removed)
    for folder in folders:
        tree.fsync(folder)  # the deletions durable before staff hear the card is empty
    return WipeResult(tuple(deleted), tuple(failed), tuple(removed))


_THUMBNAIL_CACHES = {"thumbs.db", "ehthumbs.db", ".ds_store"}
_SIDECARS = (".thm", ".lrv")


def _regular_on_card(tree: CardTree, relative: str) -> bool:
    try:
        st = tree.lstat(relative)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_dev == tree.device


def _exists(tree: CardTree, relative: str) -> bool:
    """Something is at ``relative`` (anything odd on the way counts as something)."""
    try:
        tree.lstat(relative)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def _dicomdir_references(tree: CardTree, relative: str) -> list[str] | None:
    """The files a DICOMDIR refers to, as paths relative to its folder;
    None when it cannot be read as a DICOMDIR."""
    import pydicom

    try:
        with tree.open_file(relative) as fd, os.fdopen(os.dup(fd), "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
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


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


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
    try:
        tree = CardTree(root)
    except OSError:
        return [], []
    with tree:
        return _remove_housekeeping(tree, media, deleted, failed)


def _remove_housekeeping(tree: CardTree, media: Sequence[_OnCard], deleted: Sequence[str],
                         failed: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    done = {r.lower() for r in deleted}
    not_done = {r.lower() for r in failed}
    failed_folders = {_parent(r) for r in not_done}
    candidates: set[str] = set()
    problems: list[tuple[str, str]] = []
    for m in media:
        if m.relative_path.lower() not in done:
            continue
        folder, media_name = _parent(m.relative_path), m.relative_path.rsplit("/", 1)[-1]
        stem = media_name.rsplit(".", 1)[0].lower() if "." in media_name else media_name.lower()
        try:
            names = tree.listdir(folder)
        except OSError:
            continue
        for name in names:
            lower = name.lower()
            sidecar = "." in lower and lower.rsplit(".", 1)[0] == stem and "." + lower.rsplit(".", 1)[-1] in _SIDECARS
            if sidecar or lower == "._" + media_name.lower():
                candidates.add(_join(folder, name))
            elif lower in _THUMBNAIL_CACHES and folder.lower() not in failed_folders:
                candidates.add(_join(folder, name))
    # DICOMDIRs in the folders above wiped DICOM files (usually the card's root).
    folders = {""}
    for m in media:
        if m.relative_path.lower() in done and m.kind is MediaKind.DICOM:
            parts = m.relative_path.split("/")[:-1]
            folders.update("/".join(parts[:i]) for i in range(len(parts) + 1))
    for folder in sorted(folders):
        try:
            names = [n for n in tree.listdir(folder) if n.lower() == "dicomdir"]
        except OSError:
            continue
        for name in names:
            relative = _join(folder, name)
            if not _regular_on_card(tree, relative):
                continue
            refs = _dicomdir_references(tree, relative)
            if refs is None:
                problems.append((relative, "a DICOMDIR that cannot be read; it may still name the patient"))
                continue
            base = folder.lower() + "/" if folder else ""
            targets = [base + r.lower() for r in refs]
            if any(t in not_done for t in targets):
                continue  # its media are still there: so is the index
            if not any(t in done for t in targets):
                continue  # indexes other files, none of them ours
            if all(t in done or not _exists(tree, _join(folder, r)) for t, r in zip(targets, refs)):
                candidates.add(relative)
    removed: list[str] = []
    for relative in sorted(candidates):
        if relative.lower() in done or not _regular_on_card(tree, relative):
            continue
        try:
            tree.unlink(relative)
        except OSError as exc:
            problems.append((relative, exc.strerror or str(exc)))
            continue
        removed.append(relative)
    return removed, problems
