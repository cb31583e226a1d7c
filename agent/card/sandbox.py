"""Parsers of card content run without privileges (issue 13).

ffmpeg, exiftool, Pillow, pydicom, zxing-cpp and tesseract read files that
anyone can put on a card. The daemon runs as root (it mounts cards and wipes
them); the code that *parses* a card runs in a process that has given up
everything it does not need, irreversibly, before it reads a byte:

- **user**: root switches to an unprivileged user (``bildsluss-parse``, from
  the package's sysusers entry): no supplementary groups, every capability gone
  (bounding set emptied, permitted and effective cleared by the switch; checked
  after it), and ``no_new_privs`` so that no set-uid program or file capability
  gives any back. An agent that does not run as root keeps its own user.
- **files** (Landlock): reading only the card, the programs and libraries
  (``/usr``, the Python installation and its packages, a few files of
  ``/etc``), and writing only the one spool folder of the card.
  ``/etc/shadow``, the journal, the agent's keys and other cards are out of
  reach even where file modes would allow them.
- **network**: no socket can be opened at all (seccomp returns ``EACCES`` for
  ``socket(2)`` and ``ENOSYS`` for ``io_uring``); as root also a new, empty
  network namespace; and Landlock denies TCP bind and connect.
  Landlock's scopes keep it from signalling or reaching abstract sockets of
  processes outside it.

Two ways in:

- :func:`confine` in a fresh process (a ``ProcessPoolExecutor``'s
  ``initializer``, a forked child) before it reads the card. Import what the
  process parses with first (Pillow's plugins: ``Image.init()``): afterwards it
  may no longer read a Python installation that is not world-readable (a
  developer's pyenv under /root);
- :func:`command` for a program (ffmpeg, exiftool): the command
  line runs ``python -I -S .../agent/card/sandbox.py ... -- PROGRAM ARGS``, which
  confines itself and then ``exec``\\s the program (the program inherits all of it).

What a kernel lacks (Landlock before 5.13, an architecture without a seccomp
table here) is reported by :func:`support`, and the rest still applies. The
card must be readable by the unprivileged user: cards are mounted with
``gid=<its group>`` and group read (:mod:`agent.daemon.mount`), the folders on
the way are 0711, and its own folder in the card's spool folder is handed to it
(:func:`hand_over`; :func:`agent.card.workers.confinement_for`).
"""
from __future__ import annotations

# Only light standard modules: this file also runs as the wrapper in front of
# every confined program (``command``), where each import is paid per run.
import ctypes
import errno
import os
import pwd
import struct
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Sequence

PARSER_USER = "bildsluss-parse"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# -- Landlock (linux/landlock.h) ------------------------------------------------------
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_WRITE_DIR = sum(1 << b for b in range(4, 13))  # remove dir/file, make char/dir/reg/sock/fifo/block/sym
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV

# -- seccomp ------------------------------------------------------------------------------
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _PR_CAPBSET_DROP = 38, 22, 24
_SECCOMP_MODE_FILTER = 2
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# (socket, io_uring_setup) by architecture; x86_64's x32 numbers (>= 0x40000000) are refused whole.
_SYSCALLS = {"x86_64": (41, 425), "aarch64": (198, 425)}
_CLONE_NEWNET = 0x40000000


class SandboxError(Exception):
    """The process could not give up what it must (a privilege left that should be gone):
    it must not read the card. The caller treats the card as not read (internal error)."""


class Confinement:
    """What a parser process may touch: read ``read`` (the card), write ``write``
    (the card's spool folder). ``uid``/``gid``: the unprivileged user a root
    process becomes (None: stay the current user)."""

    __slots__ = ("read", "write", "uid", "gid")

    def __init__(self, read: tuple[str, ...], write: tuple[str, ...], uid: int | None = None,
                 gid: int | None = None) -> None:
        self.read, self.write, self.uid, self.gid = tuple(read), tuple(write), uid, gid

    def __reduce__(self) -> tuple[type[Confinement], tuple[object, ...]]:
        return Confinement, (self.read, self.write, self.uid, self.gid)

    def __repr__(self) -> str:
        return f"Confinement(read={self.read}, write={self.write}, uid={self.uid}, gid={self.gid})"


