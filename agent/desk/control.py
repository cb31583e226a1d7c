"""The daemon's local control socket (the commands that use it: :mod:`agent.desk.commands`).

A Unix stream socket (``[daemon] control_socket``) that speaks one JSON object
per line each way:

    {"op": "expect", "patient": "19121212-1212", "mode": "ultrasound", "ttl_s": 600}
      -> {"ok": true, "patient": "191212121212", "mode": "ultrasound", "expires_at": ..., ...}
    {"op": "status"}
      -> {"ok": true, "status": <StatusBoard.snapshot()>, "context": <masked context or null>}
    {"op": "subscribe"}
      -> {"ok": true, "status": <snapshot>} now and on every change, until either side closes
    errors -> {"ok": false, "error": "INVALID_ID" | "FORBIDDEN" | "BAD_REQUEST" | ..., "message": "..."}

Who may talk to it (R5: "only the logged-in user and the agent"): the socket
file is 0660, owned by the agent's user and ``control_group``, in a 0750
folder; and every connection's peer credentials (SO_PEERCRED) are checked:
root, the agent's own uid, or a member of ``control_group``. The EHR's launcher
runs as the logged-in user, who is put in that group.

At most :data:`MAX_CLIENTS` connections are served at once (a relay's
subscription included); one more is answered ``{"ok": false, "error": "BUSY"}``
by the accepting thread and closed, and a client that sends nothing is dropped
after :data:`CLIENT_TIMEOUT_S` (issue 13: a local program opening hundreds of
connections must not take the daemon's threads).

``expect`` validates the number (personnummer, samordningsnummer, or an enabled
reservnummer format) *before* the daemon takes it, and answers with the
canonical number and the expiry, so that the EHR side sees a typo at once.
"""
from __future__ import annotations

import contextlib
import errno
import grp
import json
import logging
import os
import pathlib
import pwd
import queue
import re
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from agent.desk.ehr_context import ContextStore
from agent.card.model import Mode
from agent.desk.status import StatusBoard
from bildsluss_common.identity.masking import mask_patient

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 4
EXIT_FORBIDDEN = 5
MAX_LINE = 64 * 1024
# A client that sends nothing for this long is dropped (the socket is local:
# a well-behaved client writes its one line at once).
CLIENT_TIMEOUT_S = 10.0
# The EHR launcher, the status command, a relay per logged-in user: a handful.
MAX_CLIENTS = 16
# Linux SO_PEERGROUPS (4.13+): the peer's supplementary groups. Not in the socket module.
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_UCRED = struct.Struct("3i")  # pid, uid, gid
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$", re.IGNORECASE)

NOT_RUNNING_SENTENCE = (
    "The Bildsluss agent is not running on this computer (no answer on {path}). "
    "Cards are not being imported; ask IT to start the bildsluss-agent service."
)


