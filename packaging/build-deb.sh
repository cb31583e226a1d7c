#!/usr/bin/env bash
# packaging/build-deb.sh [OUTDIR] : build bildsluss-agent_VERSION_ARCH.deb and
# bildsluss-archive_VERSION_ARCH.deb into OUTDIR (default dist/).
#
# Each package carries its program in a private virtual environment under /opt/PACKAGE
# (the project wheel with its extra, `agent` or `archive`, and their PyPI dependencies),
# made with the system's python3 and never touching the system Python's site-packages.
# /usr/bin/PROGRAM is a link to the environment's entry point.
#
# Why dpkg-deb on a staged tree and not dpkg-buildpackage + debhelper: the payload is a
# ready-made virtual environment whose manylinux wheels bundle their own libraries;
# debhelper's dh_strip/dh_shlibdeps/dh_python3 would rewrite or reject exactly those
# files. The maintainer scripts in packaging/deb/PACKAGE/ are the ones debhelper would
# generate (deb-systemd-helper, deb-systemd-invoke, systemd-sysusers, systemd-tmpfiles,
# udevadm), written out so that they can be read; lintian checks the result.
#
# Environment: PYTHON (default /usr/bin/python3: the target's Python, not a venv),
# PIP_* as usual (a pip cache makes a rebuild fast), DEB_COMPRESS and DEB_COMPRESS_LEVEL
# (default xz 6; the slow test uses gzip 1: xz takes minutes over 300 MB).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
outdir=$(realpath -m "${1:-$root/dist}")
PYTHON=${PYTHON:-/usr/bin/python3}
compress=${DEB_COMPRESS:-xz}
compress_level=${DEB_COMPRESS_LEVEL:-6}

