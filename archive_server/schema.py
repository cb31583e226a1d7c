"""The archive's schema: Alembic migrations, run under a lock.

:func:`upgrade` brings a database to the code's head revision and is what
``serve``, every other subcommand and ``db upgrade`` call. It is safe to run
from several processes at once: on PostgreSQL the migration runs in one
transaction holding a transaction-level advisory lock (per schema), on SQLite
under ``BEGIN IMMEDIATE`` (the database's write lock). The second process waits,
then finds the schema at head and does nothing.

* An empty database is migrated from the first revision.
* A database made by ``metadata.create_all`` before migrations existed (its
  tables, no ``alembic_version``) is stamped at the baseline ``0001`` first.
* A database at a revision this code does not know (made by a newer release)
  is refused with :class:`SchemaTooNew`: running old code on it could lose data.

New migrations go in ``archive_server/migrations/versions/`` (see
docs/operations.md, "Schema changes"); a test compares the migrated schema with
the models, so a model changed without a migration fails CI.
"""
from __future__ import annotations

import dataclasses
import logging
import zlib

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from archive_server.errors import ConfigError

log = logging.getLogger(__name__)

BASELINE = "0001"
# Tables of the baseline; all present and no alembic_version: a create_all-made database.
_BASELINE_TABLES = frozenset({
    "agent_refusals", "agent_status", "agents", "audit_events", "audit_head", "blobs",
    "case_versions", "cases", "confidential_patients", "consents", "department_access",
    "departments", "form_templates", "ingest_sessions", "media_items", "roles", "users",
})
_WRITE = "bildsluss_write"  # db.py: BEGIN IMMEDIATE on SQLite


class SchemaTooNew(ConfigError):
    """The database was migrated by a newer release than this code. Run that
    release (or newer), or restore a backup made for this one."""


@dataclasses.dataclass(frozen=True)
class Upgrade:
    before: str | None  # revision found (None: empty database)
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "archive_server:migrations")
    config.attributes["connection"] = connection
    return config


def head() -> str:
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def current(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> Upgrade:
    """Migrate to head under the migration lock; see the module docstring."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE: True})
        with conn.begin():
            _lock(conn)
            config = alembic_config(conn)
            script = ScriptDirectory.from_config(config)
            target = script.get_current_head()
            assert target is not None
            before = MigrationContext.configure(conn).get_current_revision()
            if before is not None and not _known(script, before):
                raise SchemaTooNew(
                    f"the database schema is at revision {before}, which this archive does not know "
                    f"(its newest is {target}): it was upgraded by a newer release. Run that release, "
                    "or restore a backup taken for this one; nothing was changed")
            if before is None:
                tables = set(sa.inspect(conn).get_table_names())
                if _BASELINE_TABLES <= tables:
                    log.info("database made before migrations; stamping the baseline",
                             extra={"revision": BASELINE})
                    command.stamp(config, BASELINE)
                    before = BASELINE
                elif tables & _BASELINE_TABLES:
                    raise ConfigError(
                        "the database holds some of the archive's tables but no migration record "
                        f"(missing: {', '.join(sorted(_BASELINE_TABLES - tables))}); refusing to guess")
            if before != target:
                command.upgrade(config, "head")
                log.info("database schema upgraded", extra={"from": before, "to": target})
    return Upgrade(before, target)


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE already holds the one write lock
    # One lock per schema, so that archives (and tests) in other schemas of the
    # same server do not wait for each other.
    schema = conn.exec_driver_sql("SELECT current_schema()").scalar() or "public"
    key = zlib.crc32(f"bildsluss.schema:{schema}".encode())
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
