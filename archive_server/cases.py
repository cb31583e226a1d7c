"""Reading cases out of the archive: search, show, export, print, consent and
teaching copies (R13, R17, R18, R20).

Every function runs inside :func:`archive_server.authz.operation`, which checks
the principal's rights and writes the audit event (a read that is not logged
does not happen). Confidential cases (R17) appear in listings only as
:func:`masked` and are opened only with emergency access and a reason.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import pathlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload, selectinload

from archive_server.authz import Principal, ReasonRequired, operation
from archive_server import blobs as catalogue
from archive_server.blobstores import BlobStore
from archive_server.db import Database
from archive_server.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from archive_server.localfiles import Destination, relative_parts
from archive_server.models import Case, CaseVersion, Consent, FormTemplate, MediaItem, utcnow
from bildsluss_common.identity import patient_id
from bildsluss_common.identity.reserve import ReserveFormat

CONFIDENTIAL = "Konfidentiellt"
_BLOCK = 1 << 20
# A scanned consent document is at most this large (a few pages as PDF or images).
MAX_CONSENT_BYTES = 64 << 20


def normalise_patient(text: str, reserve_formats: Sequence[ReserveFormat] = ()) -> str:
    """A number as a person typed it ('19121212-1212', '121212-1212') in canonical
    form; refused with the reason when it is not a valid identity number."""
    try:
        return patient_id.from_input(text, reserve_formats).canonical
    except patient_id.InvalidPatientId as exc:
        raise InvalidArgument(str(exc)) from None


def iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).isoformat()


def masked(case: Case) -> dict[str, Any]:
    """All that anyone sees of a confidential case outside emergency access (R17)."""
    return {"case_id": case.id, "confidential": True, "display": CONFIDENTIAL}


def load_version(s: Session, case: Case, version: int | None = None) -> CaseVersion:
    number = case.current_version if version is None else version
    found = s.execute(
        sa.select(CaseVersion)
        .where(CaseVersion.case_id == case.id, CaseVersion.version == number)
        .options(joinedload(CaseVersion.media).joinedload(MediaItem.blob, innerjoin=True))
    ).unique().scalar_one_or_none()
    if found is None:
        raise NotFound(f"case {case.id} has no version {number} (versions 1 to {case.current_version})")
    return found


def media_json(m: MediaItem) -> dict[str, Any]:
    return {
        "media_item_id": m.id, "sha256": m.blob_sha256, "size": m.blob.size, "path": m.relative_path,
        "kind": m.kind, "media_type": m.media_type, "capture_time": iso(m.capture_time),
    }


def case_json(s: Session, case: Case, version: CaseVersion | None = None) -> dict[str, Any]:
    """One version of the case (default: the latest) as the CLI's JSON object.

    ``media`` is the list of media items (as before issue 6) and
    ``media_count`` their number; ``created`` and ``created_at`` are the case's
    creation time, ``version_created_at`` the version's."""
    v = version or load_version(s, case)
    media = [media_json(m) for m in v.media]
    return {
        "case_id": case.id,
        "version": v.version,
        "latest_version": case.current_version,
        "patient": v.patient_id or case.patient_id,
        "department": case.department.hsa_id,
        "department_name": case.department.name,
        "status": v.status,
        "confidential": case.confidential,
        "created": iso(case.created_at),
        "created_at": iso(case.created_at),
        "version_created_at": iso(v.created_at),
        "version_created_by": v.created_by,
        "reason": v.reason,
        "signed_by": v.signed_by,
        "signed_at": iso(v.signed_at),
        "edited_by": v.edited_by,
        "edited_at": iso(v.edited_at),
        "form_template": v.form_template,
        "form": dict(v.form or {}),
        "annotations": dict(v.annotations or {}),
        "media_count": len(media),
        "media": media,
        "fields": v.fields,
    }


def latest_versions(s: Session, cases: Sequence[Case]) -> dict[str, CaseVersion]:
    """The latest version of each case, its media and their blobs, in one query
    (not three per case): a patient's search answers in a few round trips."""
    keys = [(c.id, c.current_version) for c in cases]
    if not keys:
        return {}
    found = s.scalars(
        sa.select(CaseVersion)
        .where(sa.tuple_(CaseVersion.case_id, CaseVersion.version).in_(keys))
        .options(joinedload(CaseVersion.media).joinedload(MediaItem.blob, innerjoin=True))).unique()
    return {v.case_id: v for v in found}


