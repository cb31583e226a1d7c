"""Consent and the teaching collection (R20) in the browser.

    POST /cases/{id}/consent     store the patient's scanned written consent with the case (consent.record)
    POST /cases/{id}/teaching    de-identified copies of the case's images into the collection (teaching.copy)
    GET  /teaching               the collection (teaching.read)
    POST /teaching               add an information image, de-identified first (teaching.read)
    GET  /teaching/{item}/image  one item's picture (audited as teaching.read)
"""
from __future__ import annotations

import pathlib
import re
import tempfile

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archive_server import teaching
from archive_server.authz import Principal
from archive_server.cases import MAX_CONSENT_BYTES, record_consent
from archive_server.errors import InvalidArgument
from archive_server.web import emergency
from archive_server.web.auth import ctx
from archive_server.web.formdata import read_form, text_field
from archive_server.web.pages.common import page, see_other
from archive_server.web.pages.ids import CASE_ID, case_id_of
from archive_server.web.templating import render

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_UPLOAD = 32 << 20


async def _upload(form: object, name: str, limit: int) -> tuple[bytes, str]:
    upload = form.get(name)  # type: ignore[attr-defined]
    if not isinstance(upload, UploadFile):
        raise InvalidArgument("choose a file to upload")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise InvalidArgument(f"the file is larger than {limit >> 20} MiB")
    return data, _SAFE_NAME.sub("_", upload.filename or "document")[-100:] or "document"


@page
async def consent(request: Request, who: Principal) -> Response:
    case_id = await case_id_of(request, who)
    form = await read_form(request, who, max_bytes=MAX_CONSENT_BYTES + (64 << 10))
    data, name = await _upload(form, "document", MAX_CONSENT_BYTES)
    context = ctx(request)
    blobs = context.blobs
    assert blobs is not None

    def store() -> None:
        with tempfile.TemporaryDirectory(prefix="bildsluss-consent-") as folder:
            document = pathlib.Path(folder) / name
            document.write_bytes(data)
            record_consent(context.db, blobs, who, case_id, document,
                           emergency_reason=emergency.reason_for(request, case_id))

    await run_in_threadpool(store)
    return see_other(f"/cases/{case_id}?done=consent")


@page
async def copy_case(request: Request, who: Principal) -> Response:
    case_id = await case_id_of(request, who)
    form = await read_form(request, who)
    context = ctx(request)
    blobs = context.blobs
    assert blobs is not None
    await run_in_threadpool(lambda: teaching.copy_case(context.db, blobs, who, case_id,
                                                       title=text_field(form, "title")))
    return see_other(f"/cases/{case_id}?done=teaching")


@page
async def collection(request: Request, who: Principal) -> Response:
    items = await run_in_threadpool(teaching.list_items, ctx(request).db, who)
    return render(request, "teaching.html", who=who, items=items, added=request.query_params.get("added") == "1")


@page
async def add_information(request: Request, who: Principal) -> Response:
    form = await read_form(request, who, max_bytes=MAX_UPLOAD + (64 << 10))
    data, _ = await _upload(form, "image", MAX_UPLOAD)
    context = ctx(request)
    blobs = context.blobs
    assert blobs is not None
    await run_in_threadpool(lambda: teaching.add_information(context.db, blobs, who, data,
                                                             title=text_field(form, "title")))
    return see_other("/teaching?added=1")


@page
async def image(request: Request, who: Principal) -> Response:
    item_id = str(request.path_params["item_id"])
    if not CASE_ID.match(item_id):
        raise InvalidArgument("a teaching item id is a UUID")
    context = ctx(request)
    blobs = context.blobs
    assert blobs is not None
    data, media_type = await run_in_threadpool(teaching.item_bytes, context.db, blobs, who, item_id)
    return Response(data, media_type=media_type if media_type.startswith("image/") else "application/octet-stream",
                    headers={"Cache-Control": "no-store"})


ROUTES = [
    Route("/cases/{case_id}/consent", consent, methods=["POST"]),
    Route("/cases/{case_id}/teaching", copy_case, methods=["POST"]),
    Route("/teaching", collection, methods=["GET"]),
    Route("/teaching", add_information, methods=["POST"]),
    Route("/teaching/{item_id}/image", image, methods=["GET"]),
]
