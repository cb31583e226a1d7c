"""Serve the web application with uvicorn in a thread of the archive process.

The socket is bound before the thread starts, so a taken port fails ``serve``
at once and port 0 is resolved for ``http listening on HOST:PORT``. TLS uses
the gRPC server's certificate and key (``--tls-cert``/``--tls-key``); users
present no client certificate. Without TLS the address must be loopback
(checked by ``server.check_transport``). uvicorn's access log is off: its
lines would carry query strings (a patient's number); ``app.BaseHeaders``
logs the path only. Forwarded headers are believed only from
``http_trusted_proxies``.
"""
from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from archive_server.config import ArchiveConfig, parse_listen
from archive_server.errors import Unavailable
from archive_server.web.app import create_app
from archive_server.web.context import WebContext

log = logging.getLogger(__name__)


class HttpServer:
    def __init__(self, context: WebContext, config: ArchiveConfig) -> None:
        assert config.http is not None
        self.config = config
        self.host, port = parse_listen(config.http)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((self.host, port))
        except OSError as e:
            self.sock.close()
            raise Unavailable(f"cannot listen on {config.http} (--http): {e.strerror}") from None
        self.port = self.sock.getsockname()[1]
        tls = config.tls
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(context), log_config=None, access_log=False, lifespan="off",
            ssl_certfile=str(tls.cert) if tls.enabled else None, ssl_keyfile=str(tls.key) if tls.enabled else None,
            proxy_headers=bool(config.http_trusted_proxies),
            forwarded_allow_ips=list(config.http_trusted_proxies) or None,
            timeout_graceful_shutdown=int(config.grace_period_s)))
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="http", daemon=True)
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise Unavailable(f"the HTTPS endpoint on {self.config.http} did not start (see the log)")
            self._thread.join(0.05)
        log.info("http started", extra={"http": self.address, "tls": self.config.tls.enabled})

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.config.grace_period_s + 5)
        self.sock.close()
