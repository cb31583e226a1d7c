"""Rights, roles and the one authorization gate (R16, R17, R18).

Every operation on cases, forms, users, roles, departments and the audit log
runs inside :func:`operation`. It names who acts (a :class:`Principal`), loads
what that principal may do (:class:`Grants`), and writes exactly one audit
event for the operation: "permitted" in the operation's own transaction (a
read that is not logged does not happen), or "refused"/"failed" in a new
transaction after the operation's work was rolled back. Cases are read only
through :meth:`Operation.case` and :meth:`Operation.cases`, which apply the
rights and the confidentiality rule; no code path reads cases around them.

Rights come in two scopes. Department rights (``case.*`` except purge and
mark_confidential, ``consent.record``, ``teaching.copy``) hold only in the
departments where the user's role grants them. Archive-wide rights
(administration, audit, statistics, purge, confidentiality) hold everywhere
once any of the user's roles grants them: a log operator sees the audit of all
departments (R16).

The local operator (the ``bildsluss-archive`` command run on the archive
server without ``--as``) holds every right everywhere; it is audited as
``cli:<unix user>``. Confidential cases stay masked for it as for everyone.

Who the principal is was decided before the gate: by a verified login
(``logins.py``: a local password or the region's identity provider, then a
bearer token on every call) or by the operating-system account running the
command line. Every audit event says how (``details.login.method``: ``local``,
``oidc`` or ``cli``) and from where (``details.login.from``: the peer address,
or ``os:<account>`` for the command line).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload, selectinload

from archive_server.audit import append_audit
from archive_server.db import Database
from archive_server.errors import ArchiveError, InvalidArgument, NotFound
from archive_server.models import Case, Department, DepartmentAccess, User
from archive_server.rights import ARCHIVE_RIGHTS, DEPARTMENT_RIGHTS, RIGHTS

log = logging.getLogger(__name__)

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
ROLE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class NotPermitted(ArchiveError):
    """The principal lacks a right, access to a department, or the case is
    confidential. ``reason`` is a stable code; the message names what is
    missing and never any patient data."""

    code = "PERMISSION_DENIED"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReasonRequired(InvalidArgument):
    """An action that must state why (print, emergency open, revise, purge) was
    asked without a reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = "REASON_REQUIRED"


