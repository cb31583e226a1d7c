"""The teaching collection (R20): de-identified teaching copies of consented
cases and other non-patient material (information and teaching images), in a
collection of their own that users with ``teaching.read`` browse.

An item has no link to a case or patient: the copy is made by
``cases.make_teaching_copies`` (teaching.copy in the case's department, a
recorded consent, the de-identification of ``deidentify.py``), stored as a
blob (durable first, recorded second), and only the audit log says which case
it came from. An information image added directly is de-identified the same
way before it is stored: what enters the collection is never a patient's
picture as taken.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Any

import sqlalchemy as sa

from archive_server import blobs as catalogue
from archive_server.authz import Principal, operation
from archive_server.blobstores import BlobStore
from archive_server.cases import _read_verified, iso, make_teaching_copies
from archive_server.db import Database
from archive_server.errors import FailedPrecondition, InvalidArgument, NotFound
from archive_server.models import Blob, TeachingItem, utcnow

MAX_TITLE = 200
MAX_UPLOAD = 32 << 20


def _title(text: str) -> str:
    title = text.strip()
    if len(title) > MAX_TITLE:
        raise InvalidArgument(f"a title is at most {MAX_TITLE} characters")
    return title


def copy_case(db: Database, blobs: BlobStore, principal: Principal, case_id: str, *, title: str = "",
              media: list[str] | None = None) -> list[dict[str, Any]]:
    """Teaching copies of the case's images into the collection; the new items."""
    title = _title(title)
    copies = make_teaching_copies(db, blobs, principal, case_id, media=media, destination="teaching collection")
    return [_add(db, blobs, principal, copy.data, copy.media_type, title, "teaching_copy",
                 {"case_id": case_id, "masked_regions": len(copy.masked)}) for copy in copies]


def add_information(db: Database, blobs: BlobStore, principal: Principal, data: bytes, *,
                    title: str) -> dict[str, Any]:
    """An information or teaching image (not of a patient) into the collection,
    de-identified like a teaching copy first. Needs teaching.read."""
    from archive_server.deidentify import DeidentifyError, deidentify_image

    title = _title(title)
    if not data or len(data) > MAX_UPLOAD:
        raise InvalidArgument(f"an image of 1 byte to {MAX_UPLOAD >> 20} MiB")
    with operation(db, principal, "teaching.checked") as op:
        op.require("teaching.read")
        try:
            copy = deidentify_image(data)
        except DeidentifyError as exc:
            raise FailedPrecondition(f"the image cannot be de-identified safely ({exc}); it was not added") from None
    return _add(db, blobs, principal, copy.data, copy.media_type, title, "information",
                {"masked_regions": len(copy.masked)})


def _add(db: Database, blobs: BlobStore, principal: Principal, data: bytes, media_type: str, title: str,
         source: str, details: dict[str, Any]) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    catalogue.store_bytes(db, blobs, sha, data)
    with operation(db, principal, "teaching.added") as op:
        item = TeachingItem(id=str(uuid.uuid4()), blob_sha256=sha, media_type=media_type, title=title,
                            source=source, created_at=utcnow(), created_by=principal.actor)
        op.target = f"teaching:{item.id}"
        op.session.add(item)
        op.details.update(item=item.id, sha256=sha, source=source, title=title, **details)
    return {"item_id": item.id, "sha256": sha, "media_type": media_type, "title": title, "source": source}


def list_items(db: Database, principal: Principal) -> list[dict[str, Any]]:
    """The collection, newest first. Needs teaching.read."""
    with operation(db, principal, "teaching.list") as op:
        op.require("teaching.read")
        rows = op.session.scalars(sa.select(TeachingItem).order_by(TeachingItem.created_at.desc())).all()
        return [{"item_id": r.id, "title": r.title, "source": r.source, "media_type": r.media_type,
                 "created_at": iso(r.created_at), "created_by": r.created_by} for r in rows]


def item_bytes(db: Database, blobs: BlobStore, principal: Principal, item_id: str) -> tuple[bytes, str]:
    """One item's picture (audited as teaching.read)."""
    with operation(db, principal, "teaching.read", target=f"teaching:{item_id[:64]}") as op:
        op.require("teaching.read")
        row = op.session.execute(sa.select(TeachingItem, Blob.size).join(Blob, Blob.sha256 == TeachingItem.blob_sha256)
                                 .where(TeachingItem.id == item_id)).one_or_none()
        if row is None:
            raise NotFound(f"no teaching item {item_id[:64]}")
        item, size = row
        sha, media_type = item.blob_sha256, item.media_type
    return _read_verified(blobs, sha, size), media_type
