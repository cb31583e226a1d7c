"""Administration (R15, R16, R17, R19, R13): departments, roles, users,
confidential patients, form templates, and purge.

Each function runs inside :func:`archive_server.authz.operation`: the right it
needs is checked there and the change is audited (R18) with what changed.
"""
from __future__ import annotations

import logging
from typing import Any, cast

import sqlalchemy as sa

from archive_server import forms
from archive_server import faults
from archive_server import validation as v
from archive_server.authz import Grants, NotPermitted, Principal, ReasonRequired, operation
from archive_server import blobs as catalogue
from archive_server.blobstores import BlobStore
from archive_server.cases import iso
from archive_server.db import Database, lock_patient
from archive_server.errors import FailedPrecondition, InvalidArgument, NotFound
from archive_server.models import (
    Case,
    CaseVersion,
    ConfidentialPatient,
    Consent,
    Department,
    DepartmentAccess,
    FormTemplate,
    IngestSession,
    MediaItem,
    Role,
    SessionBlob,
    TeachingItem,
    User,
    utcnow,
)
from archive_server.rights import BUILTIN_ROLES, RESERVED_RIGHTS, RIGHTS

log = logging.getLogger(__name__)


# -- departments (R15) -----------------------------------------------------------------


def add_department(db: Database, principal: Principal, hsa_id: str, name: str) -> str:
    """Register a department or rename it; returns added, renamed or unchanged."""
    hsa = v.hsa_id(hsa_id.strip(), "HSA-ID")
    name = name.strip()
    if not name:
        raise InvalidArgument("--name must not be empty")
    with operation(db, principal, "department.added", target=f"department:{hsa}") as op:
        op.require("admin.departments")
        op.department = hsa
        s = op.session
        dep = s.execute(sa.select(Department).where(Department.hsa_id == hsa)).scalar_one_or_none()
        if dep is None:
            s.add(Department(hsa_id=hsa, name=name, registered_by="admin"))
            op.details.update(hsa_id=hsa, name=name)
            return "added"
        if dep.name != name:
            op.action = "department.renamed"
            op.details.update(hsa_id=hsa, old_name=dep.name, name=name)
            dep.name = name
            return "renamed"
        op.action = "department.unchanged"
        op.details.update(hsa_id=hsa, name=name)
        return "unchanged"


def list_departments(db: Database, principal: Principal) -> list[dict[str, Any]]:
    with operation(db, principal, "department.list") as op:
        rows = op.session.scalars(sa.select(Department).order_by(Department.hsa_id)).all()
        return [{"hsa_id": d.hsa_id, "name": d.name, "registered_by": d.registered_by,
                 "created_at": iso(d.created_at)} for d in rows]


# -- rights and roles (R16) ------------------------------------------------------------


def list_rights() -> list[dict[str, str]]:
    return [{"right": name, "description": text} for name, text in RIGHTS.items()]


def add_role(db: Database, principal: Principal, name: str, rights: list[str]) -> dict[str, Any]:
    """Define a custom role (a named set of rights), or change its rights."""
    from archive_server.authz import ROLE_NAME

    name = name.strip()
    if not ROLE_NAME.match(name):
        raise InvalidArgument(f"role name must be lower-case letters, digits, '.', '_' or '-', got {name!r}")
    wanted = sorted({r.strip() for r in rights if r.strip()})
    unknown = [r for r in wanted if r not in RIGHTS]
    if unknown:
        raise InvalidArgument(f"unknown right(s) {', '.join(unknown)}; `admin rights` lists them")
    if not wanted:
        raise InvalidArgument("a role needs at least one right (--rights RIGHT,RIGHT…)")
    with operation(db, principal, "role.added", target=f"role:{name}") as op:
        op.require("admin.roles")
        op.details.update(role=name, rights=wanted)
        if name in BUILTIN_ROLES:
            raise NotPermitted("BUILTIN_ROLE", f"{name} is a built-in role and cannot be changed")
        reserved = sorted(set(wanted) & RESERVED_RIGHTS)
        if reserved:
            raise NotPermitted("RESERVED_RIGHT", f"{', '.join(reserved)} belongs to the built-in role sysadmin "
                                                 "only and cannot be given to another role")
        _no_escalation(op.grants, wanted, None, f"define role {name}")
        s = op.session
        role = s.execute(sa.select(Role).where(Role.name == name)).scalar_one_or_none()
        if role is None:
            s.add(Role(name=name, rights=wanted, builtin=False))
        else:
            op.action = "role.changed"
            op.details["old_rights"] = list(role.rights)
            role.rights = wanted
        return {"role": name, "rights": wanted}


def list_roles(db: Database, principal: Principal) -> list[dict[str, Any]]:
    with operation(db, principal, "role.list") as op:
        rows = op.session.scalars(sa.select(Role).order_by(Role.name)).all()
        return [{"role": r.name, "rights": sorted(r.rights), "builtin": r.builtin} for r in rows]


# -- users (R16) -----------------------------------------------------------------------


