"""Cases.

    GET /api/v1/cases?patient=ID              the latest versions the user may read; confidential ones masked
    GET /api/v1/cases/{case_id}[?version=N]   one version (default the latest); a confidential case is refused
                                              (403 CONFIDENTIAL) unless opened in emergency in the browser
    GET /api/v1/cases/{case_id}/media/{sha256}  the stored bytes, audited as a read (case.media, use original);
                                              one Range (bytes=…) is answered 206, so a <video> can seek
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
    size = int(media["size"])
    wanted = byte_range(request.headers.get("range"), size)
    if wanted == "unsatisfiable":
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}", "Cache-Control": "no-store"})
    start, end = wanted if isinstance(wanted, tuple) else (0, size - 1)
    source = await run_in_threadpool(blobs.open, sha)

    def blocks() -> Iterator[bytes]:
        with source:
            if start and source.seekable():
                source.seek(start)
            else:  # a store that only streams (S3): read past what was not asked for
                skip = start
                while skip and (block := source.read(min(_BLOCK, skip))):
                    skip -= len(block)
            left = end - start + 1
            while left > 0 and (block := source.read(min(_BLOCK, left))):
                left -= len(block)
                yield block

    media_type = str(media["media_type"] or "")
    if not media_type.startswith(_SHOWN_TYPES) or media_type.startswith("image/svg"):
        media_type = "application/octet-stream"
    headers = {"Cache-Control": "no-store", "Content-Length": str(end - start + 1), "Accept-Ranges": "bytes",
               "Content-Disposition": f'inline; filename="{sha[:16]}"'}
    if isinstance(wanted, tuple):
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(blocks(), status_code=206 if isinstance(wanted, tuple) else 200,
                             media_type=media_type, headers=headers)


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """One ``Range: bytes=…`` (what a <video> element asks to seek) as (first,
    last) inclusive; None for the whole (no header, several ranges, another
    unit: answered 200); "unsatisfiable" past the end (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[6:].strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) \
            or (last and not last.isdigit()):
        return None
    if not first:  # the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n and size else "unsatisfiable"
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end


ROUTES = [
    Route("/cases", list_cases, methods=["GET"]),
    Route("/cases/{case_id}", get_case, methods=["GET"]),
    Route("/cases/{case_id}/media/{sha256}", get_media, methods=["GET"]),
]
