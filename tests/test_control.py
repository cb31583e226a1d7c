"""The control socket on a real Unix socket: the expect and status exchange,
file permissions, peer-credential checks with real processes of other users,
and the ``expect`` / ``status`` commands' exit codes."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import tempfile
import threading

import pytest

from agent import config as config_mod
from agent.desk import commands, control
from agent.desk.control import ControlServer, ask, parse_duration
from agent.desk.ehr_context import ContextStore
from agent.desk.status import StatusBoard

NOBODY = 65534
PATIENT_FULL = "191212121212"
OTHER_GID = 48_123  # a group nobody belongs to
# A plain client in a process of another user: only the stdlib, so that it
# needs nothing from this checkout.
CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print(json.dumps({"connect": "EACCES"})); sys.exit(0)
try:
    s.sendall(json.dumps({"op": "expect", "patient": "19121212-1212", "ttl_s": 60}).encode() + b"\\n")
except BrokenPipeError:
    pass  # refused before it listened; the answer is waiting
print(s.makefile().readline().strip())
"""
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run clients as other users")


@pytest.fixture
def base() -> pathlib.Path:
    # Not tmp_path: other users must be able to reach the socket's folder.
    path = pathlib.Path(tempfile.mkdtemp(prefix="bildsluss-control-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running(sock: pathlib.Path, *, allowed_gid: int | None = None, board: StatusBoard | None = None,
            contexts: ContextStore | None = None):
    board = board or StatusBoard("pc-1", "0.1.0", "SE2321000016-15CQ")
    contexts = contexts or ContextStore()
    server = ControlServer(sock, board, contexts, allowed_gid=allowed_gid, context_ttl_s=600.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def as_user(sock: pathlib.Path, uid: int, gid: int, extra_groups: list[int] | None = None) -> dict:
    out = subprocess.run(["/usr/bin/python3", "-c", CLIENT, str(sock)], capture_output=True, text=True,
                         user=uid, group=gid, extra_groups=extra_groups or [], timeout=30, cwd="/")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_expect_hands_the_canonical_number_to_the_store(base):
    sock = base / "run" / "control.sock"
    contexts = ContextStore()
    with running(sock, contexts=contexts):
        answer = ask(sock, {"op": "expect", "patient": "19121212-1212", "mode": "ultrasound", "ttl_s": 90})
        assert answer["ok"] is True and answer["patient"] == "191212121212" and answer["mode"] == "ultrasound"
        assert answer["ttl_s"] == pytest.approx(90) and answer["set_by"] == "root" or os.geteuid() != 0
        ctx = contexts.peek()
        assert ctx.patient == "191212121212" and ctx.expires_at == answer["expires_at"]
        # the default lifetime is the configured one
        answer = ask(sock, {"op": "expect", "patient": "191212121212"})
        assert answer["ttl_s"] == pytest.approx(600) and answer["mode"] is None


@pytest.mark.parametrize("request_, error", [
    ({"op": "expect", "patient": "191212121213"}, "INVALID_ID"),
    ({"op": "expect", "patient": ""}, "BAD_REQUEST"),
    ({"op": "expect", "patient": "191212121212", "mode": "selfie"}, "BAD_REQUEST"),
    ({"op": "expect", "patient": "191212121212", "ttl_s": "10m"}, "BAD_REQUEST"),
    ({"op": "expect", "patient": "191212121212", "ttl_s": -5}, "INVALID_ID"),
    ({"op": "reboot"}, "BAD_REQUEST"),
    (["op", "status"], "BAD_REQUEST"),
])
def test_bad_requests_are_answered_and_nothing_is_stored(base, request_, error):
    sock = base / "control.sock"
    contexts = ContextStore()
    with running(sock, contexts=contexts):
        answer = ask(sock, request_)
    assert answer["ok"] is False and answer["error"] == error and answer["message"]
    assert contexts.peek() is None


def test_a_connection_can_ask_several_times_and_garbage_is_answered(base):
    sock = base / "control.sock"
    with running(sock):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(sock))
            s.sendall(b'not json\n{"op": "status"}\n')
            answers = s.makefile()
            lines = answers.readline(), answers.readline()
    assert json.loads(lines[0])["error"] == "BAD_REQUEST"
    assert json.loads(lines[1])["ok"] is True


def test_status_carries_the_snapshot_and_a_masked_context(base):
    sock = base / "control.sock"
    board = StatusBoard("pc-1", "0.1.0", "SE2321000016-15CQ")
    board.card_detected("sdb1", "usb-1", "udev")
    with running(sock, board=board) as server:
        server.contexts.put("191212121212", None, 60, set_by="anna")
        answer = ask(sock, {"op": "status"})
    assert answer["status"]["agent_id"] == "pc-1" and answer["status"]["queue"][0]["card"] == "sdb1"
    assert answer["context"]["patient"] == "19121212-****" and answer["context"]["set_by"] == "anna"
    assert "191212121212" not in json.dumps(answer)


@needs_root
def test_socket_and_folder_permissions(base):
    sock = base / "run" / "control.sock"
    with running(sock, allowed_gid=NOBODY):
        info, folder = sock.stat(), sock.parent.stat()
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
        assert (info.st_uid, info.st_gid) == (os.geteuid(), NOBODY)
        assert stat.S_IMODE(folder.st_mode) == 0o751 and folder.st_gid == NOBODY
    assert not sock.exists(), "stop() removes the socket"


@needs_root
def test_members_of_the_control_group_may_use_it_others_may_not(base):
    sock = base / "run" / "control.sock"
    with running(sock, allowed_gid=NOBODY) as server:
        member = as_user(sock, NOBODY, NOBODY)
        assert member["ok"] is True and member["set_by"] == "nobody"
        # a supplementary member (SO_PEERGROUPS): primary group elsewhere
        supplementary = as_user(sock, NOBODY, OTHER_GID, [NOBODY])
        assert supplementary["ok"] is True
        # anyone else cannot even connect (socket 0660)...
        assert as_user(sock, NOBODY, OTHER_GID) == {"connect": "EACCES"}
        # ...and if the file modes were loosened, the peer credentials still say no
        sock.parent.chmod(0o755)
        sock.chmod(0o666)
        server.contexts.clear()
        refused = as_user(sock, NOBODY, OTHER_GID)
        assert refused["ok"] is False and refused["error"] == "FORBIDDEN"
        assert server.contexts.peek() is None


@needs_root
def test_without_a_control_group_only_the_agents_user_and_root_may(base):
    sock = base / "run" / "control.sock"
    with running(sock, allowed_gid=None):
        sock.parent.chmod(0o755)
        sock.chmod(0o666)
        assert as_user(sock, NOBODY, NOBODY)["error"] == "FORBIDDEN"
        assert ask(sock, {"op": "status"})["ok"] is True  # root / the agent's own user


def test_a_stale_socket_is_replaced_a_live_one_is_not(base):
    sock = base / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens: a daemon that died
    with running(sock):
        assert ask(sock, {"op": "status"})["ok"]
        with pytest.raises(OSError, match="already listening"):
            ControlServer(sock, StatusBoard("x", "0", None), ContextStore(), allowed_gid=None,
                          context_ttl_s=1).start()
        assert ask(sock, {"op": "status"})["ok"], "the running server was not disturbed"


@needs_root
def test_a_folder_of_another_user_is_refused(base):
    folder = base / "theirs"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(OSError, match="belongs to uid"):
        ControlServer(folder / "control.sock", StatusBoard("x", "0", None), ContextStore(), allowed_gid=None,
                      context_ttl_s=1).start()
    assert list(folder.iterdir()) == []


def test_a_file_that_is_not_a_socket_is_never_removed(base):
    sock = base / "control.sock"
    sock.write_text("important")
    with pytest.raises(OSError, match="not a socket"):
        ControlServer(sock, StatusBoard("x", "0", None), ContextStore(), allowed_gid=None, context_ttl_s=1).start()
    assert sock.read_text() == "important"


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1h", 3600), ("45", 45), ("1.5m", 90),
                                           (" 2H ", 7200)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "m", "-5m", "0s", "1h30m"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# -- the commands ----------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="bildsluss-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.add_cli(sub)
    args = parser.parse_args(list(argv))
    return args.handler(args)


def test_expect_command(base, capsys):
    sock = base / "control.sock"
    with running(sock) as server:
        assert run_cli("expect", "19121212-1212", "--mode", "audio", "--ttl", "10m", "--socket", str(sock)) == 0
        assert "expecting patient 191212121212, mode audio" in capsys.readouterr().out
        ctx = server.contexts.peek()
        assert ctx.expires_at - ctx.set_at == 600
        assert run_cli("expect", "191212121213", "--socket", str(sock)) == 2
        assert "not accepted" in capsys.readouterr().err
        assert run_cli("expect", "191212121212", "--ttl", "soon", "--socket", str(sock)) == 2
        assert "--ttl" in capsys.readouterr().err
        assert run_cli("expect", "191212121212", "--json", "--socket", str(sock)) == 0
        assert json.loads(capsys.readouterr().out)["patient"] == "191212121212"


def test_status_command_text_and_json(base, capsys):
    sock = base / "control.sock"
    board = StatusBoard("pc-1", "0.1.0", "SE2321000016-15CQ")
    board.card_detected("a", "usb-1", "udev")
    board.card_finished("a", {"outcome": "refused", "reason": "NO_ID_FOUND", "message": "m", "patient": None,
                              "files": [{"status": "archived"}]})
    board.archive_reachable(False, "UNAVAILABLE")
    with running(sock, board=board):
        assert run_cli("status", "--socket", str(sock)) == 0
        text = capsys.readouterr().out
        assert "NEKAT: INGET PERSONNUMMER HITTADES" in text and "[NO_ID_FOUND]" in text
        assert "Arkivet nås inte" in text and "1 nekade" in text
        assert run_cli("status", "--json", "--socket", str(sock)) == 0
        snap = json.loads(capsys.readouterr().out)
        assert snap["recent"][0]["reason"] == "NO_ID_FOUND" and snap["archive"]["reachable"] is False


def test_commands_say_so_when_the_daemon_is_not_running(base, capsys):
    missing = base / "nothing-here.sock"
    assert run_cli("status", "--socket", str(missing)) == 4
    assert "not running" in capsys.readouterr().err
    assert run_cli("expect", "191212121212", "--socket", str(missing)) == 4
    # a socket file left behind by a dead daemon: the same answer
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(base / "dead.sock"))
    dead.close()
    assert run_cli("status", "--socket", str(base / "dead.sock")) == 4


