"""The system administrator's pages (R15–R17, issue 10's agent certificates).

    GET  /admin                          departments, users and grants, roles, confidential marks, agents
    POST /admin/departments              add or rename a department            (admin.departments)
    POST /admin/users                    give a user a role in a department    (admin.users)
    POST /admin/roles                    define or change a role (its rights)   (admin.roles)
    POST /admin/confidential             mark a patient's cases confidential, or lift it (case.mark_confidential)
    POST /admin/agents                   bind an uploaded PEM certificate to an agent (admin.agents)
    POST /admin/agents/{agent_id}/revoke revoke an agent's certificate          (admin.agents)

Each calls the function ``bildsluss-archive admin …`` calls, so the same
rights are checked (nobody hands out a right they lack) and every change is
audited. A section the user has no right to is not shown; its post is refused.
"""
from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archive_server import admin, agentcerts
from archive_server.authz import NotPermitted, Principal
from archive_server.cases import normalise_patient
from archive_server.errors import InvalidArgument
from archive_server.web.auth import ctx
from archive_server.web.formdata import read_form, text_field
from archive_server.web.pages.common import page, see_other
from archive_server.web.templating import render

MAX_PEM = 64 << 10


def _sections(request: Request, who: Principal) -> dict[str, Any]:
    """What the page lists: each list is its own audited read; one the user may not read is left out."""
    db = ctx(request).db
    loaders = {"departments": admin.list_departments, "users": admin.list_users, "roles": admin.list_roles,
               "agents": agentcerts.list_bindings}
    shown: dict[str, Any] = {}
    for name, load in loaders.items():
        try:
            shown[name] = load(db, who)
        except NotPermitted:
            shown[name] = None
    return shown


@page
async def overview(request: Request, who: Principal) -> Response:
    if not request.state.nav["admin"]:
        raise NotPermitted("NOT_PERMITTED", f"{who.actor} has no administration rights; ask a system administrator.")
    sections = await run_in_threadpool(_sections, request, who)
    done = request.query_params.get("done", "")[:80]
    return render(request, "admin.html", who=who, rights=admin.list_rights(), done=done or None, **sections)


@page
async def add_department(request: Request, who: Principal) -> Response:
    form = await read_form(request, who)
    result = await run_in_threadpool(admin.add_department, ctx(request).db, who, text_field(form, "hsa_id"),
                                     text_field(form, "name"))
    return see_other(f"/admin?done=department+{result}")


@page
async def grant(request: Request, who: Principal) -> Response:
    form = await read_form(request, who)
    result = await run_in_threadpool(admin.add_user, ctx(request).db, who, text_field(form, "username"),
                                     text_field(form, "department"), text_field(form, "role"))
    return see_other(f"/admin?done=user+{result}")


@page
async def define_role(request: Request, who: Principal) -> Response:
    form = await read_form(request, who)
    rights = [r for r in form.getlist("rights") if isinstance(r, str)]
    await run_in_threadpool(admin.add_role, ctx(request).db, who, text_field(form, "name"), rights)
    return see_other("/admin?done=role+saved")


@page
async def confidential(request: Request, who: Principal) -> Response:
    form = await read_form(request, who)
    context = ctx(request)
    patient = normalise_patient(text_field(form, "patient"), context.config.reserve_formats)
    on = text_field(form, "on") == "1"
    result = await run_in_threadpool(admin.set_confidential, context.db, who, patient, on)
    return see_other(f"/admin?done=confidential+{'on' if on else 'off'}+{result['cases']}+cases")


@page
async def bind_agent(request: Request, who: Principal) -> Response:
    form = await read_form(request, who, max_bytes=MAX_PEM + (16 << 10))
    upload = form.get("certificate")
    if not isinstance(upload, UploadFile):
        raise InvalidArgument("choose the agent's certificate (a PEM file) to upload")
    pem = await upload.read(MAX_PEM + 1)
    if len(pem) > MAX_PEM:
        raise InvalidArgument(f"a certificate file is at most {MAX_PEM >> 10} KiB")
    result = await run_in_threadpool(agentcerts.bind_agent, ctx(request).db, who, text_field(form, "agent_id"),
                                     text_field(form, "department"), pem)
    return see_other(f"/admin?done=agent+{result}")


@page
async def revoke_agent(request: Request, who: Principal) -> Response:
    await read_form(request, who)
    agent_id = str(request.path_params["agent_id"])[:128]
    result = await run_in_threadpool(agentcerts.revoke_agent, ctx(request).db, who, agent_id)
    return see_other(f"/admin?done=agent+{result}")


ROUTES = [
    Route("/admin", overview, methods=["GET"]),
    Route("/admin/departments", add_department, methods=["POST"]),
    Route("/admin/users", grant, methods=["POST"]),
    Route("/admin/roles", define_role, methods=["POST"]),
    Route("/admin/confidential", confidential, methods=["POST"]),
    Route("/admin/agents", bind_agent, methods=["POST"]),
    Route("/admin/agents/{agent_id}/revoke", revoke_agent, methods=["POST"]),
]
