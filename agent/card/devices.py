"""Device policy (R6): only media from the department's registered capture devices.

A phone or another department's camera names itself in the file's metadata
(make, model, serial); such media refuses the card with UNREGISTERED_DEVICE.

Two checks, both read from the metadata the scan took *before* stripping:

1. **Phones, always.** Media that a phone made is refused even when no devices
   are registered (a fresh install, a one-machine setup): a known phone make
   (Apple, Samsung, Google, Huawei, Honor, Xiaomi, OnePlus, Oppo, Vivo, …),
   a phone model name (iPhone, Pixel, Galaxy, Xperia, …) or a trait only phones
   leave (:func:`phone_traits`: an Apple maker note, Live Photo or Apple HDR gain-map
   data, ``com.apple.*``/``com.android.*`` QuickTime keys, a lens named
   "iPhone … back camera", Google camera XMP, Samsung motion-photo trailers).
   Traits count even when make and model were removed, so an edited phone
   picture is still caught. A phone the department registered explicitly (a
   managed clinical phone: its make is a phone make) passes like any other
   registered device.
2. **The register.** With devices registered, media whose device is not among
   them is refused; media naming no device at all is judged by the mode
   (ultrasound and audio arrive with EHR context instead; every other mode
   refuses it). Make and model match case- and space-insensitively; a
   registration without a serial accepts any serial of that model.

:func:`judge` returns one :class:`DeviceJudgement` per file (what was decided,
from which fields); :func:`evidence` turns them into the case's evidence.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agent.card.model import Device, Evidence, MediaFile, Method, Mode, StageError
from agent.card.reasons import Reason

log = logging.getLogger(__name__)

_MODES_WITHOUT_DEVICE_ID = {Mode.ULTRASOUND, Mode.AUDIO}

#: Makes (EXIF Make, QuickTime make) that only phones and tablets write,
#: normalised (case-folded, single spaces). Cameras of the same groups write
#: other makes (Samsung's cameras "Samsung Techwin", Sony's cameras "SONY",
#: whose phones are caught by model instead).
PHONE_MAKES = frozenset({
    "apple", "samsung", "google", "huawei", "honor", "xiaomi", "redmi", "poco", "oneplus",
    "oppo", "vivo", "realme", "motorola", "motorola mobility", "hmd global", "nokia",
    "lge", "lg electronics", "htc", "zte", "nubia", "meizu", "fairphone", "nothing",
    "jolla", "blackberry", "essential products", "tecno", "infinix", "itel", "tcl",
    "alcatel", "lenovo", "asus", "sony mobile", "sony ericsson", "nothing technology",
})
#: Model names that only phones and tablets carry, whatever the make says.
_PHONE_MODEL = re.compile(
    r"\b(iphone|ipad|ipod|pixel \d|pixel$|galaxy|sm-[a-z]\d|xperia|redmi|mi \d|poco|oneplus|"
    r"nexus|moto [a-z]|zenfone|rog phone|huawei|honor|mate \d\d|p\d\d pro|"
    r"xq-[a-z]{2}\d\d|so-\d\d[a-z])\b",
    re.IGNORECASE,
)
#: Lens descriptions phones write ("iPhone 7 back camera 3.99mm f/1.8").
_PHONE_LENS = re.compile(r"\b(iphone|ipad|pixel|galaxy|front camera|back camera|"
                         r"back (dual|triple) (wide )?camera|selfie)\b", re.IGNORECASE)
#: Camera software of phones: Google's HDR+, Android build strings, phone OS skins.
_PHONE_SOFTWARE = re.compile(r"^HDR\+|\bandroid\b|release-keys|\bMIUI\b|\bEMUI\b|HarmonyOS|"
                             r"OxygenOS|ColorOS|One ?UI", re.IGNORECASE)
#: exiftool group names (family 0:1) only phones write.
_PHONE_GROUPS = {
    "MakerNotes:Apple": "Apple maker note",
    "XMP:XMP-GCamera": "Google camera XMP (motion photo / portrait)",
    "XMP:XMP-apdi": "Apple depth/portrait XMP",
    "XMP:XMP-HDRGainMap": "Apple HDR gain map XMP",
    "Trailer:Samsung": "Samsung phone trailer (motion photo, editing data)",
    "Samsung:Samsung": "Samsung phone trailer (motion photo, editing data)",
}
#: Tag names only phones write (any group).
_PHONE_TAGS = {
    "ContentIdentifier": "Live Photo pairing id",
    "LivePhotoVideoIndex": "Live Photo",
    "LivePhotoAuto": "Live Photo",
    "LivePhotoVitalityScore": "Live Photo",
    "AndroidVersion": "Android version (QuickTime com.android.version)",
    "AndroidCaptureFPS": "Android capture rate (QuickTime com.android.capture.fps)",
    "AndroidMake": "Android make", "AndroidModel": "Android model",
    "MotionPhoto": "motion photo", "MicroVideo": "motion photo", "MotionPhotoVersion": "motion photo",
    "EmbeddedVideoType": "Samsung motion photo", "SamsungModelID": "Samsung phone model id",
}


def _norm(value: str) -> str:
    return " ".join(value.split()).casefold()


def phone_traits(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """Phone-only traits in one file's exiftool ``-G0:1`` metadata, each as
    "what (field=value)". Empty when nothing says "phone"."""
    found: dict[str, str] = {}
    for key, value in meta.items():
        parts = key.split(":")
        if len(parts) < 2:
            continue
        group, name = ":".join(parts[:2]), parts[-1]
        text = " ".join(str(value).split())[:80]
        if group in _PHONE_GROUPS:
            found.setdefault(group, f"{_PHONE_GROUPS[group]} ({group})")
        if name in _PHONE_TAGS:
            found.setdefault(name, f"{_PHONE_TAGS[name]} ({key}={text})")
        elif parts[0] == "QuickTime" and name in ("Make", "Model", "Software") and "Keys" in parts[1] \
                and (_norm(text) in PHONE_MAKES or _PHONE_MODEL.search(text)):
            found.setdefault(key, f"phone QuickTime key ({key}={text})")
        elif name in ("LensModel", "LensMake", "Lens", "LensID") and (
                _PHONE_LENS.search(text) or _norm(text) in PHONE_MAKES):
            found.setdefault("lens", f"phone lens ({key}={text})")
        elif name == "Software" and _PHONE_SOFTWARE.search(text):
            found.setdefault("software", f"phone camera software ({key}={text})")
    return tuple(found.values())


def is_phone(device: Device) -> bool:
    return _norm(device.make) in PHONE_MAKES or bool(device.model and _PHONE_MODEL.search(device.model))


def _registration(device: Device, registered: Sequence[Device]) -> Device | None:
    for reg in registered:
        if _norm(reg.make) != _norm(device.make) or _norm(reg.model) != _norm(device.model):
            continue
        if reg.serial and _norm(reg.serial) != _norm(device.serial):
            continue
        return reg
    return None


@dataclasses.dataclass(frozen=True)
class DeviceJudgement:
    """The device policy's decision for one file, and what it was based on."""

    media: MediaFile
    accepted: bool
    why: str  # a sentence for IT: what was decided and why

    def evidence(self) -> Evidence:
        m = self.media
        fields = list(m.device_fields) + list(m.device_traits)
        verdict = "accepted" if self.accepted else "refused"
        text = f"{verdict}: {self.why}" + (f" [{'; '.join(fields)}]" if fields else "")
        return Evidence(relative_path=m.relative_path, frame=0, method=Method.DEVICE,
                        text=text, patient_id=None)


