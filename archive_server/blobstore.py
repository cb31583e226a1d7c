"""Blob storage: content-addressed, with resumable per-session partial uploads.

The interface (:class:`BlobStore`) is small so that an S3-compatible backend
can sit beside the filesystem one (:class:`FileBlobStore`); :func:`open_blobstore`
picks the backend from the URL. A partial upload is keyed by (session id,
sha256), so concurrent sessions never see each other's bytes.

Filesystem layout under the root::

    ab/cd/abcd…            a stored blob, named by its SHA-256
    partial/<session>/<sha256>   bytes received so far for one session

Nothing holds a whole blob in memory: chunks are appended as they arrive and
the hash is computed by re-reading the fsync'ed partial file at commit
(correctness first: the verified bytes are the bytes on disk).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import pathlib
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple, Protocol

from archive_server.errors import ConfigError, DataLoss, NotFound, OutOfRange, Unavailable

_BLOCK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SESSION = re.compile(r"^[0-9a-f-]{36}$")


class PartialKey(NamedTuple):
    """One session's upload of one blob."""

    session_id: str
    sha256: str


class BlobStore(Protocol):
    """What the ingest service needs from blob storage."""

    url: str

    def has(self, sha256: str) -> bool:
        """True when the blob is stored under its final name."""

    def open(self, sha256: str) -> BinaryIO:
        """The stored blob for reading; raises NotFound."""

    def storage_key(self, sha256: str) -> str:
        """The blob's key within the store (stable, backend specific)."""

    def partial_size(self, key: PartialKey) -> int:
        """Bytes received so far for this session's upload of this blob (0 if none)."""

    def append(self, key: PartialKey, offset: int, data: bytes) -> int:
        """Append ``data`` at ``offset``, which must equal the current partial
        size (else OutOfRange naming it). Returns the new partial size."""

    def flush(self, key: PartialKey) -> None:
        """Make the partial bytes received so far durable."""

    def commit(self, key: PartialKey, sha256: str, size: int) -> str:
        """Make the partial durable, verify it hashes to ``sha256`` and has
        ``size`` bytes, and store it under its final name. On a mismatch the
        partial is deleted and DataLoss raised. Returns the storage key."""

    def discard(self, key: PartialKey) -> None:
        """Forget a partial upload (no error when there is none)."""

    def discard_session(self, session_id: str) -> None:
        """Forget every partial upload of a session."""

    def sweep_partials(self, max_age_s: float) -> int:
        """Delete partial uploads untouched for ``max_age_s``; returns how many."""

    def delete(self, sha256: str) -> bool:
        """Remove a stored blob durably (purge, R19). True when it was there,
        False when it was absent; ValueError for a malformed digest. The caller
        decides that no case references it any more."""

    def check(self) -> None:
        """Raise Unavailable when the store cannot serve (health check)."""


def open_blobstore(url: str) -> BlobStore:
    """``file:///path``, or a plain path, gives a FileBlobStore. ``s3://bucket/prefix``
    is reserved for the object-store backend (not implemented yet)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        path = urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else url
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"blob URL must be file:///absolute/path, got {url!r}")
        return FileBlobStore(pathlib.Path(path))
    if parsed.scheme == "s3":
        # The place for an S3 backend: multipart uploads keyed by PartialKey,
        # objects at <prefix>/ab/cd/<sha256>, verification by re-reading or a
        # checksum header. Not needed yet.
        raise ConfigError("s3:// blob stores are not implemented yet; use file:///path")
    raise ConfigError(f"unsupported blob store URL {url!r} (use file:///path)")


class FileBlobStore:
    """Blobs in a local (or mounted) directory; see the module docstring."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)
        (self.root / "partial").mkdir(exist_ok=True, mode=0o750)

    # -- stored blobs -------------------------------------------------------------

    def storage_key(self, sha256: str) -> str:
        _check_sha(sha256)
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def path(self, sha256: str) -> pathlib.Path:
        return self.root / self.storage_key(sha256)

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

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
        # A directory of the store replaced by a symlink would lead elsewhere.
        if not pathlib.Path(os.path.realpath(path.parent)).is_relative_to(self.root):
            raise ValueError(f"refusing to delete blob {sha256}: its directory leads outside the store")
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

    # -- partial uploads ----------------------------------------------------------

    def partial_path(self, key: PartialKey) -> pathlib.Path:
        _check_sha(key.sha256)
        if not _SESSION.match(key.session_id):
            raise ValueError(f"bad session id for a partial upload: {key.session_id!r}")
        return self.root / "partial" / key.session_id / key.sha256

    def partial_size(self, key: PartialKey) -> int:
        try:
            return self.partial_path(key).stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, key: PartialKey, offset: int, data: bytes) -> int:
        path = self.partial_path(key)
        with _storage_errors(), self._locked(path, create=True) as fd:
            size = os.fstat(fd).st_size
            if offset != size:
                raise OutOfRange(f"write at offset {offset}, but the committed size is {size}", size)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            return size + len(data)

    def flush(self, key: PartialKey) -> None:
        path = self.partial_path(key)
        with _storage_errors():
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def commit(self, key: PartialKey, sha256: str, size: int) -> str:
        _check_sha(sha256)
        path = self.partial_path(key)
        with _storage_errors(), self._locked(path, create=(size == 0)) as fd:
            os.fsync(fd)
            digest = hashlib.sha256()
            stored = 0
            while True:
                block = os.pread(fd, _BLOCK, stored)
                if not block:
                    break
                digest.update(block)
                stored += len(block)
            if stored != size or digest.hexdigest() != sha256:
                path.unlink(missing_ok=True)
                what = (f"{stored} bytes received, {size} declared" if stored != size
                        else f"received bytes hash to {digest.hexdigest()}")
                raise DataLoss(f"blob {sha256}: {what}; the partial upload was discarded, send it again")
            final = self.path(sha256)
            _makedirs_durably(final.parent, self.root)
            os.replace(path, final)
            _fsync_dir(final.parent)
        return self.storage_key(sha256)

    def discard(self, key: PartialKey) -> None:
        with _storage_errors():
            self.partial_path(key).unlink(missing_ok=True)

    def discard_session(self, session_id: str) -> None:
        if not _SESSION.match(session_id):
            raise ValueError(f"bad session id: {session_id!r}")
        with _storage_errors():
            shutil.rmtree(self.root / "partial" / session_id, ignore_errors=True)

    def sweep_partials(self, max_age_s: float) -> int:
        cutoff = time.time() - max_age_s
        removed = 0
        for session_dir in (self.root / "partial").iterdir():
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

    @contextlib.contextmanager
    def _locked(self, path: pathlib.Path, *, create: bool) -> Iterator[int]:
        """An fd of ``path`` under an exclusive flock: appends and the commit of
        one partial never interleave, even across server processes."""
        flags = os.O_RDWR | os.O_APPEND
        if create:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            flags |= os.O_CREAT
        while True:
            try:
                fd = os.open(path, flags, 0o600)
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
                yield fd
                return
            finally:
                os.close(fd)


def _check_sha(sha256: str) -> None:
    if not _SHA256.match(sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")


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
            d.mkdir(mode=0o750)
        except FileExistsError:
            continue
        _fsync_dir(d.parent)


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """Storage that fails (full, read-only, I/O error) cannot serve now."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.ENOENT):
            raise Unavailable(f"blob store cannot serve: {e}") from e
        raise