class Support:
    """What this kernel offers: Landlock's ABI version (0: none), a seccomp table for
    this architecture, and whether the process is root (switches user, new netns).
    ``landlock_denied``: the kernel has Landlock but a system call filter around
    this process refuses it (EPERM: a service manager's SystemCallFilter=), which
    is a configuration error, not a kernel without Landlock."""

    __slots__ = ("landlock_abi", "seccomp", "root", "landlock_denied")

    def __init__(self, landlock_abi: int, seccomp: bool, root: bool, landlock_denied: bool = False) -> None:
        self.landlock_abi, self.seccomp, self.root = landlock_abi, seccomp, root
        self.landlock_denied = landlock_denied

    def __repr__(self) -> str:
        return (f"Support(landlock_abi={self.landlock_abi}, seccomp={self.seccomp}, root={self.root}, "
                f"landlock_denied={self.landlock_denied})")


def support() -> Support:
    abi = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    # ENOSYS: no Landlock in this kernel; EOPNOTSUPP: built but off at boot; EPERM: filtered.
    denied = abi < 0 and ctypes.get_errno() == errno.EPERM
    return Support(landlock_abi=max(0, int(abi)), seccomp=os.uname().machine in _SYSCALLS,
                   root=os.geteuid() == 0, landlock_denied=denied)


def confinement_for(card: pathlib.Path | str, spool: pathlib.Path | str, *,
                    user: str = PARSER_USER) -> Confinement:
    """The confinement of one card's parsers (in the parent). As root, ``user``
    must exist (SandboxError otherwise: better no card read than one read as root)."""
    uid = gid = None
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise SandboxError(f"the parser user {user!r} does not exist; card files are not parsed as root "
                               "(scripts/setup.sh and the package create it)") from None
        if entry.pw_uid == 0:
            raise SandboxError(f"the parser user {user!r} is root")
        uid, gid = entry.pw_uid, entry.pw_gid
    return Confinement(read=(str(card),), write=(str(spool),), uid=uid, gid=gid)


def hand_over(confinement: Confinement) -> None:
    """Give the spool folder to the parser user (0700), so that it can write there and nobody else."""
    if confinement.uid is None:
        return
    for folder in confinement.write:
        os.chown(folder, confinement.uid, confinement.gid if confinement.gid is not None else -1)
        os.chmod(folder, 0o700)


# -- the confinement, in the process that parses -------------------------------------------


def _system_paths() -> list[tuple[str, int]]:
    """Read-only paths every parser needs: programs, libraries, the Python that runs us."""
    paths = ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/ld.so.conf",
             "/etc/ld.so.conf.d", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
             "/etc/fonts", "/etc/perl", "/etc/alternatives", "/proc", "/sys/devices/system/cpu",
             "/dev/urandom", "/dev/random", sys.prefix, sys.base_prefix, sys.exec_prefix]
    paths += [p for p in sys.path if p and os.path.isabs(p)]
    out: list[tuple[str, int]] = []
    for path in dict.fromkeys(paths):
        real = os.path.realpath(path)
        if real != "/" and os.path.exists(real):
            out.append((real, _READ))
    out.append(("/dev/null", _FS_READ_FILE | _FS_WRITE_FILE))
    return out


