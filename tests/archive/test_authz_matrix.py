"""The authorization matrix (R16, R17, R18): every right × every operation ×
own/other department, on SQLite and PostgreSQL.

Each principal holds exactly one right through a custom role in OWN (plus the
built-in sysadmin and log-operator, and a stranger with no access at all). An
operation must succeed exactly when the principal holds its right — in the
case's department for department rights, anywhere for archive-wide rights —
and otherwise raise NotPermitted naming the right or the department, change
nothing, and leave a "refused" audit event.
"""
from __future__ import annotations

import dataclasses
import pathlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from archive_server import admin, agentcerts, agents, devices, reports, versions
from archive_server.authz import NotPermitted, Principal
from archive_server.cases import export_case, print_case, record_consent, search_cases, show_case, teaching_copy
from archive_server.models import (
    AgentBinding, Case, CaseVersion, ConfidentialPatient, Consent, Department, DepartmentAccess, DepartmentDevice,
    FormTemplate, Role, User,
)
from archive_server.rights import ARCHIVE_RIGHTS, BUILTIN_ROLES, RESERVED_RIGHTS, RIGHTS
from tests.archive.client import personnummer
from tests.archive.databases import BACKENDS, temp_database
from tests.archive.world import COMPLETE_FORM, LOCAL, OTHER, OWN, World
from tests.support.pki import throwaway_certificate

Probe = Callable[[], bool]  # True when the operation's effect is visible


@dataclasses.dataclass
class Ctx:
    w: World
    tmp: pathlib.Path
    ready: dict[str, str]          # department -> an unsigned case with a complete form and a consent
    confidential: dict[str, str]   # department -> a confidential case

    def fresh_case(self, department: str) -> str:
        case_id = self.w.ingest(department=department)
        versions.revise_case(self.w.db, LOCAL, case_id, reason="form", fields=COMPLETE_FORM)
        return case_id

    def case_for(self, department: str, fresh: bool) -> str:
        if not fresh:
            return self.ready[department]
        case_id = self.fresh_case(department)
        doc = self.tmp / f"consent-{uuid.uuid4().hex}.pdf"
        doc.write_bytes(b"%PDF-1.4 consent " + uuid.uuid4().bytes)
        record_consent(self.w.db, self.w.blobs, LOCAL, case_id, doc)
        return case_id

    def get(self, model: Any, key: Any) -> Any:
        with self.w.db.read() as s:
            return s.get(model, key)

    def scalar(self, query: Any) -> Any:
        with self.w.db.read() as s:
            return s.scalar(query)


def _out(ctx: Ctx) -> pathlib.Path:
    return ctx.tmp / f"out-{uuid.uuid4().hex}"


