"""Engine factory and transaction helpers for SQLite (WAL) and PostgreSQL.

All access goes through :class:`Database`: ``read()`` for queries, ``write()``
for changes. On SQLite a write transaction starts with ``BEGIN IMMEDIATE``, so
writers queue on the database lock (bounded by ``busy_timeout``) instead of
failing halfway; readers keep WAL's concurrent snapshots. On PostgreSQL writes
that must be serialised take row locks (``SELECT ... FOR UPDATE``). A database
that cannot be reached surfaces as :class:`~archive_server.errors.Unavailable`.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import pathlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from archive_server.errors import ArchiveError, ConfigError, Unavailable
from archive_server.localfiles import private_dir, private_file
from archive_server.models import AuditHead

if TYPE_CHECKING:
    from archive_server.schema import Upgrade

log = logging.getLogger(__name__)
T = TypeVar("T")

GENESIS_HASH = "0" * 64
_WRITE = "bildsluss_write"
# Errors that mean "the database cannot serve now", not "the request is wrong".
_UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError)


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 20,
    busy_timeout_ms: int = 30_000,
) -> Engine:
    """An engine for ``url``; SQLite files get WAL, synchronous=FULL, foreign keys."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError as e:
        raise ConfigError(f"not a database URL: {url!r} ({e})") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            # 0600 before SQLite opens it: SQLite gives the WAL and SHM the
            # database file's mode (issue 13: readable by every local user before).
            path = pathlib.Path(database)
            private_dir(path.parent, tighten=False)
            private_file(path)
            for side in ("-wal", "-shm", "-journal"):
                private_file(path.with_name(path.name + side), create=False)
        engine = sa.create_engine(
            parsed, connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False}
        )
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_size": pool_size, "max_overflow": max_overflow}
    if parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 5}
    try:
        return sa.create_engine(parsed, **kwargs)
    except (ImportError, exc.ArgumentError) as e:
        raise ConfigError(f"cannot use database URL {parsed.render_as_string(hide_password=True)}: {e}") from None


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (not the sqlite3 module) decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        _enter_wal(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _enter_wal(cursor: Any, timeout_s: float) -> None:
    """Switch a new database file to WAL. While another process creates the
    schema in the file's first transaction (still in rollback-journal mode),
    the switch fails at once with "database is locked": SQLite does not wait
    there, as waiting could deadlock. The creator commits soon; try again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Database:
    """One engine plus session factories for read and write transactions."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def describe(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries. Closed (its transaction rolled back) at the
        end; loaded objects stay readable, detached."""
        with _translate_errors(), self._sessions() as session:
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction, committed when the block ends
        without an exception and rolled back otherwise."""
        with _translate_errors(), self._sessions() as session:
            # our own option key, read back in the begin hook: not among SQLAlchemy's typed ones
            session.connection(execution_options={_WRITE: True})  # type: ignore[misc]
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def ping(self) -> None:
        with self.read() as session:
            session.execute(sa.text("SELECT 1"))

    def upgrade_schema(self) -> "Upgrade":
        """Bring the schema to head (``schema.upgrade``: Alembic under the
        migration lock, so that processes starting together all come up), then
        create the audit chain's head row and the built-in roles and form."""
        from archive_server.rights import seed_builtins  # built-in roles, default form (R13, R16)
        from archive_server.schema import upgrade

        with _translate_errors():
            result = upgrade(self.engine)
        try:
            with self.write() as session:
                if session.get(AuditHead, 1) is None:
                    session.add(AuditHead(id=1, seq=0, hash=GENESIS_HASH))
                seed_builtins(session)
        except exc.IntegrityError:
            pass  # another process created them at the same moment
        return result

    def dispose(self) -> None:
        self.engine.dispose()


def lock_patient(s: Session, patient_id: str) -> None:
    """Hold the patient's lock until the transaction ends. Filing a case and
    marking its patient confidential (R17) take it before they read or write
    the mark, so that one of them always sees the other: on PostgreSQL (READ
    COMMITTED) a transaction-level advisory lock keyed by the number; on SQLite
    the one write lock (BEGIN IMMEDIATE) already orders them (issue 13)."""
    if s.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(f"bildsluss.patient:{patient_id}".encode()).digest()[:8],
                         "big", signed=True)
    s.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def retry_on_conflict(fn: Callable[[], T], attempts: int = 3) -> T:
    """Run a write that may race a concurrent identical write (the same session
    opened or committed twice, a department registered twice). The loser's
    unique-constraint violation is retried once the winner has committed."""
    for attempt in range(attempts):
        try:
            return fn()
        except exc.IntegrityError:
            if attempt == attempts - 1:
                raise
            log.info("write raced a concurrent one; retrying", extra={"attempt": attempt + 1})
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except ArchiveError:
        raise
    except _UNAVAILABLE as e:
        raise Unavailable(f"database unavailable: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__
