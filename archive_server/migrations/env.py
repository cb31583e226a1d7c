"""Alembic environment of the archive. Migrations run on the connection that
``archive_server.schema.upgrade`` hands over (it holds the migration lock and
the transaction), or, for ``alembic`` run by a developer, on the URL in
``sqlalchemy.url``."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from archive_server.models import Base

config = context.config
connection = config.attributes.get("connection")


def _run(conn: sa.Connection) -> None:
    context.configure(connection=conn, target_metadata=Base.metadata,
                      render_as_batch=conn.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "alembic.ini needs sqlalchemy.url"
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
