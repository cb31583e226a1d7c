"""The camera source (agent/card/camera.py): the policy on recorded DeviceInfo of real
devices, and the libgphoto2 side through its own Directory Browse camera (``disk:``)
and its virtual PTP camera (the ``vusb`` port driver the gphoto2 wheel ships).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import pathlib
import shutil

import pytest

from agent.card.camera import (
    CameraConnection, CameraEntry, CameraNotFound, camera_message, camera_wiper,
    check_name, download_area,
)
from agent.card.camera_info import CameraInfo, judge_camera, maker_key, serial_matches
from agent.card.model import Device, MediaFile, MediaKind, StageError
from agent.card.spool import Spool
from agent.card.reasons import Reason
from tests.support.cardgen import make_card
from tests.support.deviceinfo import load

CANON_R5 = Device("Canon", "Canon EOS R5", "042021006092")  # as its EXIF would name it


# --------------------------------------------------------------------------- recorded DeviceInfo


@pytest.mark.parametrize("recording, why", [
    ("apple-iphone-5s.deviceinfo.txt", "phone"),
    ("motorola-xt1032.mtp-detect.txt", "Android"),
])
def test_recorded_phones_are_refused_with_or_without_a_register(recording, why):
    info = load(recording)
    for registered in ((), (CANON_R5,)):
        judgement = judge_camera(info, registered)
        assert not judgement.accepted
        assert why in judgement.why
        evidence = judgement.evidence()
        assert evidence.method.value == "device" and evidence.patient_id is None
        assert evidence.text.startswith("refused: camera")


def test_recorded_canon_is_matched_by_its_body_serial_not_its_ptp_serial():
    info = load("canon-eos-r5.status.txt")
    assert info.serial == "0000" and info.body_serial == "042021006092"
    assert judge_camera(info, [CANON_R5]).accepted
    other_body = Device("Canon", "Canon EOS R5", "042021000001")
    judgement = judge_camera(info, [other_body])
    assert not judgement.accepted and "not registered" in judgement.why
    assert not judge_camera(info, [Device("Canon", "Canon EOS R5", "0000000")]).accepted


def test_recorded_nikon_matches_an_exif_style_registration():
    info = load("nikon-d750.summary.txt")  # "Nikon Corporation" / "D750"
    assert judge_camera(info, [Device("NIKON CORPORATION", "NIKON D750")]).accepted
    assert not judge_camera(info, [Device("NIKON CORPORATION", "NIKON D7500")]).accepted
    assert not judge_camera(info, [Device("Canon", "D750")]).accepted


def test_recorded_camera_passes_when_nothing_is_registered_but_is_refused_by_a_register():
    info = load("canon-eos200d.deviceinfo.txt")  # reports its US name, as its EXIF does
    assert judge_camera(info, []).accepted
    assert judge_camera(info, [Device("Canon", "Canon EOS Rebel SL2")]).accepted
    assert not judge_camera(info, [CANON_R5]).accepted


def test_a_phone_the_department_registered_passes_as_on_a_card():
    """A managed clinical phone, registered by name (agent/devices.py does the same for files)."""
    assert judge_camera(load("apple-iphone-5s.deviceinfo.txt"), [Device("Apple", "iPhone")]).accepted
    assert judge_camera(load("motorola-xt1032.mtp-detect.txt"), [Device("motorola", "XT1032")]).accepted


def test_a_camera_that_does_not_name_itself_is_judged_file_by_file():
    judgement = judge_camera(CameraInfo(port="disk:/x", driver="Directory Browse"), [CANON_R5])
    assert judgement.accepted and "each file is judged" in judgement.why


def test_driver_name_of_a_phone_refuses_a_device_that_claims_to_be_a_camera():
    info = CameraInfo(port="usb:001,002", driver="Samsung Galaxy models (MTP)", manufacturer="Canon",
                      model="Canon EOS R5", body_serial="042021006092")
    assert not judge_camera(info, [CANON_R5]).accepted


@pytest.mark.parametrize("make, key", [("Canon.Inc", "canon"), ("Canon Inc.", "canon"), ("Apple Inc.", "apple"),
                                       ("NIKON CORPORATION", "nikon"), ("OLYMPUS IMAGING CORP.", "olympus"),
                                       ("RICOH IMAGING COMPANY, LTD.", "ricoh"), ("LG Electronics", "lg electronics")])
def test_maker_key(make, key):
    assert maker_key(make) == key


def test_serials_padded_by_the_camera_still_match():
    assert serial_matches("3012345", "00000000000000000000000003012345")  # left-padded (D750's form)
    assert serial_matches("6177882", "61778820000000000000000000000000")  # right-padded (a D7100)
    assert not serial_matches("617788", "61778820000000000000000000000000")
    assert not serial_matches("6177882", "6177882000001")
    assert not serial_matches("", "0000")


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "x\x00y", "evil\n", "c:\\x"])
def test_names_that_could_leave_the_download_folder_are_refused(name):
    with pytest.raises(StageError) as err:
        check_name(name, "a file:")
    assert err.value.reason is Reason.UNSAFE_PATH


def test_camera_messages_name_the_camera():
    assert "camera" in camera_message(Reason.WIPE_FAILED)
    assert "card" not in camera_message(Reason.MIXED_PATIENTS).replace("cards", "")


# --------------------------------------------------------------------------- libgphoto2: Directory Browse (disk:)


@pytest.fixture
def card(tmp_path):
    make_card(tmp_path / "card", patient="19121212-1212", n_images=3, seed=5, megapixels=0.5)
    return tmp_path / "card"


def test_directory_browse_camera_lists_and_downloads(card, tmp_path):
    with CameraConnection.open(f"disk:{card}") as cam:
        info = cam.info()
        entries = cam.list_files()
        out = tmp_path / "out"
        out.mkdir()
        for e in entries:
            cam.download(e, out)
    assert not info.names_itself and info.driver == "Directory Browse"
    # libgphoto2's directory driver shows media by name and hides dot files.
    assert sorted(e.relative_path for e in entries) == [f"DCIM/100CANON/IMG_000{i}.JPG" for i in (1, 2, 3)]
    for e in entries:
        got = out / e.relative_path
        assert got.read_bytes() == (card / e.relative_path).read_bytes()
        assert got.stat().st_mode & 0o777 == 0o600 and got.stat().st_size == e.size
        assert int(got.stat().st_mtime) == e.mtime


def test_a_download_is_root_s_and_read_by_the_card_parsers_group_only(card, tmp_path):
    """As root the download folder is the parser's group's to read (0750/0640, files
    root's): the card's reader workers become bildsluss-parse, not root."""
    if os.geteuid() != 0:
        pytest.skip("only root switches to the parser user")
    import pwd
    import tempfile

    from agent.card import sandbox, workers

    parser = pwd.getpwnam(sandbox.PARSER_USER)
    spool = pathlib.Path(tempfile.mkdtemp(dir="/tmp", prefix="bildsluss-camera-"))  # anyone may enter
    try:
        spool.chmod(0o711)
        with download_area(spool / "spool") as folder, CameraConnection.open(f"disk:{card}") as cam:
            for e in cam.list_files():
                cam.download(e, folder)
            got = [folder, folder / "DCIM", folder / "DCIM/100CANON", folder / "DCIM/100CANON/IMG_0001.JPG"]
            owners = [(p.stat().st_uid, p.stat().st_gid, oct(p.stat().st_mode & 0o777)) for p in got]
            (spool / "s").mkdir()
            confinement = workers.confinement_for(folder, spool / "s")
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    assert owners == [(0, parser.pw_gid, "0o750")] * 3 + [(0, parser.pw_gid, "0o640")]
    assert confinement is not None and confinement.uid == parser.pw_uid, "a camera's files parsed as root"


def test_no_camera_at_the_port(tmp_path):
    with pytest.raises(CameraNotFound):
        with CameraConnection.open(f"disk:{tmp_path / 'nothing'}"):
            pass
    with pytest.raises(CameraNotFound):
        with CameraConnection.open("usb:099,099"):
            pass


def _media(root: pathlib.Path, e: CameraEntry) -> MediaFile:
    data = (root / e.relative_path).read_bytes()
    return MediaFile(path=root / e.relative_path, relative_path=e.relative_path, kind=MediaKind.IMAGE,
                     media_type="image/jpeg", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                     mtime_ns=0)


def test_wipe_deletes_on_the_camera_and_confirms_with_a_fresh_listing(card):
    port = f"disk:{card}"
    with CameraConnection.open(port) as cam:
        info, entries = cam.info(), cam.list_files()
    wiper = camera_wiper(lambda: CameraConnection.open(port), info, {e.relative_path: e for e in entries})
    result = wiper(card, [_media(card, e) for e in entries[:2]])
    assert result.complete and sorted(result.deleted) == sorted(e.relative_path for e in entries[:2])
    assert [p.name for p in (card / "DCIM/100CANON").glob("IMG_*")] == ["IMG_0003.JPG"]


def test_wipe_leaves_a_camera_whose_files_changed(card):
    port = f"disk:{card}"
    with CameraConnection.open(port) as cam:
        info, entries = cam.info(), cam.list_files()
    media = [_media(card, e) for e in entries]
    with open(card / entries[1].relative_path, "ab") as f:
        f.write(b"\0")  # edited on the camera after the download
    wiper = camera_wiper(lambda: CameraConnection.open(port), info, {e.relative_path: e for e in entries})
    with pytest.raises(StageError) as err:
        wiper(card, media)
    assert err.value.reason is Reason.CARD_CHANGED and entries[1].relative_path in err.value.detail
    assert all((card / e.relative_path).exists() for e in entries)


def test_downloads_of_killed_runs_are_removed_but_not_a_live_runs(tmp_path):
    spool = tmp_path / "spool"
    stale = spool / "camera-stale"
    (stale / "DCIM").mkdir(parents=True)
    (stale / "DCIM" / "IMG_0001.JPG").write_bytes(b"patient picture")
    live = spool / "camera-live"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert Spool(spool).remove_stale() == [stale]
        assert live.is_dir() and not stale.exists()
    finally:
        os.close(fd)
    with download_area(spool) as folder:
        # The card's parsers (bildsluss-parse's group) read it as root's daemon has them.
        assert folder.stat().st_mode & 0o777 == (0o750 if os.geteuid() == 0 else 0o700)
        assert not live.exists()  # its run is gone now: a leftover
    assert list(spool.iterdir()) == []


# --------------------------------------------------------------------------- libgphoto2: a PTP camera (vusb)


def vusb_env(folder: pathlib.Path) -> dict[str, str]:
    """libgphoto2's virtual PTP camera (its own test device) serving ``folder``."""
    import gphoto2

    return {"IOLIBS": str(pathlib.Path(gphoto2.__file__).parent / "libgphoto2" / "vusb"),
            "VCAMERADIR": str(folder)}


def test_deviceinfo_is_read_through_the_ptp_driver(card, monkeypatch):
    for key, value in vusb_env(card).items():
        monkeypatch.setenv(key, value)
    with CameraConnection.open("usb:") as cam:
        info = cam.info()
    # libgphoto2's virtual camera: DeviceInfo "GP" / "VC" / serial "0.1", driven by its ptp2 driver.
    assert (info.manufacturer, info.model, info.serial) == ("GP", "VC", "0.1")
    assert info.port.startswith("usb:0") and info.driver
    assert not judge_camera(info, [CANON_R5]).accepted
    assert judge_camera(info, [Device("GP", "VC", "0.1")]).accepted


# --------------------------------------------------------------------------- configuration


def test_cameras_table_of_the_config():
    from agent.config import ConfigError, from_dict

    cams = from_dict({"cameras": {"ptpip": ["192.0.2.20", "camera-3:15740"], "ports": ["disk:/srv/cam"],
                                  "usb": False, "ptpip_poll_s": 5}}).cameras
    assert cams.watched_ports() == ("ptpip:192.0.2.20", "ptpip:camera-3:15740", "disk:/srv/cam")
    assert not cams.usb and cams.ptpip_poll_s == 5.0
    assert from_dict({}).cameras.usb is True
    for bad in ({"ptpip": "192.0.2.20"}, {"ports": ["usb:001,002"]}, {"usb": "yes"}, {"ptpip_poll_s": 0},
                {"poll": 3}):
        with pytest.raises(ConfigError):
            from_dict({"cameras": bad})
