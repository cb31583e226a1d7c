"""Identifiers in page paths, checked before they reach the database: a case
id (a UUID, or what an older archive issued: at most 64 of [A-Za-z0-9-]) and a
SHA-256. Anything else is answered "not found", and the attempt audited."""
from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from archive_server.authz import Principal
from archive_server.errors import NotFound
from archive_server.web.formdata import audit_refusal

CASE_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


async def case_id_of(request: Request, who: Principal) -> str:
    case_id = str(request.path_params["case_id"])
    if not CASE_ID.match(case_id):
        error = NotFound("no such case: a case id is a UUID")
        await run_in_threadpool(audit_refusal, request, who, error)
        raise error
    return case_id


async def sha_of(request: Request, who: Principal) -> str:
    sha = str(request.path_params["sha256"])
    if not SHA256.match(sha):
        error = NotFound("no such media: a media id is a SHA-256 in 64 lower-case hex digits")
        await run_in_threadpool(audit_refusal, request, who, error)
        raise error
    return sha
