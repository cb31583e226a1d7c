"""Mounting cards privately, and leaving nothing mounted behind.

The daemon mounts each card itself below ``[daemon] mount_root`` (root's,
0711: others may enter it, nobody but root may list it) with
``nosuid,nodev,noexec``: nothing on a card can run or act as a device. As root,
FAT, exFAT and NTFS cards are mounted for root and the parser user's group
(``gid=<bildsluss-parse>,umask=027``): the card's parsers run as that user
(:mod:`agent.card.sandbox`) and may read the card, not change it; nobody else
may read it. Read-write, because an archived card is wiped. Mounting uses
util-linux ``mount``/``umount`` and ``blkid`` (they know every file system's
options and quirks better than a hand-rolled mount(2) call would).

Every failure is a :class:`MountError` carrying a reason code, never a crash:
an unknown or damaged file system is ``CARD_UNREADABLE``; a device that went
away is ``CARD_REMOVED``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import pwd
import re
import subprocess

from agent.card import sandbox
from agent.card.reasons import Reason

log = logging.getLogger(__name__)

# Options per file system besides nosuid,nodev,noexec: vfat/exfat write through
# (a card pulled right after "done" keeps its deletions); files owned by the
# agent's user, readable by the group (the parser user's, or else the agent's
# own) and by nobody else.
_EXTRA_OPTIONS = {
    "vfat": "flush,uid={uid},gid={gid},umask={umask}",
    "exfat": "uid={uid},gid={gid},umask={umask}",
    "ntfs3": "uid={uid},gid={gid},umask={umask}",
    "ntfs": "uid={uid},gid={gid},umask={umask}",
}
_BASE_OPTIONS = "nosuid,nodev,noexec,rw"
_TIMEOUT_S = 60


class MountError(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Volume:
    """What ``blkid`` says about a block device's file system."""

    device: str
    fstype: str
    uuid: str = ""
    label: str = ""

    @property
    def identity(self) -> str:
        """The card's volume identity: the file system UUID / volume id, else device + label."""
        if self.uuid:
            return f"fs:{self.fstype}:{self.uuid}"
        return f"dev:{self.device}:{self.label}"


def probe(device: str) -> Volume | None:
    """The file system on ``device`` (low-level probe, no cache), or None if there is none."""
    try:
        result = subprocess.run(["blkid", "-p", "-o", "export", device], capture_output=True,
                                text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("blkid failed", extra={"device": device, "detail": str(exc)})
        return None
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    if result.returncode != 0 or values.get("USAGE", "filesystem") != "filesystem" or "TYPE" not in values:
        return None
    return Volume(device, values["TYPE"], values.get("UUID", ""), values.get("LABEL", ""))


def mount_point_for(mount_root: pathlib.Path, volume: Volume) -> pathlib.Path:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", pathlib.Path(volume.device).name)
    return mount_root / name


def prepare_root(mount_root: pathlib.Path) -> None:
    # 0711: the parser user enters it to reach a card's mount point; only root lists it.
    mount_root.mkdir(parents=True, exist_ok=True, mode=0o711)
    os.chmod(mount_root, 0o711)


def owner_options() -> dict[str, str]:
    """Who owns a FAT/exFAT/NTFS card's files: root, with the parser user's group
    reading (root and that user exists), else the agent's own user alone."""
    if os.geteuid() == 0:
        try:
            parser_gid = pwd.getpwnam(sandbox.PARSER_USER).pw_gid
        except KeyError:
            parser_gid = None
        if parser_gid is not None and parser_gid != 0:
            return {"uid": "0", "gid": str(parser_gid), "umask": "027"}
    return {"uid": str(os.geteuid()), "gid": str(os.getegid()), "umask": "077"}


def mount(volume: Volume, mount_root: pathlib.Path, allowed: tuple[str, ...]) -> pathlib.Path:
    """Mount the card and return its mount point. Raises MountError."""
    if volume.fstype not in allowed:
        raise MountError(Reason.CARD_UNREADABLE,
                         f"{volume.device}: file system {volume.fstype!r} is not one the agent mounts "
                         f"({', '.join(allowed)})")
    if not os.path.exists(volume.device):
        raise MountError(Reason.CARD_REMOVED, f"{volume.device} is gone")
    prepare_root(mount_root)
    target = mount_point_for(mount_root, volume)
    if os.path.ismount(target):
        unmount(target)
    target.mkdir(mode=0o700, exist_ok=True)
    options = _BASE_OPTIONS
    extra = _EXTRA_OPTIONS.get(volume.fstype)
    if extra:
        options += "," + extra.format(**owner_options())
    try:
        result = subprocess.run(
            ["mount", "-t", volume.fstype, "-o", options, volume.device, str(target)],
            capture_output=True, text=True, timeout=_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _rmdir(target)
        raise MountError(Reason.CARD_UNREADABLE, f"mount {volume.device}: {exc}") from None
    if result.returncode != 0:
        _rmdir(target)
        gone = not os.path.exists(volume.device)
        raise MountError(Reason.CARD_REMOVED if gone else Reason.CARD_UNREADABLE,
                         f"mount {volume.device} ({volume.fstype}): {result.stderr.strip()}")
    log.info("card mounted", extra={"device": volume.device, "fstype": volume.fstype,
                                    "mount_point": str(target)})
    return target


def unmount(target: pathlib.Path) -> None:
    """Unmount (lazily if busy: a pulled card's mount must not block the next one)."""
    if os.path.ismount(target):
        subprocess.run(["sync", "-f", str(target)], capture_output=True, timeout=_TIMEOUT_S)
        result = subprocess.run(["umount", str(target)], capture_output=True, text=True,
                                timeout=_TIMEOUT_S)
        if result.returncode != 0:
            log.warning("unmount failed, detaching lazily",
                        extra={"mount_point": str(target), "detail": result.stderr.strip()})
            subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=_TIMEOUT_S)
    _rmdir(target)


def mounts_below(root: pathlib.Path) -> list[pathlib.Path]:
    """Mount points at or below ``root`` (from /proc/self/mountinfo), deepest first."""
    root_s = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            point = _unescape(line.split()[4])
            if point == root_s or point.startswith(root_s.rstrip("/") + "/"):
                found.append(pathlib.Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def mounted_devices() -> dict[str, list[str]]:
    """Block device (major:minor) -> its mount points, for every mount in this namespace."""
    out: dict[str, list[str]] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            out.setdefault(fields[2], []).append(_unescape(fields[4]))
    return out


def clean_stale(mount_root: pathlib.Path) -> list[pathlib.Path]:
    """Unmount whatever a crashed run left mounted below ``mount_root``; returns what was."""
    if not mount_root.exists():
        return []
    stale = [p for p in mounts_below(mount_root) if p != pathlib.Path(os.path.realpath(mount_root))]
    for point in stale:
        log.warning("unmounting a card left mounted by an earlier run", extra={"mount_point": str(point)})
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=_TIMEOUT_S)
    for child in mount_root.iterdir():
        if child.is_dir() and not os.path.ismount(child):
            _rmdir(child)
    return stale


def _rmdir(path: pathlib.Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
