#!/usr/bin/env bash
# The slow suite: build both Debian packages, lint them, install, run and purge them in a
# fresh debootstrap root (tests/debian/). About 15 minutes on 2 cores; needs root and the
# Debian mirror and PyPI. Not part of scripts/test.sh (CI): run it before a release and
# after changing packaging/.
#   BILDSLUSS_DEBIAN_MIRROR  (default http://deb.debian.org/debian)
#   BILDSLUSS_DEBIAN_SUITE   (default bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
missing=()
for pkg in dpkg-dev lintian debootstrap python3-venv; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec .venv/bin/python -m pytest -q -m debian tests/debian "$@"
