"""System tests on a real card: a loop device, mounted as the agent would mount it.

Root only (losetup, mount). The card is an image file formatted as FAT32 (as
cameras do) when the kernel has vfat, else ext4; attached to a loop device and
mounted nosuid,nodev,noexec. "Pulling" it is a lazy unmount, "re-inserting" it a
fresh mount of the same device.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from tests.support.cardgen import make_card, make_personnummer
from tests.support.e2e import DEPARTMENT, OnStage, cases, ingest, media_on, snapshot


def _card_filesystem() -> str:
    known = pathlib.Path("/proc/filesystems").read_text().split()
    if "vfat" in known and shutil.which("mkfs.vfat"):
        return "vfat"
    return "ext4"


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices and mounts"),
]


class LoopCard:
    def __init__(self, image: pathlib.Path, mountpoint: pathlib.Path, size_mib: int = 64) -> None:
        self.image, self.mountpoint = image, mountpoint
        with open(image, "wb") as fh:
            fh.truncate(size_mib << 20)
        self.fstype = _card_filesystem()
        mkfs = (["mkfs.vfat", "-F", "32", "-n", "EOS_DIGITAL"] if self.fstype == "vfat"
                else ["mkfs.ext4", "-q", "-F", "-L", "EOS_DIGITAL"])
        subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
        self.device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                                     capture_output=True, text=True).stdout.strip()
        mountpoint.mkdir()
        self.mounted = False

    def insert(self) -> None:
        options = "nosuid,nodev,noexec" + (",flush" if self.fstype == "vfat" else "")
        subprocess.run(["mount", "-t", self.fstype, "-o", options, self.device,
                        str(self.mountpoint)], check=True)
        self.mounted = True

    def pull(self) -> None:
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=True)
        self.mounted = False

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.mountpoint)], check=False)
        subprocess.run(["losetup", "-d", self.device], check=False)


@pytest.fixture
def loop_card(tmp_path):
    card = LoopCard(tmp_path / "card.img", tmp_path / "mnt")
    card.insert()
    yield card
    card.close()


def test_card_is_archived_and_the_wipe_survives_a_remount(archive, loop_card, tmp_path):
    patient = make_personnummer("19700101", "123")
    make_card(loop_card.mountpoint, patient=patient, n_images=3, seed=5)
    assert len(media_on(loop_card.mountpoint)) == 3

    code, out = ingest(loop_card.mountpoint, archive.address, tmp_path)

    assert code == 0, out
    loop_card.pull()
    loop_card.insert()
    assert media_on(loop_card.mountpoint) == [], "deletions were not durable on the card"
    assert (loop_card.mountpoint / "DCIM").is_dir()
    assert len(cases(archive, patient.replace("-", ""))) == 1


def test_card_pulled_before_the_wipe_is_untouched_and_goes_through_later(archive, loop_card, tmp_path):
    from agent.config import AgentConfig, ArchiveConfig
    from agent.card.pipeline import IngestRequest, ingest_card

    patient = make_personnummer("19800202", "456")
    make_card(loop_card.mountpoint, patient=patient, n_images=3, seed=6)
    before = snapshot(loop_card.mountpoint)

    def pull_at_wipe(stage: str, info: dict) -> None:
        if stage == "wipe":
            loop_card.pull()

    cfg = AgentConfig(agent_id="system-agent", spool_dir=tmp_path / "spool",
                      archive=ArchiveConfig(address=archive.address, insecure=True))
    request = IngestRequest(root=loop_card.mountpoint, department=DEPARTMENT)
    outcome = ingest_card(request, cfg, progress=OnStage(pull_at_wipe))

    assert outcome.reason is not None and outcome.reason.value == "CARD_REMOVED", outcome
    assert outcome.wiped is False and outcome.exit_code != 0
    loop_card.insert()
    assert snapshot(loop_card.mountpoint) == before, "a pulled card must be left exactly as it was"

    again = ingest_card(request, cfg)
    assert again.outcome == "archived" and again.wiped, again
    assert again.case_id == outcome.case_id
    assert len(cases(archive, patient.replace("-", ""))) == 1
