#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite, against SQLite and PostgreSQL.
#   BILDSLUSS_PG_URL   PostgreSQL server for the archive tests
#                      (default postgresql+psycopg://postgres@127.0.0.1:5432/test)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 -q "$@"
