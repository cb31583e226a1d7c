"""``bildsluss-archive fsck``: every blob in the store against the database.

Both sides are walked in SHA-256 order and merged, so memory stays flat at a
million blobs. What is found:

    missing    a row says "stored", the store has no bytes
    corrupt    the bytes have another size than recorded, or do not hash to
               their name (hashing is skipped with --quick)
    orphaned   bytes at a blob's name with no row (older than the grace period;
               younger ones may be an upload between its commit and its record)
    foreign    an object under our root that is not ours (never touched)
    purging    a purge that stopped halfway (its tombstone is still there)

``--repair`` fixes what can be fixed, through the same locks the serving
archive uses (``archive_server.blobs``), so it is safe while archives serve:
corrupt blobs are moved to ``quarantine/`` (the row stays; FindMissingBlobs then
reports the blob missing and the next upload of those bytes restores it);
orphans are deleted through the purge protocol; stalled purges are finished.
Missing bytes cannot be repaired here: restore them from a backup of the
store, or re-ingest the card.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from archive_server import blobs as catalogue
from archive_server.blobstores import BlobStore, StoredObject
from archive_server.db import Database
from archive_server.models import Blob

log = logging.getLogger(__name__)
KINDS = ("missing", "corrupt", "orphaned", "foreign", "purging")


@dataclasses.dataclass
class Finding:
    kind: str
    key: str
    sha256: str | None
    detail: str
    repaired: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Report:
    blobs_in_database: int = 0
    objects_in_store: int = 0
    bytes_hashed: int = 0
    partial_objects: int = 0
    quarantined_objects: int = 0
    findings: list[Finding] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing is left to do: every finding was repaired (a foreign object
        is reported, not ours to judge)."""
        return all(f.repaired or f.kind == "foreign" for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        counts = {k: sum(1 for f in self.findings if f.kind == k) for k in KINDS}
        return {
            "clean": self.clean, "blobs_in_database": self.blobs_in_database,
            "objects_in_store": self.objects_in_store, "bytes_hashed": self.bytes_hashed,
            "partial_objects": self.partial_objects, "quarantined_objects": self.quarantined_objects,
            "counts": counts, "repaired": sum(1 for f in self.findings if f.repaired),
            "findings": [f.as_dict() for f in self.findings],
        }


def fsck(db: Database, blobs: BlobStore, *, repair: bool = False, quick: bool = False,
         orphan_grace_s: float = 3600.0) -> Report:
    report = Report()
    rows = _rows(db)
    objects = _blob_objects(blobs, report)
    row = next(rows, None)
    obj = next(objects, None)
    while row is not None or obj is not None:
        if obj is None or (row is not None and row[0] < obj.sha256):  # type: ignore[operator]
            _row_alone(db, blobs, report, row, repair)  # type: ignore[arg-type]
            row = next(rows, None)
        elif row is None or obj.sha256 < row[0]:  # type: ignore[operator]
            _object_alone(db, blobs, report, obj, repair, orphan_grace_s)
            obj = next(objects, None)
        else:
            _both(db, blobs, report, row, obj, repair, quick)
            row, obj = next(rows, None), next(objects, None)
    log.info("fsck done", extra={k: v for k, v in report.as_dict().items() if k != "findings"})
    return report


def _rows(db: Database) -> Iterator[tuple[str, int, str]]:
    with db.read() as s:
        result = s.execute(sa.select(Blob.sha256, Blob.size, Blob.state).order_by(Blob.sha256)
                           .execution_options(yield_per=2000))
        for sha, size, state in result:
            yield sha, int(size), state


def _blob_objects(blobs: BlobStore, report: Report) -> Iterator[StoredObject]:
    for o in blobs.iterate():
        report.objects_in_store += 1
        if o.kind == "blob":
            yield o
        elif o.kind == "partial":
            report.partial_objects += 1
        elif o.kind == "quarantine":
            report.quarantined_objects += 1
        else:
            report.findings.append(Finding("foreign", o.key, None,
                                           f"{o.size} bytes under the store's root that the archive did "
                                           "not write; left alone"))


def _row_alone(db: Database, blobs: BlobStore, report: Report, row: tuple[str, int, str], repair: bool) -> None:
    sha, size, state = row
    report.blobs_in_database += 1
    if state == catalogue.PURGING:
        _stalled_purge(db, blobs, report, sha, repair)
        return
    report.findings.append(Finding("missing", blobs.storage_key(sha), sha,
                                   f"recorded as stored ({size} bytes), not in the store: restore it from a "
                                   "backup of the store or ingest the card again"))


def _object_alone(db: Database, blobs: BlobStore, report: Report, obj: StoredObject, repair: bool,
                  grace_s: float) -> None:
    assert obj.sha256 is not None
    if time.time() - obj.modified < grace_s:
        return  # maybe an upload between the store's commit and its record
    finding = Finding("orphaned", obj.key, obj.sha256, f"{obj.size} bytes with no record")
    report.findings.append(finding)
    if repair and catalogue.tombstone(db, obj.sha256, obj.size):
        if catalogue.finish_purge(db, blobs, obj.sha256):
            finding.repaired = "deleted"


def _both(db: Database, blobs: BlobStore, report: Report, row: tuple[str, int, str], obj: StoredObject,
          repair: bool, quick: bool) -> None:
    sha, size, state = row
    report.blobs_in_database += 1
    if state == catalogue.PURGING:
        _stalled_purge(db, blobs, report, sha, repair)
        return
    if obj.size != size:
        problem = f"{obj.size} bytes stored, {size} recorded"
    elif quick:
        return
    else:
        hashed = catalogue.sha256_of(blobs, sha)
        report.bytes_hashed += obj.size
        if hashed == sha:
            return
        problem = f"the stored bytes hash to {hashed}"
    finding = Finding("corrupt", obj.key, sha, problem)
    report.findings.append(finding)
    if repair:
        finding.repaired = catalogue.quarantine_corrupt(db, blobs, sha, size)


def _stalled_purge(db: Database, blobs: BlobStore, report: Report, sha: str, repair: bool) -> None:
    finding = Finding("purging", blobs.storage_key(sha), sha, "a purge of this blob stopped halfway")
    report.findings.append(finding)
    if repair and catalogue.finish_purge(db, blobs, sha):
        finding.repaired = "purge finished"
