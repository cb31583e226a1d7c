"""Registered capture devices handed out by the archive (issue 17, R6).

End to end: a real archive process keeps the department's devices
(``admin device add/remove``); a real ``bildsluss-agent run`` daemon receives
them with its heartbeats, keeps them on disk, and judges cards by them
together with its own ``[[devices]]``: a camera registered only centrally is
archived, one registered nowhere is refused UNREGISTERED_DEVICE, a removal
reaches the PC, and with the archive down the kept list still decides.
"""
from __future__ import annotations

import json
import os
import pathlib

import pytest

from agent.card.model import Device
from agent.daemon.registered_devices import DeviceRegister
from tests.archive.world import run_cli
from tests.support.archive_process import ArchiveProcess
from tests.support.cardgen import make_card, make_personnummer
from tests.support.daemon import DaemonProcess, daemons  # noqa: F401
from tests.support.e2e import DEPARTMENT, media_on

NIKON = ("NIKON CORPORATION", "NIKON D7500")
LOCAL_CANON = '[[devices]]\nmake = "Canon"\nmodel = "Canon EOS 250D"\n'


# -- the agent's kept list ---------------------------------------------------------------


def test_the_kept_list_survives_a_restart_and_joins_the_local_one(tmp_path):
    path = tmp_path / "state" / "devices.json"
    register = DeviceRegister(path)
    assert register.devices() == () and not path.exists()
    assert register.update([Device(*NIKON)]) is True
    assert register.update([Device(*NIKON)]) is False, "the same list is not rewritten"
    again = DeviceRegister(path)  # the daemon restarted, the archive not reachable
    assert again.devices() == (Device(*NIKON),)
    local = (Device("Canon", "Canon EOS 250D"), Device("nikon  corporation", "Nikon D7500"))
    assert again.effective(local) == local, "a device named in both counts once"
    assert again.update([]) is True and DeviceRegister(path).devices() == ()


@pytest.mark.parametrize("content", ["{not json", '{"devices": [{"model": "x"}]}', '["a"]'])
def test_a_damaged_kept_list_is_no_list_and_the_next_answer_replaces_it(tmp_path, content):
    path = tmp_path / "devices.json"
    path.write_text(content)
    register = DeviceRegister(path)
    assert register.devices() == ()
    register.update([Device(*NIKON)])
    assert json.loads(path.read_text())["devices"] == [{"make": NIKON[0], "model": NIKON[1], "serial": ""}]


def test_a_kept_list_that_cannot_be_written_is_still_used(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    register = DeviceRegister(blocked / "devices.json")  # its folder is a file
    assert register.update([Device(*NIKON)]) is True
    assert register.devices() == (Device(*NIKON),)


# -- end to end ----------------------------------------------------------------------------


def _card(tmp: pathlib.Path, name: str, camera: str, seed: int) -> pathlib.Path:
    staging = tmp / "staging" / name
    make_card(staging, patient=make_personnummer("19700707", f"{seed:03d}"), n_images=2, megapixels=0.5,
              camera=camera, seed=seed)
    return staging


def _insert(card: pathlib.Path, root: pathlib.Path, name: str) -> pathlib.Path:
    target = root / name
    os.rename(card, target)
    return target


def _card_of(daemon: DaemonProcess, key: str, states: tuple[str, ...]) -> dict:
    def ended(cards: list[dict]) -> bool:
        return any(c["card_key"].endswith(key) and c["state"] in states for c in cards)

    cards = daemon.wait_for(f"card {key} to reach {states}", ended, timeout=120)
    return next(c for c in cards if c["card_key"].endswith(key) and c["state"] in states)


def _kept(daemon: DaemonProcess) -> list[dict]:
    path = daemon.state_dir / "devices.json"
    return json.loads(path.read_text())["devices"] if path.exists() else []


def test_the_archives_devices_decide_with_the_local_ones_and_hold_offline(daemons, tmp_path):
    archive = ArchiveProcess(tmp_path / "archive" / "data").start()
    store = ["--data", str(archive.data)]
    watch = tmp_path / "media"
    watch.mkdir()
    daemon = daemons(tmp_path / "d", archive.address, watch=watch, extra_agent=LOCAL_CANON)
    try:
        run_cli(store, "admin", "department", "add", DEPARTMENT, "--name", "Hudmottagningen")
        run_cli(store, "admin", "device", "add", "--department", DEPARTMENT, "--make", NIKON[0], "--model", NIKON[1])
        daemon.start()
        daemon.wait_for("the archive's devices", lambda _: [d["model"] for d in _kept(daemon)] == [NIKON[1]])

        nikon = _insert(_card(tmp_path, "n1", "nikon", 1), watch, "NIKON1")
        sony = _insert(_card(tmp_path, "s1", "sony", 2), watch, "SONY1")
        canon = _insert(_card(tmp_path, "c1", "canon", 3), watch, "CANON1")
        assert _card_of(daemon, "NIKON1", ("done",))["state"] == "done", "registered centrally only"
        refused = _card_of(daemon, "SONY1", ("refused",))
        assert refused["reason"] == "UNREGISTERED_DEVICE"
        assert _card_of(daemon, "CANON1", ("done",))["state"] == "done", "registered in [[devices]] only"
        assert media_on(nikon) == [] and media_on(canon) == [] and len(media_on(sony)) == 2

        run_cli(store, "admin", "device", "remove", "--department", DEPARTMENT, "--make", NIKON[0],
                "--model", NIKON[1])
        daemon.wait_for("the removal to reach the PC", lambda _: _kept(daemon) == [])
        _insert(_card(tmp_path, "n2", "nikon", 4), watch, "NIKON2")
        assert _card_of(daemon, "NIKON2", ("refused",))["reason"] == "UNREGISTERED_DEVICE"

        run_cli(store, "admin", "device", "add", "--department", DEPARTMENT, "--make", NIKON[0], "--model", NIKON[1])
        daemon.wait_for("the device again", lambda _: len(_kept(daemon)) == 1)
        daemon.stop()
        archive.stop()
        # The archive is down and the agent starts afresh: the kept list decides.
        daemon.start()
        _insert(_card(tmp_path, "n3", "nikon", 5), watch, "NIKON3")
        _insert(_card(tmp_path, "s3", "sony", 6), watch, "SONY3")
        assert _card_of(daemon, "SONY3", ("refused",))["reason"] == "UNREGISTERED_DEVICE"
        held = daemon.wait_for("the Nikon card to be held for the archive", lambda cs: any(
            c["card_key"].endswith("NIKON3") and c["reason"] == "ARCHIVE_UNAVAILABLE" for c in cs))
        assert all(c["reason"] != "UNREGISTERED_DEVICE" for c in held if c["card_key"].endswith("NIKON3"))
    finally:
        daemon.stop()
        archive.stop()
