"""Log in and out.

    POST /api/v1/login    {"username", "password"} -> {"token", "expires", "user"} + the session cookie
    POST /api/v1/logout   ends the session of the bearer token or cookie; a replay is then refused
    GET  /api/v1/session  who is logged in, how, and until when
"""
from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from archive_server.authz import Principal
from archive_server.errors import InvalidArgument
from archive_server.web.auth import (
    clear_session_cookie, ctx, login_required, origin_of, set_session_cookie, token_of,
)

_MAX_BODY = 8192


async def login(request: Request) -> Response:
    # JSON only: a form post from another site cannot log a browser in.
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise InvalidArgument('send {"username": …, "password": …} as application/json')
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise InvalidArgument("request too large")
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidArgument("the body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("username"), str) \
            or not isinstance(data.get("password"), str):
        raise InvalidArgument('send {"username": …, "password": …} (both strings)')
    issued = await run_in_threadpool(ctx(request).logins.login_local, data["username"], data["password"],
                                     origin_of(request))
    response = JSONResponse({"token": issued.token, "expires": issued.expires.isoformat(), "user": issued.user},
                            headers={"Cache-Control": "no-store"})
    set_session_cookie(response, issued)
    return response


async def logout(request: Request) -> Response:
    principal = await run_in_threadpool(ctx(request).logins.logout, token_of(request), origin_of(request))
    response = JSONResponse({"logged_out": True, "user": principal.user}, headers={"Cache-Control": "no-store"})
    clear_session_cookie(response)
    return response


@login_required
async def session(request: Request, who: Principal) -> Response:
    token = token_of(request)
    assert token is not None
    return JSONResponse(await run_in_threadpool(ctx(request).logins.session_of, token),
                        headers={"Cache-Control": "no-store"})


ROUTES = [
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/session", session, methods=["GET"]),
]
