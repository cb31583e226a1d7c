"""Cross-site request forgery: every form carries a token the page was given.

Logged in, the token is bound to the session: an HMAC-SHA256 of a fixed label
keyed by the session token, which lives only in the ``HttpOnly`` cookie. A
page of another site can neither read the cookie nor compute the token, and
every archive process on the same database computes the same one (no shared
secret to configure). Before login (the login form) it is a double-submit
token: a random value in a ``SameSite=Strict`` cookie that the form must echo.

The session cookie is ``SameSite=Strict`` as well, so a forged post arrives
without a session at all; the token is the second wall (an old browser, a
subdomain). A refused token is audited (``web.csrf``) and changes nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from archive_server.errors import ArchiveError

CSRF_COOKIE = "bildsluss_csrf"
FIELD = "csrf"
_LABEL = b"bildsluss web form v1"


class CsrfRefused(ArchiveError):
    """A form post without the token its page was given (forged, or a page
    from before a new login): nothing was done."""

    code = "PERMISSION_DENIED"

    def __init__(self) -> None:
        super().__init__("the form's security token is missing or wrong; reload the page and try again")
        self.reason = "CSRF_INVALID"


def _session(request: Request) -> str | None:
    from archive_server.web.auth import SESSION_COOKIE

    return request.cookies.get(SESSION_COOKIE) or None


def session_token(session: str) -> str:
    return hmac.new(session.encode("utf-8"), _LABEL, hashlib.sha256).hexdigest()


def token_for(request: Request) -> str:
    """The token forms on this page carry."""
    session = _session(request)
    if session is not None:
        return session_token(session)
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and len(existing) == 43:
        return existing
    fresh: str | None = getattr(request.state, "new_csrf", None)
    if fresh is None:
        fresh = secrets.token_urlsafe(32)
        request.state.new_csrf = fresh
    return fresh


def remember(request: Request, response: Response) -> None:
    """Set the pre-login cookie when :func:`token_for` made a new one."""
    fresh = getattr(request.state, "new_csrf", None)
    if fresh is not None:
        response.set_cookie(CSRF_COOKIE, fresh, path="/", secure=True, httponly=True, samesite="strict")


def check(request: Request, sent: str | None, *, session: str | None = None) -> None:
    """Raise CsrfRefused unless ``sent`` is the token of this browser's session
    (or, before login, of its pre-login cookie)."""
    session = session or _session(request)
    if session is not None:
        expected = session_token(session)
    else:
        expected = request.cookies.get(CSRF_COOKIE) or ""
    if not sent or not expected or not hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8")):
        raise CsrfRefused()