def _landlock(confinement: Confinement, abi: int) -> None:
    fs = _READ | _FS_WRITE_FILE | _FS_WRITE_DIR
    if abi >= 2:
        fs |= _FS_REFER
    if abi >= 3:
        fs |= _FS_TRUNCATE
    if abi >= 5:
        fs |= _FS_IOCTL_DEV
    net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0
    attr = struct.pack("QQQ", fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise SandboxError(f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        rules = _system_paths()
        rules += [(p, _READ) for p in confinement.read]
        rules += [(p, fs) for p in confinement.write]
        for path, access in rules:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                allowed = access & fs
                if not os.path.isdir(path):
                    allowed &= _FILE_RIGHTS
                rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
                if _libc.syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                                 rule, ctypes.c_uint32(0)) < 0:
                    raise SandboxError(f"landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(fd)
        if _libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise SandboxError(f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _seccomp(machine: str) -> None:
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    kill, allow = 0x80000000, 0x7FFF0000
    errno_ret = 0x00050000
    socket_nr, uring_nr = _SYSCALLS[machine]
    program = [
        (ld, 0, 0, 4),                               # A = arch
        (jeq, 1, 0, _AUDIT_ARCH[machine]),
        (ret, 0, 0, kill),                           # another ABI: not ours
        (ld, 0, 0, 0),                               # A = syscall number
        (jge, 4, 0, 0x40000000) if machine == "x86_64" else (jeq, 4, 0, 0xFFFFFFFF),  # x32: refused
        (jeq, 2, 0, socket_nr),
        (jeq, 3, 0, uring_nr),
        (ret, 0, 0, allow),
        (ret, 0, 0, errno_ret | errno.EACCES),       # socket(2)
        (ret, 0, 0, errno_ret | errno.EACCES),       # (x32)
        (ret, 0, 0, errno_ret | errno.ENOSYS),       # io_uring_setup
    ]
    # Jumps above are relative to the next instruction; the three returns at the end.
    filters = (_SockFilter * len(program))(*[_SockFilter(*f) for f in program])
    prog = _SockFprog(len(program), filters)
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise SandboxError(f"seccomp: {os.strerror(ctypes.get_errno())}")


def _capabilities() -> dict[str, int]:
    caps = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Cap"):
                key, value = line.split(":")
                caps[key] = int(value.strip(), 16)
    return caps


def confine(confinement: Confinement) -> Support:
    """Give up, irreversibly, everything but what ``confinement`` allows. Call it in a
    fresh process before it reads the card (it applies to that process's future
    threads and children). Raises SandboxError when a privilege could not be given up."""
    have = support()
    if have.landlock_denied:  # once silently "no Landlock" under the packaged unit
        raise SandboxError("a system call filter around the agent refuses Landlock (EPERM): allow "
                           "landlock_create_ruleset, landlock_add_rule and landlock_restrict_self "
                           "(the packaged unit's SystemCallFilter= does)")
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SandboxError(f"no_new_privs: {os.strerror(ctypes.get_errno())}")
    if have.root:
        # A new, empty network namespace. Where a service manager forbids
        # namespaces, seccomp and Landlock below still keep sockets closed.
        if _libc.unshare(_CLONE_NEWNET) != 0 and ctypes.get_errno() not in (errno.EPERM, errno.EINVAL):
            raise SandboxError(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
    if have.landlock_abi:
        _landlock(confinement, have.landlock_abi)
    if confinement.uid is not None:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last = int(fh.read())
        for cap in range(last + 1):
            _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EPERM without CAP_SETPCAP: checked below
        gid = confinement.gid if confinement.gid is not None else confinement.uid
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(confinement.uid, confinement.uid, confinement.uid)
        left = {k: v for k, v in _capabilities().items() if k in ("CapPrm", "CapEff", "CapAmb") and v}
        if left or os.geteuid() == 0 or os.getegid() == 0 or os.getgroups():
            raise SandboxError(f"privileges left after switching to uid {confinement.uid}: {left}")
    if have.seccomp:
        _seccomp(os.uname().machine)
    # What the parser writes is its own only; temporary files (a library's scratch)
    # go to the spool folder.
    os.umask(0o077)
    if confinement.write:
        os.environ["TMPDIR"] = confinement.write[0]
        if "tempfile" in sys.modules:
            sys.modules["tempfile"].tempdir = None  # type: ignore[attr-defined]  # chosen anew from TMPDIR
    return have


# -- programs: python -m agent.card.sandbox --read DIR --write DIR [--uid N --gid N] -- PROGRAM ARGS


def command(confinement: Confinement, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` confined (see the module docstring)."""
    # This file by path, isolated and without site: it needs only the standard
    # library, and a Python start without site-packages costs a third as much.
    line = [sys.executable, "-I", "-S", os.path.abspath(__file__)]
    for path in confinement.read:
        line += ["--read", path]
    for path in confinement.write:
        line += ["--write", path]
    if confinement.uid is not None:
        line += ["--uid", str(confinement.uid), "--gid", str(confinement.gid)]
    return [*line, "--", *argv]


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if "--" not in args:
        print("usage: python -m agent.card.sandbox [--read DIR] [--write DIR] [--uid N --gid N] -- PROGRAM ARGS",
              file=sys.stderr)
        return 2
    split = args.index("--")
    options, program = args[:split], args[split + 1:]
    read: list[str] = []
    write: list[str] = []
    ids: dict[str, int] = {}
    it = iter(options)
    for option in it:
        value = next(it, None)
        if value is None or option not in ("--read", "--write", "--uid", "--gid"):
            print(f"agent.card.sandbox: bad option {option!r}", file=sys.stderr)
            return 2
        if option == "--read":
            read.append(value)
        elif option == "--write":
            write.append(value)
        else:
            ids[option[2:]] = int(value)
    if not program:
        print("agent.card.sandbox: no program given", file=sys.stderr)
        return 2
    try:
        confine(Confinement(tuple(read), tuple(write), ids.get("uid"), ids.get("gid")))
    except (SandboxError, OSError) as exc:
        print(f"agent.card.sandbox: not confined, not running {program[0]}: {exc}", file=sys.stderr)
        return 126
    try:
        os.execvp(program[0], program)
    except OSError as exc:
        print(f"agent.card.sandbox: cannot run {program[0]}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
