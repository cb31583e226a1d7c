"""Parsers without privileges (issue 13): a confined worker reads the one card, writes
the one spool folder, and nothing else; it has no capabilities and cannot open a socket.

The workers here are real processes: a ``ProcessPoolExecutor`` whose initializer
confines each worker (how the card's stages run their parsers), and programs run
through :func:`agent.card.sandbox.command` (how ffmpeg and exiftool run).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from agent.card import sandbox
from tests.support.parse_probe import attempt

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to the parser user needs root")


@pytest.fixture
def place() -> pathlib.Path:
    """A card, its spool folder, and a folder beside them that anyone may write (so
    that only the sandbox, not the file modes, keeps a worker out of it). Not
    tmp_path: the parser user must be able to reach the card."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="bildsluss-sandbox-"))
    base.chmod(0o711)
    (base / "card" / "DCIM").mkdir(parents=True)
    (base / "card" / "DCIM" / "IMG_0001.JPG").write_bytes(b"\xff\xd8 a picture")
    (base / "spool").mkdir(mode=0o700)
    (base / "open").mkdir()
    (base / "open").chmod(0o777)
    (base / "open" / "notes.txt").write_text("world-readable, not the card's")
    (base / "open" / "notes.txt").chmod(0o666)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _confinement(place: pathlib.Path) -> sandbox.Confinement:
    c = sandbox.confinement_for(place / "card", place / "spool")
    sandbox.hand_over(c)
    return c


def _probe(place: str) -> dict[str, object]:
    """What a worker may do (runs inside the confined worker)."""
    base = pathlib.Path(place)
    caps = {}
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Cap"):
            key, value = line.split(":")
            caps[key] = int(value, 16)
    return {
        "uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups(), "caps": caps,
        "read card": attempt(lambda: (base / "card" / "DCIM" / "IMG_0001.JPG").read_bytes()),
        "write spool": attempt(lambda: (base / "spool" / "out.jpg").write_bytes(b"stripped")),
        "write beside": attempt(lambda: (base / "open" / "planted").write_text("x")),
        "change beside": attempt(lambda: (base / "open" / "notes.txt").write_text("x")),
        "write card": attempt(lambda: (base / "card" / "DCIM" / "IMG_0002.JPG").write_bytes(b"x")),
        "read beside": attempt(lambda: (base / "open" / "notes.txt").read_text()),
        "read /etc/shadow": attempt(lambda: pathlib.Path("/etc/shadow").read_bytes()),
        "list /var/lib": attempt(lambda: list(pathlib.Path("/var/lib").iterdir())),
        "tcp socket": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
        "udp6 socket": attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()),
        "unix socket": attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()),
        "signal init": attempt(lambda: os.kill(1, 0)),
    }


def _in_pool_worker(place: pathlib.Path, confinement: sandbox.Confinement) -> dict[str, object]:
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context,
                                                initializer=sandbox.confine, initargs=(confinement,)) as pool:
        return pool.submit(_probe, str(place)).result(timeout=60)


@needs_root
def test_a_pool_worker_reads_the_card_writes_its_spool_and_nothing_else(place):
    seen = _in_pool_worker(place, _confinement(place))
    parser = pwd.getpwnam(sandbox.PARSER_USER)
    assert seen["uid"] == seen["euid"] == parser.pw_uid != 0 and seen["groups"] == []
    assert seen["caps"]["CapEff"] == seen["caps"]["CapPrm"] == seen["caps"]["CapAmb"] == 0
    assert seen["read card"] == "ok" and seen["write spool"] == "ok"
    assert (place / "spool" / "out.jpg").stat().st_mode & 0o777 == 0o600
    assert seen["write card"] == "PermissionError", "the card is read-only to a parser"
    # Outside the card and the spool: refused although the file modes would allow it.
    assert seen["write beside"] == seen["change beside"] == seen["read beside"] == "PermissionError"
    assert not (place / "open" / "planted").exists()
    assert seen["read /etc/shadow"] == "PermissionError"
    assert seen["list /var/lib"] == "PermissionError", "where the journal lives"
    assert seen["signal init"] == "PermissionError"