class ControlError(Exception):
    """The daemon could not be asked: ``exit_code`` says why (not running, forbidden)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve_group(name: str) -> int | None:
    """``[daemon] control_group`` -> its gid (None for ""). ValueError for an unknown group."""
    if not name:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"control_group {name!r} is not a group on this computer") from None


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``1h`` or plain seconds -> seconds. ValueError otherwise."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration like 90s, 10m or 1h")
    value = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[(m.group(2) or "s").lower()]
    if value <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than 0")
    return value


# -- the server --------------------------------------------------------------------


class ControlServer:
    def __init__(self, socket_path: pathlib.Path, board: StatusBoard, contexts: ContextStore, *,
                 allowed_gid: int | None, context_ttl_s: float, max_clients: int = MAX_CLIENTS) -> None:
        self.socket_path = pathlib.Path(socket_path)
        self._slots = threading.BoundedSemaphore(max_clients)
        self.board = board
        self.contexts = contexts
        self.allowed_gid = allowed_gid
        self.context_ttl_s = context_ttl_s
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._uid = os.geteuid()

    # lifecycle

    def start(self) -> None:
        self._prepare_directory()
        self._remove_stale_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.socket_path))
            # The folder is 0750, so nobody outside the group can reach the
            # socket between bind and chmod.
            os.chmod(self.socket_path, 0o660)
            if self.allowed_gid is not None:
                os.chown(self.socket_path, -1, self.allowed_gid)
            sock.listen(16)
            sock.settimeout(0.5)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()
        log.info("control socket listening", extra={"socket": str(self.socket_path),
                                                    "allowed_gid": self.allowed_gid})

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            # Wake the accept() at once with a connection of our own.
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake:
                wake.connect(str(self.socket_path))
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    def _prepare_directory(self) -> None:
        folder = self.socket_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        info = folder.stat()
        if info.st_uid == self._uid:
            # 0751: others may pass through it to the card mounts below (the
            # parser user), not list it; the socket itself is 0660 and peer-checked.
            os.chmod(folder, 0o751)
            if self.allowed_gid is not None:
                os.chown(folder, -1, self.allowed_gid)
        elif info.st_uid != 0:
            # Someone else's folder (e.g. a pre-created /tmp/bildsluss-UID) could
            # swap the socket for one of their own and read what `expect` sends.
            raise OSError(errno.EPERM, f"{folder} belongs to uid {info.st_uid}, not to the agent or root; "
                                       "refusing to put the control socket there")
        elif info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            raise OSError(errno.EPERM, f"{folder} is writable by anyone; refusing to put the control socket there")

    def _remove_stale_socket(self) -> None:
        try:
            info = self.socket_path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise OSError(errno.EEXIST, f"{self.socket_path} exists and is not a socket; not touching it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.socket_path))
        except OSError:
            self.socket_path.unlink()  # left by a daemon that died
            return
        finally:
            probe.close()
        raise OSError(errno.EADDRINUSE, f"another agent is already listening on {self.socket_path}")

    # serving

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("control socket accept failed")
                time.sleep(0.5)
                continue
            if self._stop.is_set():  # stop()'s own wake-up call
                conn.close()
                return
            if not self._slots.acquire(blocking=False):
                with conn:
                    _send_now(conn, {"ok": False, "error": "BUSY",
                                     "message": "the agent is answering too many connections; try again"})
                continue
            try:
                threading.Thread(target=self._handle_slot, args=(conn,), name="control-client",
                                 daemon=True).start()
            except BaseException:
                self._slots.release()
                conn.close()
                raise

    def _handle_slot(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        finally:
            self._slots.release()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(CLIENT_TIMEOUT_S)
            try:
                uid, gid, pid = self._peer(conn)
            except OSError:
                log.exception("could not read the control client's credentials")
                return
            user = _user_name(uid)
            if not self.allowed(conn, uid, gid):
                log.warning("control client refused", extra={"uid": uid, "user": user, "pid": pid})
                _send(conn, {"ok": False, "error": "FORBIDDEN",
                             "message": f"user {user} may not use the Bildsluss agent's control socket"})
                return
            try:
                for line in _lines(conn):
                    if _op(line) == "subscribe":
                        self._stream(conn)
                        return
                    _send(conn, self.answer(line, user))
            except (OSError, TimeoutError):
                return  # the client went away

    def _stream(self, conn: socket.socket) -> None:
        """``subscribe``: a status line now and one on every change, until either
        side stops (the desktop notification relay of the logged-in user)."""
        updates = self.board.subscribe()
        try:
            while not self._stop.is_set():
                try:
                    snapshot = updates.get(timeout=0.5)
                except queue.Empty:
                    continue
                _send(conn, {"ok": True, "status": snapshot})
        finally:
            self.board.unsubscribe(updates)

    @staticmethod
    def _peer(conn: socket.socket) -> tuple[int, int, int]:
        pid, uid, gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        return uid, gid, pid

    def allowed(self, conn: socket.socket | None, uid: int, gid: int) -> bool:
        """Root, the agent's own user, or a member of the allowed group."""
        if uid == 0 or uid == self._uid:
            return True
        if self.allowed_gid is None:
            return False
        if gid == self.allowed_gid:
            return True
        if conn is not None:
            groups = _peer_groups(conn)
            if groups is not None:
                return self.allowed_gid in groups
        # No SO_PEERGROUPS: fall back to the group's configured members.
        try:
            return _user_name(uid) in grp.getgrgid(self.allowed_gid).gr_mem
        except KeyError:
            return False

    def answer(self, line: bytes, user: str) -> dict[str, Any]:
        """One request line -> one answer (plain data; the socket part is above)."""
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "BAD_REQUEST", "message": "not a JSON object"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "BAD_REQUEST", "message": "not a JSON object"}
        op = request.get("op")
        if op == "status":
            ctx = self.contexts.peek()
            context = None
            if ctx is not None:
                context = {**ctx.to_json(), "patient": mask_patient(ctx.patient)}
            return {"ok": True, "status": self.board.snapshot(), "context": context}
        if op == "expect":
            return self._expect(request, user)
        return {"ok": False, "error": "BAD_REQUEST", "message": f"unknown op {op!r}; use expect or status"}

    def _expect(self, request: dict[str, Any], user: str) -> dict[str, Any]:
        patient = request.get("patient")
        if not isinstance(patient, str) or not patient.strip():
            return {"ok": False, "error": "BAD_REQUEST", "message": "expect needs a patient number"}
        mode = None
        if request.get("mode") is not None:
            try:
                mode = Mode(str(request["mode"]).lower())
            except ValueError:
                allowed = ", ".join(m.value for m in Mode)
                return {"ok": False, "error": "BAD_REQUEST",
                        "message": f"unknown mode {request['mode']!r}; use one of: {allowed}"}
        ttl = request.get("ttl_s")
        ttl = self.context_ttl_s if ttl is None else ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            return {"ok": False, "error": "BAD_REQUEST", "message": "ttl_s must be a number of seconds"}
        try:
            ctx = self.contexts.put(patient, mode, float(ttl), set_by=user)
        except ValueError as exc:
            return {"ok": False, "error": "INVALID_ID", "message": str(exc)}
        return {"ok": True, "patient": ctx.patient, "mode": ctx.mode.value if ctx.mode else None,
                "set_at": ctx.set_at, "expires_at": ctx.expires_at, "ttl_s": ctx.expires_at - ctx.set_at,
                "set_by": ctx.set_by}


