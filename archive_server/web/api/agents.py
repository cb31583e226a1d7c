"""The fleet for central operations (R21; right ``ops.read``).

    GET /api/v1/agents[?department=HSA-ID][&liveness=alive|silent|never_seen|revoked]
        {"agents": [...], "now": ISO}: every bound agent and every agent that
        spoke, as ``bildsluss-archive agents --json`` prints them
    GET /api/v1/agents/{agent_id}
        one agent, with ``history`` (newest first: first_heartbeat, returned,
        restarted, version, state, error)

The ops page polls the first every few seconds. Permitted reads are not
audited (no patient data; ``agents.fleet_for``), refusals are.
"""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from archive_server.agents import LIVENESS, agent_for, fleet_for
from archive_server.authz import Principal
from archive_server.errors import InvalidArgument
from archive_server.models import utcnow
from archive_server.web.auth import ctx, login_required


@login_required
async def list_fleet(request: Request, who: Principal) -> Response:
    department = request.query_params.get("department", "").strip().upper() or None
    liveness = request.query_params.get("liveness") or None
    if liveness is not None and liveness not in LIVENESS:
        raise InvalidArgument(f"liveness must be one of {', '.join(LIVENESS)}")
    now = utcnow()
    agents = await run_in_threadpool(fleet_for, ctx(request).db, who, department, now)
    if liveness is not None:
        agents = [a for a in agents if a["liveness"] == liveness]
    return JSONResponse({"agents": agents, "now": now.isoformat()}, headers={"Cache-Control": "no-store"})


@login_required
async def one_agent(request: Request, who: Principal) -> Response:
    found = await run_in_threadpool(agent_for, ctx(request).db, who, request.path_params["agent_id"])
    return JSONResponse(found, headers={"Cache-Control": "no-store"})


ROUTES = [
    Route("/agents", list_fleet, methods=["GET"]),
    Route("/agents/{agent_id}", one_agent, methods=["GET"]),
]
