"""Blobs in a local (or mounted) directory.

Layout under the root::

    ab/cd/abcd…                  a stored blob, named by its SHA-256
    partial/<session>/<sha256>   bytes received so far for one session's upload
    quarantine/<sha256>.<time>   a stored blob that failed verification (fsck --repair)

Chunks are appended to the partial file as they arrive (flock'ed, so two
writers of one partial never interleave, also across processes on one host);
a writer fsyncs what it received when it ends. The writer hashes each chunk as
it appends it, and reads back from the file only the bytes it did not append
itself (an earlier Write's part of a resumed upload, another writer's chunks):
the digest is always of the partial file's bytes, in their order, without
reading a whole blob back after it arrived. ``commit`` fsyncs the partial,
checks its size and that digest, renames it to its final name and fsyncs the
directory. Nothing holds a whole blob in memory.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import pathlib
import shutil
import time
from collections.abc import Iterator
from typing import BinaryIO

from archive_server.blobstores.base import (
    PARTIAL_DIR,
    QUARANTINE_DIR,
    BlobStat,
    PartialKey,
    StoredObject,
    blob_key,
    check_session,
    check_sha,
    classify,
)
from archive_server.errors import DataLoss, NotFound, OutOfRange, Unavailable
from archive_server.localfiles import modes, new_folder, private_dir

_BLOCK = 1 << 20


class FolderBlobStore:
    """See the module docstring."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()
        private_dir(self.root)  # 0700 and blobs 0600, whatever the umask (issue 13)
        private_dir(self.root / PARTIAL_DIR)

    # -- stored blobs -------------------------------------------------------------

    def storage_key(self, sha256: str) -> str:
        return blob_key(sha256)

    def path(self, sha256: str) -> pathlib.Path:
        return self.root / self.storage_key(sha256)

    def stat(self, sha256: str) -> BlobStat | None:
        with _storage_errors():
            try:
                st = os.stat(self.path(sha256))
            except FileNotFoundError:
                return None
        return BlobStat(st.st_size, st.st_mtime)

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self.path(sha256), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is not in the store") from None

    def delete(self, sha256: str) -> bool:
        # The digest is validated before any path is built from it, so nothing
        # outside ab/cd/<sha256> under the root can be named. unlink() removes a
        # symlink planted there, never its target.
        path = self.path(sha256)
        self._inside(path, f"refusing to delete blob {sha256}")
        with _storage_errors():
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            # The unlink is durable only once the directory entry is gone on disk.
            _fsync_dir(path.parent)
        # The emptied ab/cd directories stay: removing them could race a commit
        # of another blob that has just created them (os.replace would fail).
        return True

    def quarantine(self, sha256: str) -> str | None:
        path = self.path(sha256)
        self._inside(path, f"refusing to quarantine blob {sha256}")
        key = f"{QUARANTINE_DIR}/{sha256}.{time.time_ns()}"
        target = self.root / key
        with _storage_errors():
            new_folder(target.parent, exist_ok=True)
            try:
                os.rename(path, target)
            except FileNotFoundError:
                return None
            _fsync_dir(path.parent)
            _fsync_dir(target.parent)
        return key

    def iterate(self) -> Iterator[StoredObject]:
        # ab/cd/<sha> sorted level by level is SHA-256 order.
        for first in sorted(os.listdir(self.root)):
            top = self.root / first
            if first in (PARTIAL_DIR, QUARANTINE_DIR) or not top.is_dir() or top.is_symlink():
                continue
            for second in sorted(os.listdir(top)):
                mid = top / second
                if not mid.is_dir() or mid.is_symlink():
                    yield self._object(f"{first}/{second}", mid)
                    continue
                for name in sorted(os.listdir(mid)):
                    yield self._object(f"{first}/{second}/{name}", mid / name)
        for special in (PARTIAL_DIR, QUARANTINE_DIR):
            base = self.root / special
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames.sort()
                for name in sorted(filenames):
                    p = pathlib.Path(dirpath) / name
                    yield self._object(str(p.relative_to(self.root)), p)
        for name in sorted(os.listdir(self.root)):
            p = self.root / name
            if p.is_file() or p.is_symlink():
                yield self._object(name, p)

    def _object(self, key: str, path: pathlib.Path) -> StoredObject:
        kind, sha = classify(key)
        if path.is_symlink() or not path.is_file():
            kind, sha = "foreign", None
        try:
            st = path.lstat()
        except FileNotFoundError:  # removed while we walked (safe while serving)
            return StoredObject(key, kind, sha, 0, 0.0)
        return StoredObject(key, kind, sha, st.st_size, st.st_mtime)

    # -- partial uploads ----------------------------------------------------------

    def partial_path(self, key: PartialKey) -> pathlib.Path:
        check_sha(key.sha256)
        check_session(key.session_id)
        return self.root / PARTIAL_DIR / key.session_id / key.sha256

    def committed_size(self, key: PartialKey) -> int:
        try:
            return self.partial_path(key).stat().st_size
        except FileNotFoundError:
            return 0

    def begin_write(self, key: PartialKey) -> "FolderWriter":
        return FolderWriter(self, key)

    def discard(self, key: PartialKey) -> None:
        with _storage_errors():
            self.partial_path(key).unlink(missing_ok=True)

    def discard_session(self, session_id: str) -> None:
        check_session(session_id)
        with _storage_errors():
            shutil.rmtree(self.root / PARTIAL_DIR / session_id, ignore_errors=True)

    def sweep_partials(self, max_age_s: float) -> int:
        cutoff = time.time() - max_age_s
        removed = 0
        for session_dir in (self.root / PARTIAL_DIR).iterdir():
            if not session_dir.is_dir():
                continue
            for f in session_dir.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if f.stat().st_mtime < cutoff:
                        f.unlink()
                        removed += 1
            with contextlib.suppress(OSError):
                session_dir.rmdir()  # only when empty
        return removed

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise Unavailable(f"blob store {self.root} is not a writable directory")

    # -- helpers ------------------------------------------------------------------

    def _inside(self, path: pathlib.Path, what: str) -> None:
        # A directory of the store replaced by a symlink would lead elsewhere.
        if not pathlib.Path(os.path.realpath(path.parent)).is_relative_to(self.root):
            raise ValueError(f"{what}: its directory leads outside the store")

    @contextlib.contextmanager
    def locked(self, path: pathlib.Path, *, create: bool) -> Iterator[int]:
        """An fd of ``path`` under an exclusive flock: appends and the commit of
        one partial never interleave, even across server processes."""
        flags = os.O_RDWR | os.O_APPEND
        if create:
            private_dir(path.parent, tighten=False)
            flags |= os.O_CREAT
        while True:
            try:
                fd = os.open(path, flags, modes().file)
            except FileNotFoundError:
                raise DataLoss(f"no bytes of blob {path.name} were received in this session; "
                               "send it from offset 0") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # While we waited for the lock, another writer may have committed
                # (renamed) or discarded this partial: then the fd names a stored
                # blob or a deleted file, and must not be written. Open again.
                try:
                    current = os.stat(path).st_ino
                except FileNotFoundError:
                    current = None
                if current != os.fstat(fd).st_ino:
                    continue
                if create:
                    modes().own(fd)  # the umask may have taken the group's read away
                yield fd
                return
            finally:
                os.close(fd)


