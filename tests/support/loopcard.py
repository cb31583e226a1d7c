"""A card image on a loop device, for the root system tests of the daemon.

Filled from a folder: ext4 by ``mkfs.ext4 -d`` (this CI kernel has no vfat), or
FAT32 by ``mkfs.vfat`` + ``mcopy`` where the kernel and the tools have it.
``insert()`` attaches it to a loop device (the kernel announces it as a card
reader does on media change); ``pull()`` takes it away as a pulled USB card goes.
"""
from __future__ import annotations

import os
import pathlib
import subprocess

from agent.daemon import mount as mount_mod


class CardImage:
    def __init__(self, folder: pathlib.Path, content: pathlib.Path, *, size_mib: int = 32,
                 fstype: str = "ext4", parser_gid: int | None = None) -> None:
        """``parser_gid``: an ext4 card's files get what the daemon's FAT mount
        gives (root's, that group's to read: umask 027)."""
        self.fstype = fstype
        self.path = folder / "card.img"
        with open(self.path, "wb") as fh:
            fh.truncate(size_mib << 20)
        if fstype == "vfat":
            subprocess.run(["mkfs.vfat", "-F", "32", "-n", "EOS_DIGITAL", str(self.path)], check=True,
                           capture_output=True)
            subprocess.run(["mcopy", "-s", "-i", str(self.path), *[str(p) for p in content.iterdir()], "::"],
                           check=True, capture_output=True)
        else:
            if parser_gid is not None:
                for path in [content, *content.rglob("*")]:
                    os.chown(path, 0, parser_gid)
                    path.chmod(0o750 if path.is_dir() else 0o640)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "EOS_DIGITAL", "-d", str(content), str(self.path)],
                           check=True, capture_output=True)
        self.device: str | None = None

    def insert(self) -> str:
        self.device = subprocess.run(["losetup", "--find", "--show", str(self.path)], check=True,
                                     capture_output=True, text=True).stdout.strip()
        return self.device

    def pull(self, mount_root: pathlib.Path) -> None:
        for point in mount_mod.mounts_below(mount_root):
            subprocess.run(["umount", "-l", str(point)], check=False)
        subprocess.run(["losetup", "-d", str(self.device)], check=True)
        self.device = None

    def files(self, folder: str = "/DCIM/100CANON") -> list[str]:
        """The camera's media files in a folder of an ext4 image (read with debugfs, not mounted)."""
        out = subprocess.run(["debugfs", "-R", f"ls -p {folder}", str(self.path)], check=True,
                             capture_output=True, text=True).stdout
        names = [line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6]
        return sorted(n for n in names if n.endswith(".JPG") and not n.startswith("._"))

    def close(self) -> None:
        if self.device:
            subprocess.run(["losetup", "-d", self.device], check=False)
            self.device = None
