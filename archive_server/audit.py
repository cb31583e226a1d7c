"""The audit log (R18): an append-only SHA-256 hash chain.

Each event's ``hash`` is the SHA-256 of a canonical JSON encoding of its
sequence number, time, actor, action, case id, target, department, patient,
why, outcome, details and the previous event's hash. Editing, deleting,
inserting or reordering rows breaks the chain, which :func:`verify_audit_chain`
detects. Appends are serialised by locking the single
``audit_head`` row, so the chain stays linear under concurrent writers on
PostgreSQL (row lock) and SQLite (the write transaction's database lock).

Every appended event's hash is also written to the service log, so that a
wholesale rewrite of the chain by someone with database access can be detected
by comparing with the log (journald). Anchoring the head externally (WORM
storage) is the next step when needed.

:func:`append_audit` is the one writer. When ``[audit] syslog`` is configured
(:func:`configure_syslog`), each event is also sent as an RFC 5424 message in
the IHE ATNA style once its transaction has committed; that copy is best
effort, the database row is the record.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from archive_server.db import GENESIS_HASH
from archive_server.models import AuditEvent, AuditHead, utcnow

log = logging.getLogger(__name__)


def _time_text(at: dt.datetime) -> str:
    if at.tzinfo is None:  # SQLite hands back naive UTC
        at = at.replace(tzinfo=dt.timezone.utc)
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


OUTCOMES = ("permitted", "refused", "failed")


def event_hash(
    *, seq: int, at: dt.datetime, actor: str, action: str, case_id: str | None,
    details: dict[str, Any], prev_hash: str, target: str | None = None,
    department: str | None = None, patient: str | None = None, why: str | None = None,
    outcome: str = "permitted",
) -> str:
    record = {
        "seq": seq, "at": _time_text(at), "actor": actor, "action": action,
        "case_id": case_id, "details": details, "prev_hash": prev_hash, "target": target,
        "department": department, "patient": patient, "why": why, "outcome": outcome,
    }
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append_audit(
    session: Session,
    actor: str,
    action: str,
    *,
    case_id: str | None = None,
    details: dict[str, Any] | None = None,
    target: str | None = None,
    department: str | None = None,
    patient: str | None = None,
    why: str | None = None,
    outcome: str = "permitted",
) -> AuditEvent:
    """Append one event in the caller's (write) transaction: who (``actor``),
    what (``action`` on ``target``, or ``case_id``), where, whose, why, outcome."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    details = json.loads(json.dumps(details or {}, ensure_ascii=False))  # plain JSON types only
    if target is None and case_id is not None:
        target = f"case:{case_id}"
    head = session.execute(
        sa.select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one()
    at = utcnow()
    seq = head.seq + 1
    content = dict(actor=actor, action=action, case_id=case_id, details=details, target=target,
                   department=department, patient=patient, why=why, outcome=outcome)
    digest = event_hash(seq=seq, at=at, prev_hash=head.hash, actor=actor, action=action, case_id=case_id,
                        details=details, target=target, department=department, patient=patient, why=why,
                        outcome=outcome)
    ev = AuditEvent(seq=seq, at=at, prev_hash=head.hash, hash=digest, **content)
    session.add(ev)
    head.seq = seq
    head.hash = digest
    session.flush()
    log.info("audit event", extra={"audit_seq": seq, "audit_action": action, "audit_hash": digest,
                                   "actor": actor, "case_id": case_id, "outcome": outcome})
    if _syslog is not None:
        session.info.setdefault(_OUTBOX, []).append({
            "when": at, "who": actor, "action": action, "target": target,
            "department": department, "patient": patient, "why": why, "outcome": outcome,
        })
    return ev


# -- the syslog copy (best effort) ---------------------------------------------------

_OUTBOX = "bildsluss_audit_outbox"
_syslog: Any = None


def configure_syslog(url: str | None) -> None:
    """Send every committed audit event to ``url`` (e.g. udp://host:514) as
    well; None stops it. The sink comes from ``archive_server.atna``."""
    global _syslog
    if not url:
        _syslog = None
        return
    from archive_server.atna import SyslogSink

    _syslog = SyslogSink.from_url(url)


@event.listens_for(Session, "after_commit")
def _emit_committed(session: Session) -> None:
    pending = session.info.pop(_OUTBOX, None)
    if not pending or _syslog is None:
        return
    for entry in pending:
        try:
            _syslog.emit(entry)
        except Exception:  # noqa: BLE001 - the database row is the record
            log.warning("audit event not sent to syslog", exc_info=True,
                        extra={"audit_action": entry["action"]})


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session: Session) -> None:
    session.info.pop(_OUTBOX, None)


@dataclasses.dataclass(frozen=True)
class ChainCheck:
    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def verify_audit_chain(session: Session) -> ChainCheck:
    """Recompute the whole chain. ``ok`` is False with the first bad sequence
    number (and why) when any row was edited, removed or inserted."""
    prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    rows = session.execute(sa.select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=500))
    for ev in rows.scalars():
        count += 1
        if ev.seq != expected_seq:
            return ChainCheck(False, count, expected_seq, f"event {expected_seq} is missing")
        if ev.prev_hash != prev:
            return ChainCheck(False, count, ev.seq, "prev_hash does not match the previous event")
        digest = event_hash(seq=ev.seq, at=ev.at, actor=ev.actor, action=ev.action,
                            case_id=ev.case_id, details=ev.details, prev_hash=ev.prev_hash,
                            target=ev.target, department=ev.department, patient=ev.patient,
                            why=ev.why, outcome=ev.outcome)
        if digest != ev.hash:
            return ChainCheck(False, count, ev.seq, "content does not match its hash")
        prev = ev.hash
        expected_seq += 1
    head = session.get(AuditHead, 1)
    last = expected_seq - 1
    if head is None or head.seq != last or head.hash != prev:
        bad = min(last, head.seq) + 1 if head is not None else max(last, 1)
        return ChainCheck(False, count, bad, "the chain head does not match the last event "
                                              "(events removed from the end?)")
    return ChainCheck(True, count)
