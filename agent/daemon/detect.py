"""Noticing cards: raw device events turned into two named events, *inserted* and *removed*.

Three backends feed one callback with :class:`CardEvent`:

- :class:`UeventBackend`: the kernel's own block uevents (``AF_NETLINK``,
  ``NETLINK_KOBJECT_UEVENT``, multicast group 1), for machines where no udevd
  runs (containers, some capture PCs);
- :class:`UdevBackend`: a pyudev monitor of the block subsystem, when udevd
  runs (its events come after udev has created the device node);
- :class:`WatchBackend`: watchdog on a mount root that an OS automounter
  fills; every new folder below it is a card.

Beside them, :class:`CameraWatch` notices cameras that speak PTP (issue 16):
USB devices with a still-image interface (class 06) or an MTP interface from
the kernel's uevents, and configured ports (PTP/IP addresses, ``disk:``
folders) by polling whether they answer.

The two block backends share :class:`BlockPolicy`, which decides whether a
block device may be treated as a card at all: a disk on a removable bus (USB,
MMC/SD, or the kernel's removable flag: card readers), never a non-removable
disk, never one of which any part is mounted outside the agent's own mount
root (a system disk), and loop devices only when allowed (tests and demos),
optionally only those backed by a file below a given folder.

Each backend also reports what is already there when it starts (a card
inserted while the daemon was down, or before it crashed).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import select
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.daemon import mount as mount_mod

if TYPE_CHECKING:  # imported by the backend that uses them, when it starts
    import pyudev
    from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)

NETLINK_KOBJECT_UEVENT = 15  # linux/netlink.h; the socket module has no name for it
_KERNEL_GROUP = 1


@dataclasses.dataclass(frozen=True)
class CardEvent:
    action: str  # "inserted" | "removed"
    reader: str  # the slot: a whole disk's sysfs path, a watched card folder, a camera's port
    source: str  # "uevent" | "udev" | "watch" | "camera"
    device: str | None = None  # block device node of the card's file system
    path: pathlib.Path | None = None  # the card folder (watch backend)
    port: str | None = None  # a camera's libgphoto2 port (CameraWatch)


EventFn = Callable[[CardEvent], None]


# --------------------------------------------------------------------------- block devices


@dataclasses.dataclass(frozen=True)
class BlockPolicy:
    mount_root: pathlib.Path
    allow_loop: bool = False
    loop_backing_dir: str = ""
    sys_root: pathlib.Path = pathlib.Path("/sys")
    dev_root: pathlib.Path = pathlib.Path("/dev")

    def disk_of(self, name: str) -> str | None:
        """The whole disk's kernel name for a disk or partition name (sdb1 -> sdb)."""
        node = self.sys_root / "class" / "block" / name
        if not node.exists():
            return None
        if (node / "partition").exists():
            return pathlib.Path(os.path.realpath(node)).parent.name
        return name

    def reader_of(self, disk: str) -> str:
        return os.path.realpath(self.sys_root / "class" / "block" / disk)

    def refusal(self, disk: str) -> str | None:
        """Why ``disk`` is not a card reader's medium, or None when it may be."""
        sys_disk = pathlib.Path(self.reader_of(disk))
        if disk.startswith("loop"):
            if not self.allow_loop:
                return "loop device (allow_loop is off)"
            backing = _read(sys_disk / "loop" / "backing_file")
            if not backing:
                return "loop device without a backing file"
            if self.loop_backing_dir:
                base = os.path.realpath(self.loop_backing_dir).rstrip("/") + "/"
                if not os.path.realpath(backing).startswith(base):
                    return f"loop device backed by {backing}, outside {self.loop_backing_dir}"
        elif disk.startswith("sr"):
            return "optical drive"
        else:
            removable = _read(sys_disk / "removable") == "1"
            bus = "usb" if "/usb" in str(sys_disk) else "mmc" if "/mmc" in str(sys_disk) else ""
            if not (removable or bus):
                return "not a removable disk"
        if _read(sys_disk / "size") in ("", "0"):
            return "no medium"
        mounted = mount_mod.mounted_devices()
        own = os.path.realpath(self.mount_root).rstrip("/") + "/"
        for part in [sys_disk, *self._partitions(sys_disk)]:
            dev = _read(part / "dev")
            for point in mounted.get(dev, []):
                if not (point + "/").startswith(own):
                    return f"{part.name} is mounted at {point} (a system or user mount; not touched)"
            if any((part / "holders").glob("*")):
                return f"{part.name} is in use by another device (RAID, LVM or crypt)"
        return None

    @staticmethod
    def _partitions(sys_disk: pathlib.Path) -> list[pathlib.Path]:
        return sorted(p for p in sys_disk.iterdir() if (p / "partition").exists())

    def cards(self, disk: str) -> list[str]:
        """Device nodes on ``disk`` that hold a file system: its partitions, or the disk itself."""
        sys_disk = pathlib.Path(self.reader_of(disk))
        parts = self._partitions(sys_disk)
        names = [p.name for p in parts] if parts else [disk]
        return [str(self.dev_root / n) for n in names]

    def disks(self) -> list[str]:
        block = self.sys_root / "block"
        return sorted(p.name for p in block.iterdir()) if block.is_dir() else []


