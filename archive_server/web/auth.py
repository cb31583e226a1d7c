"""Who is calling, for every endpoint: a bearer token (``Authorization:
Bearer TOKEN``, for programs) or the session cookie (for browsers), verified by
:meth:`archive_server.logins.Logins.authenticate` (refusals audited there).

The cookie is ``HttpOnly`` (no script reads it), ``Secure`` and
``SameSite=Strict`` (never sent with a request another site starts, which is
the first line against cross-site request forgery; forms add a CSRF token).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from archive_server.authz import Principal
from archive_server.logins import Issued
from archive_server.web.context import WebContext

SESSION_COOKIE = "bildsluss_session"
# The OIDC state while the browser is at the IdP. SameSite=Lax: the IdP's
# redirect back is a top-level navigation from another site.
OIDC_STATE_COOKIE = "bildsluss_oidc_state"


def ctx(conn: HTTPConnection) -> WebContext:
    context: WebContext = conn.app.state.ctx
    return context


def origin_of(conn: HTTPConnection) -> str:
    """The peer as gRPC writes it (``ipv4:10.1.2.3:5555``), for the audit and the
    throttle. Behind a trusted proxy uvicorn has put the forwarded address here."""
    if conn.client is None:
        return "unknown"
    host, port = conn.client.host, conn.client.port
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def token_of(conn: HTTPConnection) -> str | None:
    """The bearer token, else the session cookie."""
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return conn.cookies.get(SESSION_COOKIE) or None


async def authenticated(request: Request) -> Principal:
    """The logged-in user, or Unauthenticated (answered 401 by errors.py)."""
    context = ctx(request)
    principal: Principal = await run_in_threadpool(context.logins.authenticate, token_of(request),
                                                   origin_of(request))
    return principal


Endpoint = Callable[[Request, Principal], Awaitable[Response]]


def login_required(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that gets the authenticated principal as its second argument."""

    async def wrapped(request: Request) -> Response:
        return await endpoint(request, await authenticated(request))

    wrapped.__name__ = endpoint.__name__
    wrapped.__doc__ = endpoint.__doc__
    return wrapped


def set_session_cookie(response: Response, issued: Issued) -> None:
    max_age = max(0, int((issued.expires - issued.expires.now(issued.expires.tzinfo)).total_seconds()))
    response.set_cookie(SESSION_COOKIE, issued.token, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite="strict")


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
