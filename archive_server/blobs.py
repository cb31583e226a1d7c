"""The blob catalogue: ``blobs`` rows against the bytes in the blob store.

Rules kept here (issue 13):

* A row is never proof that a blob exists. A blob is *confirmed* only when
  its row says "stored" and the store has the bytes at their size
  (:func:`confirmed`); FindMissingBlobs, Write and CommitSession ask this, so
  a blob lost from the store is reported missing and uploaded again.
* Bytes another card sent stand for a session's file only once hashed
  (:func:`whole`): a rotten copy (same size, other bytes) is quarantined and
  so missing, and the card at hand sends it again before it is wiped.
* Purge (R19) and adoption of the same bytes never interleave. The row is the
  lock: a purge marks the rows of unused blobs "purging" (a tombstone) in its
  transaction, then deletes each blob's bytes and row while holding that row
  locked (:func:`finish_purge`). Recording an upload (:func:`record`) locks the
  same row, refuses a tombstoned blob (ABORTED: retry), and checks the bytes
  are there before it commits. Either the purge deleted the bytes first and
  the upload finds them gone (DATA_LOSS: send again), or the upload's row is
  committed first and no purge of that blob is in progress.
* CommitSession takes the rows of its blobs with a shared lock
  (:func:`lock_stored`), so a purge cannot tombstone a blob a new case is
  about to use.
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from archive_server import faults
from archive_server.blobstores import BlobStore, PartialKey
from archive_server.db import Database, retry_on_conflict
from archive_server.errors import Aborted, DataLoss, NotFound
from archive_server.models import Blob, Consent, MediaItem, SessionBlob, TeachingItem, utcnow

log = logging.getLogger(__name__)
_BLOCK = 1 << 20

STORED = "stored"
PURGING = "purging"


_BLOBS = cast(sa.Table, Blob.__table__)  # the mapped classes' tables, for plain statements
_SESSION_BLOBS = cast(sa.Table, SessionBlob.__table__)
_LOCK_BLOB = (sa.select(_BLOBS.c.state).where(_BLOBS.c.sha256 == sa.bindparam("sha256"))
              .with_for_update())
_INSERT_BLOB = sa.insert(_BLOBS)
_SENT = sa.select(_SESSION_BLOBS.c.sha256).where(_SESSION_BLOBS.c.session_id == sa.bindparam("session_id"),
                                                _SESSION_BLOBS.c.sha256 == sa.bindparam("sha256"))
_INSERT_SENT = sa.insert(_SESSION_BLOBS)


def present(blobs: BlobStore, sha: str, size: int) -> bool:
    """The store holds the blob at its recorded size (one stat / HEAD)."""
    found = blobs.stat(sha)
    if found is not None and found.size == size:
        return True
    log.error("a blob recorded as stored is not in the blob store" if found is None
              else "a stored blob has the wrong size", extra={
                  "sha256": sha, "size": size, "found_size": found.size if found else None})
    return False


def confirmed(db: Database, blobs: BlobStore, shas: Iterable[str]) -> set[str]:
    """Those of ``shas`` recorded as stored whose bytes the store holds."""
    wanted = set(shas)
    if not wanted:
        return set()
    with db.read() as s:
        rows = s.execute(sa.select(Blob.sha256, Blob.size)
                         .where(Blob.sha256.in_(wanted), Blob.state == STORED)).all()
    return {sha for sha, size in rows if present(blobs, sha, size)}


def record(db: Database, blobs: BlobStore, sha: str, size: int, storage_key: str,
           sent_by: str | None = None) -> None:
    """Record bytes the store has just committed under their name; see the
    module docstring. Raises Aborted while the blob is being purged and
    DataLoss when the bytes were deleted before the row could be committed.

    ``sent_by``: the ingest session whose Write sent (and the store verified)
    these bytes, recorded in the same transaction: one durable commit per
    uploaded blob instead of two, and never a blob row without its sender's."""
    # Prepared statements on the session's connection, not the ORM's unit of
    # work: this runs once per uploaded blob, and the ORM's flush was most of
    # the archive's CPU per Write (issue 12).
    def once() -> None:
        with db.write() as s:
            conn = s.connection()
            state = conn.execute(_LOCK_BLOB, {"sha256": sha}).scalar_one_or_none()
            if state is not None and state != STORED:
                raise Aborted(f"blob {sha} is being purged right now; send it again in a moment")
            if state is None:
                # Inserted (and so locked) before the bytes are checked, as the module docstring says.
                conn.execute(_INSERT_BLOB, {"sha256": sha, "size": size, "storage_key": storage_key,
                                            "stored_at": utcnow(), "state": STORED})
            if not present(blobs, sha, size):
                raise DataLoss(f"blob {sha} was deleted from the store before it was recorded; "
                               "send it again from offset 0")
            if sent_by is not None and conn.execute(
                    _SENT, {"session_id": sent_by, "sha256": sha}).first() is None:
                conn.execute(_INSERT_SENT, {"session_id": sent_by, "sha256": sha, "received_at": utcnow()})
    retry_on_conflict(once)


def store_bytes(db: Database, blobs: BlobStore, sha: str, data: bytes) -> None:
    """Store small ``data`` (a scanned consent) under its SHA-256 and record it."""
    if confirmed(db, blobs, [sha]):
        return
    key = PartialKey(str(uuid.uuid4()), sha)
    try:
        with blobs.begin_write(key) as writer:
            writer.write(0, data)
            storage_key = writer.commit(sha, len(data))
    except BaseException:
        blobs.discard(key)
        raise
    record(db, blobs, sha, len(data), storage_key)


