"""The JSON API under ``/api/v1/``: one module per area, each exporting
``ROUTES``; every endpoint but login authenticates with :func:`auth.login_required`."""
from __future__ import annotations

from starlette.routing import BaseRoute, Mount

from archive_server.web.api import agents, cases, openapi, session

PREFIX = "/api/v1"
ROUTES: list[BaseRoute] = [Mount(PREFIX, routes=[*session.ROUTES, *cases.ROUTES, *agents.ROUTES, *openapi.ROUTES])]
