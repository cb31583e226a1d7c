"""Who is on the cable (R6), by the camera's own word, before any file is read.

A camera's PTP DeviceInfo (manufacturer, model, serial number, vendor
extensions; Canon's body serial where its PTP serial is not the one on the
label) is judged against the department's registered devices by
:func:`judge_camera`: an Android device, an iPhone or another phone, or a
camera the department has not registered is refused; a "camera" that does not
name itself (libgphoto2's Directory Browse camera: a folder) is judged file by
file, as a card is. :mod:`agent.card.camera` asks this before listing anything.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from agent.card import devices as device_policy
from agent.card.model import Device, Evidence, Method


@dataclasses.dataclass(frozen=True)
class CameraInfo:
    """What the camera says about itself (PTP DeviceInfo) and how it is reached."""

    port: str
    driver: str = ""  # libgphoto2's model for it ("Canon EOS 250D", "Directory Browse")
    manufacturer: str = ""  # DeviceInfo Manufacturer
    model: str = ""  # DeviceInfo Model
    version: str = ""  # DeviceInfo DeviceVersion
    serial: str = ""  # DeviceInfo SerialNumber
    body_serial: str = ""  # the serial on the label where PTP's differs (Canon EOS)
    extensions: str = ""  # DeviceInfo VendorExtensionDesc

    @property
    def names_itself(self) -> bool:
        return bool(self.manufacturer or self.model)

    @property
    def best_serial(self) -> str:
        return self.body_serial or self.serial

    def same_camera(self, other: CameraInfo) -> bool:
        return (self.manufacturer, self.model, self.serial, self.body_serial) == (
            other.manufacturer, other.model, other.serial, other.body_serial)

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "model": self.driver, "manufacturer": self.manufacturer or None,
                "device_model": self.model or None, "serial": self.best_serial or None,
                "version": self.version or None}


#: libgphoto2's status widgets that carry the DeviceInfo fields, and the field of each.
#: ``eosserialnumber`` is Canon's body serial (the one on the label and in EXIF);
#: Canon's PTP SerialNumber is another number.
DEVICEINFO_WIDGETS = {"manufacturer": "manufacturer", "cameramodel": "model", "deviceversion": "version",
                      "serialnumber": "serial", "eosserialnumber": "body_serial",
                      "vendorextension": "extensions"}


# Words a maker's DeviceInfo adds to the make its EXIF writes ("Nikon Corporation"
# vs "NIKON CORPORATION" vs a registration's "Nikon"; "Canon.Inc" vs "Canon").
_CORPORATE = {"inc", "corporation", "corp", "co", "ltd", "limited", "imaging", "company",
              "gmbh", "ag", "kk", "llc", "plc"}


def maker_key(make: str) -> str:
    words = re.sub(r"[.,]", " ", make).casefold().split()
    while len(words) > 1 and words[-1] in _CORPORATE:
        words.pop()
    return " ".join(words)


def model_key(maker: str, model: str) -> str:
    """The model without its maker's name in front ("NIKON D3300" and "D3300" are one model)."""
    text = " ".join(model.casefold().split())
    if maker and text.startswith(maker + " "):
        text = text[len(maker) + 1:]
    return text


def serial_matches(registered: str, reported: str) -> bool:
    """A registered (EXIF) serial against the one DeviceInfo reports.

    Nikon pads its PTP serial to 32 characters with zeros its EXIF serial does
    not carry: on the left (D750) or on the right (D7100).
    """
    reg, rep = registered.strip().casefold(), reported.strip().casefold()
    if not reg or not rep:
        return False
    if reg == rep or (reg.lstrip("0") and reg.lstrip("0") == rep.lstrip("0")):
        return True
    return len(rep) >= 16 and rep.startswith(reg) and not rep[len(reg):].strip("0")


def _matches(info: CameraInfo, reg: Device) -> bool:
    maker = maker_key(info.manufacturer)
    if not maker or maker_key(reg.make) != maker:
        return False
    if model_key(maker, reg.model) != model_key(maker, info.model):
        return False
    if not reg.serial:
        return True
    return serial_matches(reg.serial, info.best_serial)


def phone_evidence(info: CameraInfo) -> str | None:
    """Why the device is a phone or tablet, or None."""
    if "android.com" in info.extensions.casefold():
        return f"an Android device (its MTP extensions say {info.extensions.strip()!r})"
    device = Device(make=maker_key(info.manufacturer), model=info.model)
    if device_policy.is_phone(device):
        return "a phone or tablet by its make and model"
    if info.driver and device_policy.is_phone(Device(model=info.driver)):
        return f"a phone or tablet by libgphoto2's name for it ({info.driver})"
    return None


@dataclasses.dataclass(frozen=True)
class CameraJudgement:
    """The device policy's decision (R6) for the camera as a whole."""

    info: CameraInfo
    accepted: bool
    why: str

    def evidence(self) -> Evidence:
        i = self.info
        fields = [f"{k}={v}" for k, v in (("Manufacturer", i.manufacturer), ("Model", i.model),
                                          ("SerialNumber", i.best_serial), ("Extensions", i.extensions),
                                          ("driver", i.driver)) if v]
        verdict = "accepted" if self.accepted else "refused"
        text = f"{verdict}: camera {self.why}" + (f" [PTP DeviceInfo {'; '.join(fields)}]" if fields else "")
        return Evidence(relative_path=i.port, frame=0, method=Method.DEVICE, text=text, patient_id=None)


def _name(info: CameraInfo) -> str:
    name = " ".join(p for p in (info.manufacturer, info.model) if p) or "an unnamed device"
    return name + (f" serial {info.best_serial}" if info.best_serial else "")


def judge_camera(info: CameraInfo, registered: Sequence[Device]) -> CameraJudgement:
    """Accept or refuse the camera by its own word, as :mod:`agent.card.devices` does a file."""
    if not info.names_itself:
        return CameraJudgement(info, True, f"at {info.port} does not name itself ({info.driver or 'no PTP'}); "
                                           "each file is judged by its own metadata, as on a card")
    name = _name(info)
    reg = next((r for r in registered if _matches(info, r)), None)
    phone = phone_evidence(info)
    if reg is not None and (phone is None or device_policy.is_phone(reg)):
        return CameraJudgement(info, True, f"{name}, registered")
    if phone is not None:
        return CameraJudgement(info, False, f"{name} is {phone}")
    if not registered:
        return CameraJudgement(info, True, f"{name}; no devices are registered, only phones are refused")
    return CameraJudgement(info, False, f"{name}, not registered")