def search_cases(db: Database, principal: Principal, patient: str | None = None) -> list[dict[str, Any]]:
    """Latest versions of the cases the principal may read (case.read in their
    departments), oldest first, optionally of one patient; confidential cases masked."""
    with operation(db, principal, "case.search", details={"patient_id": patient}) as op:
        op.patient = patient
        cases = op.cases("case.read", patient)
        versions = latest_versions(op.session, [c for c in cases if not c.confidential])
        results = [masked(c) if c.confidential else case_json(op.session, c, versions.get(c.id)) for c in cases]
        op.details["results"] = [c.id for c in cases]
    return results


# A search answers at most this many cases, newest first (a page, not an export).
MAX_RESULTS = 200
STATUSES = ("signed", "unsigned")


def summary_json(case: Case) -> dict[str, Any]:
    """A case in a result list, from the case row alone (no version loaded)."""
    if case.confidential:
        return masked(case)
    return {"case_id": case.id, "confidential": False, "patient": case.patient_id,
            "department": case.department.hsa_id, "department_name": case.department.name,
            "status": case.status, "latest_version": case.current_version, "created_at": iso(case.created_at)}


class InvalidPatient(InvalidArgument):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = "INVALID_PATIENT"


def find_cases(db: Database, principal: Principal, *, patient_text: str | None = None,
               department: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
               status: str | None = None, limit: int = MAX_RESULTS,
               reserve_formats: Sequence[ReserveFormat] = (), action: str = "case.search") -> dict[str, Any]:
    """The web client's search: cases the principal may read (case.read), newest
    first, narrowed by patient (as typed: an invalid number is refused and
    audited, the text itself not kept), department, creation time and status;
    at most ``limit`` (``truncated`` says there were more). Confidential ones masked."""
    with operation(db, principal, action) as op:
        patient = None
        if patient_text:
            try:
                patient = patient_id.from_input(patient_text, reserve_formats).canonical
            except patient_id.InvalidPatientId:
                raise InvalidPatient("not a valid personnummer, samordningsnummer or reservnummer") from None
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}")
        op.patient = patient
        op.details["patient_id"] = patient
        op.details.update(department=department, since=iso(since), until=iso(until), status=status)
        cases = op.cases("case.read", patient, department=department, since=since, until=until, status=status,
                         newest_first=True, limit=limit + 1)
        shown = cases[:limit]
        op.details["results"] = [c.id for c in shown]
        return {"cases": [summary_json(c) for c in shown], "truncated": len(cases) > limit}


def show_case(db: Database, principal: Principal, case_id: str, *, version: int | None = None,
              emergency_reason: str | None = None) -> dict[str, Any]:
    """One version of a case (default the latest). A confidential case needs
    ``emergency_reason`` (and case.emergency_open in its department)."""
    with operation(db, principal, "case.show") as op:
        case = op.case(case_id, "case.read", emergency_reason=emergency_reason)
        result = case_json(op.session, case, load_version(op.session, case, version))
        op.details.update(version=result["version"])
    return result


def case_page(db: Database, principal: Principal, case_id: str, *, version: int | None = None,
              emergency_reason: str | None = None) -> dict[str, Any]:
    """What the web client's case page shows, in one audited read (``case.show``,
    or ``case.emergency_open`` with a reason): the version, its form template's
    fields, and the numbers of every version."""
    with operation(db, principal, "case.show") as op:
        case = op.case(case_id, "case.read", emergency_reason=emergency_reason)
        view = case_json(op.session, case, load_version(op.session, case, version))
        template = op.session.get(FormTemplate, view["form_template"]) if view["form_template"] else None
        op.details.update(version=view["version"])
        return {"case": view, "template": {"name": template.name, "title": template.title,
                                           "fields": list(template.fields)} if template else None,
                "versions": list(range(1, case.current_version + 1))}


def media_of_case(db: Database, principal: Principal, case_id: str, sha256: str, *, use: str = "original",
                  emergency_reason: str | None = None) -> dict[str, Any]:
    """A media item of the case (of any of its versions), for reading its bytes
    or a picture of them; audited as ``case.media`` (with ``use``: original,
    thumb, preview, frame) before a byte leaves. Unknown to the case: NotFound."""
    with operation(db, principal, "case.media") as op:
        case = op.case(case_id, "case.read", emergency_reason=emergency_reason)
        found = op.session.execute(
            sa.select(MediaItem, CaseVersion.version, CaseVersion.annotations)
            .join(CaseVersion, CaseVersion.id == MediaItem.case_version_id)
            .where(CaseVersion.case_id == case.id, MediaItem.blob_sha256 == sha256)
            .order_by(CaseVersion.version.desc())
            .options(selectinload(MediaItem.blob)).limit(1)).one_or_none()
        if found is None:
            raise NotFound(f"case {case_id} has no media {sha256[:64]}")
        item, version, annotations = cast("tuple[MediaItem, int, dict[str, Any] | None]", tuple(found))
        op.details.update(sha256=sha256, use=use)
        # The newest version holding the item, and its annotation layer on it.
        return {**media_json(item), "version": version, "latest": version == case.current_version,
                "annotations": list((annotations or {}).get(sha256, []))}


