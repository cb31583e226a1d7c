"""The local status page: what the agent is doing, for the person at the PC.

A small HTTP server (stdlib ``http.server`` in a thread: one page, a few
clients, no dependency worth adding) on a loopback address only:

    /             the page: per reader one big plain Swedish headline
                  ("Klart – kortet är tomt", "Nekat: …", "Arkivet nås inte –
                  använd inte kortet"), progress, the last outcomes
    /events       Server-Sent Events: the page's body, re-rendered on every
                  change of the board (the page swaps it in; no polling)
    /status.json  the board's snapshot, for scripts
    /metrics      Prometheus text format (:mod:`agent.desk.metrics`), for a
                  scraper on this PC
    /app.js, /style.css

The HTML is rendered here, escaped, from :func:`agent.desk.status.staff_view`, the
same words ``bildsluss-agent status`` prints; the script only swaps it in. No
patient number appears beyond the masked form (``19121212-****``): enough for
staff to notice a wrong label, nothing for a passer-by. Requests whose Host
header is not a loopback name are refused (DNS rebinding), and the page sends a
strict Content-Security-Policy.

Connections are bounded (issue 13): at most :data:`MAX_CLIENTS` are served at
once (open pages' event streams included); one more is answered ``503`` with
``Retry-After`` at once by the accepting thread and closed, so a local program
that opens hundreds of connections costs no more than that many threads. A
client that sends nothing is dropped after :data:`CLIENT_TIMEOUT_S`.
"""
from __future__ import annotations

import html
import http.server
import json
import logging
import queue
import socket
import threading
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from agent.desk.ehr_context import ContextStore
from agent.desk.metrics import AgentMetrics
from agent.desk.status import StatusBoard, staff_view
from bildsluss_common.identity.masking import mask_patient
from bildsluss_common.net import is_loopback_host, split_host_port

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
# A page open in a few browsers on one PC, plus scripts reading /status.json.
MAX_CLIENTS = 32
# A request's line and headers come at once from a browser; an idle keep-alive
# connection holds a slot only this long.
CLIENT_TIMEOUT_S = 10.0
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Retry-After: 5\r\nConnection: close\r\nContent-Length: 44\r\n\r\n"
         b"too many connections to the status page now\n")
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'",
}


