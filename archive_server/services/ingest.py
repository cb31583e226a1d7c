"""gRPC adapter of the Ingest service (protos/bildsluss/v1/ingest.proto).

Each method passes the gate (:class:`~archive_server.agentcerts.AgentGate`:
on TLS the agent is the one its certificate is bound to) and forwards to
:class:`~archive_server.ingest.IngestCore` with that caller; errors become
status codes in :mod:`archive_server.interceptor`.
"""
from __future__ import annotations

from collections.abc import Iterator

import grpc

from archive_server.agentcerts import AgentGate
from archive_server.ingest import IngestCore
from archive_server.services.peer import peer_of
from bildsluss.v1 import ingest_pb2 as pb
from bildsluss.v1 import ingest_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Ingest"].full_name  # "bildsluss.v1.Ingest"


class IngestServicer(pb_grpc.IngestServicer):
    def __init__(self, core: IngestCore, gate: AgentGate) -> None:
        self.core = core
        self.gate = gate

    def OpenSession(self, request: pb.OpenSessionRequest, context: grpc.ServicerContext) -> pb.OpenSessionResponse:
        with self.gate.call(peer_of(context), "Ingest.OpenSession") as caller:
            return self.core.open_session(request, caller)

    def FindMissingBlobs(
        self, request: pb.FindMissingBlobsRequest, context: grpc.ServicerContext
    ) -> pb.FindMissingBlobsResponse:
        with self.gate.call(peer_of(context), "Ingest.FindMissingBlobs") as caller:
            return self.core.find_missing(request, caller)

    def QueryWriteStatus(
        self, request: pb.QueryWriteStatusRequest, context: grpc.ServicerContext
    ) -> pb.QueryWriteStatusResponse:
        with self.gate.call(peer_of(context), "Ingest.QueryWriteStatus") as caller:
            return self.core.query_write_status(request, caller)

    def Write(self, request_iterator: Iterator[pb.WriteRequest], context: grpc.ServicerContext) -> pb.WriteResponse:
        # Counted before the first message is read: an idle stream holds a thread
        # (limits.WriteStreams keeps threads for every other call and health).
        with self.gate.call(peer_of(context), "Ingest.Write") as caller, \
                self.core.streams.stream(context.cancel) as stream:
            return self.core.write(stream.messages(request_iterator), caller, stream)

    def CommitSession(
        self, request: pb.CommitSessionRequest, context: grpc.ServicerContext
    ) -> pb.CommitSessionResponse:
        with self.gate.call(peer_of(context), "Ingest.CommitSession") as caller:
            return self.core.commit_session(request, caller)
