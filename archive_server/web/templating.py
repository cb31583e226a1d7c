"""HTML pages from Jinja2 templates (``templates/``), escaped by default.

:func:`render` gives every template ``t`` (the texts of ``messages.py``),
``csrf`` (the token every form carries), ``who`` (the logged-in user, when
known) and ``can`` (which areas the navigation may offer). Pages are never
cached: each answer carries ``Cache-Control: no-store``.
"""
from __future__ import annotations

import pathlib
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from archive_server.authz import Principal
from archive_server.numbers import decimal
from archive_server.web import csrf
from archive_server.web.messages import text

TEMPLATES = pathlib.Path(__file__).parent / "templates"
STATIC = pathlib.Path(__file__).parent / "static"

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_env.globals["t"] = text


def _display_time(value: str | None) -> str:
    """An ISO time as staff read it: 2026-03-14 09:30 (UTC from the archive; the
    page says nothing finer than minutes)."""
    if not value:
        return ""
    return value.replace("T", " ")[:16]


def _patient(value: str | None) -> str:
    """A 12-digit number as staff write it: YYYYMMDD-NNNN (others as stored)."""
    text = value or ""
    return f"{text[:8]}-{text[8:]}" if len(text) == 12 and text.isdigit() else text


_env.filters["when"] = _display_time
_env.filters["patient"] = _patient
_env.filters["decimal"] = decimal  # every decimal a person reads: "3,5 cm"


def render(request: Request, template_name: str, /, *, status: int = 200, who: Principal | None = None,
           **values: Any) -> HTMLResponse:
    token = csrf.token_for(request)
    body = _env.get_template(template_name).render(csrf=token, who=who, nav=getattr(request.state, "nav", None),
                                              **values)
    response = HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
    csrf.remember(request, response)
    return response
