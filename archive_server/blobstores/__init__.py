"""Blob stores: one small interface (``base.BlobStore``), two backends.

    file:///path, or a plain path   ``folder.FolderBlobStore``
    s3://BUCKET[/PREFIX]            ``s3.S3BlobStore`` (needs the database for
                                    uploads in progress)
"""
from __future__ import annotations

import pathlib
import urllib.parse
from typing import TYPE_CHECKING

from archive_server.blobstores.base import BlobStat, BlobStore, BlobWriter, PartialKey, StoredObject
from archive_server.blobstores.folder import FolderBlobStore
from archive_server.errors import ConfigError

if TYPE_CHECKING:
    from archive_server.blobstores.s3 import S3Options
    from archive_server.db import Database

__all__ = ["BlobStat", "BlobStore", "BlobWriter", "FolderBlobStore", "PartialKey", "StoredObject",
           "open_blobstore"]


def open_blobstore(url: str, db: "Database | None" = None, s3: "S3Options | None" = None) -> BlobStore:
    """The store named by ``url``; ``db`` records S3 uploads in progress."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        path = urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else url
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"blob URL must be file:///absolute/path, got {url!r}")
        return FolderBlobStore(pathlib.Path(path))
    if parsed.scheme == "s3":
        # boto3 only where an object store is used.
        from archive_server.blobstores.s3 import S3BlobStore, S3Options
        from archive_server.blobstores.uploads import DatabaseUploads

        return S3BlobStore(url, DatabaseUploads(db) if db is not None else None, s3 or S3Options())
    raise ConfigError(f"unsupported blob store URL {url!r} (use file:///path or s3://bucket/prefix)")
