"""Reading cases out of the archive: search (latest versions) and export.

Both write an audit event in the same transaction as the read (R18): a search
or export that is not logged does not happen. Confidential cases (R17) are
shown only as "Konfidentiellt" and cannot be exported until emergency access
(nödöppning) exists.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from archive_server.audit import append_audit
from archive_server.blobstore import BlobStore
from archive_server.db import Database
from archive_server.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from archive_server.models import Case, CaseVersion, Department, MediaItem

CONFIDENTIAL = "Konfidentiellt"
_BLOCK = 1 << 20


def normalise_patient(text: str) -> str:
    """'19121212-1212' or '191212121212' -> '191212121212'; reserve numbers upper-cased."""
    compact = re.sub(r"[\s-]", "", text).upper()
    if not compact:
        raise InvalidArgument("empty patient id")
    return compact


def _iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).isoformat()


def _latest(s: Session, case: Case) -> CaseVersion:
    return s.execute(
        sa.select(CaseVersion)
        .where(CaseVersion.case_id == case.id, CaseVersion.version == case.current_version)
        .options(selectinload(CaseVersion.media).selectinload(MediaItem.blob))
    ).scalar_one()


def case_json(s: Session, case: Case) -> dict[str, Any]:
    """The case's latest version as the CLI's JSON object."""
    base: dict[str, Any] = {
        "case_id": case.id,
        "patient": case.patient_id,
        "department": case.department.hsa_id,
        "status": case.status,
        "version": case.current_version,
        "created_at": _iso(case.created_at),
        "confidential": case.confidential,
    }
    if case.confidential:
        base.update(patient=CONFIDENTIAL, media=[], fields={})
        return base
    version = _latest(s, case)
    base["media"] = [
        {
            "media_item_id": m.id,
            "sha256": m.blob_sha256,
            "size": m.blob.size,
            "path": m.relative_path,
            "kind": m.kind,
            "media_type": m.media_type,
            "capture_time": _iso(m.capture_time),
        }
        for m in version.media
    ]
    base["fields"] = version.fields
    return base


def search_cases(db: Database, actor: str, patient: str | None = None) -> list[dict[str, Any]]:
    """Cases (latest versions), oldest first, optionally of one patient; logged."""
    with db.write() as s:
        query = sa.select(Case).options(selectinload(Case.department)).order_by(Case.created_at, Case.id)
        if patient is not None:
            query = query.where(Case.patient_id == patient)
        cases = list(s.scalars(query))
        results = [case_json(s, c) for c in cases]
        append_audit(s, actor, "case.search", details={
            "patient_id": patient, "results": [c.id for c in cases]})
    return results


def export_case(
    db: Database, blobs: BlobStore, case_id: str, dest: pathlib.Path, actor: str
) -> list[pathlib.Path]:
    """Write the media of the case's latest version under ``dest`` at their
    original relative paths, verifying each SHA-256 while copying. Existing
    files are never overwritten. The export is logged before any byte leaves."""
    dest = dest.resolve()
    with db.write() as s:
        case = s.get(Case, case_id)
        if case is None:
            raise NotFound(f"unknown case {case_id}")
        if case.confidential:
            raise FailedPrecondition(f"case {case_id} is confidential; it can only be opened "
                                     "with emergency access, which this tool does not provide")
        version = _latest(s, case)
        plan = [(m.blob_sha256, m.blob.size, _target(dest, m.relative_path)) for m in version.media]
        existing = [str(p) for _, _, p in plan if p.exists() or p.is_symlink()]
        if existing:
            raise FailedPrecondition(f"refusing to overwrite existing file(s): {', '.join(existing[:5])}")
        department = s.get(Department, case.department_id)
        append_audit(s, actor, "case.exported", case_id=case.id, details={
            "version": version.version, "destination": str(dest),
            "department": department.hsa_id if department else None,
            "files": [{"path": m.relative_path, "sha256": m.blob_sha256} for m in version.media],
        })
    written: list[pathlib.Path] = []
    for sha, size, target in plan:
        _copy_verified(blobs, sha, size, target)
        written.append(target)
    return written


def _target(dest: pathlib.Path, relative_path: str) -> pathlib.Path:
    target = (dest / relative_path).resolve()
    if dest != target and dest not in target.parents:
        raise FailedPrecondition(f"media path {relative_path!r} escapes the destination")
    return target


def _copy_verified(blobs: BlobStore, sha: str, size: int, target: pathlib.Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    total = 0
    try:
        with blobs.open(sha) as src, open(target, "xb") as out:
            for block in _blocks(src):
                digest.update(block)
                total += len(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    except FileExistsError:
        raise FailedPrecondition(f"refusing to overwrite existing file {target}") from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if total != size or digest.hexdigest() != sha:
        target.unlink(missing_ok=True)
        raise DataLoss(f"stored blob {sha} does not match its hash ({total} bytes read); "
                       f"{target} was not written. Report this: the archive copy is damaged")


def _blocks(fh: Any) -> Iterator[bytes]:
    while block := fh.read(_BLOCK):
        yield block
