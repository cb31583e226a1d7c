"""The web application's factory: routes, error handlers, middleware."""
from __future__ import annotations

import logging
import time

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from archive_server.web import api, metrics, pages
from archive_server.web.context import WebContext
from archive_server.web.errors import HANDLERS
from archive_server.web.templating import STATIC

log = logging.getLogger(__name__)


def create_app(context: WebContext) -> Starlette:
    """The ASGI app over ``context`` (also usable in-process by tests)."""
    static = Mount("/static", app=StaticFiles(directory=STATIC), name="static")
    app = Starlette(routes=[*api.ROUTES, *pages.ROUTES, *metrics.ROUTES, static],
                    exception_handlers=dict(HANDLERS))
    app.state.ctx = context
    app.add_middleware(BaseHeaders, hsts=context.tls)
    return app


# Scripts, styles and pictures from this archive only: no inline script, no
# other site, never inside another site's frame; forms post only here.
CSP = (b"default-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'; base-uri 'none'; "
       b"form-action 'self'; frame-ancestors 'none'")


class BaseHeaders:
    """Headers every answer carries, and one log line per request: method,
    path (never the query, which may hold a patient's number), status, time."""

    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                      (b"x-frame-options", b"DENY"), (b"content-security-policy", CSP)]
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
