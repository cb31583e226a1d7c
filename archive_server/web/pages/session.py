"""Logging in and out in the browser.

    GET  /          -> the search page (or the login page)
    GET  /login     the login form: local account, and the region's login when [oidc] is configured
    POST /login     a local login (CSRF double-submit); on to ``next``
    POST /logout    ends the session (CSRF); back to the login page

A wrong password answers the login page again with one sentence that never
says whether the user exists; the throttle's cool-down is shown in seconds.
"""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archive_server.authz import Unauthenticated
from archive_server.logins import Throttled
from archive_server.oidc import safe_next
from archive_server.web.auth import clear_session_cookie, ctx, origin_of, set_session_cookie, token_of
from archive_server.web.formdata import read_form, text_field
from archive_server.web.messages import text
from archive_server.web.pages.common import see_other
from archive_server.web.templating import render


def _login_page(request: Request, *, next_path: str, notice: str | None = None, error: str | None = None,
                status: int = 200, username: str = "") -> Response:
    return render(request, "login.html", status=status, next_path=next_path, notice=notice, error=error,
                  username=username, oidc=ctx(request).oidc is not None)


async def home(request: Request) -> Response:
    return see_other("/cases")


async def login_form(request: Request) -> Response:
    why = request.query_params.get("why")
    notice = {"expired": text("login.expired"), "out": text("login.logged_out")}.get(why or "")
    return _login_page(request, next_path=safe_next(request.query_params.get("next") or "/cases"), notice=notice)


async def login_post(request: Request) -> Response:
    form = await read_form(request, None)
    username, password = text_field(form, "username"), text_field(form, "password")
    next_path = safe_next(text_field(form, "next") or "/cases")
    try:
        issued = await run_in_threadpool(ctx(request).logins.login_local, username, password, origin_of(request))
    except Throttled as e:
        return _login_page(request, next_path=next_path, error=text("login.throttled", seconds=e.retry_after_s),
                           status=429, username=username)
    except Unauthenticated:
        return _login_page(request, next_path=next_path, error=text("login.failed"), status=401,
                           username=username)
    response = see_other(next_path)
    set_session_cookie(response, issued)
    return response


async def logout(request: Request) -> Response:
    await read_form(request, None)
    response = see_other("/login?why=out")
    if token_of(request):
        try:
            await run_in_threadpool(ctx(request).logins.logout, token_of(request), origin_of(request))
        except Unauthenticated:
            pass  # already ended: the browser forgets the cookie all the same
    clear_session_cookie(response)
    return response


ROUTES = [
    Route("/", home, methods=["GET"]),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login_post, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
