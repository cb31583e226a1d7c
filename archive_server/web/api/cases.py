"""Cases.

    GET /api/v1/cases?patient=ID              the latest versions the user may read; confidential ones masked
    GET /api/v1/cases/{case_id}[?version=N]   one version (default the latest); a confidential case is refused
                                              (403 CONFIDENTIAL) unless opened in emergency in the browser
    GET /api/v1/cases/{case_id}/media/{sha256}  the stored bytes, audited as a read (case.media, use original)
"""
from __future__ import annotations

from collections.abc import Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from archive_server.authz import Principal
from archive_server.cases import media_of_case, normalise_patient, search_cases, show_case
from archive_server.errors import InvalidArgument
from archive_server.web import emergency
from archive_server.web.auth import ctx, login_required
from archive_server.web.pages.ids import case_id_of, sha_of

_BLOCK = 1 << 20
# Media types answered as they are; anything else goes out as bytes to save,
# so that nothing stored can be rendered as a page of this site.
_SHOWN_TYPES = ("image/", "video/", "audio/", "application/dicom")


@login_required
async def list_cases(request: Request, who: Principal) -> Response:
    context = ctx(request)
    text = request.query_params.get("patient")
    patient = normalise_patient(text, context.config.reserve_formats) if text else None
    found = await run_in_threadpool(search_cases, context.db, who, patient)
    return JSONResponse({"cases": found}, headers={"Cache-Control": "no-store"})


@login_required
async def get_case(request: Request, who: Principal) -> Response:
    case_id = await case_id_of(request, who)
    version_text = request.query_params.get("version")
    if version_text is not None and (not version_text.isdigit() or len(version_text) > 9):
        raise InvalidArgument("version must be a number")
    found = await run_in_threadpool(show_case, ctx(request).db, who, case_id,
                                    version=int(version_text) if version_text else None,
                                    emergency_reason=emergency.reason_for(request, case_id))
    return JSONResponse(found, headers={"Cache-Control": "no-store"})


@login_required
async def get_media(request: Request, who: Principal) -> Response:
    case_id, sha = await case_id_of(request, who), await sha_of(request, who)
    context = ctx(request)
    blobs = context.blobs
    assert blobs is not None
    media = await run_in_threadpool(media_of_case, context.db, who, case_id, sha, use="original",
                                    emergency_reason=emergency.reason_for(request, case_id))
    source = await run_in_threadpool(blobs.open, sha)

    def blocks() -> Iterator[bytes]:
        with source:
            while block := source.read(_BLOCK):
                yield block

    media_type = str(media["media_type"] or "")
    if not media_type.startswith(_SHOWN_TYPES) or media_type.startswith("image/svg"):
        media_type = "application/octet-stream"
    return StreamingResponse(blocks(), media_type=media_type, headers={
        "Cache-Control": "no-store", "Content-Length": str(media["size"]),
        "Content-Disposition": f'inline; filename="{sha[:16]}"'})


ROUTES = [
    Route("/cases", list_cases, methods=["GET"]),
    Route("/cases/{case_id}", get_case, methods=["GET"]),
    Route("/cases/{case_id}/media/{sha256}", get_media, methods=["GET"]),
]
