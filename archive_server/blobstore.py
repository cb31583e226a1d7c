"""Moved to :mod:`archive_server.blobstores` (folder and S3 backends); this name
stays while the archive's layout is being reshaped (issue 15)."""
from archive_server.blobstores import BlobStore, FolderBlobStore, PartialKey, open_blobstore

__all__ = ["BlobStore", "FolderBlobStore", "PartialKey", "open_blobstore"]
