"""Device policy (R6)."""
import pathlib

import pytest

from agent.devices import check_devices
from agent.model import Device, MediaFile, MediaKind, Mode, StageError
from agent.reasons import Reason

CANON = Device("Canon", "Canon EOS 250D", "083051006721")


def _media(name: str, device: Device) -> MediaFile:
    return MediaFile(path=pathlib.Path("/card") / name, relative_path=name, kind=MediaKind.IMAGE,
                     media_type="image/jpeg", size=1, sha256="0" * 64, mtime_ns=0, device=device)


def test_registered_device_passes_case_and_space_insensitive():
    check_devices([_media("a.jpg", Device("CANON", "Canon  EOS 250D", "083051006721"))], [CANON], Mode.PHOTO)


@pytest.mark.parametrize(
    "device, why",
    [
        (Device("Apple", "iPhone 15 Pro", ""), "Apple iPhone 15 Pro"),
        (Device("Canon", "Canon EOS 250D", "999"), "serial 999"),
        (Device(), "names no capture device"),
    ],
)
def test_others_refuse_the_card(device, why):
    with pytest.raises(StageError) as err:
        check_devices([_media("ok.jpg", CANON), _media("bad.jpg", device)], [CANON], Mode.PHOTO)
    assert err.value.reason == Reason.UNREGISTERED_DEVICE
    assert "bad.jpg" in err.value.detail and why in err.value.detail
    assert "ok.jpg" not in err.value.detail


def test_ultrasound_without_device_id_is_judged_by_ehr_context():
    check_devices([_media("us.dcm", Device())], [CANON], Mode.ULTRASOUND)


def test_registration_without_serial_accepts_any_serial():
    check_devices([_media("a.jpg", Device("Canon", "Canon EOS 250D", "1"))],
                  [Device("Canon", "Canon EOS 250D")], Mode.PHOTO)


def test_no_registered_devices_turns_the_check_off():
    check_devices([_media("a.jpg", Device("Apple", "iPhone", ""))], [], Mode.PHOTO)
