"""``GET /metrics``: the archive's Prometheus metrics (:mod:`archive_server.metrics`).

Not a user's page: Prometheus scrapes it with no login. With
``metrics_token_file`` set it answers only ``Authorization: Bearer TOKEN``
(compared in constant time); without one, only clients on a loopback
address (a Prometheus or an exporter on the archive's own host). Refusals
are 401 / 403 with the usual JSON body and nothing else: the metrics name
agents and departments, never a patient, but they map the region's capture
PCs, so they are not for anyone on the network.
"""
from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archive_server.web.auth import ctx
from archive_server.web.errors import error_response
from bildsluss_common.net import is_loopback_host


async def metrics(request: Request) -> Response:
    context = ctx(request)
    if context.metrics is None:
        return error_response(404, "NOT_FOUND", "metrics are not served here")
    if context.metrics_token is not None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 context.metrics_token.encode()):
            response = error_response(401, "UNAUTHENTICATED", "send the metrics token: Authorization: Bearer TOKEN "
                                                              "(metrics_token_file)", "METRICS_TOKEN")
            response.headers["WWW-Authenticate"] = 'Bearer realm="bildsluss-metrics"'
            return response
    elif request.client is None or not is_loopback_host(request.client.host):
        return error_response(403, "PERMISSION_DENIED", "without metrics_token_file, /metrics answers loopback "
                                                        "clients only", "METRICS_LOOPBACK_ONLY")
    body = await run_in_threadpool(context.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


ROUTES = [Route("/metrics", metrics, methods=["GET"])]
