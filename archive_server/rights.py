"""The fixed list of rights and the built-in roles (R16), and the rows every
archive starts with (built-in roles, the default form template).

Kept apart from ``authz`` so that ``db.upgrade_schema`` can seed them without
importing the gate.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from archive_server.forms import DEFAULT_TEMPLATE
from archive_server.models import FormTemplate, Role

# The fixed list of rights (dotted names) and what each allows, for `admin rights`.
RIGHTS: dict[str, str] = {
    "case.read": "search the department's cases, open them, step through and compare versions",
    "case.sign": "sign (lock) a case of the department",
    "case.revise": "correct a case: edit an unsigned one, or make a new version of a signed one",
    "case.print": "print a case to PDF, with a reason",
    "case.export": "export a case's media files",
    "case.emergency_open": "open a confidential case of the department in an emergency (nödöppning), with a reason",
    "consent.record": "record a patient's written consent to teaching use with a case",
    "teaching.copy": "make a de-identified teaching copy of a case with recorded consent",
    "teaching.read": "browse the teaching collection (de-identified teaching copies, information images) "
                     "and add information images to it",
    "case.purge": "delete a case, all its versions and media for good (gallring); sysadmin only",
    "case.mark_confidential": "mark a patient's cases confidential (spärr) or lift it",
    "forms.manage": "add and change form templates",
    "admin.users": "give users access to departments, with a role",
    "admin.roles": "define roles (named sets of rights)",
    "admin.departments": "add and rename departments",
    "admin.agents": "bind capture-PC agents' certificates to departments, revoke them, list them",
    "admin.devices": "register and remove departments' capture devices (R6), handed to their agents",
    "ops.read": "watch every agent of the fleet: liveness, what it does, its errors and refused cards (R21)",
    "audit.read": "read the audit log, for every department",
    "statistics.read": "take out audit reports and statistics, for every department",
}
DEPARTMENT_RIGHTS = frozenset({
    "case.read", "case.sign", "case.revise", "case.print", "case.export", "case.emergency_open",
    "consent.record", "teaching.copy",
})
ARCHIVE_RIGHTS = frozenset(RIGHTS) - DEPARTMENT_RIGHTS
# Rights only a built-in role may hold (R19: purge is for the system administrator).
RESERVED_RIGHTS = frozenset({"case.purge"})
BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "sysadmin": frozenset(RIGHTS),
    "log-operator": frozenset({"audit.read", "statistics.read"}),
    # Central operations (R21): the fleet, nothing of any patient.
    "ops": frozenset({"ops.read"}),
}


def seed_builtins(s: Session) -> None:
    """Create or refresh the built-in roles and the default form (idempotent)."""
    for name, rights in BUILTIN_ROLES.items():
        role = s.execute(sa.select(Role).where(Role.name == name)).scalar_one_or_none()
        if role is None:
            s.add(Role(name=name, rights=sorted(rights), builtin=True))
        elif sorted(role.rights) != sorted(rights) or not role.builtin:
            role.rights, role.builtin = sorted(rights), True
    if s.get(FormTemplate, DEFAULT_TEMPLATE["name"]) is None:
        s.add(FormTemplate(name=DEFAULT_TEMPLATE["name"], title=DEFAULT_TEMPLATE["title"],
                           fields=DEFAULT_TEMPLATE["fields"], created_by="builtin"))
