"""The audit log for log and statistics operators (R16, R18): list events,
count them per department, user or patient (CSV), verify the chain.

Reading the log is itself an audited operation that needs ``audit.read``
(lists) or ``statistics.read`` (reports); both hold for every department.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from typing import Any

import sqlalchemy as sa

from archive_server.audit import ChainCheck, verify_audit_chain
from archive_server.authz import Principal, operation
from archive_server.cases import iso
from archive_server.db import Database
from archive_server.errors import InvalidArgument
from archive_server.models import AuditEvent

REPORT_KEYS = {"department": AuditEvent.department, "user": AuditEvent.actor, "patient": AuditEvent.patient,
               "action": AuditEvent.action}
_MAX_EVENTS = 100_000


def parse_since(text: str | None) -> dt.datetime | None:
    """ISO date or time (UTC unless it says otherwise), or ``Nd`` for N days ago."""
    if not text:
        return None
    text = text.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=int(text[:-1]))
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"a time must be ISO 8601 (2026-03-01 or 2026-03-01T08:00) or Nd, got {text!r}") from None
    # Stored times are UTC (SQLite keeps them without an offset): compare in UTC.
    return (at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


def event_json(ev: AuditEvent) -> dict[str, Any]:
    return {"seq": ev.seq, "at": iso(ev.at), "who": ev.actor, "action": ev.action, "target": ev.target,
            "case_id": ev.case_id, "department": ev.department, "patient": ev.patient, "why": ev.why,
            "outcome": ev.outcome, "details": ev.details, "hash": ev.hash}


def _filtered(patient: str | None, user: str | None, since: dt.datetime | None,
              until: dt.datetime | None, department: str | None, action: str | None = None) -> sa.Select[Any]:
    query = sa.select(AuditEvent).order_by(AuditEvent.seq)
    if action:
        query = query.where(AuditEvent.action == action)
    if patient:
        query = query.where(AuditEvent.patient == patient)
    if user:
        query = query.where(AuditEvent.actor == user)
    if department:
        query = query.where(AuditEvent.department == department)
    if since:
        query = query.where(AuditEvent.at >= since)
    if until:
        query = query.where(AuditEvent.at < until)
    return query


def list_events(db: Database, principal: Principal, *, patient: str | None = None, user: str | None = None,
                since: dt.datetime | None = None, until: dt.datetime | None = None,
                department: str | None = None, action: str | None = None,
                newest: int | None = None) -> list[dict[str, Any]]:
    """The events that match, oldest first (the read is logged after them);
    with ``newest``, only that many of the latest."""
    with operation(db, principal, "audit.list") as op:
        op.require("audit.read")
        op.patient, op.department = patient, department
        op.details.update(user=user, since=iso(since), until=iso(until), action=action)
        query = _filtered(patient, user, since, until, department, action)
        if newest is not None:
            latest = query.order_by(None).order_by(AuditEvent.seq.desc()).limit(newest).subquery()
            query = sa.select(AuditEvent).join(latest, latest.c.seq == AuditEvent.seq).order_by(AuditEvent.seq)
        rows = op.session.scalars(query.limit(_MAX_EVENTS)).all()
        op.details["events"] = len(rows)
        return [event_json(ev) for ev in rows]


def report(db: Database, principal: Principal, by: str, *, since: dt.datetime | None = None,
           until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Event counts per ``by`` (department, user, patient or action) and
    action, with how many were refused: one row per (key, action)."""
    if by not in REPORT_KEYS:
        raise InvalidArgument(f"--by must be one of {', '.join(REPORT_KEYS)}")
    with operation(db, principal, "audit.report") as op:
        op.require("statistics.read")
        op.details.update(by=by, since=iso(since), until=iso(until))
        column = REPORT_KEYS[by]
        query = (sa.select(column, AuditEvent.action, AuditEvent.outcome, sa.func.count())
                 .group_by(column, AuditEvent.action, AuditEvent.outcome))
        if since:
            query = query.where(AuditEvent.at >= since)
        if until:
            query = query.where(AuditEvent.at < until)
        counts: Counter[tuple[str, str]] = Counter()
        refused: Counter[tuple[str, str]] = Counter()
        for key, action, outcome, n in op.session.execute(query):
            counts[(key or "", action)] += n
            if outcome != "permitted":
                refused[(key or "", action)] += n
        return [{by: key, "action": action, "events": n, "refused_or_failed": refused[(key, action)]}
                for (key, action), n in sorted(counts.items())]


def monthly(db: Database, principal: Principal, *, since: dt.datetime | None = None,
            until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Per department and calendar month (UTC): cases filed (``case.ingested``),
    all events, and those refused or failed. Needs ``statistics.read``."""
    with operation(db, principal, "audit.monthly") as op:
        op.require("statistics.read")
        op.details.update(since=iso(since), until=iso(until))
        s = op.session
        if s.get_bind().dialect.name == "sqlite":
            month: Any = sa.func.strftime("%Y-%m", AuditEvent.at)
        else:
            month = sa.func.to_char(AuditEvent.at, "YYYY-MM")
        ingested = sa.case((AuditEvent.action == "case.ingested", 1), else_=0)
        refused = sa.case((AuditEvent.outcome != "permitted", 1), else_=0)
        query = (sa.select(AuditEvent.department, month.label("month"), sa.func.sum(ingested), sa.func.count(),
                           sa.func.sum(refused))
                 .where(AuditEvent.department.is_not(None))
                 .group_by(AuditEvent.department, month).order_by(month, AuditEvent.department))
        if since:
            query = query.where(AuditEvent.at >= since)
        if until:
            query = query.where(AuditEvent.at < until)
        rows: list[tuple[Any, ...]] = [tuple(row) for row in s.execute(query)]
        return [{"department": dep, "month": m, "cases": int(c or 0), "events": int(n or 0),
                 "refused_or_failed": int(r or 0)} for dep, m, c, n, r in rows]


def to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def verify(db: Database, principal: Principal) -> ChainCheck:
    """Recompute the chain; then log the check (an event appended after it)."""
    with db.read() as s:
        check = verify_audit_chain(s)
    with operation(db, principal, "audit.verified") as op:
        op.require("audit.read")
        op.details.update(ok=check.ok, events=check.events, first_bad_seq=check.first_bad_seq,
                          reason=check.reason)
    return check
