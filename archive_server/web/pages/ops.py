"""Central operations (R21): every agent on one page, and one page per agent.

    GET /ops                     the fleet: alive, silent (red), never seen, revoked;
                                 filterable; static/ops.js polls GET /api/v1/agents
                                 every few seconds and redraws the table
    GET /ops/agents/{agent_id}   one agent: what it does, its counts, cards in
                                 progress, refused cards with reason codes, history

Both need the right ``ops.read`` (``agents.fleet_for``: refusals audited).
"""
from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archive_server.agents import LIVENESS, agent_for, fleet_for
from archive_server.authz import Principal
from archive_server.web.auth import ctx
from archive_server.web.messages import text
from archive_server.web.pages.common import page
from archive_server.web.templating import render

# How often the page asks for the fleet again (milliseconds).
POLL_MS = 3000


def labels() -> dict[str, Any]:
    """The words ops.js writes into the table (kept in messages.py like every other)."""
    keys = ("updated", "stale", "none", "seconds_ago", "never", "count")
    columns = ("agent", "department", "liveness", "heartbeat", "version", "state", "work", "queue", "error",
               "refused", "spool", "certificate", "skew")
    return {**{k: text(f"ops.{k}") for k in keys},
            "liveness": {state: text(f"ops.liveness.{state}") for state in LIVENESS},
            "columns": {c: text(f"ops.col.{c}") for c in columns}}


@page
async def fleet_page(request: Request, who: Principal) -> Response:
    # Checked here too, so that a user without ops.read gets the refusal page, not an empty table.
    await run_in_threadpool(fleet_for, ctx(request).db, who)
    return render(request, "ops.html", who=who, labels=labels(), liveness=LIVENESS, poll_ms=POLL_MS,
                  department=request.query_params.get("department", ""))


@page
async def agent_page(request: Request, who: Principal) -> Response:
    agent = await run_in_threadpool(agent_for, ctx(request).db, who, request.path_params["agent_id"])
    return render(request, "ops_agent.html", who=who, agent=agent)


ROUTES = [
    Route("/ops", fleet_page, methods=["GET"]),
    Route("/ops/agents/{agent_id}", agent_page, methods=["GET"]),
]
