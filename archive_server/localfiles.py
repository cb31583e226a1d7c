"""Files the archive writes on its own machine: private modes, and writing for
people through a held directory (issue 13).

* **Modes, whatever the umask.** The data folder and every folder the archive
  makes for its own data are 0700; the SQLite database (and so its WAL and
  SHM, which SQLite creates with the database file's mode), every blob, every
  export, printout and teaching copy are 0600. Creation modes are given
  explicitly (a umask can only take bits away), and ``private_dir`` also
  tightens a folder that an older release or a permissive umask left open.
* **Or a configured group** (``file_group`` in archive.toml, :func:`use_group`):
  a backup operator, or the staff who collect exports, read what the archive
  writes without being its user. Folders are then 2750 (setgid: what is made
  inside inherits the group) and files 0640, each given that group as it is
  made; nobody else reads anything, and nobody but the archive writes.
* **Writing for people** (``Destination``): an export, a printout or a teaching
  copy goes to a folder a user names. The folder is opened once and held; every
  subfolder and file below it is opened relative to the held descriptor with
  ``O_NOFOLLOW`` (``openat``), and each file is created new (``O_EXCL``). A
  folder swapped for a symlink after the check then leads nowhere: the held
  descriptor still names the folder that was checked, a symlinked subfolder or
  file is refused (ELOOP), and nothing is written outside the destination.
"""
from __future__ import annotations

import dataclasses
import errno
import grp
import os
import pathlib
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING

from archive_server.errors import ConfigError, FailedPrecondition

if TYPE_CHECKING:
    from archive_server.config import ArchiveConfig

@dataclasses.dataclass(frozen=True)
class Modes:
    """The modes (and group) of what the archive makes on its machine."""

    dir: int = 0o700
    file: int = 0o600
    gid: int | None = None  # with a group: folders setgid and that group's

    def own(self, fd: int, *, folder: bool = False) -> None:
        """Give a just-made file or folder (open as ``fd``) its exact mode and group."""
        if self.gid is not None:
            os.fchown(fd, -1, self.gid)
        os.fchmod(fd, self.dir if folder else self.file)  # after chown: it may clear setgid


PRIVATE = Modes()
_modes = PRIVATE


def modes() -> Modes:
    return _modes


def use_group(name: str | None) -> Modes:
    """Make folders 2750 and files 0640 of group ``name`` from now on (None: back to
    private 0700/0600). ConfigError for a group this machine does not know, or one
    the archive's user may not give its files (not a member, not root)."""
    global _modes
    if not name:
        _modes = PRIVATE
        return _modes
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"file_group {name!r} is not a group on this machine (see /etc/group)") from None
    if os.geteuid() != 0 and gid != os.getegid() and gid not in os.getgroups():
        raise ConfigError(f"file_group {name!r}: the archive's user is not a member, so it cannot give "
                          "its files that group; add the user to the group or remove the key")
    _modes = Modes(dir=0o2750, file=0o640, gid=gid)
    return _modes


def new_folder(path: pathlib.Path, *, exist_ok: bool = False) -> None:
    """``path`` made with the current folder mode and group, exactly (the umask
    takes nothing away); an existing one is left as it is with ``exist_ok``."""
    try:
        os.mkdir(path, _modes.dir)
    except FileExistsError:
        if exist_ok:
            return
        raise
    fd = os.open(path, _DIR_FLAGS)
    try:
        _modes.own(fd, folder=True)
    finally:
        os.close(fd)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC


def private_dir(path: pathlib.Path, *, tighten: bool = True) -> pathlib.Path:
    """``path`` and each missing parent created 0700 (pathlib gives parents the
    umask's mode); with ``tighten``, an existing folder the archive's user owns is
    tightened to 0700 too (never one with the sticky bit: a shared folder such as
    /tmp). Returns ``path``."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        new_folder(d, exist_ok=True)  # exactly 0700 (or 2750), whatever the umask took away
    st = os.stat(path)
    if (tighten or missing) and st.st_uid == os.geteuid() and not st.st_mode & stat.S_ISVTX:
        if _modes.gid is not None and (st.st_gid != _modes.gid or stat.S_IMODE(st.st_mode) != _modes.dir):
            os.chown(path, -1, _modes.gid)
            os.chmod(path, _modes.dir)
        elif _modes.gid is None and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
    return path


def private_data_dir(config: "ArchiveConfig") -> None:
    """The configured file group applied (:func:`use_group`), and the archive's data
    folder 0700 (2750) when the archive keeps anything there (by default the
    SQLite database and the blob folder)."""
    use_group(config.file_group)
    if not (config.db_url and config.blobs_url):
        private_dir(config.data_dir)


def private_file(path: pathlib.Path, *, create: bool = True) -> None:
    """``path`` created empty with 0600 when missing (so that what opens it next,
    e.g. SQLite, keeps that mode); an existing file the archive owns is
    tightened to 0600 (0640 of the configured group). Without ``create`` a
    missing file is left missing."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, _modes.file)
    except FileNotFoundError:
        if create:
            raise
        return
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and (stat.S_IMODE(st.st_mode) != _modes.file
                                           or (_modes.gid is not None and st.st_gid != _modes.gid)):
            _modes.own(fd)
    finally:
        os.close(fd)