case "$PYTHON" in
  /usr/bin/*) ;;
  *) echo "build-deb: PYTHON must be the system's Python in /usr/bin (the package depends on it), not $PYTHON" >&2; exit 2 ;;
esac
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pyexe=/usr/bin/python$pyver
[ -x "$pyexe" ] || { echo "build-deb: $pyexe not found" >&2; exit 2; }
"$pyexe" -c 'import ensurepip' 2>/dev/null || { echo "build-deb: needs python$pyver-venv (apt-get install python3-venv)" >&2; exit 2; }
command -v dpkg-deb >/dev/null || { echo "build-deb: needs dpkg-deb" >&2; exit 2; }

version=$("$pyexe" -c 'import sys, re; sys.path.insert(0, sys.argv[1]); import bildsluss_common; print(bildsluss_common.__version__)' "$root")
arch=$(dpkg --print-architecture)
work=$(mktemp -d "${TMPDIR:-/tmp}/bildsluss-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$outdir"

echo "build-deb: wheel of bildsluss $version" >&2
"$pyexe" -m venv "$work/buildenv"
"$work/buildenv/bin/pip" install -q --disable-pip-version-check --upgrade pip build >&2
# Build from a clean copy of the tracked files, so a developer's .venv or dist/ never ends up inside.
mkdir "$work/src"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/src" 2>/dev/null) \
  || cp -a "$root/." "$work/src"
"$work/buildenv/bin/python" -m build -q --wheel --outdir "$work/wheel" "$work/src" >&2
wheel=$(ls "$work/wheel"/bildsluss-*.whl)

# build_package NAME EXTRA PROGRAM
build_package() {
  local name=$1 extra=$2 program=$3
  local pkgdir=$work/$name opt=/opt/$name
  local stage=$pkgdir$opt
  echo "build-deb: $name: virtual environment with bildsluss[$extra]" >&2
  mkdir -p "$pkgdir"
  "$pyexe" -m venv "$stage"
  # The locked dependencies, each file checked against its hash; then the wheel alone.
  "$stage/bin/pip" install -q --disable-pip-version-check --no-compile --require-hashes \
    -r "$root/requirements/$extra.lock" >&2
  "$stage/bin/pip" install -q --disable-pip-version-check --no-compile --no-deps "$wheel" >&2
  # The installer's own tools are not needed at run time.
  "$stage/bin/pip" uninstall -q -y pip setuptools >&2 2>/dev/null || "$stage/bin/python" -m pip uninstall -q -y pip >&2
  # A virtual environment records where it was made: point it at where dpkg puts it.
  grep -rlI --null -F "$stage" "$stage" | xargs -0 -r sed -i "s#$stage#$opt#g"
  find "$stage" -name __pycache__ -type d -prune -exec rm -rf {} +
  # Byte code is compiled by postinst and removed by prerm (as dh_python3 would). Only
  # the entry points are programs: nothing inside the wheels is run as a file.
  find "$stage/lib" -type f -perm /111 -exec chmod a-x {} +
  rm -f "$stage/bin/activate.csh" "$stage/bin/activate.fish" "$stage/bin/Activate.ps1"

  mkdir -p "$pkgdir/usr/bin" "$pkgdir/usr/share/doc/$name" "$pkgdir/usr/share/lintian/overrides" \
           "$pkgdir/usr/lib/sysusers.d" "$pkgdir/lib/systemd/system" "$pkgdir/etc/bildsluss"
  ln -s "$opt/bin/$program" "$pkgdir/usr/bin/$program"
  install -m 0644 "$here/sysusers.d/$name.conf" "$pkgdir/usr/lib/sysusers.d/$name.conf"
  install -m 0644 "$here/systemd/$name.service" "$pkgdir/lib/systemd/system/$name.service"
  install -m 0644 "$root/README.md" "$pkgdir/usr/share/doc/$name/README.md"
  install -m 0644 "$here/deb/copyright" "$pkgdir/usr/share/doc/$name/copyright"
  install -m 0644 "$here/deb/lintian-overrides" "$pkgdir/usr/share/lintian/overrides/$name"
  sed -i "s/^PACKAGE:/$name:/" "$pkgdir/usr/share/lintian/overrides/$name"
  printf '%s (%s) stable; urgency=medium\n\n  * Release %s: see README.md, "Changelog of the contract".\n\n -- Bildsluss maintainers <bildsluss-maintainers@bildsluss.example>  %s\n' \
    "$name" "$version" "$version" "$(date -R -d "@$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)")" \
    | gzip -9n > "$pkgdir/usr/share/doc/$name/changelog.gz"

  mkdir -p "$pkgdir/DEBIAN"
  local f
  for f in postinst prerm postrm; do
    sed "s/@PKG@/$name/g" "$here/deb/$f" > "$pkgdir/DEBIAN/$f"
    chmod 0755 "$pkgdir/DEBIAN/$f"
  done
  (cd "$pkgdir" && find etc -type f | sed 's#^#/#' | sort) > "$pkgdir/DEBIAN/conffiles"
  local size
  size=$(du -sk --exclude=DEBIAN "$pkgdir" | cut -f1)
  sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@PYTHON@/python$pyver/" \
    "$here/deb/$extra/control" > "$pkgdir/DEBIAN/control"
  (cd "$pkgdir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    > "$pkgdir/DEBIAN/md5sums"
  chmod 0644 "$pkgdir/DEBIAN/md5sums" "$pkgdir/DEBIAN/control" "$pkgdir/DEBIAN/conffiles"
  dpkg-deb --root-owner-group -Z"$compress" -z"$compress_level" --build "$pkgdir" "$outdir/${name}_${version}_${arch}.deb" >&2
  echo "$outdir/${name}_${version}_${arch}.deb"
}

# The configuration files are the annotated examples; lines marked "# example" (a PC's own
# id, the archive's address, certificate paths, a registered camera) are commented out, so
# an unconfigured install runs on the defaults and says which key it misses.
conffile() {
  sed -E 's/^([^#].*[^ ]) +# example$/# \1/' "$1" > "$2"
  chmod 0644 "$2"
}

mkdir -p "$work/bildsluss-agent/etc/bildsluss" "$work/bildsluss-archive/etc/bildsluss"
conffile "$here/agent.example.toml" "$work/bildsluss-agent/etc/bildsluss/agent.toml"
conffile "$root/archive_server/archive.example.toml" "$work/bildsluss-archive/etc/bildsluss/archive.toml"
mkdir -p "$work/bildsluss-agent/usr/lib/tmpfiles.d" "$work/bildsluss-agent/lib/udev/rules.d" \
         "$work/bildsluss-agent/etc/xdg/autostart"
install -m 0644 "$here/tmpfiles.d/bildsluss.conf" "$work/bildsluss-agent/usr/lib/tmpfiles.d/bildsluss-agent.conf"
install -m 0644 "$here/udev/90-bildsluss.rules" "$work/bildsluss-agent/lib/udev/rules.d/90-bildsluss.rules"
install -m 0644 "$here/xdg-autostart/bildsluss-notify-relay.desktop" \
  "$work/bildsluss-agent/etc/xdg/autostart/bildsluss-notify-relay.desktop"
# Prometheus alert rules (with their promtool tests) and the Grafana dashboard, as examples.
mkdir -p "$work/bildsluss-archive/usr/share/doc/bildsluss-archive/examples/prometheus"
install -m 0644 "$here/prometheus/alerts.yml" "$here/prometheus/alerts_test.yml" \
  "$here/prometheus/grafana-dashboard.json" "$work/bildsluss-archive/usr/share/doc/bildsluss-archive/examples/prometheus/"

build_package bildsluss-agent agent bildsluss-agent
build_package bildsluss-archive archive bildsluss-archive
