#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite, against SQLite and PostgreSQL.
#   BILDSLUSS_PG_URL   PostgreSQL server for the archive tests
#                      (default postgresql+psycopg://postgres@127.0.0.1:5432/test)
# Before the tests: the house's walls (import-linter) and lint (ruff; mypy joins once the card stages are type-clean),
# so that a crossed wall fails CI in seconds, not after the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest -n 2 -q "$@"
