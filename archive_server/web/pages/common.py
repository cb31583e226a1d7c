"""What every page shares: :func:`page` (the logged-in user, or the login
page), the navigation the user's rights allow, and a redirect after a post."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from archive_server.authz import Principal, load_grants
from archive_server.web.auth import authenticated, ctx
from archive_server.web.context import WebContext

PageEndpoint = Callable[[Request, Principal], Awaitable[Response]]


def nav_for(context: WebContext, who: Principal) -> dict[str, bool]:
    """Which areas the navigation offers (the pages check again, through authorize())."""
    with context.db.read() as s:
        try:
            grants = load_grants(s, who)
        except Exception:  # an unknown user still sees the page that tells them so
            return {"admin": False, "audit": False, "stats": False, "ops": False, "teaching": False}
    admin_rights = ("admin.users", "admin.roles", "admin.departments", "admin.agents", "case.mark_confidential")
    return {"admin": any(grants.allows(r) for r in admin_rights), "audit": grants.allows("audit.read"),
            "stats": grants.allows("statistics.read"), "ops": grants.allows("ops.read"),
            "teaching": grants.allows("teaching.read")}


def page(endpoint: PageEndpoint) -> Callable[[Request], Awaitable[Response]]:
    """A page for a logged-in user; without a valid session, errors.py sends
    the browser to the login page (and back here afterwards)."""

    async def wrapped(request: Request) -> Response:
        who = await authenticated(request)
        request.state.who = who
        request.state.nav = await run_in_threadpool(nav_for, ctx(request), who)
        return await endpoint(request, who)

    wrapped.__name__ = endpoint.__name__
    wrapped.__doc__ = endpoint.__doc__
    return wrapped


def see_other(path: str) -> RedirectResponse:
    """After a successful post: the browser fetches ``path`` (no re-post on reload)."""
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})