class _BlockEvents:
    """The part both block backends share: a uevent's properties -> CardEvents."""

    source = "block"

    def __init__(self, policy: BlockPolicy, on_event: EventFn) -> None:
        self.policy = policy
        self.on_event = on_event
        self._refused: dict[str, str] = {}  # log each refusal once per disk and reason

    def handle(self, props: dict[str, str]) -> None:
        if props.get("SUBSYSTEM") != "block":
            return
        action, devpath = props.get("ACTION", ""), props.get("DEVPATH", "")
        name = props.get("DEVNAME", "").removeprefix("/dev/") or pathlib.Path(devpath).name
        devtype = props.get("DEVTYPE", "")
        disk_path = devpath if devtype != "partition" else str(pathlib.PurePosixPath(devpath).parent)
        reader = os.path.realpath(str(self.policy.sys_root) + disk_path)
        if action == "remove":
            if devtype == "disk":
                self.on_event(CardEvent("removed", reader, self.source))
            return
        if action not in ("add", "change"):
            return
        disk = self.policy.disk_of(name)
        if disk is None:
            return
        if _read(pathlib.Path(self.policy.reader_of(disk)) / "size") in ("", "0"):
            # A reader whose card was taken out, or a loop device detached.
            self.on_event(CardEvent("removed", reader, self.source))
            return
        self.examine(disk)

    def examine(self, disk: str) -> None:
        why = self.policy.refusal(disk)
        reader = self.policy.reader_of(disk)
        if why:
            if self._refused.get(disk) != why:
                self._refused[disk] = why
                log.info("not a card", extra={"disk": disk, "detail": why})
            return
        self._refused.pop(disk, None)
        for device in self.policy.cards(disk):
            self.on_event(CardEvent("inserted", reader, self.source, device=device))

    def coldplug(self) -> None:
        for disk in self.policy.disks():
            try:
                self.examine(disk)
            except OSError as exc:
                log.warning("could not examine a block device", extra={"disk": disk, "detail": str(exc)})


