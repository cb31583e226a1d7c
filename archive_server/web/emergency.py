"""Nödöppning in the browser (R17): after a user has opened a confidential
case with a reason, the pages and pictures of that case carry the reason on
every read, so each is audited as emergency access with it.

The reason is kept in a cookie per case, ``HttpOnly``, ``SameSite=Strict``,
signed with an HMAC keyed by the session token (so it is worthless in another
session and cannot be made by a script) and ending after
:data:`EMERGENCY_S`. Nothing is stored on the server: every archive process
on the same database honours it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from starlette.requests import HTTPConnection
from starlette.responses import Response

from archive_server.web.auth import SESSION_COOKIE

EMERGENCY_S = 15 * 60
MAX_REASON = 500
_LABEL = b"bildsluss emergency v1|"


def _name(case_id: str) -> str:
    return "bildsluss_nod_" + "".join(c for c in case_id if c.isalnum())[:40]


def _mac(session: str, case_id: str, body: str) -> str:
    return hmac.new(session.encode(), _LABEL + case_id.encode() + b"|" + body.encode(), hashlib.sha256).hexdigest()


def grant(conn: HTTPConnection, response: Response, case_id: str, reason: str) -> None:
    session = conn.cookies.get(SESSION_COOKIE)
    if not session:
        return
    body = base64.urlsafe_b64encode(json.dumps({"r": reason[:MAX_REASON], "exp": int(time.time()) + EMERGENCY_S},
                                               ensure_ascii=True).encode()).decode()
    response.set_cookie(_name(case_id), f"{body}.{_mac(session, case_id, body)}", max_age=EMERGENCY_S, path="/",
                        secure=True, httponly=True, samesite="strict")


def reason_for(conn: HTTPConnection, case_id: str) -> str | None:
    """The emergency reason this browser gave for ``case_id`` in this session, if still valid."""
    session, value = conn.cookies.get(SESSION_COOKIE), conn.cookies.get(_name(case_id))
    if not session or not value or "." not in value:
        return None
    body, mac = value.rsplit(".", 1)
    if not hmac.compare_digest(mac, _mac(session, case_id, body)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body.encode()))
    except ValueError:
        return None
    if not isinstance(data, dict) or int(data.get("exp", 0)) < time.time() or not str(data.get("r", "")).strip():
        return None
    return str(data["r"])