def read_media(blobs: BlobStore, media: dict[str, Any]) -> bytes:
    """The stored bytes of ``media`` (from :func:`media_of_case`), checked against its hash."""
    return _read_verified(blobs, media["sha256"], media["size"])


def export_case(
    db: Database, blobs: BlobStore, case_id: str, dest: pathlib.Path, principal: Principal,
    *, emergency_reason: str | None = None,
) -> list[pathlib.Path]:
    """Write the media of the case's latest version under ``dest`` at their
    original relative paths, verifying each SHA-256 while copying. Existing
    files are never overwritten. The export is logged before any byte leaves.
    Files are written 0600 through the held destination folder (localfiles):
    a folder swapped for a symlink meanwhile writes nothing outside it."""
    dest = dest.resolve()
    with operation(db, principal, "case.exported") as op:
        case = op.case(case_id, "case.export", emergency_reason=emergency_reason)
        version = load_version(op.session, case)
        plan = [(m.blob_sha256, m.blob.size, m.relative_path) for m in version.media]
        for _, _, relative in plan:
            relative_parts(relative)
        if dest.is_dir():
            with Destination(dest) as out:
                for _, _, relative in plan:
                    out.check(relative)
        op.details.update({
            "version": version.version, "destination": str(dest),
            "files": [{"path": m.relative_path, "sha256": m.blob_sha256} for m in version.media],
        })
    written: list[pathlib.Path] = []
    with Destination(dest) as out:
        for sha, size, relative in plan:
            written.append(_copy_verified(blobs, sha, size, out, relative))
    return written


def print_case(db: Database, blobs: BlobStore, principal: Principal, case_id: str, *, reason: str,
               out: pathlib.Path, emergency_reason: str | None = None) -> dict[str, Any]:
    """A PDF of the case's latest version with who printed it, when and why
    (R18). The reason is required; the print is logged before the file is written."""
    from archive_server.printing import render_case_pdf

    if out.exists() or out.is_symlink():
        raise FailedPrecondition(f"refusing to overwrite existing file {out}")
    at = utcnow()
    with operation(db, principal, "case.print", why=reason.strip() or None) as op:
        case = op.case(case_id, "case.print", emergency_reason=emergency_reason)
        if not reason.strip():
            raise ReasonRequired("printing needs a reason, which goes into the audit log: give --reason TEXT.")
        if emergency_reason is not None:
            op.why = f"{reason.strip()} (nödöppning: {emergency_reason.strip()})"
        view = case_json(op.session, case)
        plan = [(m["path"], m["sha256"], m["size"]) for m in view["media"]]
        op.details.update(version=view["version"], output=str(out.resolve()),
                          media=[sha for _, sha, _ in plan])
    images = [(name, _read_verified(blobs, sha, size)) for name, sha, size in plan]
    layers = {name: view["annotations"].get(sha, []) for name, sha, _ in plan}
    pdf = render_case_pdf({**view, "media": view["media_count"]}, images, printed_by=principal.actor,
                          printed_at=at, reason=reason, layers=layers)
    with Destination(out.parent) as folder:
        folder.write_new(out.name, pdf)
    return {"case_id": case_id, "version": view["version"], "out": str(out.resolve()), "bytes": len(pdf)}


def record_consent(db: Database, blobs: BlobStore, principal: Principal, case_id: str,
                   document: pathlib.Path, *, emergency_reason: str | None = None) -> dict[str, Any]:
    """Store a scanned written consent (R20) with the case: the document as a
    blob, who recorded it and when."""
    try:
        data = document.read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read the consent document {document}: {e.strerror}") from None
    if not data:
        raise InvalidArgument(f"the consent document {document} is empty")
    if len(data) > MAX_CONSENT_BYTES:
        raise InvalidArgument(f"the consent document is larger than {MAX_CONSENT_BYTES >> 20} MiB")
    sha = hashlib.sha256(data).hexdigest()
    # Check the right before storing anything; the blob is stored outside the
    # transaction (durable first, recorded second, like an ingested file).
    with operation(db, principal, "consent.checked") as op:
        op.case(case_id, "consent.record", emergency_reason=emergency_reason)
    catalogue.store_bytes(db, blobs, sha, data)
    with operation(db, principal, "consent.recorded") as op:
        case = op.case(case_id, "consent.record", emergency_reason=emergency_reason)
        consent = Consent(id=str(uuid.uuid4()), case_id=case.id, blob_sha256=sha,
                          document_name=document.name[:255], media_type=_guess_type(data),
                          recorded_by=principal.actor, recorded_at=utcnow())
        op.session.add(consent)
        op.details.update(consent_id=consent.id, sha256=sha, size=len(data), document=consent.document_name)
    return {"consent_id": consent.id, "case_id": case_id, "sha256": sha, "recorded_by": principal.actor,
            "recorded_at": iso(consent.recorded_at)}