def lock_stored(s: Session, shas: Iterable[str]) -> dict[str, Blob]:
    """The stored rows of ``shas``, share-locked until the transaction ends (in
    one order, so that two lockers never deadlock). SQLite: the write lock."""
    return {b.sha256: b for b in s.scalars(
        sa.select(Blob).where(Blob.sha256.in_(set(shas)), Blob.state == STORED)
        .order_by(Blob.sha256).with_for_update(read=True))}


def lock_for_purge(s: Session, shas: Iterable[str]) -> None:
    """Lock the rows of blobs a purge may delete, before it decides which are
    unused: a CommitSession holding one of them finishes first, and its media
    rows are then seen."""
    s.execute(sa.select(Blob.sha256).where(Blob.sha256.in_(set(shas)))
              .order_by(Blob.sha256).with_for_update()).all()


def mark_purging(s: Session, shas: Iterable[str]) -> None:
    s.execute(sa.update(Blob).where(Blob.sha256.in_(set(shas))).values(state=PURGING))


def finish_purge(db: Database, blobs: BlobStore, sha: str) -> bool:
    """Delete a tombstoned blob's bytes, then its row, with the row locked
    throughout. False when there was nothing to do (done by another process,
    or the blob is in use again, which is logged and undone)."""
    with db.write() as s:
        row = s.execute(sa.select(Blob).where(Blob.sha256 == sha).with_for_update()).scalar_one_or_none()
        if row is None or row.state != PURGING:
            return False
        used = s.execute(sa.select(MediaItem.id).where(MediaItem.blob_sha256 == sha).limit(1)).first() or \
            s.execute(sa.select(Consent.id).where(Consent.blob_sha256 == sha).limit(1)).first() or \
            s.execute(sa.select(TeachingItem.id).where(TeachingItem.blob_sha256 == sha).limit(1)).first()
        if used:
            log.error("a blob marked for purge is in use; kept", extra={"sha256": sha})
            row.state = STORED
            return False
        faults.reach("purge.blob_locked")
        blobs.delete(sha)
        faults.reach("purge.blob_deleted")
        s.delete(row)
    faults.reach("purge.blob_forgotten")
    return True


def finish_purges(db: Database, blobs: BlobStore) -> int:
    """Finish every purge that stopped halfway (a crash, the store down)."""
    with db.read() as s:
        shas = list(s.scalars(sa.select(Blob.sha256).where(Blob.state == PURGING)))
    done = 0
    for sha in shas:
        try:
            done += finish_purge(db, blobs, sha)
        except Exception:  # noqa: BLE001 - one failure must not stop the others
            log.exception("finishing a purge failed", extra={"sha256": sha})
    return done


def tombstone(db: Database, sha: str, size: int) -> bool:
    """Mark an orphan (bytes without a row) for deletion through the purge
    protocol. False when a row exists (an upload recorded it meanwhile)."""
    def once() -> bool:
        with db.write() as s:
            if s.get(Blob, sha) is not None:
                return False
            s.add(Blob(sha256=sha, size=size, storage_key="", stored_at=utcnow(), state=PURGING))
            return True
    try:
        return retry_on_conflict(once, attempts=1)
    except sa.exc.IntegrityError:
        return False


def whole(db: Database, blobs: BlobStore, shas: Iterable[str]) -> set[str]:
    """Those of ``shas`` (confirmed stored) whose bytes hash to their name. A
    session is answered "you need not send it" for bytes another card sent only
    after this: a rotten copy (same size, other bytes) is quarantined here, so
    the blob is missing and the card at hand sends it again before any wipe."""
    good = set()
    with db.read() as s:
        sizes = dict(s.execute(sa.select(Blob.sha256, Blob.size).where(Blob.sha256.in_(set(shas)))).all())
    for sha, size in sizes.items():
        if sha256_of(blobs, sha) == sha:
            good.add(sha)
        else:
            log.error("a stored blob does not match its hash", extra={"sha256": sha})
            quarantine_corrupt(db, blobs, sha, size)
    return good


def quarantine_corrupt(db: Database, blobs: BlobStore, sha: str, size: int) -> str | None:
    """Move a stored blob whose bytes do not hash to its name aside (the row stays,
    so it is missing until an upload or a restore brings the bytes back). Returns
    where it went, or None when there was nothing to move."""
    # With the row locked no upload can record these bytes meanwhile; an upload
    # that replaced them since we hashed is seen by hashing again.
    with db.write() as s:
        row = s.execute(sa.select(Blob).where(Blob.sha256 == sha).with_for_update()).scalar_one_or_none()
        if row is None or row.state != STORED:
            return None
        found = blobs.stat(sha)
        if found is None:
            return None
        if found.size == size and sha256_of(blobs, sha) == sha:
            return "replaced by a good copy meanwhile"
        key = blobs.quarantine(sha)
    log.warning("corrupt blob quarantined", extra={"sha256": sha, "key": key})
    return f"moved to {key}" if key else None


def sha256_of(blobs: BlobStore, sha: str) -> str | None:
    """The SHA-256 of the stored bytes named ``sha`` (None: not in the store)."""
    digest = hashlib.sha256()
    try:
        with blobs.open(sha) as fh:
            while block := fh.read(_BLOCK):
                digest.update(block)
    except NotFound:
        return None
    return digest.hexdigest()
