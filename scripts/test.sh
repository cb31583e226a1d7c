#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite, against SQLite and PostgreSQL.
#   BILDSLUSS_PG_URL   PostgreSQL server for the archive tests
#                      (default postgresql+psycopg://postgres@127.0.0.1:5432/test)
# Before the tests: the house's walls (import-linter), lint (ruff) and types (mypy, strict for the
# identity rules, readers and card stages: pyproject.toml), so that a crossed wall or a type
# error fails CI in under a minute, not after the suite.
#
# The whole run (no arguments) also runs the Debian packages' suite (tests/debian: build,
# lintian, install and purge in a debootstrap root; root only, about 15 minutes, mostly
# waiting on lintian, the mirror and PyPI) in parallel with the main suite, so that CI
# stays within its 30 minutes on 2 cores; its output follows the main suite's.
# With arguments, only pytest with those arguments runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
.venv/bin/ruff check --quiet .
.venv/bin/mypy >/dev/null || .venv/bin/mypy
if (($#)); then
  exec .venv/bin/python -m pytest -n 2 -q "$@"
fi

debian_pid=""
if [ "$(id -u)" -eq 0 ]; then
  debian_log=$(mktemp --tmpdir bildsluss-debian-suite.XXXXXX)
  .venv/bin/python -m pytest -q -p no:cacheprovider -m debian tests/debian >"$debian_log" 2>&1 &
  debian_pid=$!
  echo "test.sh: the Debian packages' suite runs beside the main suite (log: $debian_log)" >&2
else
  echo "test.sh: not root: the Debian packages' suite (tests/debian) does not run" >&2
fi
main_rc=0
.venv/bin/python -m pytest -n 2 -q || main_rc=$?
debian_rc=0
if [ -n "$debian_pid" ]; then
  wait "$debian_pid" || debian_rc=$?
  echo "=== the Debian packages' suite (tests/debian) ==="
  tail -n 60 "$debian_log"
fi
if ((main_rc || debian_rc)); then
  echo "test.sh: FAILED (main suite exit $main_rc, Debian packages' suite exit $debian_rc)" >&2
  exit 1
fi
