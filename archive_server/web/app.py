"""The web application's factory: routes, error handlers, middleware."""
from __future__ import annotations

import logging
import time

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from archive_server.web import api, pages
from archive_server.web.context import WebContext
from archive_server.web.errors import HANDLERS

log = logging.getLogger(__name__)


def create_app(context: WebContext) -> Starlette:
    """The ASGI app over ``context`` (also usable in-process by tests)."""
    app = Starlette(routes=[*api.ROUTES, *pages.ROUTES], exception_handlers=dict(HANDLERS))
    app.state.ctx = context
    app.add_middleware(BaseHeaders, hsts=context.tls)
    return app


class BaseHeaders:
    """Headers every answer carries, and one log line per request: method,
    path (never the query, which may hold a patient's number), status, time."""

    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                      (b"x-frame-options", b"DENY")]
        if hsts:
            self.extra.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *self.extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            log.info("http", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                    "ms": int((time.monotonic() - start) * 1000)})
