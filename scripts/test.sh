#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite, against SQLite and PostgreSQL.
#   BILDSLUSS_PG_URL   PostgreSQL server for the archive tests
#                      (default postgresql+psycopg://postgres@127.0.0.1:5432/test)
# Before the tests: the house's walls (import-linter), lint (ruff) and types (mypy, strict for the
# identity rules, readers and card stages: pyproject.toml), so that a crossed wall or a type
# error fails CI in under a minute, not after the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
.venv/bin/ruff check --quiet .
.venv/bin/mypy >/dev/null || .venv/bin/mypy
exec .venv/bin/python -m pytest -n 2 -q "$@"
