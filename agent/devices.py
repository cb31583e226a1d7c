"""Device policy (R6): only media from the department's registered capture devices.

A phone or another department's camera names itself in the file's metadata
(make, model, serial); such media refuses the card with UNREGISTERED_DEVICE.
Media that names no device at all is judged by the mode: ultrasound and audio
arrive with EHR context instead, every other mode refuses it when devices are
registered. With no devices registered (a one-machine development setup) the
check is off and the agent logs that once per card.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from agent.model import Device, MediaFile, Mode, StageError
from agent.reasons import Reason

log = logging.getLogger(__name__)

_MODES_WITHOUT_DEVICE_ID = {Mode.ULTRASOUND, Mode.AUDIO}


def _norm(value: str) -> str:
    return " ".join(value.split()).casefold()


def is_registered(device: Device, registered: Sequence[Device]) -> bool:
    for reg in registered:
        if _norm(reg.make) != _norm(device.make) or _norm(reg.model) != _norm(device.model):
            continue
        if reg.serial and _norm(reg.serial) != _norm(device.serial):
            continue
        return True
    return False


def unregistered_media(
    media: Sequence[MediaFile], registered: Sequence[Device], mode: Mode
) -> list[tuple[MediaFile, str]]:
    """The media files the policy refuses, each with a reason for ops."""
    if not registered:
        log.warning("no capture devices registered: device check (R6) is off")
        return []
    refused = []
    for m in media:
        if not m.device.known:
            if mode not in _MODES_WITHOUT_DEVICE_ID:
                refused.append((m, "names no capture device"))
        elif not is_registered(m.device, registered):
            name = " ".join(p for p in (m.device.make, m.device.model) if p)
            serial = f" serial {m.device.serial}" if m.device.serial else ""
            refused.append((m, f"taken with {name}{serial}, not registered"))
    return refused


def check_devices(media: Sequence[MediaFile], registered: Sequence[Device], mode: Mode) -> None:
    refused = unregistered_media(media, registered, mode)
    if refused:
        detail = "; ".join(f"{m.relative_path}: {why}" for m, why in refused)
        raise StageError(Reason.UNREGISTERED_DEVICE, detail)
