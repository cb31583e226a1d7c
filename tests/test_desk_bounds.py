"""The status page and the control socket serve a bounded number of connections (issue 13).

A local program that opens hundreds of connections and sends nothing used to
get a thread for each, for as long as it liked. Now each service serves at most
its bound at once and answers one more at once with "busy" (HTTP 503, or
``BUSY`` on the socket) from the accepting thread; the other service, and the
same one once the crowd leaves, answer as before."""
from __future__ import annotations

import contextlib
import http.client
import json
import pathlib
import selectors
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from agent.desk import control as control_mod
from agent.desk import page as page_mod
from agent.desk.control import ControlServer, ask
from agent.desk.ehr_context import ContextStore
from agent.desk.page import StatusHttpServer
from agent.desk.status import StatusBoard


@pytest.fixture
def desk() -> Iterator[tuple[StatusHttpServer, ControlServer]]:
    board = StatusBoard("pc-1", "0.1.0", "SE2321000016-15CQ")
    contexts = ContextStore()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="bildsluss-bounds-"))
    page = StatusHttpServer("127.0.0.1:0", board, contexts=contexts)
    ctl = ControlServer(folder / "control.sock", board, contexts, allowed_gid=None, context_ttl_s=600.0)
    page.start()
    ctl.start()
    try:
        yield page, ctl
    finally:
        ctl.stop()
        page.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _answered(socks: list[socket.socket], want: int, seconds: float = 8.0) -> dict[socket.socket, bytes]:
    """What the sockets answered at once received: until ``want`` of them are (the
    others are held by the server until its client timeout), or ``seconds``."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    got: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(got) < want:
        for key, _ in sel.select(timeout=0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                got[sock] = sock.recv(4096)
            except OSError:
                got[sock] = b""
            sel.unregister(sock)
    sel.close()
    return got


def _get(page: StatusHttpServer, path: str = "/status.json") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _eventually(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


@contextlib.contextmanager
def _crowd(connect: Callable[[], socket.socket], n: int) -> Iterator[list[socket.socket]]:
    socks = [connect() for _ in range(n)]
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def test_the_status_page_serves_a_bounded_number_and_answers_busy_at_once(desk):
    page, ctl = desk
    bound, extra = page_mod.MAX_CLIENTS, 40
    threads_before = threading.active_count()
    with _crowd(lambda: socket.create_connection(("127.0.0.1", page.port)), bound + extra) as idle:
        answers = _answered(idle, extra)
        busy = [a for a in answers.values() if a.startswith(b"HTTP/1.1 503")]
        assert len(busy) == extra, f"{len(busy)} of {bound + extra} idle connections answered busy"
        assert all(b"Retry-After: 5" in a for a in busy)
        assert threading.active_count() - threads_before <= bound
        assert _get(page) == 503, "one more request is answered busy, not left hanging"
        # The rest of the daemon is unaffected: the control socket answers.
        assert ask(ctl.socket_path, {"op": "status"})["ok"] is True
    _eventually(lambda: _get(page) == 200, "the page serves again once the crowd left")


def test_the_control_socket_serves_a_bounded_number_and_answers_busy_at_once(desk):
    page, ctl = desk
    bound, extra = control_mod.MAX_CLIENTS, 20

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(ctl.socket_path))
        return s

    threads_before = threading.active_count()
    with _crowd(connect, bound + extra) as idle:
        answers = _answered(idle, extra)
        busy = [json.loads(a) for a in answers.values() if a]
        assert len(busy) == extra and {b["error"] for b in busy} == {"BUSY"}, busy
        assert threading.active_count() - threads_before <= bound
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as one_more:
            one_more.settimeout(5)
            one_more.connect(str(ctl.socket_path))
            assert json.loads(one_more.recv(4096))["error"] == "BUSY"
        assert _get(page) == 200, "the status page still answers"
    _eventually(lambda: ask(ctl.socket_path, {"op": "status"})["ok"] is True,
                "the control socket serves again once the crowd left")