class UeventBackend(_BlockEvents):
    """Kernel uevents straight from netlink (no udevd needed)."""

    source = "uevent"

    def __init__(self, policy: BlockPolicy, on_event: EventFn) -> None:
        super().__init__(policy, on_event)
        self._sock: socket.socket | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # bursts of partition events
        sock.bind((0, _KERNEL_GROUP))  # listen before the cold scan: nothing falls in between
        self._sock = sock
        self.coldplug()
        self._thread = threading.Thread(target=self._loop, name="uevents", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self._sock is not None
        while True:
            ready, _, _ = select.select([self._sock, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = self._sock.recv(1 << 16)
            except OSError as exc:  # ENOBUFS: events were lost; look at everything again
                log.warning("uevents lost, rescanning block devices", extra={"detail": str(exc)})
                self.coldplug()
                continue
            props = parse_uevent(data)
            if props is None:
                continue
            try:
                self.handle(props)
            except Exception:  # one odd device must not stop detection
                log.exception("error handling a uevent", extra={"devpath": props.get("DEVPATH")})

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        if self._thread:
            self._thread.join(timeout=5)
        if self._sock:
            self._sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)


def parse_uevent(data: bytes) -> dict[str, str] | None:
    """A kernel uevent datagram ("ACTION@DEVPATH\\0KEY=VALUE\\0...") as a dict; None if not one."""
    parts = data.split(b"\0")
    if not parts or b"@" not in parts[0] or parts[0].startswith(b"libudev"):
        return None
    props = {}
    for item in parts[1:]:
        key, sep, value = item.partition(b"=")
        if sep:
            props[key.decode(errors="replace")] = value.decode(errors="replace")
    return props if "ACTION" in props and "DEVPATH" in props else None


class UdevBackend(_BlockEvents):
    """pyudev's monitor: events after udevd has made the device node and read the medium."""

    source = "udev"

    def __init__(self, policy: BlockPolicy, on_event: EventFn) -> None:
        super().__init__(policy, on_event)
        self._observer: pyudev.MonitorObserver | None = None

    def start(self) -> None:
        import pyudev

        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context)
        monitor.filter_by("block")

        def on_device(device) -> None:
            props = dict(device.properties)
            props.setdefault("ACTION", device.action or "")
            props.setdefault("SUBSYSTEM", "block")
            try:
                self.handle(props)
            except Exception:
                log.exception("error handling a udev event", extra={"devpath": device.device_path})

        observer = pyudev.MonitorObserver(monitor, callback=on_device, name="udev")
        observer.start()
        self._observer = observer
        self.coldplug()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()


def udevd_running() -> bool:
    return pathlib.Path("/run/udev/control").exists()


def block_backend(policy: BlockPolicy, on_event: EventFn) -> UeventBackend | UdevBackend:
    """pyudev when udevd runs, else the kernel's uevents."""
    if udevd_running():
        return UdevBackend(policy, on_event)
    log.info("no udevd on this machine; listening to the kernel's uevents")
    return UeventBackend(policy, on_event)


# --------------------------------------------------------------------------- watched folder


class WatchBackend:
    """Each folder that appears directly below ``root`` is a card (an automounter's mount root)."""

    source = "watch"

    def __init__(self, root: pathlib.Path, on_event: EventFn) -> None:
        self.root = root
        self.on_event = on_event
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        backend = self

        class Handler(FileSystemEventHandler):
            def on_created(self, event) -> None:
                backend._appeared(pathlib.Path(event.src_path), event.is_directory)

            def on_moved(self, event) -> None:
                backend._gone(pathlib.Path(event.src_path), event.is_directory)
                backend._appeared(pathlib.Path(event.dest_path), event.is_directory)

            def on_deleted(self, event) -> None:
                backend._gone(pathlib.Path(event.src_path), event.is_directory)

        if not self.root.is_dir():
            raise FileNotFoundError(f"watch root {self.root} is not a folder")
        observer = Observer()
        observer.schedule(Handler(), str(self.root), recursive=False)
        observer.start()
        self._observer = observer
        for child in sorted(self.root.iterdir()):
            self._appeared(child, child.is_dir())

    def _appeared(self, path: pathlib.Path, is_dir: bool) -> None:
        if is_dir and path.parent == self.root and not path.name.startswith("."):
            self.on_event(CardEvent("inserted", str(path), self.source, path=path))

    def _gone(self, path: pathlib.Path, is_dir: bool) -> None:
        if path.parent == self.root:
            self.on_event(CardEvent("removed", str(path), self.source, path=path))

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------- cameras (issue 16)


def camera_port_of(props: dict[str, str], sys_root: pathlib.Path = pathlib.Path("/sys")) -> str | None:
    """The libgphoto2 port (``usb:BUS,DEV``) of a USB interface that speaks PTP or MTP, else None."""
    if props.get("SUBSYSTEM") != "usb" or props.get("DEVTYPE") != "usb_interface":
        return None
    node = sys_root / props.get("DEVPATH", "").lstrip("/")
    interface = props.get("INTERFACE", "")
    still_image = interface.split("/")[0] == "6"
    # Android's MTP interface is vendor-specific (255) and says "MTP" in its name.
    mtp = interface.split("/")[0] == "255" and "MTP" in _read(node / "interface").upper()
    if not (still_image or mtp):
        return None
    bus, dev = _read(node.parent / "busnum"), _read(node.parent / "devnum")
    if not (bus.isdigit() and dev.isdigit()):
        return None
    return f"usb:{int(bus):03d},{int(dev):03d}"


def port_present(port: str) -> bool:
    """Whether a configured camera port answers now (PTP/IP: its TCP port; disk: the folder)."""
    from agent.card.camera import ptpip_reachable

    kind, _, where = port.partition(":")
    if kind == "ptpip":
        return ptpip_reachable(where, timeout_s=1.0)
    if kind == "disk":
        return os.path.isdir(where)
    return False


class CameraWatch(UeventBackend):
    """Cameras coming and going: USB uevents (PTP/MTP interfaces) and polled configured ports.

    Each camera is a CardEvent whose ``reader`` and ``port`` are its
    libgphoto2 port. USB detection failing to start (no netlink in a sandbox)
    is logged and leaves the configured ports working.
    """

    source = "camera"

    def __init__(self, on_event: EventFn, *, usb: bool = True, ports: tuple[str, ...] = (),
                 poll_s: float = 15.0, sys_root: pathlib.Path = pathlib.Path("/sys"),
                 present: Callable[[str], bool] = port_present) -> None:
        # The uevent socket and loop are UeventBackend's; its block policy is unused here.
        super().__init__(BlockPolicy(pathlib.Path("/nonexistent"), sys_root=sys_root), on_event)
        self.sys_root = sys_root
        self.usb, self.ports, self.poll_s, self.present = usb, ports, poll_s, present
        self._interfaces: dict[str, str] = {}  # sysfs path of the interface -> port (for "remove")
        self._answering: set[str] = set()
        self._stop_poll = threading.Event()
        self._poller: threading.Thread | None = None

    def start(self) -> None:
        if self.usb:
            try:
                super().start()
            except OSError as exc:
                log.warning("cameras on USB are not noticed: no kernel uevents", extra={"detail": str(exc)})
        if self.ports:
            self._poller = threading.Thread(target=self._poll, name="camera-ports", daemon=True)
            self._poller.start()

    def stop(self) -> None:
        self._stop_poll.set()
        if self._poller:
            self._poller.join(timeout=5)
        super().stop()

    def handle(self, props: dict[str, str]) -> None:
        devpath = props.get("DEVPATH", "")
        if props.get("ACTION") == "remove":
            port = self._interfaces.pop(devpath, None)
            if port:
                self.on_event(CardEvent("removed", port, self.source, port=port))
            return
        if props.get("ACTION") != "add":
            return
        port = camera_port_of(props, self.sys_root)
        if port:
            self._interfaces[devpath] = port
            log.info("camera connected", extra={"port": port, "interface": props.get("INTERFACE")})
            self.on_event(CardEvent("inserted", port, self.source, port=port))

    def coldplug(self) -> None:
        devices = self.sys_root / "bus" / "usb" / "devices"
        for node in sorted(devices.glob("*:*")) if devices.is_dir() else ():
            real = pathlib.Path(os.path.realpath(node))
            cls, sub, proto = (_read(real / f) for f in ("bInterfaceClass", "bInterfaceSubClass",
                                                         "bInterfaceProtocol"))
            if not cls:
                continue
            interface = "/".join(str(int(v, 16)) for v in (cls, sub or "0", proto or "0"))
            devpath = "/" + str(real.relative_to(os.path.realpath(self.sys_root)))
            self.handle({"ACTION": "add", "SUBSYSTEM": "usb", "DEVTYPE": "usb_interface",
                         "DEVPATH": devpath, "INTERFACE": interface})

    def _poll(self) -> None:
        while not self._stop_poll.is_set():
            for port in self.ports:
                try:
                    answers = self.present(port)
                except Exception:  # one odd address must not stop the others
                    log.exception("error probing a camera port", extra={"port": port})
                    continue
                if answers and port not in self._answering:
                    self._answering.add(port)
                    log.info("camera answers", extra={"port": port})
                    self.on_event(CardEvent("inserted", port, self.source, port=port))
                elif not answers and port in self._answering:
                    self._answering.discard(port)
                    self.on_event(CardEvent("removed", port, self.source, port=port))
            self._stop_poll.wait(self.poll_s)
