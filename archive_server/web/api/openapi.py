"""The API's description: ``GET /api/v1/openapi.json`` (OpenAPI 3.1).

Written by hand beside the endpoints (each module's docstring says the same
in prose); a test checks that every route under /api/v1 is described here. A
new endpoint adds its path to :data:`PATHS`.
"""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bildsluss_common import __version__

_ERROR = {"description": "refused or failed: {error, reason, message}",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ERRORS = {str(s): _ERROR for s in (400, 401, 403, 404, 409, 429, 500, 503)}
_CASE_ID = {"name": "case_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_JSON = {"content": {"application/json": {"schema": {"type": "object"}}}}

PATHS: dict[str, Any] = {
    "/login": {"post": {
        "summary": "Log in with a local account: a bearer token and the session cookie",
        "security": [],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["username", "password"],
            "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}}}},
        "responses": {"200": {"description": "token, expires, user", **_JSON}, **_ERRORS}}},
    "/logout": {"post": {"summary": "End the session of the token or cookie",
                         "responses": {"200": {"description": "logged out", **_JSON}, **_ERRORS}}},
    "/session": {"get": {"summary": "Who is logged in, how, until when",
                         "responses": {"200": {"description": "user, method, expires", **_JSON}, **_ERRORS}}},
    "/cases": {"get": {
        "summary": "The latest versions of the cases the user may read (case.read); confidential ones masked",
        "parameters": [{"name": "patient", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "personnummer, samordningsnummer or reservnummer, as typed"}],
        "responses": {"200": {"description": "{cases: [...]}; a confidential case is "
                                             "{case_id, confidential: true, display: Konfidentiellt}", **_JSON},
                      **_ERRORS}}},
    "/cases/{case_id}": {"get": {
        "summary": "One version of a case (audited as case.show); a confidential case is refused (CONFIDENTIAL)",
        "parameters": [_CASE_ID, {"name": "version", "in": "query", "required": False,
                                  "schema": {"type": "integer", "minimum": 1}}],
        "responses": {"200": {"description": "the case: form, status, media (sha256, kind, media_type, size)",
                              **_JSON}, **_ERRORS}}},
    "/cases/{case_id}/media/{sha256}": {"get": {
        "summary": "The stored bytes of a media item of the case (audited as case.media, use original)",
        "parameters": [_CASE_ID, {"name": "sha256", "in": "path", "required": True,
                                  "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
        "responses": {"200": {"description": "the bytes; Cache-Control: no-store",
                              "content": {"application/octet-stream": {}}},
                      "206": {"description": "one Range (bytes=first-last, first-, -suffix) of the bytes"},
                      "416": {"description": "the range lies past the end"}, **_ERRORS}}},
    "/agents": {"get": {
        "summary": "The fleet (ops.read): every bound agent and every agent that spoke, with liveness "
                   "(alive, silent, never_seen, revoked), version, department, state, cards in progress, queue, "
                   "last error, refused cards with reason codes, spool space, clock skew, certificate expiry",
        "parameters": [{"name": "department", "in": "query", "required": False, "schema": {"type": "string"}},
                       {"name": "liveness", "in": "query", "required": False,
                        "schema": {"enum": ["alive", "silent", "never_seen", "revoked"]}}],
        "responses": {"200": {"description": "{agents: [...], now}", **_JSON}, **_ERRORS}}},
    "/agents/{agent_id}": {"get": {
        "summary": "One agent of the fleet (ops.read) with its recent history, newest first",
        "parameters": [{"name": "agent_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the agent as in /agents, plus history: [{at, kind, detail}]",
                              **_JSON}, **_ERRORS}}},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bildsluss archive API", "version": __version__,
                 "description": "Every call is a logged-in user's, checked by the same authorize() as the "
                                "command line and audited. Authenticate with Authorization: Bearer TOKEN "
                                "(POST /login) or the session cookie of the web client."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "cookie": {"type": "apiKey", "in": "cookie", "name": "bildsluss_session"}},
            "schemas": {"Error": {"type": "object", "required": ["error", "reason", "message"], "properties": {
                "error": {"type": "string", "description": "the status family (PERMISSION_DENIED, NOT_FOUND, ...)"},
                "reason": {"type": "string", "description": "a stable reason code"},
                "message": {"type": "string", "description": "a sentence a person understands"}}}}},
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(document(), headers={"Cache-Control": "no-store"})


ROUTES = [Route("/openapi.json", openapi, methods=["GET"])]