class FolderWriter:
    """A Write stream into ``partial/<session>/<sha256>``. Every appended byte
    is in the file at once (durable after the fsync at the end), so the offset
    is the file's size."""

    def __init__(self, store: FolderBlobStore, key: PartialKey) -> None:
        self.store = store
        self.key = key
        self.path = store.partial_path(key)
        self._done = False
        # The SHA-256 of the first ``_hashed`` bytes of the partial file held
        # open as ``_file`` (see the module docstring).
        self._digest = hashlib.sha256()
        self._hashed = 0
        self._file: int | None = None

    def _hash_file(self, fd: int) -> tuple[int, "hashlib._Hash"]:
        """The partial's size and the digest of all its bytes, reading only what
        this writer has not hashed yet (under the lock: nothing appends meanwhile).
        Partials are append-only; one removed and begun anew (a sweep, a discard)
        is another file, hashed from its start. The file hashed so far is held
        open, so that its inode number cannot be taken by a new file meanwhile."""
        st = os.fstat(fd)
        if self._file is None or not os.path.samestat(st, os.fstat(self._file)) or st.st_size < self._hashed:
            self._close_file()
            # Opened anew, not dup'ed: a duplicate of the locked descriptor would hold its flock.
            self._file = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            if not os.path.samestat(st, os.fstat(self._file)):  # cannot be while we hold the lock
                raise DataLoss(f"partial upload {self.path.name} changed while it was written; send it again")
            self._digest, self._hashed = hashlib.sha256(), 0
        while self._hashed < st.st_size:
            block = os.pread(fd, min(_BLOCK, st.st_size - self._hashed), self._hashed)
            if not block:
                break
            self._digest.update(block)
            self._hashed += len(block)
        return st.st_size, self._digest

    @property
    def committed_size(self) -> int:
        return self.store.committed_size(self.key)

    @property
    def offset(self) -> int:
        return self.committed_size

    def write(self, offset: int, data: bytes) -> None:
        with _storage_errors(), self.store.locked(self.path, create=True) as fd:
            size = os.fstat(fd).st_size
            if offset != size:
                raise OutOfRange(f"write at offset {offset}, but the committed size is {size}", size)
            self._hash_file(fd)  # catches up on bytes appended by others (normally none)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                # Hashed as appended: the digest never runs ahead of the file.
                self._digest.update(view[:written])
                self._hashed += written
                view = view[written:]

    def commit(self, sha256: str, size: int) -> str:
        check_sha(sha256)
        self._done = True
        with _storage_errors(), self.store.locked(self.path, create=(size == 0)) as fd:
            os.fsync(fd)
            stored, digest = self._hash_file(fd)
            if stored != size or digest.hexdigest() != sha256:
                self.path.unlink(missing_ok=True)
                what = (f"{stored} bytes received, {size} declared" if stored != size
                        else f"received bytes hash to {digest.hexdigest()}")
                raise DataLoss(f"blob {sha256}: {what}; the partial upload was discarded, send it again")
            final = self.store.path(sha256)
            _makedirs_durably(final.parent, self.store.root)
            os.replace(self.path, final)
            _fsync_dir(final.parent)
        return self.store.storage_key(sha256)

    def __enter__(self) -> "FolderWriter":
        return self

    def _close_file(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def __exit__(self, *exc: object) -> None:
        self._close_file()
        if self._done:
            return
        # Whatever was received stays resumable across a crash (the committed
        # size should not go backwards).
        with _storage_errors():
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durably(path: pathlib.Path, root: pathlib.Path) -> None:
    """Create ``path`` (below ``root``) and fsync each parent whose entries changed."""
    missing = []
    p = path
    while p != root and not p.is_dir():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            new_folder(d)
        except FileExistsError:
            continue
        _fsync_dir(d.parent)


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """Storage that fails (full, read-only, I/O error) cannot serve now."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES,
                       errno.ENOENT):
            raise Unavailable(f"blob store cannot serve: {e}") from e
        raise
