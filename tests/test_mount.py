"""Mounting cards: private, nosuid,nodev,noexec, cleaned up after a crash; failures are reasons.

Root only (loop devices, mount). Real ext4 images on loop devices.
"""
from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import stat
import subprocess

import pytest

from agent.daemon import mount as mount_mod
from agent.card import sandbox
from agent.card.reasons import Reason

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices and mounts"),
    pytest.mark.skipif(not shutil.which("losetup"), reason="needs losetup (util-linux)"),
]


@pytest.fixture
def loop(tmp_path):
    devices = []

    def attach(fs: str | None = "ext4", content: pathlib.Path | None = None) -> str:
        image = tmp_path / f"card{len(devices)}.img"
        with open(image, "wb") as fh:
            fh.truncate(16 << 20)
        if fs:
            extra = ["-d", str(content)] if content else []
            subprocess.run([f"mkfs.{fs}", "-q", "-F", "-L", "CARD", *extra, str(image)], check=True,
                           capture_output=True)
        device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                                capture_output=True, text=True).stdout.strip()
        devices.append(device)
        return device

    yield attach
    for device in devices:
        subprocess.run(["losetup", "-d", device], check=False)


def _options(point: pathlib.Path) -> set[str]:
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(point):
            return set(fields[5].split(","))
    raise AssertionError(f"{point} is not mounted")


def test_a_card_is_mounted_privately_without_exec_suid_or_devices(tmp_path, loop):
    content = tmp_path / "content"
    (content / "DCIM").mkdir(parents=True)
    script = content / "DCIM" / "run.sh"
    script.write_text("#!/bin/sh\necho pwned\n")
    script.chmod(0o4755)  # setuid and executable, as a hostile card might carry
    device = loop(content=content)
    volume = mount_mod.probe(device)
    assert volume is not None and volume.fstype == "ext4" and volume.label == "CARD" and volume.uuid
    assert volume.identity == f"fs:ext4:{volume.uuid}"

    root = tmp_path / "run" / "cards"
    point = mount_mod.mount(volume, root, ("ext4",))
    try:
        # 0711: the parser user enters it to reach the card; nobody but root lists it.
        assert point.parent == root and stat.S_IMODE(root.stat().st_mode) == 0o711
        assert {"nosuid", "nodev", "noexec", "rw"} <= _options(point)
        with pytest.raises(PermissionError):
            subprocess.run([str(point / "DCIM" / "run.sh")], check=False)
        assert mount_mod.mounts_below(root) == [point]
    finally:
        mount_mod.unmount(point)
    assert not point.exists() and mount_mod.mounts_below(root) == []


def test_a_fat_card_is_root_s_and_readable_by_the_parser_group_only(tmp_path, loop):
    """The card's parsers run as bildsluss-parse (agent.card.sandbox): a FAT card's
    files are root's, the parser's group reads them (not writes), others nothing."""
    parser = pwd.getpwnam(sandbox.PARSER_USER)
    assert mount_mod.owner_options() == {"uid": "0", "gid": str(parser.pw_gid), "umask": "027"}
    if "vfat" not in pathlib.Path("/proc/filesystems").read_text().split() or not shutil.which("mkfs.vfat"):
        pytest.skip("this kernel has no vfat (the options above are what the daemon passes)")
    device = loop(fs=None)
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", "CARD", device], check=True, capture_output=True)
    volume = mount_mod.probe(device)
    assert volume is not None and volume.fstype == "vfat"
    point = mount_mod.mount(volume, tmp_path / "cards", ("vfat",))
    try:
        (point / "DCIM").mkdir()
        (point / "DCIM" / "IMG_0001.JPG").write_bytes(b"\xff\xd8")
        owners = {p.name: (p.stat().st_uid, p.stat().st_gid, oct(stat.S_IMODE(p.stat().st_mode)))
                  for p in (point / "DCIM", point / "DCIM" / "IMG_0001.JPG")}
        assert owners == {"DCIM": (0, parser.pw_gid, "0o750"), "IMG_0001.JPG": (0, parser.pw_gid, "0o640")}
    finally:
        mount_mod.unmount(point)


def test_stale_mounts_of_a_crashed_run_are_cleaned_on_start(tmp_path, loop):
    root = tmp_path / "cards"
    point = mount_mod.mount(mount_mod.probe(loop()), root, ("ext4",))
    (root / "empty-leftover").mkdir()
    assert mount_mod.clean_stale(root) == [point]
    assert mount_mod.mounts_below(root) == [] and list(root.iterdir()) == []


def test_a_card_without_a_file_system_is_not_probed_as_one(loop):
    assert mount_mod.probe(loop(fs=None)) is None


def test_a_file_system_the_agent_does_not_mount_is_refused_as_unreadable(tmp_path, loop):
    volume = mount_mod.probe(loop())
    with pytest.raises(mount_mod.MountError) as err:
        mount_mod.mount(volume, tmp_path / "cards", ("vfat", "exfat"))
    assert err.value.reason is Reason.CARD_UNREADABLE and "ext4" in err.value.detail


def test_a_mount_that_fails_is_a_reason_not_a_crash(tmp_path, loop):
    # An ext4 card whose probe said vfat (a damaged or lying volume): the kernel refuses it.
    device = loop()
    with pytest.raises(mount_mod.MountError) as err:
        mount_mod.mount(mount_mod.Volume(device, "vfat"), tmp_path / "cards", ("vfat",))
    assert err.value.reason is Reason.CARD_UNREADABLE
    assert mount_mod.mounts_below(tmp_path / "cards") == [] and not any((tmp_path / "cards").iterdir())


def test_a_device_that_is_gone_is_card_removed(tmp_path):
    with pytest.raises(mount_mod.MountError) as err:
        mount_mod.mount(mount_mod.Volume("/dev/loop-gone", "ext4", "u"), tmp_path / "cards", ("ext4",))
    assert err.value.reason is Reason.CARD_REMOVED