class Unauthenticated(ArchiveError):
    """The call carries no valid login: no bearer token, or one that is
    unknown, expired or logged out. ``reason`` is a stable code (TOKEN_MISSING,
    TOKEN_UNKNOWN, TOKEN_EXPIRED, TOKEN_REVOKED, BAD_CREDENTIALS, …); log in again."""

    code = "UNAUTHENTICATED"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who acts. ``user`` None: the local operator on the archive server.
    ``login`` says how they were authenticated (``local``, ``oidc``, ``cli``),
    ``origin`` from where (a peer address, or ``os:<account>``)."""

    actor: str
    user: str | None
    login: str = "cli"
    origin: str = ""

    @classmethod
    def named(cls, user: str, *, login: str = "cli", origin: str = "") -> "Principal":
        return cls(actor=check_username(user), user=check_username(user), login=login, origin=origin)

    @classmethod
    def local(cls, unix_user: str) -> "Principal":
        return cls(actor=f"cli:{unix_user}", user=None, login="cli", origin=f"os:{unix_user}")

    def login_details(self) -> dict[str, str]:
        return {"method": self.login, "from": self.origin}


def check_username(user: str) -> str:
    user = user.strip()
    if not USERNAME.match(user):
        raise InvalidArgument(f"user name must be 1-64 lower-case letters, digits or . _ @ -, got {user!r}")
    return user


@dataclasses.dataclass(frozen=True)
class Grants:
    """What a principal may do, loaded once per operation."""

    principal: Principal
    archive_wide: frozenset[str]
    by_department: dict[int, frozenset[str]]
    roles: dict[int, str]  # department id -> role name, for refusal sentences

    def allows(self, right: str, department_id: int | None = None) -> bool:
        if self.principal.user is None:
            return True
        if right in ARCHIVE_RIGHTS:
            return right in self.archive_wide
        return department_id is not None and right in self.by_department.get(department_id, frozenset())

    def lacking(self, rights: list[str] | frozenset[str], department_id: int | None) -> list[str]:
        """Those of ``rights`` the principal does not hold (in ``department_id``)."""
        return sorted(r for r in rights if not self.allows(r, department_id))

    def departments_with(self, right: str) -> set[int] | None:
        """Departments where ``right`` holds; None means every department."""
        if self.principal.user is None or (right in ARCHIVE_RIGHTS and right in self.archive_wide):
            return None
        return {d for d, rights in self.by_department.items() if right in rights}


def load_grants(s: Session, principal: Principal) -> Grants:
    if principal.user is None:
        return Grants(principal, frozenset(RIGHTS), {}, {})
    user = s.execute(sa.select(User).where(User.username == principal.user)).scalar_one_or_none()
    if user is None:
        raise NotPermitted("UNKNOWN_USER", f"{principal.user} is not a user of this archive: "
                                           "an administrator must give them access to a department first.")
    rows = s.scalars(sa.select(DepartmentAccess).where(DepartmentAccess.user_id == user.id)
                     .options(joinedload(DepartmentAccess.role, innerjoin=True))).all()
    archive_wide: set[str] = set()
    by_department: dict[int, frozenset[str]] = {}
    roles: dict[int, str] = {}
    for row in rows:
        rights = frozenset(row.role.rights)
        archive_wide |= rights & ARCHIVE_RIGHTS
        by_department[row.department_id] = rights & DEPARTMENT_RIGHTS
        roles[row.department_id] = row.role.name
    return Grants(principal, frozenset(archive_wide), by_department, roles)


def authorize(grants: Grants, right: str, department: Department | None = None) -> None:
    """The one authorization check. Returns when ``right`` holds (in
    ``department`` for department rights), else raises NotPermitted with a
    sentence naming the missing right or department access."""
    if right not in RIGHTS:
        raise AssertionError(f"unknown right {right}")
    if grants.allows(right, department.id if department is not None else None):
        return
    who = grants.principal.actor
    if right in ARCHIVE_RIGHTS or department is None:
        raise NotPermitted("NOT_PERMITTED", f"{who} does not have the right {right} "
                                            f"({RIGHTS[right]}); ask a system administrator.")
    role = grants.roles.get(department.id)
    if role is None:
        raise NotPermitted("NO_DEPARTMENT_ACCESS",
                           f"{who} has no access to department {department.hsa_id} ({department.name}), "
                           f"which is needed for {right}.")
    raise NotPermitted("NOT_PERMITTED",
                       f"{who}'s role {role} in department {department.hsa_id} does not include "
                       f"the right {right} ({RIGHTS[right]}).")


@dataclasses.dataclass
class Operation:
    """One audited operation. Fill ``department``, ``patient``, ``target``,
    ``why`` and ``details``; the gate writes them into the audit event."""

    session: Session
    principal: Principal
    grants: Grants
    action: str
    target: str | None = None
    case_id: str | None = None
    department: str | None = None
    patient: str | None = None
    why: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    emergency: bool = False

    def require(self, right: str, department: Department | None = None) -> None:
        if department is not None:
            self.department = department.hsa_id
        authorize(self.grants, right, department)

    def case(self, case_id: str, right: str, *, emergency_reason: str | None = None,
             lock: bool = False) -> Case:
        """The case, once ``right`` holds in its department. A confidential
        case also needs ``case.emergency_open`` there and a reason (R17); for
        reading (``case.read``) in an emergency that right alone suffices."""
        self.case_id, self.target = case_id, f"case:{case_id}"
        query = sa.select(Case).where(Case.id == case_id)
        if lock:  # the case row only: a join would lock its department's row too
            query = query.options(selectinload(Case.department)).with_for_update()
        else:  # one round trip: the department comes in the case's row
            query = query.options(joinedload(Case.department, innerjoin=True))
        case = self.session.execute(query).scalar_one_or_none()
        if case is None:
            raise NotFound(f"unknown case {case_id}")
        self.department = case.department.hsa_id
        self.patient = case.patient_id
        if emergency_reason is not None:
            if right != "case.read":
                self.require(right, case.department)
            self.open_in_emergency(case, emergency_reason)
            return case
        self.require(right, case.department)
        if case.confidential:
            raise NotPermitted("CONFIDENTIAL", f"case {case_id} is confidential (Konfidentiellt). Opening it "
                                               "needs the right case.emergency_open in its department and a "
                                               "reason (--emergency --reason TEXT).")
        return case

    def open_in_emergency(self, case: Case, reason: str) -> None:
        if not reason.strip():
            raise ReasonRequired("emergency access (nödöppning) needs a reason: give --reason TEXT.")
        self.require("case.emergency_open", case.department)
        self.emergency = True
        self.why = reason.strip()
        self.details["emergency"] = True

    def cases(self, right: str, patient: str | None = None, *, department: str | None = None,
              since: Any = None, until: Any = None, status: str | None = None,
              newest_first: bool = False, limit: int | None = None) -> list[Case]:
        """Cases in the departments where ``right`` holds, oldest first (or
        newest first, at most ``limit``), narrowed by patient, department
        (HSA-id), creation time [since, until) and status."""
        order = (Case.created_at.desc(), Case.id.desc()) if newest_first else (Case.created_at, Case.id)
        query = sa.select(Case).options(joinedload(Case.department, innerjoin=True)).order_by(*order)
        if patient is not None:
            query = query.where(Case.patient_id == patient)
        if department is not None:
            query = query.join(Department, Department.id == Case.department_id).where(Department.hsa_id == department)
        if since is not None:
            query = query.where(Case.created_at >= since)
        if until is not None:
            query = query.where(Case.created_at < until)
        if status is not None:
            query = query.where(Case.status == status)
        departments = self.grants.departments_with(right)
        if departments is not None:
            query = query.where(Case.department_id.in_(departments or {-1}))
        if limit is not None:
            query = query.limit(limit)
        return list(self.session.scalars(query))


@contextlib.contextmanager
def operation(db: Database, principal: Principal, action: str, *, target: str | None = None,
              why: str | None = None, details: dict[str, Any] | None = None) -> Iterator[Operation]:
    """Run one operation in a write transaction and audit it, permitted or not.
    ``details`` start the audit event's details (kept when it is refused)."""
    op: Operation | None = None
    try:
        with db.write() as s:
            op = Operation(s, principal, Grants(principal, frozenset(), {}, {}), action,
                           target=target, why=why,
                           details={**(details or {}), "login": principal.login_details()})
            op.grants = load_grants(s, principal)
            yield op
            append_audit(s, principal.actor, _emergency_action(op), case_id=op.case_id, target=op.target,
                         department=op.department, patient=op.patient, why=op.why,
                         details=op.details, outcome="permitted")
    except ArchiveError as error:
        outcome = "refused" if isinstance(error, (NotPermitted, InvalidArgument)) else "failed"
        # What the operation had noted of the request, then why it did not happen.
        details = {**(op.details if op is not None else {"login": principal.login_details()}),
                   "reason": getattr(error, "reason", error.code), "message": str(error)}
        try:
            with db.write() as s:
                append_audit(s, principal.actor, action, case_id=op.case_id if op else None,
                             target=op.target if op else target, department=op.department if op else None,
                             patient=op.patient if op else None, why=op.why if op else why,
                             details=details, outcome=outcome)
        except ArchiveError:
            log.exception("could not audit a refused operation", extra={"audit_action": action})
        raise


def _emergency_action(op: Operation) -> str:
    return "case.emergency_open" if op.emergency and op.action == "case.show" else op.action
