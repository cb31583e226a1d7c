#!/usr/bin/env bash
# The slow suite: build both Debian packages, lint them, install, run and purge them in a
# fresh debootstrap root (tests/debian/). About 15 minutes on 2 cores; needs root and the
# Debian mirror and PyPI. scripts/test.sh (CI) runs it beside the main suite; this runs it
# alone (after changing packaging/, or before a release). setup.sh installs its tools.
#   BILDSLUSS_DEBIAN_MIRROR  (default http://deb.debian.org/debian)
#   BILDSLUSS_DEBIAN_SUITE   (default bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q -m debian tests/debian "$@"
