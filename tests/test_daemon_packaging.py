"""Packaging of the daemon: the systemd unit, the tmpfiles entry, every [daemon] key documented."""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess
import sys

import pytest

from agent.config import DaemonConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"


def test_every_daemon_key_is_in_the_example_and_the_docs():
    example = (PACKAGING / "agent.example.toml").read_text()
    docs = (ROOT / "docs" / "configuration.md").read_text()
    for field in dataclasses.fields(DaemonConfig):
        assert f"\n{field.name} = " in example, f"{field.name} missing from agent.example.toml"
        assert f"`[daemon] {field.name}`" in docs or f", `{field.name}`" in docs, \
            f"{field.name} missing from docs/configuration.md"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_the_unit_is_valid_notify_with_a_watchdog(tmp_path):
    text = (PACKAGING / "systemd" / "bildsluss-agent.service").read_text()
    assert "\nType=notify\n" in text and "\nWatchdogSec=" in text and "\nPrivateMounts=yes\n" in text
    _verify(tmp_path, "bildsluss-agent")


def _verify(tmp_path: pathlib.Path, program: str) -> None:
    """systemd-analyze verify of the unit, run against this checkout's entry point."""
    text = (PACKAGING / "systemd" / f"{program}.service").read_text()
    unit = tmp_path / f"{program}.service"
    unit.write_text(text.replace(f"/usr/bin/{program}", str(pathlib.Path(sys.executable).parent / program)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if f"{program}.service" in line]
    assert problems == [] and result.returncode == 0, result.stderr


@pytest.mark.skipif(not shutil.which("systemd-tmpfiles"), reason="needs systemd-tmpfiles")
def test_tmpfiles_makes_private_state_spool_and_mount_folders(tmp_path):
    subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create",
                    str(PACKAGING / "tmpfiles.d" / "bildsluss.conf")], check=True)
    modes = {p: oct((tmp_path / p).stat().st_mode & 0o777) for p in
             ("var/lib/bildsluss", "var/lib/bildsluss/spool", "run/bildsluss", "run/bildsluss/cards")}
    # Enter, not list: the parser user (bildsluss-parse) passes through to the card's
    # mount and its own spool folder; names inside are not listed, files stay 0600 root's.
    assert modes == {"var/lib/bildsluss": "0o711", "var/lib/bildsluss/spool": "0o711",
                     "run/bildsluss": "0o751", "run/bildsluss/cards": "0o711"}


def test_the_notify_relay_autostart_entry_starts_a_real_subcommand():
    import configparser

    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # desktop entry keys are case-sensitive
    entry.read(PACKAGING / "xdg-autostart" / "bildsluss-notify-relay.desktop", encoding="utf-8")
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Terminal"] == "false"
    program, *args = desktop["Exec"].split()
    assert program == "bildsluss-agent" and args == ["notify-relay"]
    # The subcommand exists and parses: --help exits 0 without a daemon running.
    done = subprocess.run([sys.executable, "-m", "agent.cli", *args, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "notify-relay" in done.stdout


# -- issue 17: both units, the Debian maintainer scripts (fast; the packages themselves
# are built and installed by the slow suite, tests/debian/) --------------------------------

@pytest.mark.parametrize("unit", ["bildsluss-agent.service", "bildsluss-archive.service"])
def test_units_stop_on_a_config_error_and_are_limited(unit):
    text = (PACKAGING / "systemd" / unit).read_text()
    for line in ("RestartPreventExitStatus=2", "MemoryMax=", "CPUQuota=", "IOWeight=", "time-sync.target"):
        assert line in text, f"{unit}: {line}"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_the_archive_unit_is_valid(tmp_path):
    _verify(tmp_path, "bildsluss-archive")


@pytest.mark.parametrize("package", ["bildsluss-agent", "bildsluss-archive"])
@pytest.mark.parametrize("script", ["postinst", "prerm", "postrm"])
def test_maintainer_scripts_are_valid_sh_and_never_start_a_fresh_install(tmp_path, package, script):
    text = (PACKAGING / "deb" / script).read_text().replace("@PKG@", package)
    assert "@" not in text.replace("@PKG@", "")
    path = tmp_path / script
    path.write_text(text)
    checked = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "deb-systemd-invoke start" not in text and "systemctl start" not in text
    assert (PACKAGING / "sysusers.d" / f"{package}.conf").exists()
