"""Signing, revising, history and comparison of case versions (R14).

* ``sign`` locks the latest version. It needs the version's form complete
  (every required field of its template filled).
* ``revise`` of a **signed** case makes the next version: a copy of the latest
  with the corrections applied (patient, form fields, media dropped), unsigned,
  with who, when and why. The signed version never changes again.
* ``revise`` of an **unsigned** case edits its latest version in place (that
  is what "unsigned" means: the form is still being completed); the change is
  audited with the old and new values and the version records who edited it
  last. A reason is required either way.
* ``history`` lists every version; ``diff`` compares two (patient, form
  template, form fields, status, media added and removed).
Search always answers with the latest version (``cases.search_cases``).
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from archive_server import forms
from archive_server import validation as v
from archive_server.authz import Principal, ReasonRequired, operation
from archive_server.cases import case_json, load_version
from archive_server.db import Database
from archive_server.errors import FailedPrecondition, InvalidArgument, NotFound
from archive_server.models import CaseVersion, ConfidentialPatient, FormTemplate, MediaItem, utcnow
from bildsluss_common.identity.reserve import ReserveFormat



class FormIncomplete(FailedPrecondition):
    """Signing a case whose form lacks required fields."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = "FORM_INCOMPLETE"


def sign_case(db: Database, principal: Principal, case_id: str, *,
              emergency_reason: str | None = None) -> dict[str, Any]:
    with operation(db, principal, "case.sign") as op:
        case = op.case(case_id, "case.sign", emergency_reason=emergency_reason, lock=True)
        version = load_version(op.session, case)
        if version.status == "signed":
            raise FailedPrecondition(f"case {case_id} version {version.version} is already signed "
                                     f"(by {version.signed_by}); revise it to correct it")
        template = _template(op.session, version.form_template)
        missing = forms.missing_required(template.fields, version.form or {})
        if missing:
            raise FormIncomplete(f"case {case_id} cannot be signed: the form {template.name} lacks "
                                 f"{', '.join(missing)} (case revise --field NAME=VALUE)")
        version.status, version.signed_by, version.signed_at = "signed", principal.actor, utcnow()
        case.status = "signed"
        op.details.update(version=version.version)
        op.session.flush()
        return {"case_id": case_id, "version": version.version, "status": "signed",
                "signed_by": principal.actor, "case": case_json(op.session, case, version)}


def revise_case(
    db: Database, principal: Principal, case_id: str, *, reason: str,
    patient: str | None = None, fields: list[tuple[str, str]] | None = None,
    drop_media: list[str] | None = None, form_template: str | None = None,
    emergency_reason: str | None = None, reserve_formats: Sequence[ReserveFormat] = (),
) -> dict[str, Any]:
    fields = fields or []
    drop = list(dict.fromkeys(drop_media or []))
    with operation(db, principal, "case.revise", why=reason.strip() or None) as op:
        op.details["request"] = {"patient": patient, "fields": dict(fields), "drop_media": drop,
                                 "form_template": form_template}
        case = op.case(case_id, "case.revise", emergency_reason=emergency_reason, lock=True)
        if not reason.strip():
            raise ReasonRequired("a correction needs a reason (why), which is kept with the version: "
                                 "give --reason TEXT.")
        if patient is None and not fields and not drop and form_template is None:
            raise InvalidArgument("nothing to change: give --patient, --field, --drop-media or --form")
        if emergency_reason is not None:
            op.why = f"{reason.strip()} (nödöppning: {emergency_reason.strip()})"
        s = op.session
        latest = load_version(s, case)
        template = _template(s, form_template or latest.form_template)
        form = dict(latest.form or {}) if template.name == latest.form_template else {}
        form = forms.apply_fields(template.fields, form, fields)
        new_patient = latest.patient_id or case.patient_id
        if patient is not None:
            new_patient = v.patient_id(patient, reserve_formats)
        kept = [m for m in latest.media if m.blob_sha256 not in drop]
        unknown = sorted(set(drop) - {m.blob_sha256 for m in latest.media})
        if unknown:
            raise InvalidArgument(f"not media of case {case_id} version {latest.version}: {', '.join(unknown)}")
        if drop and not kept:
            raise FailedPrecondition("a case keeps at least one media item; to remove a whole case, "
                                     "a system administrator purges it")
        changes = _changes(latest, new_patient, template.name, form, kept, case.patient_id)
        if latest.status == "signed":
            target = CaseVersion(case_id=case.id, version=latest.version + 1, created_at=utcnow(),
                                 created_by=principal.actor, fields=dict(latest.fields),
                                 patient_id=new_patient, status="unsigned", reason=reason.strip(),
                                 form_template=template.name, form=form,
                                 annotations={sha: shapes for sha, shapes in (latest.annotations or {}).items()
                                              if sha in {m.blob_sha256 for m in kept}})
            s.add(target)
            s.flush()
            for position, m in enumerate(kept):
                s.add(MediaItem(id=str(uuid.uuid4()), case_version_id=target.id, blob_sha256=m.blob_sha256,
                                relative_path=m.relative_path, kind=m.kind, media_type=m.media_type,
                                capture_time=m.capture_time, device_make=m.device_make,
                                device_model=m.device_model, device_serial=m.device_serial,
                                position=position))
            case.current_version = target.version
            case.status = "unsigned"
            created = True
        else:
            target = latest
            for m in latest.media:
                if m.blob_sha256 in drop:
                    s.delete(m)
            target.patient_id, target.form_template, target.form = new_patient, template.name, form
            target.edited_by, target.edited_at = principal.actor, utcnow()
            if reason.strip() and reason.strip() not in (target.reason or ""):
                target.reason = "; ".join(x for x in (target.reason, reason.strip()) if x)
            created = False
        case.patient_id = new_patient
        if s.get(ConfidentialPatient, new_patient) is not None:
            case.confidential = True  # R17: filed under a confidential patient
        op.patient = new_patient
        op.details.update(version=target.version, new_version=created, changes=changes)
        s.flush()
        s.expire(target)
        return {"case_id": case_id, "version": target.version, "new_version": created,
                "status": "unsigned", "changes": changes,
                "case": case_json(s, case, load_version(s, case, target.version))}