@needs_root
def test_a_pool_worker_cannot_open_a_socket(place):
    seen = _in_pool_worker(place, _confinement(place))
    assert seen["tcp socket"] == seen["udp6 socket"] == seen["unix socket"] == "PermissionError"


@needs_root
def test_a_program_run_through_the_sandbox_is_confined_too(place):
    """ffmpeg and exiftool run as ``python -m agent.card.sandbox ... -- PROGRAM``."""
    confinement = _confinement(place)
    script = (f"id -u; cat {place}/card/DCIM/IMG_0001.JPG >/dev/null && echo read-card; "
              f"echo x > {place}/spool/by-program && echo wrote-spool; "
              f"echo x > {place}/open/by-program || echo no-write-beside; "
              "cat /etc/shadow >/dev/null 2>&1 || echo no-shadow; "
              "exec 3<>/dev/tcp/127.0.0.1/22 2>/dev/null || echo no-socket")
    out = subprocess.run(sandbox.command(confinement, ["/bin/bash", "-c", script]),
                         capture_output=True, text=True, timeout=60)
    lines = out.stdout.split()
    assert out.returncode == 0, out.stderr
    assert lines == [str(confinement.uid), "read-card", "wrote-spool", "no-write-beside", "no-shadow",
                     "no-socket"], out.stderr
    # The real parsers start and work inside it.
    for program in (["exiftool", "-ver"], ["ffmpeg", "-hide_banner", "-version"]):
        ran = subprocess.run(sandbox.command(confinement, program), capture_output=True, timeout=60)
        assert ran.returncode == 0, (program, ran.stderr)


def test_without_the_parser_user_nothing_is_parsed_as_root(place):
    if os.geteuid() != 0:
        pytest.skip("only root switches users")
    with pytest.raises(sandbox.SandboxError, match="does not exist"):
        sandbox.confinement_for(place / "card", place / "spool", user="no-such-bildsluss-user")


def test_a_confinement_that_cannot_be_entered_runs_nothing(place):
    """The wrapper never runs the program unconfined: a spool folder that is not
    there cannot be made the only writable place, so the program does not start."""
    bad = sandbox.Confinement(read=(str(place / "card"),), write=(str(place / "no-such-folder"),))
    out = subprocess.run(sandbox.command(bad, ["/bin/echo", "ran"]), capture_output=True, text=True, timeout=60)
    assert out.returncode == 126 and "ran" not in out.stdout and "not confined" in out.stderr


FILTERED = """
import ctypes, errno, os, sys
from agent.card import sandbox
# As systemd's SystemCallFilter= without Landlock's calls: landlock_create_ruleset -> EPERM.
ld, jeq, ret, allow = 0x20, 0x15, 0x06, 0x7FFF0000
program = [(ld, 0, 0, 0), (jeq, 0, 1, 444), (ret, 0, 0, 0x00050000 | errno.EPERM), (ret, 0, 0, allow)]
filters = (sandbox._SockFilter * len(program))(*[sandbox._SockFilter(*f) for f in program])
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # no_new_privs: a filter needs it without CAP_SYS_ADMIN
assert libc.prctl(22, 2, ctypes.byref(sandbox._SockFprog(len(program), filters)), 0, 0) == 0
print(sandbox.support())
try:
    sandbox.confine(sandbox.Confinement(read=(sys.argv[1],), write=(sys.argv[2],)))
except sandbox.SandboxError as exc:
    print("refused:", exc)
else:
    print("confined without Landlock")
"""


def test_landlock_refused_by_a_system_call_filter_is_an_error_not_a_kernel_without_it(place):
    """Under the packaged unit, a SystemCallFilter= without Landlock's calls made
    support() report "no Landlock" and the parsers ran without it, silently."""
    if not sandbox.support().landlock_abi:
        pytest.skip("this kernel has no Landlock")
    out = subprocess.run([sys.executable, "-c", FILTERED, str(place / "card"), str(place / "spool")],
                         capture_output=True, text=True, timeout=60, cwd=pathlib.Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert "landlock_denied=True" in out.stdout
    assert "refused: a system call filter around the agent refuses Landlock" in out.stdout
