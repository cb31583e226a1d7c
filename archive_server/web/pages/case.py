"""One case in the browser (R13, R14, R17, R18).

    GET  /cases/{id}[?version=N]      the form, the media as thumbnails, the versions
    POST /cases/{id}/emergency        nödöppning of a confidential case, with a reason
    POST /cases/{id}/form             complete or correct the form (a reason; a signed case gets a new version)
    POST /cases/{id}/sign             sign (lock) the latest version
    POST /cases/{id}/print            the PDF, with a required reason
    GET  /cases/{id}/compare?a=N&b=M  two versions side by side

Each runs the domain function the command line runs (``cases``, ``versions``),
so the same ``authorize()`` decides and the same audit writer records. A
confidential case answers only "Konfidentiellt" and the emergency form until
the user has opened it with a reason (``web/emergency.py``).
"""
from __future__ import annotations

import pathlib
import tempfile
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archive_server import forms
from archive_server.authz import NotPermitted, Principal
from archive_server.cases import case_page, print_case, show_case
from archive_server.errors import InvalidArgument
from archive_server.versions import case_history, diff_versions, revise_case, sign_case
from archive_server.web import emergency
from archive_server.web.auth import ctx
from archive_server.web.formdata import read_form, text_field
from archive_server.web.messages import text
from archive_server.web.pages.common import page, see_other
from archive_server.web.pages.ids import case_id_of
from archive_server.web.templating import render

DONE = {"saved": "done.saved", "signed": "done.signed", "new_version": "done.new_version",
        "consent": "done.consent", "teaching": "done.teaching"}


def _int(text_value: str | None, name: str) -> int | None:
    if text_value is None or text_value == "":
        return None
    if not text_value.isdigit() or len(text_value) > 9:
        raise InvalidArgument(f"{name} must be a version number")
    return int(text_value)


def _field_rows(view: dict[str, Any], template: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The form's fields as the page shows and edits them."""
    if template is None:
        return []
    rows = []
    for field in template["fields"]:
        value = view["form"].get(field["name"])
        shown = forms.display(value)
        if field["type"] == "datetime" and isinstance(value, str):
            shown = value[:16]
        rows.append({**field, "value": shown, "label": field.get("label") or field["name"]})
    return rows


@page
async def show(request: Request, who: Principal) -> Response:
    case_id = await case_id_of(request, who)
    version = _int(request.query_params.get("version"), "version")
    reason = emergency.reason_for(request, case_id)
    context = ctx(request)
    try:
        shown = await run_in_threadpool(case_page, context.db, who, case_id, version=version,
                                        emergency_reason=reason)
    except NotPermitted as refused:
        if refused.reason != "CONFIDENTIAL":
            raise
        return render(request, "confidential.html", status=403, who=who, case_id=case_id)
    view = shown["case"]
    return render(request, "case.html", who=who, case=view, fields=_field_rows(view, shown["template"]),
                  template=shown["template"], versions=shown["versions"], emergency=reason is not None,
                  done=text(DONE[request.query_params["done"]]) if request.query_params.get("done") in DONE else None)


@page
async def open_in_emergency(request: Request, who: Principal) -> Response:
    case_id = await case_id_of(request, who)
    form = await read_form(request, who)
    reason = text_field(form, "reason").strip()[:emergency.MAX_REASON]
    # The opening itself is the audited emergency read (case.emergency_open, with the reason);
    # a missing reason or right is refused (and audited) here, and no cookie is set.
    await run_in_threadpool(show_case, ctx(request).db, who, case_id, emergency_reason=reason)
    response = see_other(f"/cases/{case_id}")
    emergency.grant(request, response, case_id, reason)
    return response


@page
async def save_form(request: Request, who: Principal) -> Response:
    case_id = await case_id_of(request, who)
    form = await read_form(request, who)
    context = ctx(request)
    reason = emergency.reason_for(request, case_id)
    shown = await run_in_threadpool(case_page, context.db, who, case_id, emergency_reason=reason)
    template = shown["template"]
    if template is None:
        raise InvalidArgument("the case has no form template")
    assignments = []
    for field in template["fields"]:
        sent = form.get(f"field.{field['name']}")
        if not isinstance(sent, str):
            continue
        try:
            changed = forms.parse_value(field, sent) != shown["case"]["form"].get(field["name"])
        except InvalidArgument:
            changed = True  # revise_case refuses it inside its audited operation
        if changed:
            assignments.append((field["name"], sent))
    result = await run_in_threadpool(
        lambda: revise_case(context.db, who, case_id, reason=text_field(form, "reason"), fields=assignments,
                            emergency_reason=reason, reserve_formats=context.config.reserve_formats))
    return see_other(f"/cases/{case_id}?done={'new_version' if result['new_version'] else 'saved'}")


@page
async def sign(request: Request, who: Principal) -> Response:
    case_id = await case_id_of(request, who)
    await read_form(request, who)
    await run_in_threadpool(sign_case, ctx(request).db, who, case_id,
                            emergency_reason=emergency.reason_for(request, case_id))
    return see_other(f"/cases/{case_id}?done=signed")


def _pdf(request: Request, who: Principal, case_id: str, reason: str) -> tuple[bytes, int]:
    context = ctx(request)
    assert context.blobs is not None
    # print_case writes a new file (as the command line does); a private temporary
    # folder holds it until it is answered, then it is gone.
    with tempfile.TemporaryDirectory(prefix="bildsluss-print-") as folder:
        out = pathlib.Path(folder) / "case.pdf"
        result = print_case(context.db, context.blobs, who, case_id, reason=reason, out=out,
                            emergency_reason=emergency.reason_for(request, case_id))
        return out.read_bytes(), int(result["version"])


@page
async def print_pdf(request: Request, who: Principal) -> Response:
    case_id = await case_id_of(request, who)
    form = await read_form(request, who)
    pdf, version = await run_in_threadpool(_pdf, request, who, case_id, text_field(form, "reason"))
    return Response(pdf, media_type="application/pdf", headers={
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="fall-{case_id}-v{version}.pdf"'})


@page
async def compare(request: Request, who: Principal) -> Response:
    case_id = await case_id_of(request, who)
    first = _int(request.query_params.get("a"), "a") or 1
    second = _int(request.query_params.get("b"), "b")
    context = ctx(request)
    reason = emergency.reason_for(request, case_id)
    history = await run_in_threadpool(case_history, context.db, who, case_id, emergency_reason=reason)
    second = second or history[-1]["version"]
    diff = await run_in_threadpool(diff_versions, context.db, who, case_id, first, second, emergency_reason=reason)
    by_number = {v["version"]: v for v in history}
    return render(request, "compare.html", who=who, case_id=case_id, diff=diff, left=by_number[first],
                  right=by_number[second], versions=[v["version"] for v in history])


ROUTES = [
    Route("/cases/{case_id}", show, methods=["GET"]),
    Route("/cases/{case_id}/emergency", open_in_emergency, methods=["POST"]),
    Route("/cases/{case_id}/form", save_form, methods=["POST"]),
    Route("/cases/{case_id}/sign", sign, methods=["POST"]),
    Route("/cases/{case_id}/print", print_pdf, methods=["POST"]),
    Route("/cases/{case_id}/compare", compare, methods=["GET"]),
]