def _device_name(device: Device) -> str:
    name = " ".join(p for p in (device.make, device.model) if p) or "an unnamed device"
    return name + (f" serial {device.serial}" if device.serial else "")


def _judge_one(m: MediaFile, registered: Sequence[Device], mode: Mode) -> DeviceJudgement:
    name = _device_name(m.device)
    reg = _registration(m.device, registered) if m.device.known else None
    phone = is_phone(m.device)
    if reg is not None and (not (phone or m.device_traits) or is_phone(reg)):
        return DeviceJudgement(m, True, f"taken with {name}, registered")
    if phone or m.device_traits:
        what = f"taken with {name}, a phone" if phone else f"phone traits found ({name})"
        if reg is not None:
            what += " although a camera of that name is registered"
        return DeviceJudgement(m, False, what)
    if not registered:
        return DeviceJudgement(m, True, f"taken with {name}; no devices are registered, "
                                        "only phones are refused")
    if not m.device.known:
        if mode in _MODES_WITHOUT_DEVICE_ID:
            return DeviceJudgement(m, True, f"names no capture device; {mode.value} media "
                                            "is judged by its EHR context")
        return DeviceJudgement(m, False, "names no capture device")
    return DeviceJudgement(m, False, f"taken with {name}, not registered")


def judge(media: Sequence[MediaFile], registered: Sequence[Device], mode: Mode) -> list[DeviceJudgement]:
    """One judgement per media file, in the given order."""
    if not registered:
        log.warning("no capture devices registered: only phones are refused (R6)")
    return [_judge_one(m, registered, mode) for m in media]


def evidence(judgements: Sequence[DeviceJudgement]) -> tuple[Evidence, ...]:
    return tuple(j.evidence() for j in judgements)


def unregistered_media(
    media: Sequence[MediaFile], registered: Sequence[Device], mode: Mode
) -> list[tuple[MediaFile, str]]:
    """The media files the policy refuses, each with a reason for ops."""
    return [(j.media, j.why) for j in judge(media, registered, mode) if not j.accepted]


def check_devices(media: Sequence[MediaFile], registered: Sequence[Device], mode: Mode) -> None:
    refused = unregistered_media(media, registered, mode)
    if refused:
        detail = "; ".join(f"{m.relative_path}: {why}" for m, why in refused)
        raise StageError(Reason.UNREGISTERED_DEVICE, detail)
