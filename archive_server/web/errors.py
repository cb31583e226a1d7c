"""The one place where archive errors become HTTP statuses (as
``archive_server.interceptor`` does for gRPC): a JSON body
``{"error": CODE, "reason": REASON, "message": SENTENCE}`` that a page can
show, ``WWW-Authenticate`` on 401 and ``Retry-After`` on 429."""
from __future__ import annotations

import logging

from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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


async def archive_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ArchiveError)
    status = STATUS.get(error.code, 500)
    response = error_response(status, error.code, str(error), getattr(error, "reason", None))
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="bildsluss"'
    if isinstance(error, Throttled):
        response.headers["Retry-After"] = str(error.retry_after_s)
    log.info("http refused", extra={"path": request.url.path, "status": status,
                                    "reason": getattr(error, "reason", error.code)})
    return response


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, "HTTP", str(error.detail))


async def internal_error(request: Request, error: Exception) -> Response:
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        log.warning("http failed: database unavailable", extra={"path": request.url.path})
        return error_response(503, "UNAVAILABLE", "database unavailable")
    log.exception("http failed", extra={"path": request.url.path})
    return error_response(500, "INTERNAL", "internal error in the archive (logged)")


HANDLERS = {ArchiveError: archive_error, HTTPException: http_error, Exception: internal_error}