def parse_loopback(address: str) -> tuple[str, int]:
    """``127.0.0.1:8787``, ``[::1]:8787`` or ``localhost:8787`` -> (host, port).
    ValueError for anything that is not a loopback address."""
    try:
        host, port = split_host_port(address)
    except ValueError as exc:
        raise ValueError(f"status_http: {exc}") from None
    if not is_loopback_host(host):
        raise ValueError(f"status_http {address!r}: the status page is served on a loopback address only "
                         "(127.0.0.1 or [::1]), never on the network")
    return ("127.0.0.1" if host == "localhost" else host), port


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The listen backlog: a burst of connections waits in the kernel to be
    # answered (served or busy), rather than having its handshakes dropped.
    request_queue_size = 128

    def __init__(self, host: str, port: int, page: "StatusHttpServer", max_clients: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.page = page
        self.slots = threading.BoundedSemaphore(max_clients)
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            # Answered here, without a thread: a few bytes into a fresh socket's buffer.
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class StatusHttpServer:
    def __init__(self, address: str, board: StatusBoard, *, contexts: ContextStore | None = None,
                 max_clients: int = MAX_CLIENTS, metrics: AgentMetrics | None = None) -> None:
        self.host, self._port = parse_loopback(address)
        self.metrics = metrics
        self.max_clients = max_clients
        self.board = board
        self.contexts = contexts
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self.stopping.clear()
        self._server = _Server(self.host, self._port, self, self.max_clients)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="status-http", daemon=True)
        self._thread.start()
        log.info("status page serving", extra={"url": self.url})

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def context_json(self) -> dict[str, Any] | None:
        ctx = self.contexts.peek() if self.contexts is not None else None
        if ctx is None:
            return None
        return {**ctx.to_json(), "patient": mask_patient(ctx.patient)}

    def render_body(self, snapshot: dict[str, Any]) -> str:
        return render_body(snapshot, self.context_json())


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT_S

    def log_message(self, fmt: str, *args: Any) -> None:  # structured, and quiet
        log.debug("status page request", extra={"request": fmt % args})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not _loopback_host(self.headers.get("Host", "")):
            self._send(421, "text/plain; charset=utf-8", b"the status page answers on 127.0.0.1 only\n")
            return
        page = self.server.page
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, "text/html; charset=utf-8",
                       render_page(page.board.snapshot(), page.context_json()).encode())
        elif path == "/status.json":
            body = {**page.board.snapshot(), "context": page.context_json()}
            self._send(200, "application/json", json.dumps(body, ensure_ascii=False).encode())
        elif path == "/events":
            self._events()
        elif path == "/metrics" and page.metrics is not None:
            self._send(200, CONTENT_TYPE_LATEST, page.metrics.render())
        elif path == "/app.js":
            self._send(200, "text/javascript; charset=utf-8", APP_JS.encode())
        elif path == "/style.css":
            self._send(200, "text/css; charset=utf-8", STYLE_CSS.encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in _HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        page = self.server.page
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        for key, value in _HEADERS.items():
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        updates = page.board.subscribe()
        last_write = time.monotonic()
        try:
            while not page.stopping.is_set():
                try:
                    # Short waits, so that stop() is never held up by an open page.
                    snapshot = updates.get(timeout=0.5)
                except queue.Empty:
                    if time.monotonic() - last_write >= KEEPALIVE_S:
                        self.wfile.write(b": keepalive\n\n")
                        self.wfile.flush()
                        last_write = time.monotonic()
                    continue
                # Progress can change many times a second: send only the newest.
                while True:
                    try:
                        snapshot = updates.get_nowait()
                    except queue.Empty:
                        break
                data = json.dumps({"seq": snapshot.get("seq"), "html": page.render_body(snapshot)},
                                  ensure_ascii=False)
                self.wfile.write(f"event: status\ndata: {data}\n\n".encode())
                self.wfile.flush()
                last_write = time.monotonic()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the browser went away
        finally:
            page.board.unsubscribe(updates)


def _loopback_host(host_header: str) -> bool:
    """The Host header names a loopback address (DNS rebinding is refused)."""
    try:
        host, _ = split_host_port(host_header)
    except ValueError:
        host = host_header  # no port given
    return is_loopback_host(host)


# -- rendering (plain data -> escaped HTML) --------------------------------------------------


def render_body(snapshot: dict[str, Any], context: dict[str, Any] | None = None) -> str:
    view = staff_view(snapshot, context)
    e = html.escape
    parts = [f'<p class="archive {e(view["archive"]["tone"])}">{e(view["archive"]["text"])}</p>']
    if view["context"]:
        parts.append(f'<p class="context {e(view["context"]["tone"])}">{e(view["context"]["text"])}</p>')
    for panel in view["panels"]:
        parts.append(f'<section class="reader {e(panel["tone"])}">')
        if panel["reader"]:
            parts.append(f'<p class="name">{e(panel["reader"])}</p>')
        parts.append(f'<h1>{e(panel["headline"])}</h1>')
        for key in ("progress", "text", "shown", "queued"):
            if panel.get(key):
                parts.append(f'<p class="{key}">{e(panel[key])}</p>')
        parts.append("</section>")
    if view["recent"]:
        parts.append('<h2>Senaste kort</h2><table class="recent">')
        for entry in view["recent"]:
            code = e(entry["reason"] or "")
            parts.append(f'<tr class="{e(entry["tone"])}"><td>{e(entry["at"])}</td>'
                         f'<td>{e(entry["headline"])}</td><td class="code">{code}</td></tr>')
        parts.append("</table>")
    counts = snapshot.get("counts") or {}
    parts.append(f'<p class="foot">Bildsluss {e(str(snapshot.get("agent_id", "")))} · '
                 f'{e(str(snapshot.get("department") or ""))} · version {e(str(snapshot.get("version", "")))} · '
                 f'{counts.get("archived", 0)} sparade, {counts.get("refused", 0)} nekade sedan start</p>')
    return "\n".join(parts)


def render_page(snapshot: dict[str, Any], context: dict[str, Any] | None = None) -> str:
    return f"""<!doctype html>
<html lang="sv">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Bildsluss – kortläsaren</title>
<link rel="stylesheet" href="/style.css">
<script src="/app.js" defer></script>
<noscript><meta http-equiv="refresh" content="5"></noscript>
</head>
<body>
<main id="status">
{render_body(snapshot, context)}
</main>
<p id="offline" hidden>Ingen kontakt med Bildsluss-programmet på den här datorn. Använd inte korten; kontakta IT.</p>
</body>
</html>
"""


APP_JS = """// Swap in the server-rendered status on every change (Server-Sent Events).
(function () {
  var main = document.getElementById("status");
  var offline = document.getElementById("offline");
  var events = new EventSource("/events");
  events.addEventListener("status", function (e) {
    var update = JSON.parse(e.data);
    main.innerHTML = update.html;  // rendered and escaped by the agent
    offline.hidden = true;
  });
  events.onerror = function () { offline.hidden = false; };  // EventSource reconnects by itself
})();
"""

STYLE_CSS = """
body { font-family: "DejaVu Sans", sans-serif; margin: 2rem; background: #fafafa; color: #111; }
h1 { font-size: 3rem; margin: 0.2rem 0; }
h2 { font-size: 1.4rem; margin-top: 2rem; }
.reader { border-radius: 0.6rem; padding: 1.2rem 1.6rem; margin: 1rem 0; border: 3px solid #999; }
.reader .name { font-size: 1rem; color: #555; margin: 0; }
.archive, .context { font-size: 1.3rem; padding: 0.6rem 1rem; border-radius: 0.4rem; border: 2px solid #999; }
.reader p { font-size: 1.5rem; margin: 0.4rem 0; }
.ok { background: #e3f6e3; border-color: #2e7d32; }
.busy { background: #e8f0fb; border-color: #1565c0; }
.refused { background: #fde8e8; border-color: #c62828; }
.warn { background: #fff4db; border-color: #ef8f00; }
.idle { background: #f2f2f2; border-color: #999; }
.recent { font-size: 1.1rem; border-collapse: collapse; }
.recent td { padding: 0.3rem 0.8rem; }
.recent .code { color: #666; font-family: monospace; }
#offline { font-size: 1.6rem; background: #fde8e8; padding: 1rem; }
.foot { color: #777; margin-top: 2rem; }
"""