def _op(line: bytes) -> object:
    try:
        request = json.loads(line)
    except ValueError:
        return None
    return request.get("op") if isinstance(request, dict) else None


def _peer_groups(conn: socket.socket) -> set[int] | None:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * 256)
    except OSError:
        return None
    return set(struct.unpack(f"{len(raw) // 4}i", raw[: len(raw) // 4 * 4]))


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def _lines(conn: socket.socket):
    buf = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line
        if len(buf) > MAX_LINE:
            _send(conn, {"ok": False, "error": "BAD_REQUEST", "message": "request line too long"})
            return


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message, ensure_ascii=False).encode() + b"\n")


def _send_now(conn: socket.socket, message: dict[str, Any]) -> None:
    """One line to a client the accepting thread will not wait for (it never blocks)."""
    try:
        conn.setblocking(False)
        conn.send(json.dumps(message, ensure_ascii=False).encode() + b"\n")
    except OSError:
        pass


# -- the client ----------------------------------------------------------------------


def _connect(socket_path: pathlib.Path, timeout_s: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(socket_path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise ControlError(NOT_RUNNING_SENTENCE.format(path=socket_path), EXIT_NOT_RUNNING) from None
    except PermissionError:
        sock.close()
        raise ControlError(
            f"You may not use the Bildsluss agent's control socket {socket_path}: your user is not in "
            "the agent's control group. Ask IT to add you.", EXIT_FORBIDDEN) from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"{NOT_RUNNING_SENTENCE.format(path=socket_path)} ({exc.strerror})",
                           EXIT_NOT_RUNNING) from None
    return sock


def _refused(answer: dict[str, Any]) -> ControlError:
    return ControlError(f"The Bildsluss agent refused: {answer.get('message')}. Ask IT to add your user "
                        "to the agent's control group.", EXIT_FORBIDDEN)


def watch(socket_path: pathlib.Path, stop: threading.Event) -> Iterator[dict[str, Any]]:
    """The daemon's status snapshots as they change (``subscribe``), until the
    daemon goes away or ``stop`` is set. ControlError as for :func:`ask`."""
    with _connect(socket_path, 10.0) as sock:
        try:
            _send(sock, {"op": "subscribe"})
        except BrokenPipeError:
            pass  # refused before it read the request: the answer is waiting
        sock.settimeout(0.5)
        buf = b""
        while not stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                answer = json.loads(line)
                if not answer.get("ok"):
                    if answer.get("error") == "FORBIDDEN":
                        raise _refused(answer)
                    return
                yield answer["status"]


def ask(socket_path: pathlib.Path, request: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon and return its answer. ControlError when
    the daemon is not running or refuses this user."""
    with _connect(socket_path, timeout_s) as sock:
        try:
            try:
                _send(sock, request)
            except BrokenPipeError:
                pass  # refused before it read the request: the answer is waiting
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except (OSError, TimeoutError) as exc:
            raise ControlError(f"The Bildsluss agent did not answer on {socket_path} ({exc}).",
                               EXIT_NOT_RUNNING) from None
    if not reply:
        raise ControlError(f"The Bildsluss agent closed {socket_path} without answering.", EXIT_NOT_RUNNING)
    answer = json.loads(reply)
    if not answer.get("ok") and answer.get("error") == "FORBIDDEN":
        raise _refused(answer)
    return answer
