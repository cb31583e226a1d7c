"""System tests on a real FAT32 card: a loop device, mounted as the agent would mount it.

Root only (losetup, mount). The card is an image file formatted by mkfs.vfat,
attached to a loop device and mounted nosuid,nodev,noexec; "pulling" it is a
lazy unmount, "re-inserting" it a fresh mount of the same device.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from tests.support.archive_process import ArchiveProcess
from tests.support.cardgen import make_card, make_personnummer
from tests.test_e2e import DEPARTMENT, cases, ingest, media_on, snapshot

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices and mounts"),
    pytest.mark.skipif(shutil.which("mkfs.vfat") is None, reason="needs dosfstools (scripts/setup.sh)"),
]


class LoopCard:
    def __init__(self, image: pathlib.Path, mountpoint: pathlib.Path, size_mib: int = 64) -> None:
        self.image, self.mountpoint = image, mountpoint
        with open(image, "wb") as fh:
            fh.truncate(size_mib << 20)
        subprocess.run(["mkfs.vfat", "-F", "32", "-n", "EOS_DIGITAL", str(image)], check=True,
                       capture_output=True)
        self.device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                                     capture_output=True, text=True).stdout.strip()
        mountpoint.mkdir()
        self.mounted = False

    def insert(self) -> None:
        subprocess.run(["mount", "-t", "vfat", "-o", "nosuid,nodev,noexec,flush", self.device,
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


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    with ArchiveProcess(data=tmp_path_factory.mktemp("system") / "archive") as proc:
        yield proc


def test_fat_card_is_archived_and_the_wipe_survives_a_remount(archive, loop_card, tmp_path):
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
    from agent.pipeline import IngestRequest, ingest_card

    patient = make_personnummer("19800202", "456")
    make_card(loop_card.mountpoint, patient=patient, n_images=3, seed=6)
    before = snapshot(loop_card.mountpoint)

    def pull_at_wipe(stage: str, info: dict) -> None:
        if stage == "wipe":
            loop_card.pull()

    cfg = AgentConfig(agent_id="system-agent", spool_dir=tmp_path / "spool",
                      archive=ArchiveConfig(address=archive.address, insecure=True))
    request = IngestRequest(root=loop_card.mountpoint, department=DEPARTMENT)
    outcome = ingest_card(request, cfg, progress=pull_at_wipe)

    assert outcome.reason is not None and outcome.reason.value == "CARD_REMOVED", outcome
    assert outcome.wiped is False and outcome.exit_code != 0
    loop_card.insert()
    assert snapshot(loop_card.mountpoint) == before, "a pulled card must be left exactly as it was"

    again = ingest_card(request, cfg)
    assert again.outcome == "archived" and again.wiped, again
    assert again.case_id == outcome.case_id
    assert len(cases(archive, patient.replace("-", ""))) == 1
