#!/usr/bin/env bash
# Regenerate the hashed lock files from pyproject.toml (run after changing a dependency):
#   requirements/agent.lock    the capture PC's packages (bildsluss[agent])
#   requirements/archive.lock  the archive's (bildsluss[archive])
#   requirements/test.lock     development and CI (bildsluss[test]: both, the test tools,
#                              and what building the package itself needs)
# scripts/setup.sh installs test.lock with --require-hashes; packaging/build-deb.sh the
# agent and archive locks. uv comes into a throwaway environment; the index is PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
tool=$(mktemp -d "${TMPDIR:-/tmp}/bildsluss-lock.XXXXXX")
trap 'rm -rf "$tool"' EXIT
python3 -m venv "$tool"
"$tool/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
compile() {  # compile OUTPUT ARGS...
  local out=$1; shift
  "$tool/bin/uv" pip compile --quiet --generate-hashes --python-version 3.11 \
    --python-platform x86_64-unknown-linux-gnu --custom-compile-command scripts/lock.sh -o "$out" "$@"
}
compile requirements/agent.lock pyproject.toml --extra agent
compile requirements/archive.lock pyproject.toml --extra archive
compile requirements/test.lock pyproject.toml requirements/build.in --extra test
echo "lock: requirements/{agent,archive,test}.lock written" >&2
