"""Finding cases (R13): the search page and the EHR's launch link.

    GET  /cases                                the search form
    POST /cases                                search by patient, department, date, status (CSRF)
    GET  /launch?patient=ID&department=HSA-ID  the EHR's "hopp ut": that patient's cases

The search is a post, so that a patient's number never stands in a URL (nor in
a proxy's log or the browser's history); only the launch link carries one,
because the EHR makes it. Both run ``cases.find_cases`` (case.read, audited
as ``case.search`` or ``case.launch``; an invalid number is refused and audited).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archive_server.authz import Principal
from archive_server.cases import find_cases
from archive_server.errors import InvalidArgument
from archive_server.web.auth import ctx
from archive_server.web.formdata import read_form, text_field
from archive_server.web.pages.common import page
from archive_server.web.templating import render


FIELDS = ("patient", "department", "since", "until", "status")


def _day(text: str, name: str) -> dt.datetime | None:
    if not text.strip():
        return None
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidArgument(f"{name} must be a date like 2026-03-01") from None
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def _search(request: Request, who: Principal, query: dict[str, str], action: str) -> dict[str, Any]:
    since = _day(query.get("since", ""), "from")
    until = _day(query.get("until", ""), "until")
    context = ctx(request)
    return find_cases(context.db, who, patient_text=query.get("patient", "").strip() or None,
                      department=query.get("department", "").strip().upper() or None, since=since,
                      until=until + dt.timedelta(days=1) if until else None,
                      status=query.get("status") or None, reserve_formats=context.config.reserve_formats,
                      action=action)


@page
async def search_form(request: Request, who: Principal) -> Response:
    return render(request, "search.html", who=who, query=dict.fromkeys(FIELDS, ""), found=None)


@page
async def search(request: Request, who: Principal) -> Response:
    form = await read_form(request, who)
    query = {k: text_field(form, k) for k in FIELDS}
    found = await run_in_threadpool(_search, request, who, query, "case.search")
    return render(request, "search.html", who=who, query=query, found=found)


@page
async def launch(request: Request, who: Principal) -> Response:
    query = {k: request.query_params.get(k, "") for k in FIELDS}
    if not query["patient"].strip():
        raise InvalidArgument("the launch link needs ?patient=NUMBER (and &department=HSA-ID)")
    found = await run_in_threadpool(_search, request, who, query, "case.launch")
    return render(request, "search.html", who=who, query=query, found=found, launched=True)


ROUTES = [
    Route("/cases", search_form, methods=["GET"]),
    Route("/cases", search, methods=["POST"]),
    Route("/launch", launch, methods=["GET"]),
]
