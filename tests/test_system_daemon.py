"""System tests of the daemon on real loop-device cards and the kernel's own uevents.

Root only. A card is an ext4 image (this kernel has no vfat) filled with
``mkfs.ext4 -d`` from a generated camera card; "inserting" it is ``losetup``,
which makes the kernel announce the device (a change uevent, as a card reader
does on media change). The daemon (``run --udev --allow-loop``; no udevd runs
here, so it listens to the kernel's uevents) must notice it, mount it
privately, ingest, wipe and unmount it. "Pulling" the card: a loop device
cannot vanish under a mounted file system, so the test detaches the daemon's
mount lazily and detaches the loop device, which is what the kernel does for
a pulled USB card (the device reports no medium, the files are gone).

The daemon only accepts loop devices backed by files in this test's folder,
so it never touches another test's (or engineer's) loop devices.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest

from agent.daemon import mount as mount_mod
from tests.support.cardgen import make_card, make_personnummer
from tests.support.daemon import daemons, media_count, states  # noqa: F401 (a fixture)
from tests.support.e2e import AGENT, cases
from tests.support.loopcard import CardImage

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices and mounts"),
    pytest.mark.skipif(not shutil.which("losetup") or not shutil.which("debugfs"),
                       reason="needs losetup and debugfs (util-linux, e2fsprogs)"),
]


@pytest.fixture
def card_dir(tmp_path):
    folder = tmp_path / "cards"
    folder.mkdir()
    images: list[CardImage] = []
    yield folder, images
    for image in images:
        image.close()


def _image(card_dir, tmp_path, patient: str, seed: int, n_images: int = 3) -> CardImage:
    folder, images = card_dir
    content = tmp_path / f"content{seed}"
    make_card(content, patient=patient, n_images=n_images, megapixels=0.8, seed=seed)
    image = CardImage(folder, content)
    images.append(image)
    return image


def _done(cards: list[dict]) -> bool:
    return bool(cards) and all(c["state"] in ("done", "refused") for c in cards)


def test_a_loop_card_is_seen_by_uevents_mounted_ingested_wiped_and_unmounted(
        daemons, archive, tmp_path, card_dir):
    patient = make_personnummer("19770101", "882")
    image = _image(card_dir, tmp_path, patient, seed=71)
    assert len(image.files()) == 3
    daemon = daemons(tmp_path / "d", archive.address, loop_backing_dir=card_dir[0]).start()
    try:
        daemon.wait_for_log("daemon ready")
        image.insert()
        cards = daemon.wait_for("the card to be done", _done)
        assert mount_mod.mounts_below(daemon.mount_root) == [], "the card must be unmounted when done"
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert states(cards) == ["done"], cards
    assert cards[0]["card_key"].startswith("fs:ext4:"), "the card is known by its file system UUID"
    image.close()
    image.device = None
    assert image.files() == [], "media still on the card"
    (case,) = cases(archive, patient.replace("-", ""))
    assert media_count(case) == 3
    seen = daemon.log_lines()
    assert any(line.get("msg") == "no udevd on this machine; listening to the kernel's uevents"
               for line in seen) or pathlib.Path("/run/udev/control").exists()
    mounted = [line for line in seen if line.get("msg") == "card mounted"]
    assert mounted and mounted[0]["fstype"] == "ext4"


def test_a_card_pulled_mid_upload_is_untouched_and_finished_when_it_comes_back(
        daemons, archive, tmp_path, card_dir):
    patient = make_personnummer("19660202", "991")
    image = _image(card_dir, tmp_path, patient, seed=81)
    daemon = daemons(tmp_path / "d", archive.address, loop_backing_dir=card_dir[0])
    daemon.start(pause_at="upload:1")
    try:
        daemon.wait_for_log("daemon ready")
        image.insert()
        daemon.wait_paused()  # one of three files sent
        status = json.loads(subprocess.run(
            [*AGENT, "status", "--json", "--socket", str(daemon.socket)], check=True,
            capture_output=True, text=True, timeout=30).stdout)
        (card,) = status["cards"]
        assert card["state"] == "uploading" and card["stage"] == "upload", card
        assert card["progress"]["files_done"] == 1 and card["progress"]["files_total"] == 3, card
        # Several Write streams at once ([archive] upload_streams): the other files'
        # bytes may all be sent while only the first is confirmed.
        assert 0 < card["progress"]["bytes_done"] <= card["progress"]["bytes_total"], card
        image.pull(daemon.mount_root)
        daemon.wait_for_log("card removed")
        daemon.resume()
        cards = daemon.wait_for("the card to be interrupted",
                                lambda cs: bool(cs) and cs[0]["state"] == "interrupted")
        assert cards[0]["reason"] == "CARD_REMOVED"
        assert image.files() == ["IMG_0001.JPG", "IMG_0002.JPG", "IMG_0003.JPG"], "a pulled card is untouched"
        assert mount_mod.mounts_below(daemon.mount_root) == []

        image.insert()  # the same card comes back (perhaps in another slot)
        cards = daemon.wait_for("the card to be done", _done)
    finally:
        daemon.stop()
    assert states(cards) == ["done"], "the same journal row: the job was finished, not started anew"
    history = daemon.history(cards[0]["id"])
    assert history.index("interrupted") < history.index("done"), history
    image.close()
    image.device = None
    assert image.files() == []
    (case,) = cases(archive, patient.replace("-", ""))
    assert case["case_id"] == cards[0]["case_id"] and media_count(case) == 3


def test_stale_mounts_go_and_a_loop_device_outside_the_allowed_folder_is_never_touched(
        daemons, archive, tmp_path, card_dir):
    patient = make_personnummer("19550303", "107")
    foreign_dir = tmp_path / "elsewhere"
    foreign_dir.mkdir()
    image = _image((foreign_dir, card_dir[1]), tmp_path, patient, seed=91)
    daemon = daemons(tmp_path / "d", archive.address, loop_backing_dir=card_dir[0])
    stale = daemon.mount_root / "loop9"  # what a killed daemon left mounted
    stale.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "stale-card", str(stale)], check=True)
    daemon.start()
    try:
        daemon.wait_for_log("daemon ready")
        assert mount_mod.mounts_below(daemon.mount_root) == [], "stale mounts are cleaned on start"
        device = image.insert()
        daemon.wait_for_log("not a card", disk=pathlib.Path(device).name,
                            detail=lambda d: "outside" in (d or ""))
        assert daemon.cards() == []
    finally:
        daemon.stop()
    image.close()
    image.device = None
    assert len(image.files()) == 3