def test_the_socket_path_comes_from_the_config_file(base, tmp_path, capsys):
    sock = base / "from-config.sock"
    config = tmp_path / "agent.toml"
    config.write_text(f'[daemon]\ncontrol_socket = "{sock}"\n')
    with running(sock):
        assert run_cli("status", "--json", "--config", str(config)) == 0
    assert json.loads(capsys.readouterr().out)["agent_id"] == "pc-1"
    config.write_text("[daemon]\nno_such_key = 1\n")
    assert run_cli("status", "--config", str(config)) == 2


def test_agent_command_line_exit_code_when_not_running(base):
    """The real ``bildsluss-agent`` entry point wires these commands."""
    out = subprocess.run([shutil.which("bildsluss-agent") or
                          str(pathlib.Path(__file__).resolve().parent.parent / ".venv/bin/bildsluss-agent"),
                          "status", "--socket", str(base / "none.sock")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 4, out.stderr
    assert "not running" in out.stderr


def test_subscribe_streams_a_snapshot_on_every_change_until_the_server_stops(base):
    sock = base / "control.sock"
    board = StatusBoard("pc-1", "0.1.0", None)
    stop = threading.Event()
    with running(sock, board=board):
        stream = control.watch(sock, stop)
        assert next(stream)["queue"] == []
        board.card_detected("sdb1", "usb-1", "udev")
        assert next(stream)["event"]["kind"] == "detected"
        board.card_finished("sdb1", {"outcome": "refused", "reason": "NO_ID_FOUND", "message": "m",
                                     "patient": PATIENT_FULL, "files": []})
        snap = next(stream)
        assert snap["recent"][0]["reason"] == "NO_ID_FOUND" and PATIENT_FULL not in json.dumps(snap)
    assert list(stream) == [], "the stream ends when the daemon goes away"
    assert board._subscribers == []


# A desktop user's command as the package runs it: the entry point without --socket or
# --config, by the system's Python (the user cannot reach root's development .venv).
AS_DESKTOP_USER = """
import sys
sys.path.insert(0, sys.argv[1])
from agent.cli import main
sys.exit(main(sys.argv[2:]))
"""
REPO = pathlib.Path(__file__).resolve().parent.parent


def desktop_user_runs(base, *argv, env: dict) -> subprocess.CompletedProcess:
    runtime = base / "xdg-runtime"  # the user's own $XDG_RUNTIME_DIR: no daemon there
    runtime.mkdir(exist_ok=True)
    return subprocess.run(["/usr/bin/python3", "-c", AS_DESKTOP_USER, str(REPO), *argv],
                          capture_output=True, text=True, user=NOBODY, group=OTHER_GID, extra_groups=[NOBODY],
                          env={"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime), **env},
                          timeout=60, cwd="/")


@needs_root
def test_a_desktop_user_in_the_control_group_finds_the_system_daemon(base):
    """Issue 17: notify-relay from the XDG autostart entry and the EHR's `expect` run
    without --socket; they must find the system daemon's socket named in its config
    (/etc/bildsluss/agent.toml; here $BILDSLUSS_AGENT_CONFIG), not one under the user's
    $XDG_RUNTIME_DIR."""
    sock = base / "run" / "control.sock"
    system_config = base / "agent.toml"
    system_config.write_text(f'[daemon]\ncontrol_socket = "{sock}"\ncontrol_group = "nogroup"\n')
    system_config.chmod(0o644)
    env = {"BILDSLUSS_AGENT_CONFIG": str(system_config)}
    with running(sock, allowed_gid=NOBODY) as server:
        status = desktop_user_runs(base, "status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["agent_id"] == "pc-1"
        expect = desktop_user_runs(base, "expect", "19121212-1212", env=env)
        assert expect.returncode == 0, expect.stderr
        assert server.contexts.peek().patient == PATIENT_FULL


def test_a_config_that_names_no_socket_means_the_system_daemons(tmp_path, monkeypatch):
    system_sock = tmp_path / "run" / "control.sock"
    monkeypatch.setattr(config_mod, "SYSTEM_CONTROL_SOCKET", system_sock)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    monkeypatch.setattr(config_mod.os, "geteuid", lambda: 1000)  # a desktop user
    packaged = tmp_path / "agent.toml"
    packaged.write_text('[agent]\nmode = "photo"\n')
    monkeypatch.setenv("BILDSLUSS_AGENT_CONFIG", str(packaged))
    # The system config exists: its daemon's default socket, even before the daemon is up.
    assert config_mod.client_control_socket(None) == system_sock
    assert config_mod.client_control_socket(packaged) == system_sock
    # No system config (a developer's machine): the user's own daemon first...
    monkeypatch.setenv("BILDSLUSS_AGENT_CONFIG", str(tmp_path / "absent.toml"))
    assert config_mod.client_control_socket(None) == tmp_path / "xdg" / "bildsluss" / "control.sock"
    # ...unless only the system daemon's socket is there.
    system_sock.parent.mkdir()
    system_sock.touch()
    assert config_mod.client_control_socket(None) == system_sock