def op_search(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    case_id = ctx.ready[dep]
    found = [c["case_id"] for c in search_cases(ctx.w.db, who)]
    if case_id not in found:  # a listing filters instead of refusing
        raise NotPermitted("FILTERED", "not listed")
    return lambda: True


def op_show(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    show_case(ctx.w.db, who, ctx.ready[dep])
    return lambda: True


def op_history(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    versions.case_history(ctx.w.db, who, ctx.ready[dep])
    return lambda: True


def op_diff(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    versions.diff_versions(ctx.w.db, who, ctx.ready[dep], 1, 1)
    return lambda: True


def op_sign(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    case_id = ctx.case_for(dep, fresh)
    probe = lambda: ctx.get(Case, case_id).status == "signed"  # noqa: E731
    versions.sign_case(ctx.w.db, who, case_id)
    return probe


def op_revise(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    case_id = ctx.case_for(dep, fresh)
    note = uuid.uuid4().hex
    probe = lambda: ctx.scalar(sa.select(CaseVersion.form).where(  # noqa: E731
        CaseVersion.case_id == case_id)).get("note") == note
    versions.revise_case(ctx.w.db, who, case_id, reason="matrix", fields=[("note", note)])
    return probe


def op_print(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    out = _out(ctx).with_suffix(".pdf")
    probe = out.exists
    print_case(ctx.w.db, ctx.w.blobs, who, ctx.case_for(dep, fresh), reason="matrix", out=out)
    return probe


def op_export(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    out = _out(ctx)
    probe = out.exists
    export_case(ctx.w.db, ctx.w.blobs, ctx.case_for(dep, fresh), out, who)
    return probe


def op_emergency_open(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    show_case(ctx.w.db, who, ctx.confidential[dep], emergency_reason="akut: medvetslös patient")
    return lambda: True


def op_consent(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    case_id = ctx.case_for(dep, fresh)
    before = ctx.scalar(sa.select(sa.func.count()).select_from(Consent).where(Consent.case_id == case_id))
    doc = ctx.tmp / f"scan-{uuid.uuid4().hex}.pdf"
    doc.write_bytes(b"%PDF-1.4 " + uuid.uuid4().bytes)
    probe = lambda: ctx.scalar(sa.select(sa.func.count()).select_from(Consent)  # noqa: E731
                               .where(Consent.case_id == case_id)) > before
    record_consent(ctx.w.db, ctx.w.blobs, who, case_id, doc)
    return probe


def op_teaching_copy(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    out = _out(ctx)
    probe = lambda: out.exists() and any(out.iterdir())  # noqa: E731
    teaching_copy(ctx.w.db, ctx.w.blobs, who, ctx.case_for(dep, fresh), out)
    return probe


def op_teaching_list(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    from archive_server import teaching

    teaching.list_items(ctx.w.db, who)
    return lambda: True


def op_purge(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    case_id = ctx.case_for(dep, fresh)
    probe = lambda: ctx.get(Case, case_id) is None  # noqa: E731
    admin.purge_case(ctx.w.db, ctx.w.blobs, who, case_id, "beslut 2026-17")
    return probe


# Patients marked confidential are born on other days than those of the other
# cases (World.ingest: 1912-12-12), so that no fresh case is confidential by chance.
def op_mark_confidential(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    patient = personnummer("19301111")
    ctx.w.ingest(patient=patient, department=dep)
    probe = lambda: ctx.get(ConfidentialPatient, patient) is not None  # noqa: E731
    admin.set_confidential(ctx.w.db, who, patient, True)
    return probe


def op_add_form(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    name = f"form-{uuid.uuid4().hex[:8]}"
    probe = lambda: ctx.get(FormTemplate, name) is not None  # noqa: E731
    admin.add_form(ctx.w.db, who, name, "Sår", ["area:text:required"])
    return probe


def op_add_user(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    name = f"u{uuid.uuid4().hex[:8]}"
    probe = lambda: ctx.scalar(sa.select(sa.func.count()).select_from(DepartmentAccess).join(User)  # noqa: E731
                               .where(User.username == name)) == 1
    admin.add_user(ctx.w.db, who, name, dep, "user-admin")
    return probe


def op_add_role(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    name = f"r{uuid.uuid4().hex[:8]}"
    probe = lambda: ctx.scalar(sa.select(Role.id).where(Role.name == name)) is not None  # noqa: E731
    admin.add_role(ctx.w.db, who, name, ["admin.roles"])
    return probe


def op_add_department(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    hsa = f"SE2321000016-{uuid.uuid4().hex[:6].upper()}"
    probe = lambda: ctx.scalar(sa.select(Department.id).where(Department.hsa_id == hsa)) is not None  # noqa: E731
    admin.add_department(ctx.w.db, who, hsa, "Ny avdelning")
    return probe


def op_bind_agent(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    agent_id = f"pc-{uuid.uuid4().hex[:8]}"
    probe = lambda: ctx.get(AgentBinding, agent_id) is not None  # noqa: E731
    agentcerts.bind_agent(ctx.w.db, who, agent_id, dep, throwaway_certificate(agent_id))
    return probe


def op_add_device(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    model = f"EOS {uuid.uuid4().hex[:6]}"
    probe = lambda: ctx.scalar(sa.select(DepartmentDevice.id).where(DepartmentDevice.model == model)) is not None  # noqa: E731
    devices.add_device(ctx.w.db, who, dep, "Canon", model)
    return probe


def op_fleet(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    agents.fleet_for(ctx.w.db, who, dep)
    return lambda: True


def op_audit_list(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    reports.list_events(ctx.w.db, who, department=dep)
    return lambda: True


def op_audit_report(ctx: Ctx, who: Principal, dep: str, fresh: bool) -> Probe:
    reports.report(ctx.w.db, who, "department")
    return lambda: True


# operation -> (the right it needs, how to run it, its audit action)
OPERATIONS: dict[str, tuple[str, Callable[[Ctx, Principal, str, bool], Probe], str | None]] = {
    "search": ("case.read", op_search, None),
    "show": ("case.read", op_show, "case.show"),
    "history": ("case.read", op_history, "case.history"),
    "diff": ("case.read", op_diff, "case.diff"),
    "sign": ("case.sign", op_sign, "case.sign"),
    "revise": ("case.revise", op_revise, "case.revise"),
    "print": ("case.print", op_print, "case.print"),
    "export": ("case.export", op_export, "case.exported"),
    "emergency_open": ("case.emergency_open", op_emergency_open, "case.show"),
    "consent": ("consent.record", op_consent, "consent.checked"),
    "teaching_copy": ("teaching.copy", op_teaching_copy, "case.teaching_copy"),
    "teaching_list": ("teaching.read", op_teaching_list, "teaching.list"),
    "purge": ("case.purge", op_purge, "case.purged"),
    "mark_confidential": ("case.mark_confidential", op_mark_confidential, "patient.confidential_on"),
    "add_form": ("forms.manage", op_add_form, "form.added"),
    "add_user": ("admin.users", op_add_user, "user.access_granted"),
    "add_role": ("admin.roles", op_add_role, "role.added"),
    "add_department": ("admin.departments", op_add_department, "department.added"),
    "bind_agent": ("admin.agents", op_bind_agent, "agent.bound"),
    "add_device": ("admin.devices", op_add_device, "device.added"),
    # Permitted fleet reads are not audited (no patient data; polled), refusals are.
    "fleet": ("ops.read", op_fleet, None),
    "audit_list": ("audit.read", op_audit_list, "audit.list"),
    "audit_report": ("statistics.read", op_audit_report, "audit.report"),
}


def test_every_right_has_an_operation():
    assert {right for right, _, _ in OPERATIONS.values()} == set(RIGHTS)


@pytest.fixture(scope="module", params=BACKENDS)
def matrix(request, tmp_path_factory) -> Iterator[tuple[Ctx, dict[str, tuple[Principal, frozenset[str]]]]]:
    tmp = tmp_path_factory.mktemp(f"matrix-{request.param}")
    with temp_database(request.param, tmp / "db") as url:
        w = World.create(url, tmp / "data")
        principals: dict[str, tuple[Principal, frozenset[str]]] = {}
        for right in sorted(set(RIGHTS) - RESERVED_RIGHTS):
            role = w.role(f"only-{right.replace('.', '-')}", [right])
            principals[right] = (w.user(f"has-{right.replace('.', '-')}", OWN, role), frozenset({right}))
        for role, rights in BUILTIN_ROLES.items():
            principals[role] = (w.user(f"builtin-{role}", OWN, role), rights)
        principals["stranger"] = (Principal.named("stranger"), frozenset())
        w.role("user-admin", ["admin.users"])  # what add_user hands out (its holder holds it)
        ctx = Ctx(w, tmp, {}, {})
        for dep in (OWN, OTHER):
            ctx.ready[dep] = ctx.case_for(dep, fresh=True)
            patient = personnummer("19301112")
            ctx.confidential[dep] = w.ingest(patient=patient, department=dep)
            admin.set_confidential(w.db, LOCAL, patient, True)
        yield ctx, principals
        w.close()


def expected(rights: frozenset[str], right: str, department: str) -> bool:
    return right in rights and (right in ARCHIVE_RIGHTS or department == OWN)


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_matrix(matrix, operation):
    ctx, principals = matrix
    right, run, action = OPERATIONS[operation]
    wrong: list[str] = []
    for name, (who, rights) in sorted(principals.items()):
        for dep in (OWN, OTHER):
            allow = expected(rights, right, dep)
            where = f"{name} × {operation} × {'own' if dep == OWN else 'other'}"
            probe: Probe | None = None
            try:
                probe = run(ctx, who, dep, allow)
            except NotPermitted as refused:
                if allow:
                    wrong.append(f"{where}: refused ({refused})")
                    continue
                if action is not None:
                    event = ctx.w.last_event()
                    if (event.actor, event.action, event.outcome) != (who.actor, action, "refused"):
                        wrong.append(f"{where}: refusal not audited: {event.actor} {event.action} {event.outcome}")
                    message = str(refused)
                    if refused.reason == "UNKNOWN_USER":
                        ok = "not a user" in message
                    else:
                        ok = right in message or "no access to department" in message
                    if not ok:
                        wrong.append(f"{where}: the refusal does not name what is missing: {message}")
                continue
            if not allow:
                wrong.append(f"{where}: permitted, should be refused")
                continue
            if action is not None:
                event = ctx.w.last_event()
                if event.actor != who.actor or event.outcome != "permitted":
                    wrong.append(f"{where}: not audited as permitted ({event.actor} {event.action})")
            if not probe():
                wrong.append(f"{where}: permitted but had no effect")
    assert wrong == []


def test_refused_operations_change_nothing(matrix):
    """A refused sign, revise or purge leaves the shared case as it was."""
    ctx, principals = matrix
    reader = principals["case.read"][0]
    for dep in (OWN, OTHER):
        case_id = ctx.ready[dep]
        before = show_case(ctx.w.db, LOCAL, case_id)
        for run in (op_sign, op_revise, op_purge):
            with pytest.raises(NotPermitted):
                run(ctx, reader, dep, False)
        after = show_case(ctx.w.db, LOCAL, case_id)
        assert after == before


def test_roles_cannot_take_reserved_rights_or_replace_builtins(fresh_db_url, tmp_path):
    w = World.create(fresh_db_url, tmp_path)
    with pytest.raises(NotPermitted, match="sysadmin"):
        admin.add_role(w.db, LOCAL, "cleaner", ["case.read", "case.purge"])
    with pytest.raises(NotPermitted, match="built-in"):
        admin.add_role(w.db, LOCAL, "sysadmin", ["case.read"])
    assert [e.outcome for e in w.events(actor=LOCAL.actor)][-2:] == ["refused", "refused"]
    w.close()


def test_nobody_hands_out_rights_they_do_not_hold(fresh_db_url, tmp_path):
    w = World.create(fresh_db_url, tmp_path)
    admins = w.role("admins", ["admin.users", "admin.roles", "case.read"])
    boss = w.user("boss", OWN, admins)
    w.role("readers", ["case.read"])
    admin.add_user(w.db, boss, "rita", OWN, "readers")
    for attempt, needle in [
        (lambda: admin.add_user(w.db, boss, "boss", OWN, "sysadmin"), "case.emergency_open"),
        (lambda: admin.add_user(w.db, boss, "rita", OTHER, "readers"), "case.read"),  # boss reads only in OWN
        (lambda: admin.add_role(w.db, boss, "signers", ["case.read", "case.sign"]), "case.sign"),
    ]:
        with pytest.raises(NotPermitted, match=needle):
            attempt()
    assert [u["role"] for u in admin.list_users(w.db, LOCAL) if u["user"] == "boss"] == ["admins"]
    w.close()


def test_a_user_has_a_role_per_department(fresh_db_url, tmp_path):
    """The same user reads in one department and only lists in another."""
    w = World.create(fresh_db_url, tmp_path)
    reader = w.role("reader", ["case.read"])
    signer = w.role("signer", ["case.read", "case.sign"])
    w.user("eva", OWN, reader)
    eva = w.user("eva", OTHER, signer)
    own, other = w.ingest(department=OWN), w.ingest(department=OTHER)
    for case_id in (own, other):
        versions.revise_case(w.db, LOCAL, case_id, reason="form", fields=COMPLETE_FORM)
    assert {c["case_id"] for c in search_cases(w.db, eva)} == {own, other}
    with pytest.raises(NotPermitted, match="role reader in department SE2321000016-15CQ does not include"):
        versions.sign_case(w.db, eva, own)
    assert versions.sign_case(w.db, eva, other)["status"] == "signed"
    w.close()