def next_version(s: Any, case: Any, latest: CaseVersion, principal: Principal, reason: str) -> CaseVersion:
    """A new unsigned version: a copy of the signed ``latest`` (form, media,
    annotations), with who and why; the case points at it."""
    target = CaseVersion(case_id=case.id, version=latest.version + 1, created_at=utcnow(),
                         created_by=principal.actor, fields=dict(latest.fields), patient_id=latest.patient_id,
                         status="unsigned", reason=reason, form_template=latest.form_template,
                         form=dict(latest.form or {}), annotations=dict(latest.annotations or {}))
    s.add(target)
    s.flush()
    for position, m in enumerate(latest.media):
        s.add(MediaItem(id=str(uuid.uuid4()), case_version_id=target.id, blob_sha256=m.blob_sha256,
                        relative_path=m.relative_path, kind=m.kind, media_type=m.media_type,
                        capture_time=m.capture_time, device_make=m.device_make, device_model=m.device_model,
                        device_serial=m.device_serial, position=position))
    case.current_version, case.status = target.version, "unsigned"
    return target


def case_history(db: Database, principal: Principal, case_id: str, *,
                 emergency_reason: str | None = None) -> list[dict[str, Any]]:
    """Every version of the case, oldest first, each as ``case show`` gives it."""
    with operation(db, principal, "case.history") as op:
        case = op.case(case_id, "case.read", emergency_reason=emergency_reason)
        numbers = op.session.scalars(sa.select(CaseVersion.version).where(CaseVersion.case_id == case.id)
                                     .order_by(CaseVersion.version)).all()
        result = [case_json(op.session, case, load_version(op.session, case, n)) for n in numbers]
        op.details.update(versions=list(numbers))
        return result


def diff_versions(db: Database, principal: Principal, case_id: str, first: int, second: int, *,
                  emergency_reason: str | None = None) -> dict[str, Any]:
    """What changed from version ``first`` to ``second``: fields with their two
    values, and media (by SHA-256) removed and added."""
    with operation(db, principal, "case.diff") as op:
        case = op.case(case_id, "case.read", emergency_reason=emergency_reason)
        a = case_json(op.session, case, load_version(op.session, case, first))
        b = case_json(op.session, case, load_version(op.session, case, second))
        op.details.update(versions=[first, second])
    changed: dict[str, dict[str, Any]] = {}
    for key in ("patient", "status", "form_template", "signed_by", "reason"):
        if a[key] != b[key]:
            changed[key] = {"from": a[key], "to": b[key]}
    for key in sorted(set(a["form"]) | set(b["form"])):
        if a["form"].get(key) != b["form"].get(key):
            changed[f"form.{key}"] = {"from": a["form"].get(key), "to": b["form"].get(key)}
    for sha in sorted(set(a["annotations"]) | set(b["annotations"])):
        if a["annotations"].get(sha) != b["annotations"].get(sha):
            changed[f"annotations.{sha[:12]}"] = {"from": len(a["annotations"].get(sha, [])),
                                                  "to": len(b["annotations"].get(sha, []))}
    media_a = {m["sha256"]: m for m in a["media"]}
    media_b = {m["sha256"]: m for m in b["media"]}
    return {
        "case_id": case_id, "from_version": first, "to_version": second, "fields": changed,
        "media_removed": [_media_ref(media_a[sha]) for sha in media_a if sha not in media_b],
        "media_added": [_media_ref(media_b[sha]) for sha in media_b if sha not in media_a],
        "media_kept": len(set(media_a) & set(media_b)),
    }


def _media_ref(m: dict[str, Any]) -> dict[str, Any]:
    return {"sha256": m["sha256"], "path": m["path"], "kind": m["kind"]}


def _template(s: Any, name: str | None) -> FormTemplate:
    if name is None:
        raise FailedPrecondition("the case has no form yet: choose one with --form NAME")
    template = s.get(FormTemplate, name)
    if template is None:
        raise NotFound(f"unknown form {name!r} (admin form list)")
    return template


def _changes(latest: CaseVersion, patient: str, template: str, form: dict[str, Any],
             kept: list[MediaItem], case_patient: str) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    old_patient = latest.patient_id or case_patient
    if patient != old_patient:
        changes["patient"] = {"from": old_patient, "to": patient}
    if template != latest.form_template:
        changes["form_template"] = {"from": latest.form_template, "to": template}
    old_form = latest.form or {}
    for key in sorted(set(old_form) | set(form)):
        if old_form.get(key) != form.get(key):
            changes[f"form.{key}"] = {"from": old_form.get(key), "to": form.get(key)}
    dropped = [m.blob_sha256 for m in latest.media if m not in kept]
    if dropped:
        changes["media_dropped"] = dropped
    return changes
