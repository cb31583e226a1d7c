"""The fleet as the archive sees it (issue 17, R21), against a REAL TLS archive
process on SQLite and PostgreSQL and real agents' heartbeats over mutual TLS:

* the agents bound with ``admin agent add`` are the expected fleet: one never
  heard from is listed ``never_seen``, one that stopped beating turns
  ``silent``, beside the ``alive`` ones; a revoked one is ``revoked``;
* each heartbeat's clock skew (agent clock minus archive clock) and the bound
  certificate's expiry show in ``agents --json``;
* each department's registered capture devices reach its agents with the
  heartbeat answer (and only its own), kept by the agent on disk.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from agent.card.model import Device
from agent.config import AgentConfig, ArchiveConfig, DaemonConfig
from agent.daemon.heartbeat import Heartbeater
from agent.daemon.registered_devices import DeviceRegister
from agent.desk.status import StatusBoard
from tests.archive.world import run_cli
from tests.support.archive_process import ArchiveProcess
from tests.support.pki import issue, make_pki

HUD = "SE2321000016-15CQ"
KIRURGI = "SE2321000016-A1B2"
SKEW_S = 120.0  # how far ahead pc-skewed's clock runs


@dataclasses.dataclass
class Fleet:
    archive: ArchiveProcess
    pki: pathlib.Path
    store: list[str]
    tmp: pathlib.Path

    def agents(self, *extra: str) -> dict[str, dict]:
        out = subprocess.run([sys.executable, "-m", "archive_server.cli", "agents", "--json", *extra, *self.store],
                             capture_output=True, text=True, timeout=60, check=True)
        return {a["agent_id"]: a for a in map(json.loads, out.stdout.splitlines())}

    def heartbeater(self, agent_id: str, department: str, *, clock: Callable[[], float] = time.time,
                    interval_s: float = 1.0) -> Heartbeater:
        assert self.archive.address
        config = AgentConfig(
            agent_id=agent_id, department=department, daemon=DaemonConfig(heartbeat_s=interval_s),
            archive=ArchiveConfig(address=self.archive.address, tls_cert=self.pki / f"{agent_id}.crt",
                                  tls_key=self.pki / f"{agent_id}.key", tls_ca=self.pki / "ca.crt",
                                  call_timeout_s=10.0))
        register = DeviceRegister(self.tmp / agent_id / "devices.json")
        return Heartbeater(config, StatusBoard(agent_id, "0.1.0", department), devices=register, clock=clock)


@pytest.fixture
def fleet(fresh_db_url: str, tmp_path: pathlib.Path) -> Iterator[Fleet]:
    pki, data = tmp_path / "pki", tmp_path / "archive" / "data"
    store = ["--data", str(data), "--db", fresh_db_url]
    make_pki(pki)
    run_cli(store, "admin", "department", "add", HUD, "--name", "Hudmottagningen")
    run_cli(store, "admin", "department", "add", KIRURGI, "--name", "Kirurgmottagningen")
    for agent, department in (("pc-alive", HUD), ("pc-skewed", HUD), ("pc-quiet", HUD),
                              ("pc-never", KIRURGI), ("pc-revoked", KIRURGI)):
        issue(pki, agent)
        run_cli(store, "admin", "agent", "add", agent, "--department", department,
                "--cert", str(pki / f"{agent}.crt"))
    run_cli(store, "admin", "agent", "revoke", "pc-revoked")
    archive = ArchiveProcess(data, db=fresh_db_url, tls=(pki / "server.crt", pki / "server.key", pki / "ca.crt"))
    archive.start()
    try:
        yield Fleet(archive, pki, store, tmp_path)
    finally:
        assert archive.stop() == 0


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_expected_fleet_shows_never_seen_silent_alive_skew_and_expiry(fleet):
    before = fleet.agents()
    assert {a: before[a]["liveness"] for a in before} == {
        "pc-alive": "never_seen", "pc-skewed": "never_seen", "pc-quiet": "never_seen",
        "pc-never": "never_seen", "pc-revoked": "revoked"}
    assert before["pc-never"]["department"] == KIRURGI and before["pc-never"]["last_seen"] is None

    alive = fleet.heartbeater("pc-alive", HUD)
    skewed = fleet.heartbeater("pc-skewed", HUD, clock=lambda: time.time() + SKEW_S)
    quiet = fleet.heartbeater("pc-quiet", HUD)
    for beater in (alive, skewed, quiet):
        beater.start()
    try:
        wait_until(lambda: min(b.sent for b in (alive, skewed, quiet)) >= 1, "a heartbeat of each")
        quiet.stop()  # its heartbeats end; its last word was "stopping"
        wait_until(lambda: fleet.agents()["pc-quiet"]["liveness"] == "silent", "pc-quiet to turn silent")
        agents = fleet.agents()
    finally:
        alive.stop()
        skewed.stop()

    assert {a: agents[a]["liveness"] for a in agents} == {
        "pc-alive": "alive", "pc-skewed": "alive", "pc-quiet": "silent",
        "pc-never": "never_seen", "pc-revoked": "revoked"}
    assert agents["pc-quiet"]["heartbeat_age_s"] > 3 * agents["pc-quiet"]["interval_s"]
    assert agents["pc-quiet"]["state"] == "stopping"
    # Clock skew: agent minus archive, measured by the archive from sent_at
    # (plus the one-way delay of a loopback call), and told to the agent too.
    assert SKEW_S - 5 < agents["pc-skewed"]["clock_skew_s"] < SKEW_S + 1
    assert abs(agents["pc-alive"]["clock_skew_s"]) < 5
    assert skewed.clock_skew_s is not None and SKEW_S - 5 < skewed.clock_skew_s < SKEW_S + 1
    # Certificate expiry: the bound certificate's notAfter (the test CA issues 2 days).
    for agent_id in ("pc-alive", "pc-never"):
        assert 1.9 < agents[agent_id]["certificate_days_left"] <= 2.0
        assert agents[agent_id]["certificate_not_after"].endswith("+00:00")
    assert agents["pc-alive"]["bound"] is True and agents["pc-revoked"]["bound"] is False
    only_kirurgi = fleet.agents("--department", KIRURGI)
    assert sorted(only_kirurgi) == ["pc-never", "pc-revoked"]
    lines = subprocess.run([sys.executable, "-m", "archive_server.cli", "agents", *fleet.store], capture_output=True,
                           text=True, timeout=60, check=True).stdout.splitlines()
    marks = {line.split()[0]: line.split()[1] for line in lines}
    # (pc-alive and pc-skewed stopped beating above: by now they may be silent too.)
    assert (marks["pc-quiet"], marks["pc-never"], marks["pc-revoked"]) == ("SILENT", "NEVER_SEEN", "REVOKED")
    assert "v-" in next(line for line in lines if line.startswith("pc-never"))


def test_departments_devices_reach_their_agents_and_only_theirs(fleet):
    run_cli(fleet.store, "admin", "device", "add", "--department", HUD, "--make", "NIKON CORPORATION",
            "--model", "NIKON  D7500")
    again = run_cli(fleet.store, "admin", "device", "add", "--department", HUD, "--make", "nikon corporation",
                    "--model", "Nikon D7500")
    assert "unchanged" in again.stdout, "one device is registered once however it is typed"
    run_cli(fleet.store, "admin", "device", "add", "--department", KIRURGI, "--make", "Canon",
            "--model", "Canon EOS 250D", "--serial", "083051006721")
    listed = [json.loads(line) for line in run_cli(fleet.store, "admin", "device", "list", "--json").stdout.splitlines()]
    assert [(d["department"], d["make"], d["model"], d["serial"]) for d in listed] == [
        (HUD, "NIKON CORPORATION", "NIKON D7500", ""), (KIRURGI, "Canon", "Canon EOS 250D", "083051006721")]

    beater = fleet.heartbeater("pc-alive", HUD)
    beater.start()
    try:
        wait_until(lambda: beater.sent >= 1, "a heartbeat")
        assert beater.devices is not None
        assert beater.devices.devices() == (Device("NIKON CORPORATION", "NIKON D7500", ""),)
        run_cli(fleet.store, "admin", "device", "remove", "--department", HUD, "--make", "NIKON CORPORATION",
                "--model", "NIKON D7500")
        wait_until(lambda: beater.devices is not None and beater.devices.devices() == (), "the list to empty")
    finally:
        beater.stop()
    kept = json.loads((fleet.tmp / "pc-alive" / "devices.json").read_text())
    assert kept["devices"] == [], "an empty central list is kept as empty, not as 'unknown'"

    missing = run_cli(fleet.store, "admin", "device", "remove", "--department", HUD, "--make", "Sony",
                      "--model", "ILCE-6400", ok=False)
    assert missing.returncode == 1 and "is not registered in" in missing.stderr
    unknown = run_cli(fleet.store, "admin", "device", "add", "--department", "SE2321000016-ZZZZ", "--make", "Sony",
                      "--model", "ILCE-6400", ok=False)
    assert unknown.returncode == 1 and "unknown department" in unknown.stderr
    empty = run_cli(fleet.store, "admin", "device", "add", "--department", HUD, "--make", " ", "--model", "X",
                    ok=False)
    assert empty.returncode == 1 and "--make must not be empty" in empty.stderr
    events = run_cli(fleet.store, "audit", "list", "--json").stdout
    assert '"device.added"' in events and '"device.removed"' in events