def add_user(db: Database, principal: Principal, username: str, department: str, role: str) -> str:
    """Give ``username`` access to ``department`` with ``role`` (creating the
    user on first use; a second department is a second call)."""
    target_user = Principal.named(username).user
    hsa = v.hsa_id(department.strip(), "--department")
    with operation(db, principal, "user.access_granted", target=f"user:{target_user}") as op:
        op.require("admin.users")
        op.department = hsa
        op.details.update(user=target_user, department=hsa, role=role)
        s = op.session
        dep = s.execute(sa.select(Department).where(Department.hsa_id == hsa)).scalar_one_or_none()
        if dep is None:
            raise NotFound(f"unknown department {hsa} (admin department add)")
        role_row = s.execute(sa.select(Role).where(Role.name == role)).scalar_one_or_none()
        if role_row is None:
            raise NotFound(f"unknown role {role!r} (admin role list)")
        _no_escalation(op.grants, role_row.rights, dep.id, f"give the role {role} in {hsa}")
        user = s.execute(sa.select(User).where(User.username == target_user)).scalar_one_or_none()
        if user is None:
            user = User(username=target_user)
            s.add(user)
            s.flush()
        access = s.execute(sa.select(DepartmentAccess).where(
            DepartmentAccess.user_id == user.id, DepartmentAccess.department_id == dep.id)).scalar_one_or_none()
        if access is None:
            s.add(DepartmentAccess(user_id=user.id, department_id=dep.id, role_id=role_row.id))
            return "granted"
        if access.role_id != role_row.id:
            op.details["old_role"] = access.role.name
            access.role_id = role_row.id
            op.action = "user.role_changed"
            return "changed"
        return "unchanged"


def _no_escalation(grants: Grants, rights: list[str], department_id: int | None, what: str) -> None:
    """Nobody hands out a right they do not hold themselves: a user
    administrator cannot make anyone (or themselves) a sysadmin."""
    if department_id is None:
        # A role is defined for every department: a department right is the
        # definer's own when they hold it in any of theirs.
        held = set().union(*grants.by_department.values()) if grants.by_department else set()
        lacking = sorted(r for r in rights if not grants.allows(r) and r not in held)
    else:
        lacking = grants.lacking(rights, department_id)
    if lacking:
        raise NotPermitted("NOT_PERMITTED", f"{grants.principal.actor} cannot {what}: it includes right(s) "
                                            f"they do not hold themselves ({', '.join(lacking)}).")


def list_users(db: Database, principal: Principal) -> list[dict[str, Any]]:
    with operation(db, principal, "user.list") as op:
        op.require("admin.users")
        rows = op.session.execute(
            sa.select(User.username, Department.hsa_id, Role.name)
            .join(DepartmentAccess, DepartmentAccess.user_id == User.id)
            .join(Department, Department.id == DepartmentAccess.department_id)
            .join(Role, Role.id == DepartmentAccess.role_id)
            .order_by(User.username, Department.hsa_id)).all()
        return [{"user": u, "department": d, "role": r} for u, d, r in rows]


# -- confidential patients (R17) -------------------------------------------------------


def set_confidential(db: Database, principal: Principal, patient: str, on: bool) -> dict[str, Any]:
    """Mark every case of ``patient`` confidential (and those ingested later),
    or lift the mark. A case is the patient's when any of its versions is."""
    with operation(db, principal, "patient.confidential_on" if on else "patient.confidential_off",
                   target=f"patient:{patient}") as op:
        op.require("case.mark_confidential")
        op.patient = patient
        s = op.session
        # The patient's lock first: a case being filed for them right now either
        # committed before (and is updated below) or sees this mark (issue 13).
        lock_patient(s, patient)
        marked = s.get(ConfidentialPatient, patient)
        if on and marked is None:
            s.add(ConfidentialPatient(patient_id=patient, marked_by=principal.actor, marked_at=utcnow()))
        elif not on and marked is not None:
            s.delete(marked)
        s.flush()
        case_ids = set(s.scalars(sa.select(Case.id).where(Case.patient_id == patient)))
        case_ids |= set(s.scalars(sa.select(CaseVersion.case_id).where(CaseVersion.patient_id == patient)))
        changed = []
        for case in s.scalars(sa.select(Case).where(Case.id.in_(case_ids))):
            still = on or _has_confidential_patient(s, case)
            if case.confidential != still:
                case.confidential = still
                changed.append(case.id)
        faults.reach("confidential.cases_marked")
        op.details.update(cases=sorted(case_ids), changed=sorted(changed))
        return {"patient_marked": on, "cases": len(case_ids), "changed": len(changed)}


def _has_confidential_patient(s: Any, case: Case) -> bool:
    patients = set(s.scalars(sa.select(CaseVersion.patient_id).where(CaseVersion.case_id == case.id)))
    patients.add(case.patient_id)
    return s.scalar(sa.select(sa.func.count()).select_from(ConfidentialPatient)
                    .where(ConfidentialPatient.patient_id.in_(patients))) > 0


# -- form templates (R13) --------------------------------------------------------------


