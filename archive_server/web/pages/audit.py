"""The log and statistics operator's pages (R16, R18).

    GET  /audit              the search form and the audit chain's verification state
    POST /audit              events by user, patient, department, action and period (audit.read)
    POST /audit/export       the same events as CSV
    GET  /statistics[?since=&until=]        per department and month (statistics.read)
    GET  /statistics.csv[?since=&until=]    the same as CSV

The searches are posts: a patient's number never stands in a URL. Every
read of the log is itself audited (``reports.py``), and so is each check of
the chain (``audit.verified``).
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archive_server import reports
from archive_server.authz import Principal
from archive_server.cases import normalise_patient
from archive_server.web.auth import ctx
from archive_server.web.formdata import read_form, text_field
from archive_server.web.pages.common import page
from archive_server.web.templating import render

FIELDS = ("user", "patient", "department", "action", "since", "until")
SHOWN = 500


def _until(text: str) -> dt.datetime | None:
    """An end date includes its whole day."""
    at = reports.parse_since(text)
    if at is not None and len(text.strip()) == 10:
        at += dt.timedelta(days=1)
    return at


def _events(request: Request, who: Principal, query: dict[str, str], newest: int | None) -> list[dict[str, Any]]:
    context = ctx(request)
    patient = normalise_patient(query["patient"], context.config.reserve_formats) if query["patient"] else None
    return reports.list_events(context.db, who, patient=patient, user=query["user"].strip() or None,
                               department=query["department"].strip().upper() or None,
                               action=query["action"].strip() or None, since=reports.parse_since(query["since"]),
                               until=_until(query["until"]), newest=newest)


def _chain(request: Request, who: Principal) -> Any:
    return reports.verify(ctx(request).db, who)


@page
async def audit_form(request: Request, who: Principal) -> Response:
    chain = await run_in_threadpool(_chain, request, who)
    return render(request, "audit.html", who=who, query=dict.fromkeys(FIELDS, ""), events=None, chain=chain)


@page
async def audit_search(request: Request, who: Principal) -> Response:
    form = await read_form(request, who)
    query = {k: text_field(form, k) for k in FIELDS}
    events = await run_in_threadpool(_events, request, who, query, SHOWN)
    chain = await run_in_threadpool(_chain, request, who)
    for event in events:
        event["details_text"] = json.dumps(event["details"], ensure_ascii=False, sort_keys=True)[:400]
    return render(request, "audit.html", who=who, query=query, events=list(reversed(events)), chain=chain)


def _csv(rows: list[dict[str, Any]], name: str) -> Response:
    for row in rows:
        if isinstance(row.get("details"), dict):
            row["details"] = json.dumps(row["details"], ensure_ascii=False, sort_keys=True)
    return Response(reports.to_csv(rows), media_type="text/csv; charset=utf-8", headers={
        "Cache-Control": "no-store", "Content-Disposition": f'attachment; filename="{name}"'})


@page
async def audit_export(request: Request, who: Principal) -> Response:
    form = await read_form(request, who)
    query = {k: text_field(form, k) for k in FIELDS}
    events = await run_in_threadpool(_events, request, who, query, None)
    return _csv(events, "granskningslogg.csv")


def _monthly(request: Request, who: Principal) -> tuple[list[dict[str, Any]], dict[str, str]]:
    query = {k: request.query_params.get(k, "") for k in ("since", "until")}
    rows = reports.monthly(ctx(request).db, who, since=reports.parse_since(query["since"]),
                           until=_until(query["until"]))
    return rows, query


@page
async def statistics(request: Request, who: Principal) -> Response:
    rows, query = await run_in_threadpool(_monthly, request, who)
    return render(request, "statistics.html", who=who, rows=rows, query=query)


@page
async def statistics_csv(request: Request, who: Principal) -> Response:
    rows, _ = await run_in_threadpool(_monthly, request, who)
    return _csv(rows, "statistik.csv")


ROUTES = [
    Route("/audit", audit_form, methods=["GET"]),
    Route("/audit", audit_search, methods=["POST"]),
    Route("/audit/export", audit_export, methods=["POST"]),
    Route("/statistics", statistics, methods=["GET"]),
    Route("/statistics.csv", statistics_csv, methods=["GET"]),
]
