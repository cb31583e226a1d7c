"""Browser pages: HTML rendered from ``../templates`` (Jinja2), and the
OpenID Connect redirect flow. Each module exports ``ROUTES``; issue 11's
pages (search, case, administration, audit, ops) go beside ``oidc``."""
from __future__ import annotations

from starlette.routing import BaseRoute

from archive_server.web.pages import admin, audit, case, media, oidc, ops, search, session, teaching

ROUTES: list[BaseRoute] = [*session.ROUTES, *search.ROUTES, *case.ROUTES, *media.ROUTES, *admin.ROUTES, *audit.ROUTES, *ops.ROUTES, *teaching.ROUTES,
                           *oidc.ROUTES]
