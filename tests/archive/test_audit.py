"""The audit chain stays linear and verifiable under concurrent appends."""
from __future__ import annotations

import threading

import sqlalchemy as sa

from archive_server.audit import append_audit, verify_audit_chain
from archive_server.db import Database
from archive_server.models import AuditEvent


def test_concurrent_appends_keep_one_chain(fresh_db_url):
    db = Database(fresh_db_url, pool_size=8, max_overflow=0)
    db.upgrade_schema()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                with db.write() as s:
                    append_audit(s, f"worker:{n}", "test.append", details={"n": n, "i": i, "ä": "ö"})
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with db.read() as s:
        check = verify_audit_chain(s)
        seqs = s.scalars(sa.select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
    assert check.ok and check.events == 60
    assert seqs == list(range(1, 61))
    db.dispose()


def test_a_rolled_back_transaction_leaves_no_event(fresh_db_url):
    db = Database(fresh_db_url)
    db.upgrade_schema()
    try:
        with db.write() as s:
            append_audit(s, "test", "test.rolled_back")
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    with db.write() as s:
        append_audit(s, "test", "test.kept")
    with db.read() as s:
        assert verify_audit_chain(s).events == 1
    db.dispose()