def teaching_copy(db: Database, blobs: BlobStore, principal: Principal, case_id: str,
                  out: pathlib.Path, *, media: list[str] | None = None) -> dict[str, Any]:
    """De-identified copies of the case's images for teaching (R20), written
    to ``out`` under neutral names with no link to the patient. Refused
    without a recorded consent; the originals are untouched. Confidential
    cases are never copied for teaching."""
    copies = make_teaching_copies(db, blobs, principal, case_id, media=media, destination=str(out.resolve()))
    written = []
    with Destination(out) as folder:
        for n, copy in enumerate(copies, start=1):
            suffix = ".png" if copy.media_type == "image/png" else ".jpg"
            name = f"teaching-{uuid.uuid4().hex[:8]}-{n:02d}{suffix}"
            folder.write_new(name, copy.data)
            written.append({"file": name, "masked_regions": len(copy.masked)})
    return {"files": written}


def make_teaching_copies(db: Database, blobs: BlobStore, principal: Principal, case_id: str, *,
                         media: list[str] | None, destination: str) -> list[Any]:
    """The de-identified copies (``deidentify.Copy``) of the case's chosen
    images, made inside the audited ``case.teaching_copy`` operation (which
    needs teaching.copy and a recorded consent); ``destination`` says in the
    audit where they go (a folder, or the teaching collection)."""
    from archive_server.deidentify import DeidentifyError, deidentify_image

    with operation(db, principal, "case.teaching_copy") as op:
        case = op.case(case_id, "teaching.copy")
        consents = op.session.scalars(sa.select(Consent).where(Consent.case_id == case.id)).all()
        if not consents:
            raise FailedPrecondition(
                f"case {case_id} has no recorded written consent; a teaching copy needs the patient's "
                "written consent first (case consent).")
        version = load_version(op.session, case)
        chosen = [m for m in version.media
                  if m.kind in ("image", "dicom") and (not media or m.blob_sha256 in media)]
        unknown = sorted(set(media or []) - {m.blob_sha256 for m in version.media})
        if unknown:
            raise InvalidArgument(f"not media of case {case_id} version {version.version}: {', '.join(unknown)}")
        if not chosen:
            raise FailedPrecondition(f"case {case_id} has no images to copy for teaching")
        plan = [(m.blob_sha256, m.blob.size) for m in chosen]
        op.details.update(version=version.version, media=[sha for sha, _ in plan],
                          consents=[c.id for c in consents], output=destination)
        # Every copy is made before anything is written, inside the audited
        # operation: an image that cannot be masked safely refuses the whole
        # request (audited as such) instead of leaving a partial set behind.
        copies = []
        for sha, size in plan:
            try:
                copies.append(deidentify_image(_read_verified(blobs, sha, size)))
            except DeidentifyError as exc:
                raise FailedPrecondition(
                    f"image {sha[:12]} of case {case_id} cannot be de-identified safely ({exc}); "
                    "no teaching copy was written. Choose other images with --media.") from None
        return copies


# -- blobs -------------------------------------------------------------------------------


def _read_verified(blobs: BlobStore, sha: str, size: int) -> bytes:
    with blobs.open(sha) as fh:
        data = fh.read()
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
        raise DataLoss(f"stored blob {sha} does not match its hash. Report this: the archive copy is damaged")
    return data


def _guess_type(data: bytes) -> str:
    if data.startswith(b"%PDF"):
        return "application/pdf"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return "application/octet-stream"


def _copy_verified(blobs: BlobStore, sha: str, size: int, out: Destination, relative: str) -> pathlib.Path:
    """Copy a stored blob to a new file below ``out``, hashing it on the way; the
    file is removed again unless every byte matched."""
    digest = hashlib.sha256()
    total = 0
    with blobs.open(sha) as src, out.create(relative) as target:
        for block in _blocks(src):
            digest.update(block)
            total += len(block)
            target.write(block)
        if total != size or digest.hexdigest() != sha:
            raise DataLoss(f"stored blob {sha} does not match its hash ({total} bytes read); "
                           f"{target.path} was not written. Report this: the archive copy is damaged")
    return target.path


def _blocks(fh: Any) -> Iterator[bytes]:
    while block := fh.read(_BLOCK):
        yield block
