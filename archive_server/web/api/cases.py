"""Cases (issue 11 completes this area).

    GET /api/v1/cases?patient=ID   the latest versions the user may read; confidential ones masked
"""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from archive_server.authz import Principal
from archive_server.cases import normalise_patient, search_cases
from archive_server.web.auth import ctx, login_required


@login_required
async def list_cases(request: Request, who: Principal) -> Response:
    context = ctx(request)
    text = request.query_params.get("patient")
    patient = normalise_patient(text, context.config.reserve_formats) if text else None
    found = await run_in_threadpool(search_cases, context.db, who, patient)
    return JSONResponse({"cases": found}, headers={"Cache-Control": "no-store"})


ROUTES = [Route("/cases", list_cases, methods=["GET"])]
