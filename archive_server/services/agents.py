"""gRPC adapter of the AgentRegistry service (protos/bildsluss/v1/agents.proto).

Passes the gate (:class:`~archive_server.agentcerts.AgentGate`) and forwards
to :class:`~archive_server.agents.AgentRegistryCore`; errors become status
codes in :mod:`archive_server.interceptor`.
"""
from __future__ import annotations

import grpc

from archive_server.agentcerts import AgentGate
from archive_server.agents import AgentRegistryCore
from archive_server.services.peer import peer_of
from bildsluss.v1 import agents_pb2 as pb
from bildsluss.v1 import agents_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AgentRegistry"].full_name  # "bildsluss.v1.AgentRegistry"


class AgentRegistryServicer(pb_grpc.AgentRegistryServicer):
    def __init__(self, core: AgentRegistryCore, gate: AgentGate) -> None:
        self.core = core
        self.gate = gate

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        with self.gate.call(peer_of(context), "AgentRegistry.Heartbeat") as caller:
            return self.core.heartbeat(request, caller)
