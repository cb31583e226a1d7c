"""Multipart uploads in progress, recorded in the database (``blob_uploads``),
so that an upload begun by one archive process is resumed by another."""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import exc

from archive_server.blobstores.base import PartialKey
from archive_server.blobstores.s3 import UploadState
from archive_server.db import Database
from archive_server.models import BlobUpload, utcnow


class DatabaseUploads:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _where(key: PartialKey) -> sa.ColumnElement[bool]:
        return sa.and_(BlobUpload.session_id == key.session_id, BlobUpload.sha256 == key.sha256)

    def get(self, key: PartialKey) -> UploadState | None:
        with self.db.read() as s:
            row = s.execute(sa.select(BlobUpload).where(self._where(key))).scalar_one_or_none()
        return _state(row) if row else None

    def register(self, key: PartialKey, upload_id: str, part_size: int) -> UploadState:
        try:
            with self.db.write() as s:
                s.add(BlobUpload(session_id=key.session_id, sha256=key.sha256, upload_id=upload_id,
                                 part_size=part_size, part_count=0, etags=[]))
            return UploadState(upload_id, part_size, ())
        except exc.IntegrityError:
            state = self.get(key)
            if state is None:  # registered and removed meanwhile: ours now
                return self.register(key, upload_id, part_size)
            return state

    def add_part(self, key: PartialKey, upload_id: str, number: int, etag: str) -> bool:
        # Conditional on the part count, so two writers of one upload cannot
        # both record a part: the second is told to ask where to resume.
        with self.db.write() as s:
            row = s.execute(sa.select(BlobUpload).where(self._where(key)).with_for_update()).scalar_one_or_none()
            if row is None or row.upload_id != upload_id or row.part_count != number - 1:
                return False
            row.etags = [*row.etags, etag]
            row.part_count = number
            row.touched_at = utcnow()
        return True

    def remove(self, key: PartialKey) -> None:
        with self.db.write() as s:
            s.execute(sa.delete(BlobUpload).where(self._where(key)))

    def of_session(self, session_id: str) -> list[tuple[PartialKey, str]]:
        with self.db.read() as s:
            rows = s.execute(sa.select(BlobUpload.session_id, BlobUpload.sha256, BlobUpload.upload_id)
                             .where(BlobUpload.session_id == session_id)).all()
        return [(PartialKey(a, b), u) for a, b, u in rows]

    def older_than(self, age_s: float) -> list[tuple[PartialKey, str]]:
        cutoff = utcnow() - dt.timedelta(seconds=age_s)
        with self.db.read() as s:
            rows = s.execute(sa.select(BlobUpload.session_id, BlobUpload.sha256, BlobUpload.upload_id)
                             .where(BlobUpload.touched_at < cutoff)).all()
        return [(PartialKey(a, b), u) for a, b, u in rows]


def _state(row: BlobUpload) -> UploadState:
    return UploadState(row.upload_id, int(row.part_size), tuple(row.etags))
