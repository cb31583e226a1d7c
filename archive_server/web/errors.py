"""The one place where archive errors become HTTP statuses (as
``archive_server.interceptor`` does for gRPC): a JSON body
``{"error": CODE, "reason": REASON, "message": SENTENCE}`` that a page can
show, ``WWW-Authenticate`` on 401 and ``Retry-After`` on 429."""
from __future__ import annotations

import logging

from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from archive_server.errors import ArchiveError
from archive_server.logins import Throttled

log = logging.getLogger(__name__)

STATUS = {
    "INVALID_ARGUMENT": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "FAILED_PRECONDITION": 409, "RESOURCE_EXHAUSTED": 429,
    "DATA_LOSS": 500, "INTERNAL": 500, "UNAVAILABLE": 503,
}


def error_response(status: int, code: str, message: str, reason: str | None = None) -> JSONResponse:
    response = JSONResponse({"error": code, "reason": reason or code, "message": message}, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def wants_html(request: Request) -> bool:
    """A browser's page (not the JSON API, not a program asking for JSON)."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def error_page(request: Request, status: int, code: str, message: str, reason: str | None) -> Response:
    """The error as a page; a page asked without a (valid) login goes to the
    login page, which comes back here afterwards."""
    if status == 401:
        from urllib.parse import urlencode

        # Only the launch link keeps its query (the patient's number, R-allowed there);
        # any other page comes back to its path.
        path = request.url.path if request.method == "GET" else "/"
        if path == "/launch" and request.url.query:
            path = f"{path}?{request.url.query}"
        query = {"next": path}
        if reason == "TOKEN_EXPIRED":
            query["why"] = "expired"
        return RedirectResponse(f"/login?{urlencode(query)}", status_code=303, headers={"Cache-Control": "no-store"})
    from archive_server.web.messages import reason_title
    from archive_server.web.templating import render

    return render(request, "error.html", status=status, who=getattr(request.state, "who", None),
                  title=reason_title(reason, status), message=message, reason=reason or code)


async def archive_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ArchiveError)
    status = STATUS.get(error.code, 500)
    reason = getattr(error, "reason", None)
    if wants_html(request):
        response = error_page(request, status, error.code, str(error), reason)
    else:
        response = error_response(status, error.code, str(error), reason)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="bildsluss"'
    if isinstance(error, Throttled):
        response.headers["Retry-After"] = str(error.retry_after_s)
    log.info("http refused", extra={"path": request.url.path, "status": status,
                                    "reason": getattr(error, "reason", error.code)})
    return response


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if wants_html(request):
        return error_page(request, error.status_code, "HTTP", str(error.detail), None)
    return error_response(error.status_code, "HTTP", str(error.detail))


async def internal_error(request: Request, error: Exception) -> Response:
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        log.warning("http failed: database unavailable", extra={"path": request.url.path})
        status, code, message = 503, "UNAVAILABLE", "database unavailable"
    else:
        log.exception("http failed", extra={"path": request.url.path})
        status, code, message = 500, "INTERNAL", "internal error in the archive (logged)"
    if wants_html(request):
        return error_page(request, status, code, message, None)
    return error_response(status, code, message)


HANDLERS = {ArchiveError: archive_error, HTTPException: http_error, Exception: internal_error}
