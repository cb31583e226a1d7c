"""The blob store interface: content-addressed blobs and resumable uploads.

A *blob* is stored under its lowercase hex SHA-256 at the key
``ab/cd/<sha256>`` (below the store's root or prefix). A *partial upload* is one
session's upload of one blob (:class:`PartialKey`), so concurrent sessions never
see each other's bytes. What ``commit`` stores is verified against its name
first: a blob is never under a name its bytes do not hash to.

Backends: :mod:`.folder` (a local or mounted directory) and :mod:`.s3` (an
S3-compatible object store, multipart uploads). The ingest service, the
catalogue (``archive_server.blobs``) and fsck use only this interface.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple, Protocol

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SESSION = re.compile(r"^[0-9a-f-]{36}$")
# What a key below the root may be; anything else is a foreign object (fsck
# reports it and never touches it).
BLOB_KEY = re.compile(r"^(?P<a>[0-9a-f]{2})/(?P<b>[0-9a-f]{2})/(?P<sha>(?P=a)(?P=b)[0-9a-f]{60})$")
PARTIAL_DIR = "partial"
QUARANTINE_DIR = "quarantine"


class PartialKey(NamedTuple):
    """One session's upload of one blob."""

    session_id: str
    sha256: str


class BlobStat(NamedTuple):
    size: int
    modified: float  # seconds since the epoch


class StoredObject(NamedTuple):
    """An object found under the store's root by :meth:`BlobStore.iterate`.
    ``sha256`` is set for blobs at their content-addressed key, None otherwise;
    ``kind`` is "blob", "partial", "quarantine" or "foreign"."""

    key: str
    kind: str
    sha256: str | None
    size: int
    modified: float


class BlobWriter(Protocol):
    """One stream of chunks into a partial upload (a Write call). Used as a
    context manager; leaving it without ``commit`` keeps what is durable."""

    @property
    def committed_size(self) -> int:
        """Bytes of the partial that are durable (survive this process)."""

    @property
    def offset(self) -> int:
        """Where the next ``write`` must start: the committed size plus bytes
        this writer holds that are not durable yet."""

    def write(self, offset: int, data: bytes) -> None:
        """Append ``data`` at ``offset``. Any other offset than ``self.offset``
        raises OutOfRange naming the committed size (resume from there)."""

    def commit(self, sha256: str, size: int) -> str:
        """Make the upload durable, verify it hashes to ``sha256`` and has
        ``size`` bytes, and store it under its content-addressed key. On a
        mismatch the partial is discarded and DataLoss raised. Returns the key."""

    def __enter__(self) -> "BlobWriter": ...

    def __exit__(self, *exc: object) -> None: ...


class BlobStore(Protocol):
    """What the archive needs from blob storage."""

    url: str

    def storage_key(self, sha256: str) -> str:
        """The blob's key within the store (``ab/cd/<sha256>``)."""

    def stat(self, sha256: str) -> BlobStat | None:
        """Size and time of the stored blob; None when it is not there."""

    def open(self, sha256: str) -> BinaryIO:
        """The stored blob for reading; raises NotFound."""

    def committed_size(self, key: PartialKey) -> int:
        """Durable bytes of this session's upload of this blob (0 if none)."""

    def begin_write(self, key: PartialKey) -> BlobWriter:
        """A writer that resumes the partial upload at its committed size."""

    def discard(self, key: PartialKey) -> None:
        """Forget a partial upload (no error when there is none)."""

    def discard_session(self, session_id: str) -> None:
        """Forget every partial upload of a session."""

    def sweep_partials(self, max_age_s: float) -> int:
        """Delete partial uploads untouched for ``max_age_s``; returns how many."""

    def delete(self, sha256: str) -> bool:
        """Remove a stored blob durably. True when it was there. The caller
        (the catalogue's purge protocol) decides that nothing uses it."""

    def quarantine(self, sha256: str) -> str | None:
        """Move a stored blob that failed verification out of its name (to
        ``quarantine/``), so that an upload of the real bytes can replace it.
        Returns the new key, None when it was not there."""

    def iterate(self) -> Iterator[StoredObject]:
        """Every object under the root, blobs in SHA-256 order first."""

    def check(self) -> None:
        """Raise Unavailable when the store cannot serve (health check)."""


def check_sha(sha256: str) -> None:
    if not SHA256.match(sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")


def check_session(session_id: str) -> None:
    if not SESSION.match(session_id):
        raise ValueError(f"bad session id for a partial upload: {session_id!r}")


def blob_key(sha256: str) -> str:
    check_sha(sha256)
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def classify(key: str) -> tuple[str, str | None]:
    """(kind, sha256) of a key below the root; see :class:`StoredObject`."""
    m = BLOB_KEY.match(key)
    if m:
        return "blob", m["sha"]
    head, _, rest = key.partition("/")
    if head == PARTIAL_DIR and rest:
        return "partial", None
    if head == QUARANTINE_DIR and rest:
        return "quarantine", None
    return "foreign", None
