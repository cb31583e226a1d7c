"""The department's registered capture devices as the archive hands them out
(R6; protos/bildsluss/v1/agents.proto, "Registered capture devices").

Every heartbeat answer may carry the department's list; :class:`DeviceRegister`
keeps the last one in ``[daemon] state_dir``/``devices.json`` (written
atomically, read at start), so that a capture PC that cannot reach the archive,
or restarts while it cannot, still judges media by the last list it was given.
An answer without a list (an older archive) changes nothing.

The devices a card is judged by are the PC's own ``[[devices]]`` entries and
the archive's together (:meth:`DeviceRegister.effective`): a device is
registered when either names it. With neither, devices are not checked (phones
are still refused, agent/card/devices.py).
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import tempfile
import threading
import time
from collections.abc import Iterable

from agent.card.model import Device

log = logging.getLogger(__name__)

FILE_NAME = "devices.json"


class DeviceRegister:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._devices: tuple[Device, ...] = ()
        self.received_at: float | None = None
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            devices = tuple(Device(str(d["make"]), str(d["model"]), str(d.get("serial", "")))
                            for d in data["devices"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A damaged file is no list: the archive's next answer writes a new one.
            log.warning("ignoring the kept list of registered devices", extra={
                "path": str(self.path), "error": str(exc)})
            return
        self._devices, self.received_at = devices, data.get("received_at")
        log.info("registered devices from the archive's last answer", extra={
            "devices": len(devices), "path": str(self.path)})

    def devices(self) -> tuple[Device, ...]:
        with self._lock:
            return self._devices

    def effective(self, local: Iterable[Device]) -> tuple[Device, ...]:
        """The PC's own ``[[devices]]`` and the archive's, each once."""
        seen: dict[tuple[str, str, str], Device] = {}
        for d in (*local, *self.devices()):
            seen.setdefault((_norm(d.make), _norm(d.model), _norm(d.serial)), d)
        return tuple(seen.values())

    def update(self, devices: Iterable[Device]) -> bool:
        """Keep the archive's list; True when it changed (then written to disk)."""
        new = tuple(devices)
        with self._lock:
            changed = new != self._devices
            self._devices, self.received_at = new, time.time()
            if not changed and self.path.exists():
                return False
            try:
                _write_atomically(self.path, {"received_at": self.received_at, "devices": [
                    {"make": d.make, "model": d.model, "serial": d.serial} for d in new]})
            except OSError as exc:
                # Still used from memory; only a restart without the archive loses it.
                log.error("could not keep the registered devices on disk", extra={
                    "path": str(self.path), "error": str(exc)})
        if changed:
            log.info("registered devices changed by the archive", extra={"devices": len(new)})
        return changed


def _norm(value: str) -> str:
    return " ".join(value.split()).casefold()


def _write_atomically(path: pathlib.Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".devices.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
