"""Recorded DeviceInfo of real devices (tests/data/ptp_deviceinfo, see its README) as CameraInfo.

The recordings come in the forms their authors had at hand: libgphoto2's
status widgets (``--list-all-config``, what the agent itself reads), its
debug log, ``gphoto2 --summary`` (also localized) and libmtp's ``mtp-detect``.
"""
from __future__ import annotations

import pathlib
import re

from agent.card.camera_info import DEVICEINFO_WIDGETS, CameraInfo

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "ptp_deviceinfo"

_LABELS = {
    "manufacturer": "manufacturer", "hersteller": "manufacturer",
    "model": "model", "modell": "model",
    "device version": "version", "version": "version",
    "serial number": "serial", "seriennummer": "serial",
    "vendor extension description": "extensions", "beschreibung der vendor extension": "extensions",
}
# What libgphoto2 prints where the device sent an empty string.
_EMPTY = {"(null)", "device has no vendor extensions"}


def load(name: str, port: str = "usb:001,004") -> CameraInfo:
    text = (DATA / name).read_text(encoding="utf-8")
    fields: dict[str, str] = {}
    widgets = re.findall(r"^/main/status/(\w+)\n(?:.*\n)*?Current: ?(.*)$", text, re.MULTILINE)
    for widget, value in widgets:
        if widget in DEVICEINFO_WIDGETS:
            fields[DEVICEINFO_WIDGETS[widget]] = value.strip()
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        field = _LABELS.get(key.strip().casefold())
        if sep and field and field not in fields:
            value = value.strip().strip("'")
            fields[field] = "" if value.casefold() in _EMPTY else value
    return CameraInfo(port=port, **fields)
