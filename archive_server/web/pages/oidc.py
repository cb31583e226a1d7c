"""Logging in through the region's identity provider (``archive_server.oidc``).

    GET /auth/oidc/login?next=/path   -> 302 to the IdP (state cookie set)
    GET /auth/oidc/callback           <- the IdP's redirect: the session cookie, then on to next

The callback answers a small page that moves on to ``next`` itself (a
same-site navigation, so the ``SameSite=Strict`` cookie goes with it); a
program that asks for ``application/json`` gets ``{"token", "expires", "user",
"next"}`` instead.
"""
from __future__ import annotations

import html

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from archive_server.errors import FailedPrecondition
from archive_server.oidc import OidcClient, begin_login, complete_login
from archive_server.web.auth import OIDC_STATE_COOKIE, ctx, origin_of, set_session_cookie
from archive_server.web.context import WebContext


def _client(context: WebContext) -> OidcClient:
    if context.oidc is None:
        raise FailedPrecondition("login through an identity provider is not configured ([oidc] in archive.toml)")
    return context.oidc


async def start(request: Request) -> Response:
    context = ctx(request)
    begun = await run_in_threadpool(begin_login, context.logins, _client(context), request.query_params.get("next"))
    response = RedirectResponse(begun.url, status_code=302, headers={"Cache-Control": "no-store"})
    response.set_cookie(OIDC_STATE_COOKIE, begun.state, max_age=600, path="/auth/oidc/", secure=True,
                        httponly=True, samesite="lax")
    return response


async def callback(request: Request) -> Response:
    context = ctx(request)
    q = request.query_params
    issued, next_path = await run_in_threadpool(
        lambda: complete_login(context.logins, _client(context), state=q.get("state"),
                               browser_state=request.cookies.get(OIDC_STATE_COOKIE), code=q.get("code"),
                               error=q.get("error"), origin=origin_of(request)))
    if "application/json" in request.headers.get("accept", ""):
        response: Response = JSONResponse({"token": issued.token, "expires": issued.expires.isoformat(),
                                           "user": issued.user, "next": next_path})
    else:
        target = html.escape(next_path, quote=True)
        response = HTMLResponse(
            f'<!doctype html><html lang="sv"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="0;url={target}"><title>Inloggad</title></head>'
            f'<body><p>Inloggad som {html.escape(issued.user)}. <a href="{target}">Fortsätt</a></p></body></html>')
    response.headers["Cache-Control"] = "no-store"
    set_session_cookie(response, issued)
    response.delete_cookie(OIDC_STATE_COOKIE, path="/auth/oidc/", secure=True, httponly=True, samesite="lax")
    return response


ROUTES = [
    Route("/auth/oidc/login", start, methods=["GET"]),
    Route("/auth/oidc/callback", callback, methods=["GET"]),
]
