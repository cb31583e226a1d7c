"""A case's media in the browser: thumbnails, the full view, DICOM frames.

    GET /cases/{id}/media/{sha256}/thumb          a thumbnail (JPEG; PNG for DICOM and an audio waveform)
    GET /cases/{id}/media/{sha256}/preview        the full-view picture of a photo (a video's poster)
    GET /cases/{id}/media/{sha256}/frame/{n}      DICOM frame n (0-based) as PNG
    GET /cases/{id}/view/{sha256}                 the full view: zoom, play, step through frames
    POST /cases/{id}/view/{sha256}/annotations    the picture's annotation layer (annotations.py)

Pictures are made from the stored bytes by ``archive_server.previews`` in a
decoder worker process (``archive_server.decoding``; no metadata survives) and cached in memory; every answer is one audited read
(``case.media``, with its use) and carries ``Cache-Control: no-store``. A
video's picture is a frame of it, an audio recording's its waveform; both play
in the full view from the API's original bytes (``/api/v1/cases/{id}/media/{sha256}``).
"""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import json

from archive_server import previews
from archive_server.annotations import MAX_SHAPES, UNITS, annotate
from archive_server.authz import Principal
from archive_server.cases import media_of_case, read_media
from archive_server.errors import InvalidArgument
from archive_server.web import emergency
from archive_server.web.auth import ctx
from archive_server.web.formdata import read_form, text_field
from archive_server.web.pages.common import page, see_other
from archive_server.web.pages.ids import case_id_of, sha_of
from archive_server.web.templating import render

MAX_FRAME = 100_000


def _picture(request: Request, who: Principal, case_id: str, sha: str, use: str, frame: int) -> tuple[bytes, str]:
    context = ctx(request)
    assert context.blobs is not None
    media = media_of_case(context.db, who, case_id, sha, use=use,
                          emergency_reason=emergency.reason_for(request, case_id))
    key = (sha, f"{use}:{frame}")
    made = context.previews.get(key)
    if made is None:
        made = previews.made_apart(read_media(context.blobs, media), media["kind"], use, frame)
        context.previews.put(key, made)
    return made


async def _answer(request: Request, who: Principal, use: str, frame: int = 0) -> Response:
    case_id, sha = await case_id_of(request, who), await sha_of(request, who)
    body, content_type = await run_in_threadpool(_picture, request, who, case_id, sha, use, frame)
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


@page
async def thumb(request: Request, who: Principal) -> Response:
    return await _answer(request, who, "thumb")


@page
async def preview(request: Request, who: Principal) -> Response:
    return await _answer(request, who, "preview")


@page
async def frame(request: Request, who: Principal) -> Response:
    number = str(request.path_params["frame"])
    if not number.isdigit() or int(number) >= MAX_FRAME:
        raise InvalidArgument("a frame is a number from 0")
    return await _answer(request, who, "frame", int(number))


def _frames(request: Request, who: Principal, case_id: str, sha: str) -> tuple[dict[str, object], int]:
    context = ctx(request)
    assert context.blobs is not None
    media = media_of_case(context.db, who, case_id, sha, use="view",
                          emergency_reason=emergency.reason_for(request, case_id))
    count = previews.count_frames(read_media(context.blobs, media)) if media["kind"] == "dicom" else 0
    return media, count


@page
async def view(request: Request, who: Principal) -> Response:
    case_id, sha = await case_id_of(request, who), await sha_of(request, who)
    media, frames = await run_in_threadpool(_frames, request, who, case_id, sha)
    shown = request.query_params.get("frame", "0")
    current = int(shown) if shown.isdigit() and int(shown) < max(frames, 1) else 0
    return render(request, "view.html", who=who, case_id=case_id, media=media, frames=frames, frame=current,
                  shapes_json=json.dumps(media["annotations"], ensure_ascii=False), units=UNITS,
                  max_shapes=MAX_SHAPES, saved=request.query_params.get("saved") == "1")


@page
async def save_annotations(request: Request, who: Principal) -> Response:
    case_id, sha = await case_id_of(request, who), await sha_of(request, who)
    form = await read_form(request, who)
    try:
        shapes = json.loads(text_field(form, "shapes") or "[]")
    except ValueError:
        shapes = None  # refused (and audited) by annotate's check
    await run_in_threadpool(lambda: annotate(ctx(request).db, who, case_id, sha, shapes,
                                             reason=text_field(form, "reason"),
                                             emergency_reason=emergency.reason_for(request, case_id)))
    return see_other(f"/cases/{case_id}/view/{sha}?saved=1")


ROUTES = [
    Route("/cases/{case_id}/media/{sha256}/thumb", thumb, methods=["GET"]),
    Route("/cases/{case_id}/media/{sha256}/preview", preview, methods=["GET"]),
    Route("/cases/{case_id}/media/{sha256}/frame/{frame}", frame, methods=["GET"]),
    Route("/cases/{case_id}/view/{sha256}", view, methods=["GET"]),
    Route("/cases/{case_id}/view/{sha256}/annotations", save_annotations, methods=["POST"]),
]
