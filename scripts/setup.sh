#!/usr/bin/env bash
# Set up Bildsluss on a fresh Debian machine: system tools, a .venv, the package.
# Idempotent: a second run only checks. Used by the README's two commands and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

# util-linux, mount: the agent daemon probes and mounts cards (blkid, mount, losetup in tests);
# e2fsprogs: the system tests make ext4 card images (mkfs.ext4 -d, debugfs).
# gphoto2: the command-line tool, the baseline of benchmarks/camera.py (the agent itself
# uses the libgphoto2 that the gphoto2 Python package ships).
# tesseract-ocr-eng, -swe: the models of the in-process OCR (tesserocr's wheel brings
# libtesseract); tesseract-ocr: the program, only as tests/archive/test_deidentify.py's
# independent reader.
# dpkg-dev, lintian, debootstrap, python3-venv: the Debian packages' suite (tests/debian:
# build, lint, install and purge in a fresh Debian root).
SYSTEM_PACKAGES=(gphoto2 tesseract-ocr tesseract-ocr-swe tesseract-ocr-eng libzbar0 libimage-exiftool-perl ffmpeg fonts-dejavu-core fonts-noto-mono chromium fonts-urw-base35 dosfstools dbus-daemon util-linux mount e2fsprogs dpkg-dev lintian debootstrap python3-venv)

missing=()
list_missing() {
  missing=()
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
}
list_missing
if ((${#missing[@]})); then
  # Two setups at once (two checkouts on one fresh machine) take turns: the second
  # waits for the first's apt-get instead of failing on apt's lock, then installs what is left.
  exec 8>"${TMPDIR:-/tmp}/bildsluss-setup-apt.lock"
  flock 8
  list_missing
fi
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The unprivileged user the agent's card parsers run as (agent/card/sandbox.py; the
# bildsluss-agent package creates it through sysusers.d).
if [ "$(id -u)" -eq 0 ] && ! getent passwd bildsluss-parse >/dev/null; then
  echo "setup: creating the system user bildsluss-parse" >&2
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bildsluss-parse
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" --version))" >&2; exit 2; }
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
# promtool, for the alert rules' tests (tests/test_prometheus_rules.py): taken out of Debian's
# prometheus package, which is downloaded, not installed (installing it starts a Prometheus server).
if [ ! -x .venv/bin/promtool ]; then
  echo "setup: unpacking promtool from Debian's prometheus package into .venv/bin" >&2
  deb_dir=$(mktemp -d)
  chmod 0755 "$deb_dir"  # apt's download sandbox user must be able to write there
  (cd "$deb_dir" && apt-get download -qq prometheus 2>/dev/null)
  dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -x -C "$deb_dir" ./usr/bin/promtool
  install -m 0755 "$deb_dir/usr/bin/promtool" .venv/bin/promtool
  rm -rf "$deb_dir"
fi
stamp=.venv/.bildsluss-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/test.lock -nt "$stamp" ]; then
  # Every dependency exactly as locked, each file checked against its SHA-256
  # (requirements/test.lock, made by scripts/lock.sh); then the package itself, which
  # brings nothing more (--no-deps) and is built by the locked setuptools.
  echo "setup: installing the locked dependencies and the package into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements/test.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/bildsluss-agent, .venv/bin/bildsluss-archive)" >&2
