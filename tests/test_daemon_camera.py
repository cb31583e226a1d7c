"""The daemon notices cameras by itself (issue 16): a configured camera port that starts to
answer is ingested like a card, and USB interfaces are recognised from their uevents.

The daemon test uses a ``disk:`` port (libgphoto2's Directory Browse camera), polled
exactly as a PTP/IP address is; the USB side is tested on a sysfs tree laid out as the
kernel lays it out, with the uevents the kernel sends.
"""
from __future__ import annotations

import os
import pathlib

from agent.daemon.detect import CameraWatch, camera_port_of
from tests.support.cardgen import make_card, make_personnummer
from tests.support.daemon import daemons, states  # noqa: F401
from tests.support.e2e import cases, media_on


def test_a_camera_that_appears_is_archived_and_emptied_with_nobody_typing(daemons, archive, tmp_path):
    patient = make_personnummer("19700815", "234")
    staged = tmp_path / "staging"
    make_card(staged, patient=patient, n_images=3, megapixels=0.8, seed=41)
    camera = tmp_path / "camera"
    watch = tmp_path / "media"
    watch.mkdir()
    daemon = daemons(tmp_path / "d", archive.address, watch=watch, extra_daemon=(
        f'\n[cameras]\nusb = false\nports = ["disk:{camera}"]\nptpip_poll_s = 0.3\n'))
    daemon.start()
    try:
        daemon.wait_for("the daemon to be ready", lambda _: daemon.socket.exists())
        os.rename(staged, camera)  # the camera is switched on
        cards = daemon.wait_for("the camera to be done",
                                lambda cs: bool(cs) and all(c["state"] in ("done", "refused") for c in cs))
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert states(cards) == ["done"], cards
    assert cards[0]["card_key"] == f"camera:disk:{camera}" and cards[0]["source"] == "camera"
    assert media_on(camera) == []
    (case,) = cases(archive, patient.replace("-", ""))
    assert case["case_id"] == cards[0]["case_id"]
    assert not any((tmp_path / "d" / "spool").iterdir()), "nothing stays on the capture PC (R11)"


def _sysfs(root: pathlib.Path, interface: str, cls: str, sub: str, proto: str, name: str = "") -> str:
    """A USB device 1-2 (bus 1, device 7) with one interface, as /sys lays it out."""
    device = root / "devices" / "pci0000:00" / "0000:00:14.0" / "usb1" / "1-2"
    node = device / interface
    node.mkdir(parents=True)
    (device / "busnum").write_text("1\n")
    (device / "devnum").write_text("7\n")
    for key, value in (("bInterfaceClass", cls), ("bInterfaceSubClass", sub), ("bInterfaceProtocol", proto)):
        (node / key).write_text(value + "\n")
    if name:
        (node / "interface").write_text(name + "\n")
    links = root / "bus" / "usb" / "devices"
    links.mkdir(parents=True, exist_ok=True)
    (links / interface).symlink_to(node)
    return "/" + str(node.relative_to(root))


def _uevent(devpath: str, interface: str, action: str = "add") -> dict[str, str]:
    return {"ACTION": action, "SUBSYSTEM": "usb", "DEVTYPE": "usb_interface", "DEVPATH": devpath,
            "INTERFACE": interface}


def test_ptp_and_mtp_interfaces_are_cameras_other_usb_devices_are_not(tmp_path):
    ptp = _sysfs(tmp_path / "a", "1-2:1.0", "06", "01", "01")
    assert camera_port_of(_uevent(ptp, "6/1/1"), tmp_path / "a") == "usb:001,007"
    mtp = _sysfs(tmp_path / "b", "1-2:1.0", "ff", "ff", "00", name="MTP")
    assert camera_port_of(_uevent(mtp, "255/255/0"), tmp_path / "b") == "usb:001,007"
    adb = _sysfs(tmp_path / "c", "1-2:1.1", "ff", "42", "01", name="ADB Interface")
    assert camera_port_of(_uevent(adb, "255/66/1"), tmp_path / "c") is None
    storage = _sysfs(tmp_path / "d", "1-2:1.0", "08", "06", "50")
    assert camera_port_of(_uevent(storage, "8/6/80"), tmp_path / "d") is None  # a card reader: the card path
    assert camera_port_of({**_uevent(ptp, "6/1/1"), "DEVTYPE": "usb_device"}, tmp_path / "a") is None


def test_camera_watch_reports_plugged_and_unplugged_cameras(tmp_path):
    devpath = _sysfs(tmp_path, "1-2:1.0", "06", "01", "01")
    events = []
    watch = CameraWatch(events.append, usb=True, sys_root=tmp_path)
    watch.coldplug()  # a camera connected before the daemon started
    watch.handle(_uevent(devpath, "6/1/1", action="remove"))
    assert [(e.action, e.port, e.source) for e in events] == [
        ("inserted", "usb:001,007", "camera"), ("removed", "usb:001,007", "camera")]


def test_configured_ports_are_polled_for_presence(tmp_path):
    answering = {"ptpip:192.0.2.20": True}
    events = []
    watch = CameraWatch(events.append, usb=False, ports=("ptpip:192.0.2.20",), poll_s=0.01,
                        present=lambda port: answering[port])
    watch.start()
    try:
        _wait(lambda: len(events) == 1)
        answering["ptpip:192.0.2.20"] = False
        _wait(lambda: len(events) == 2)
    finally:
        watch.stop()
    assert [(e.action, e.port) for e in events] == [("inserted", "ptpip:192.0.2.20"),
                                                    ("removed", "ptpip:192.0.2.20")]


def _wait(condition, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
