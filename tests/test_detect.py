"""Card detection: kernel uevents (real netlink, real loop devices), the block policy, the watch backend."""
from __future__ import annotations

import os
import pathlib
import queue
import shutil
import subprocess

import pytest

from agent.daemon.detect import BlockPolicy, CardEvent, UeventBackend, WatchBackend, parse_uevent



def test_a_kernel_uevent_is_parsed_and_a_udev_one_is_not():
    kernel = (b"change@/devices/virtual/block/loop3\0ACTION=change\0DEVPATH=/devices/virtual/block/loop3\0"
              b"SUBSYSTEM=block\0DISK_MEDIA_CHANGE=1\0DEVNAME=loop3\0DEVTYPE=disk\0SEQNUM=818\0")
    assert parse_uevent(kernel) == {
        "ACTION": "change", "DEVPATH": "/devices/virtual/block/loop3", "SUBSYSTEM": "block",
        "DISK_MEDIA_CHANGE": "1", "DEVNAME": "loop3", "DEVTYPE": "disk", "SEQNUM": "818"}
    assert parse_uevent(b"libudev\0\xfe\xed\xca\xfe binary header") is None
    assert parse_uevent(b"garbage") is None
    assert parse_uevent(b"add@/devices/x\0SUBSYSTEM=block\0") is None  # no ACTION/DEVPATH


def _events(q: queue.Queue, n_seconds: float = 10.0) -> list[CardEvent]:
    out = []
    try:
        while True:
            out.append(q.get(timeout=n_seconds if not out else 1.0))
    except queue.Empty:
        return out


@pytest.fixture
def image(tmp_path):
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("needs root and losetup for loop devices and netlink uevents")
    path = tmp_path / "cards" / "card.img"
    path.parent.mkdir()
    with open(path, "wb") as fh:
        fh.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True, capture_output=True)
    devices: list[str] = []
    yield path, devices
    for device in devices:
        subprocess.run(["losetup", "-d", device], check=False)


def _attach(image) -> str:
    path, devices = image
    device = subprocess.run(["losetup", "--find", "--show", str(path)], check=True,
                            capture_output=True, text=True).stdout.strip()
    devices.append(device)
    return device


@pytest.mark.root
def test_uevents_announce_an_inserted_and_a_removed_loop_card(tmp_path, image):
    events: queue.Queue[CardEvent] = queue.Queue()
    policy = BlockPolicy(tmp_path / "mnt", allow_loop=True, loop_backing_dir=str(image[0].parent))
    backend = UeventBackend(policy, events.put)
    backend.start()
    try:
        device = _attach(image)
        name = pathlib.Path(device).name
        inserted = [e for e in _events(events) if e.device == device]
        assert inserted and inserted[0].action == "inserted" and inserted[0].source == "uevent"
        assert inserted[0].reader == os.path.realpath(f"/sys/class/block/{name}")
        subprocess.run(["losetup", "-d", device], check=True)
        image[1].remove(device)
        removed = [e for e in _events(events) if e.reader == inserted[0].reader]
        assert removed and all(e.action == "removed" for e in removed)
    finally:
        backend.stop()


@pytest.mark.root
def test_the_block_policy_refuses_what_is_not_a_card(tmp_path, image):
    device = _attach(image)
    name = pathlib.Path(device).name
    allowed = BlockPolicy(tmp_path / "mnt", allow_loop=True, loop_backing_dir=str(image[0].parent))
    assert allowed.refusal(name) is None
    assert allowed.cards(name) == [device]
    assert allowed.disk_of(name) == name
    assert "allow_loop is off" in BlockPolicy(tmp_path / "mnt").refusal(name)
    elsewhere = BlockPolicy(tmp_path / "mnt", allow_loop=True, loop_backing_dir=str(tmp_path / "other"))
    assert "outside" in elsewhere.refusal(name)
    # Mounted by someone else (a system or user mount): never touched.
    point = tmp_path / "user-mount"
    point.mkdir()
    subprocess.run(["mount", "-o", "ro", device, str(point)], check=True)
    try:
        assert "is mounted at" in allowed.refusal(name)
        # ... but a mount below the agent's own mount root is the agent's.
        assert BlockPolicy(tmp_path, allow_loop=True).refusal(name) is None
    finally:
        subprocess.run(["umount", str(point)], check=True)
    # A disk that is not removable and not on USB/MMC: the root file system's disk, if any.
    fixed = [d for d in allowed.disks() if not d.startswith(("loop", "ram", "zram", "sr"))
             and pathlib.Path(f"/sys/block/{d}/removable").read_text().strip() == "0"
             and "/usb" not in os.path.realpath(f"/sys/block/{d}")]
    for disk in fixed:
        assert allowed.refusal(disk) is not None


def test_the_watch_backend_sees_card_folders_come_and_go(tmp_path):
    root = tmp_path / "media"
    (root / "ALREADY_THERE").mkdir(parents=True)
    (root / "a-file.txt").write_text("not a card")
    events: queue.Queue[CardEvent] = queue.Queue()
    backend = WatchBackend(root, events.put)
    backend.start()
    try:
        first = events.get(timeout=10)
        assert (first.action, first.path) == ("inserted", root / "ALREADY_THERE")
        staged = tmp_path / "staged"
        (staged / "DCIM").mkdir(parents=True)
        os.rename(staged, root / "EOS_DIGITAL")
        second = events.get(timeout=10)
        assert (second.action, second.path, second.source) == ("inserted", root / "EOS_DIGITAL", "watch")
        shutil.rmtree(root / "EOS_DIGITAL")
        gone = [e for e in _events(events, 10) if e.path == root / "EOS_DIGITAL"]
        assert gone and gone[-1].action == "removed"
    finally:
        backend.stop()


def test_the_watch_backend_refuses_a_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError):
        WatchBackend(tmp_path / "nope", lambda e: None).start()
