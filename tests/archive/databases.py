"""Throw-away databases for the archive tests: a SQLite file, or a fresh schema
on the PostgreSQL server of the development and CI machines.

PostgreSQL tests FAIL when the server cannot be reached (CI must go red when a
backend is broken), unless BILDSLUSS_SKIP_POSTGRES=1 is set, which skips them.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("BILDSLUSS_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def skip_postgres() -> bool:
    return os.environ.get("BILDSLUSS_SKIP_POSTGRES") == "1"


@contextlib.contextmanager
def temp_database(backend: str, directory: pathlib.Path) -> Iterator[str]:
    """Yield the URL of an empty database: ``sqlite:///DIR/archive.sqlite3`` or
    PostgreSQL with a new schema ``t_<random>`` as search_path (dropped at the end)."""
    if backend == "sqlite":
        directory.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{directory / 'archive.sqlite3'}"
        return
    if backend != "postgresql":
        raise ValueError(backend)
    if skip_postgres():
        pytest.skip("BILDSLUSS_SKIP_POSTGRES=1")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as e:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {PG_URL} is unreachable ({e.orig}); "
                    "set BILDSLUSS_SKIP_POSTGRES=1 to skip the PostgreSQL tests", pytrace=False)
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()