def relative_parts(relative: str) -> list[str]:
    """The folders and name of a relative path that stays below its folder;
    FailedPrecondition for an absolute path, "..", "." or an empty part."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise FailedPrecondition(f"media path {relative!r} escapes the destination")
    return parts


class Destination:
    """A folder a user named, held open; see the module docstring. Use as a context
    manager (the descriptor is closed at the end)."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        if not folder.is_dir():
            private_dir(folder, tighten=False)
        # The folder itself is the user's choice (it may be a symlink they made);
        # everything below it is reached only through this descriptor.
        self.fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)

    def __enter__(self) -> "Destination":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check(self, relative: str) -> None:
        """Refuse now what ``create`` would refuse later: a path leaving the
        folder, a symlink on the way, or a file that exists."""
        parts = relative_parts(relative)
        fd = self.fd
        opened: list[int] = []
        try:
            for part in parts[:-1]:
                try:
                    fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    return
                except OSError as exc:
                    raise self._refused(relative, exc) from None
                opened.append(fd)
            try:
                os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            raise FailedPrecondition(f"refusing to overwrite existing file {self.folder / relative}")
        finally:
            for held in opened:
                os.close(held)

    def _refused(self, relative: str, exc: OSError) -> FailedPrecondition:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return FailedPrecondition(f"refusing to write {self.folder / relative}: a folder on the way "
                                      "is a symbolic link or not a folder")
        if exc.errno == errno.EEXIST:
            return FailedPrecondition(f"refusing to overwrite existing file {self.folder / relative}")
        return FailedPrecondition(f"cannot write {self.folder / relative}: {exc.strerror}")

    def create(self, relative: str) -> "_NewFile":
        """A new file at ``relative`` (folders made 0700 on the way), opened for
        writing 0600 with O_EXCL | O_NOFOLLOW below the held folder."""
        parts = relative_parts(relative)
        fd = self.fd
        opened: list[int] = []
        try:
            for part in parts[:-1]:
                try:
                    os.mkdir(part, _modes.dir, dir_fd=fd)
                    made = True
                except FileExistsError:
                    made = False
                try:
                    fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise self._refused(relative, exc) from None
                opened.append(fd)
                if made:
                    _modes.own(fd, folder=True)
            parent = os.dup(fd)
            try:
                out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC,
                              _modes.file, dir_fd=parent)
            except OSError as exc:
                os.close(parent)
                raise self._refused(relative, exc) from None
            _modes.own(out)
            return _NewFile(out, parent, parts[-1], self.folder / relative)
        finally:
            for held in opened:
                os.close(held)

    def write_new(self, relative: str, data: bytes) -> pathlib.Path:
        """``data`` as a new, fsynced file at ``relative``; removed again on failure."""
        with self.create(relative) as out:
            out.write(data)
        return out.path


class _NewFile:
    """One file being written below a Destination: unlinked (relative to its
    parent's descriptor) unless the block ends without an exception."""

    def __init__(self, fd: int, parent_fd: int, name: str, path: pathlib.Path) -> None:
        self.fd, self.parent_fd, self.name, self.path = fd, parent_fd, name, path

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def write_all(self, blocks: Iterator[bytes]) -> None:
        for block in blocks:
            self.write(block)

    def discard(self) -> None:
        try:
            os.unlink(self.name, dir_fd=self.parent_fd)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "_NewFile":
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            if kind is None:
                os.fsync(self.fd)
                os.fsync(self.parent_fd)
        except BaseException:
            self.discard()
            raise
        finally:
            os.close(self.fd)
            if kind is not None:
                self.discard()
            os.close(self.parent_fd)
