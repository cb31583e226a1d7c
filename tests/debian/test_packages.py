"""The Debian packages, built, linted, installed and purged in a fresh Debian root (issue 17).

The slow suite: about 15 minutes on the 2-core machine (build 2-3 min, lintian 5-7 min over
300 MB of wheels, debootstrap 2 min, the dependencies 3 min; it downloads from PyPI and the
Debian mirror). `scripts/test.sh` (CI) runs it as root beside the main suite (it is
deselected by default: `-m debian`); alone: `scripts/test-debian.sh`.
Needs root (debootstrap, chroot, mount namespaces).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.debian, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
MIRROR = os.environ.get("BILDSLUSS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = os.environ.get("BILDSLUSS_DEBIAN_SUITE", "bookworm")
# What the test root may hold after purge that it did not hold before install: Debian
# keeps system users, and the archive's data is never deleted by a package tool.
KEPT_ON_PURGE = {"var/lib/bildsluss-archive"}
NOT_COMPARED = ("proc/", "tmp/", "var/lib/apt/", "var/lib/dpkg/", "var/cache/", "var/log/",
                "var/lib/systemd/deb-systemd-helper-", "etc/ld.so.cache", "run/")


def _need(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, chroot)")
    for tool in tools:
        if not shutil.which(tool):
            pytest.skip(f"needs {tool} (scripts/test-debian.sh installs it)")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> dict[str, pathlib.Path]:
    _need("dpkg-deb")
    out = tmp_path_factory.mktemp("dist")
    # gzip 1: xz 6 (the release default) spends minutes compressing the wheels.
    env = {**os.environ, "DEB_COMPRESS": "gzip", "DEB_COMPRESS_LEVEL": "1"}
    built = _run([str(ROOT / "packaging" / "build-deb.sh"), str(out)], env=env)
    assert built.returncode == 0, built.stderr[-4000:]
    files = {p.name.split("_")[0]: p for p in out.glob("*.deb")}
    assert set(files) == {"bildsluss-agent", "bildsluss-archive"}, files
    return files


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory) -> pathlib.Path:
    _need("debootstrap", "unshare", "chroot")
    root = tmp_path_factory.mktemp("debian") / "root"
    made = _run(["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR])
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    # As in any chroot: packages must not start services here.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    return root


def in_root(root: pathlib.Path, *cmd: str) -> subprocess.CompletedProcess:
    """Run cmd chrooted in root, with /proc mounted in a mount namespace of its own
    (the mount goes with the command: nothing to clean up on the host)."""
    script = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
    return _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(root), *cmd],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
                     "LANG": "C.UTF-8"})


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _tree(root: pathlib.Path) -> set[str]:
    paths = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            path = name if rel == "." else f"{rel}/{name}"
            if not path.startswith(NOT_COMPARED) and path + "/" not in NOT_COMPARED:
                paths.add(path)
    return paths


def test_lintian_reports_no_errors(debs):
    _need("lintian")
    result = _run(["lintian", "--tag-display-limit", "0", *map(str, debs.values())])
    errors = [line for line in result.stdout.splitlines() if line.startswith("E: ")]
    assert errors == [], "\n".join(errors[:40])


def test_install_run_and_purge_in_a_fresh_debian_root(debs, debian_root):
    root = debian_root
    for deb in debs.values():
        shutil.copy(deb, root / "tmp" / deb.name)
    _ok(in_root(root, "apt-get", "update", "-qq"))
    # The dependencies first, so that the tree before our packages can be compared with the
    # tree after their purge.
    depends = set()
    for deb in debs.values():
        field = _ok(_run(["dpkg-deb", "-f", str(deb), "Depends"]))
        depends |= {alt.split("|")[0].split("(")[0].strip() for alt in field.split(",")}
    _ok(in_root(root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *sorted(depends)))
    before = _tree(root)

    _ok(in_root(root, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                *(f"/tmp/{deb.name}" for deb in debs.values())))
    from bildsluss_common import __version__

    assert _ok(in_root(root, "bildsluss-agent", "--version")).strip() == f"bildsluss-agent {__version__}"
    assert _ok(in_root(root, "bildsluss-archive", "--version")).strip() == f"bildsluss-archive {__version__}"
    # Each program in its own environment; the system Python is untouched.
    assert (root / "opt/bildsluss-agent/bin/python").exists()
    assert not (root / "opt/bildsluss-archive/lib/python3.11/site-packages/pyudev").exists()
    assert not (root / "opt/bildsluss-agent/lib/python3.11/site-packages/sqlalchemy").exists()
    assert not _ok(in_root(root, "sh", "-c", "ls /usr/lib/python3/dist-packages | grep -i -e bildsluss -e grpc || true"))
    # Enabled for the next boot, not started; the unconfigured service stops with exit 2
    # (RestartPreventExitStatus=2: no restart loop) and says what is missing.
    for unit in ("bildsluss-agent.service", "bildsluss-archive.service"):
        assert (root / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink()
        assert "RestartPreventExitStatus=2" in (root / "lib/systemd/system" / unit).read_text()
    agent = in_root(root, "bildsluss-agent", "run", "--config", "/etc/bildsluss/agent.toml", "--watch", "/tmp")
    assert agent.returncode == 2 and "no transport security" in agent.stderr, agent.stderr
    archive = in_root(root, "bildsluss-archive", "serve", "--config", "/etc/bildsluss/archive.toml")
    assert archive.returncode == 2 and "no transport security" in archive.stderr, archive.stderr
    # The service user and the control group; conffiles; udev rule, tmpfiles, autostart.
    assert _ok(in_root(root, "getent", "passwd", "bildsluss")).split(":")[5] == "/var/lib/bildsluss-archive"
    _ok(in_root(root, "getent", "group", "bildsluss"))
    conffiles = _ok(in_root(root, "dpkg-query", "-W", "-f", "${Conffiles}\n", "bildsluss-agent", "bildsluss-archive"))
    for path in ("/etc/bildsluss/agent.toml", "/etc/bildsluss/archive.toml",
                 "/etc/xdg/autostart/bildsluss-notify-relay.desktop"):
        assert path in conffiles
    assert 'control_group = "bildsluss"' in (root / "etc/bildsluss/agent.toml").read_text()
    udev_rule = root / "lib/udev/rules.d/90-bildsluss.rules"
    assert udev_rule.exists() and oct((root / "var/lib/bildsluss").stat().st_mode & 0o777) == "0o711"

    _ok(in_root(root, "apt-get", "purge", "-y", "-qq", "bildsluss-agent", "bildsluss-archive"))
    status = in_root(root, "dpkg-query", "-W", "-f", "${Status}\n", "bildsluss-agent", "bildsluss-archive")
    assert "installed" not in status.stdout.replace("not-installed", "")
    # The udev rule goes with the package: a forgotten one would hide every USB stick
    # from the desktop.
    assert not udev_rule.exists()
    left = _tree(root) - before
    assert {p for p in left if not p.startswith(tuple(KEPT_ON_PURGE))} == set(), sorted(left)[:40]