def add_form(db: Database, principal: Principal, name: str, title: str, field_specs: list[str]) -> dict[str, Any]:
    fields = [forms.parse_field_spec(spec) for spec in field_specs]
    forms.check_template(name, fields)
    with operation(db, principal, "form.added", target=f"form:{name}") as op:
        op.require("forms.manage")
        op.details.update(form=name, title=title, fields=fields)
        s = op.session
        existing = s.get(FormTemplate, name)
        if existing is not None:
            # Cases keep their data under the field names they were filled with;
            # a changed form is a new name so that old cases stay valid.
            raise FailedPrecondition(f"form {name} exists already; give the new form a new name")
        s.add(FormTemplate(name=name, title=title.strip() or name, fields=fields, created_by=principal.actor))
        return {"form": name, "title": title.strip() or name, "fields": fields}


def list_forms(db: Database, principal: Principal) -> list[dict[str, Any]]:
    with operation(db, principal, "form.list") as op:
        rows = op.session.scalars(sa.select(FormTemplate).order_by(FormTemplate.name)).all()
        return [{"form": f.name, "title": f.title, "fields": f.fields} for f in rows]


# -- purge (R19) -----------------------------------------------------------------------


def purge_case(db: Database, blobs: BlobStore, principal: Principal, case_id: str, decision: str) -> dict[str, Any]:
    """Delete the case, every version, its media rows, consents and ingest
    record, then every blob no other case (or consent) uses. The audit event
    keeps what, who, when and the decision, not the content."""
    if not decision.strip():
        raise ReasonRequired("a purge needs the decision it follows (--decision REF)")
    faults.reach("purge.begin")
    with operation(db, principal, "case.purged", target=f"case:{case_id}", why=decision.strip()) as op:
        op.require("case.purge")
        op.case_id = case_id
        s = op.session
        case = s.execute(sa.select(Case).where(Case.id == case_id).with_for_update()).scalar_one_or_none()
        if case is None:
            raise NotFound(f"unknown case {case_id}")
        op.department = s.execute(sa.select(Department.hsa_id).where(Department.id == case.department_id)
                                  ).scalar_one()
        # The patient's audit report shows the purge (R18, R19); a case once
        # filed under another number (corrected by a version) names it too.
        op.patient = case.patient_id
        patients = set(s.scalars(sa.select(CaseVersion.patient_id).where(CaseVersion.case_id == case_id)))
        version_ids = list(s.scalars(sa.select(CaseVersion.id).where(CaseVersion.case_id == case_id)))
        shas = set(s.scalars(sa.select(MediaItem.blob_sha256).where(MediaItem.case_version_id.in_(version_ids))))
        shas |= set(s.scalars(sa.select(Consent.blob_sha256).where(Consent.case_id == case_id)))
        catalogue.lock_for_purge(s, shas)
        faults.reach("purge.blobs_locked")
        media_deleted = s.execute(sa.delete(MediaItem).where(MediaItem.case_version_id.in_(version_ids)))
        media_rows = cast("sa.CursorResult[Any]", media_deleted).rowcount  # a DELETE's result has a rowcount
        s.execute(sa.delete(Consent).where(Consent.case_id == case_id))
        s.execute(sa.delete(CaseVersion).where(CaseVersion.case_id == case_id))
        s.execute(sa.delete(SessionBlob).where(SessionBlob.session_id.in_(
            sa.select(IngestSession.session_id).where(IngestSession.case_id == case_id))))
        s.execute(sa.delete(IngestSession).where(IngestSession.case_id == case_id))
        s.execute(sa.delete(Case).where(Case.id == case_id))
        still_used = set(s.scalars(sa.select(MediaItem.blob_sha256).where(MediaItem.blob_sha256.in_(shas))))
        still_used |= set(s.scalars(sa.select(Consent.blob_sha256).where(Consent.blob_sha256.in_(shas))))
        still_used |= set(s.scalars(sa.select(TeachingItem.blob_sha256).where(TeachingItem.blob_sha256.in_(shas))))
        orphans = sorted(shas - still_used)
        # Tombstones: from here until each blob's bytes and row are deleted
        # below, no upload can adopt them (issue 13, "purge races upload").
        catalogue.mark_purging(s, orphans)
        op.details.update(patients=sorted(p for p in patients | {case.patient_id} if p),
                          decision=decision.strip(), versions=len(version_ids), media_items=media_rows,
                          blobs_deleted=len(orphans), blobs_kept=len(shas) - len(orphans))
        faults.reach("purge.rows_deleted")
    faults.reach("purge.committed")
    # The case is gone; now each unused blob's bytes, then its row. One that
    # cannot be deleted now keeps its tombstone: the server's sweep and
    # `fsck --repair` finish it.
    deleted, failed = 0, []
    for sha in orphans:
        try:
            deleted += catalogue.finish_purge(db, blobs, sha)
        except Exception:  # noqa: BLE001 - report every one, stop at none
            log.exception("purged blob could not be deleted", extra={"sha256": sha})
            failed.append(sha)
    return {"case_id": case_id, "versions": len(version_ids), "blobs_deleted": deleted,
            "blobs_kept": len(shas) - len(orphans), "blobs_not_deleted": failed}
