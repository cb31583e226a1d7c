"""gRPC adapter of the Ingest service (protos/bildsluss/v1/ingest.proto).

The servicer methods only forward to :class:`~archive_server.ingest.IngestCore`;
errors become status codes in :mod:`archive_server.interceptor`.
"""
from __future__ import annotations

from collections.abc import Iterator

import grpc

from archive_server.ingest import IngestCore
from bildsluss.v1 import ingest_pb2 as pb
from bildsluss.v1 import ingest_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Ingest"].full_name  # "bildsluss.v1.Ingest"


class IngestServicer(pb_grpc.IngestServicer):
    def __init__(self, core: IngestCore) -> None:
        self.core = core

    def OpenSession(self, request: pb.OpenSessionRequest, context: grpc.ServicerContext) -> pb.OpenSessionResponse:
        return self.core.open_session(request)

    def FindMissingBlobs(
        self, request: pb.FindMissingBlobsRequest, context: grpc.ServicerContext
    ) -> pb.FindMissingBlobsResponse:
        return self.core.find_missing(request)

    def QueryWriteStatus(
        self, request: pb.QueryWriteStatusRequest, context: grpc.ServicerContext
    ) -> pb.QueryWriteStatusResponse:
        return self.core.query_write_status(request)

    def Write(self, request_iterator: Iterator[pb.WriteRequest], context: grpc.ServicerContext) -> pb.WriteResponse:
        return self.core.write(request_iterator)

    def CommitSession(
        self, request: pb.CommitSessionRequest, context: grpc.ServicerContext
    ) -> pb.CommitSessionResponse:
        return self.core.commit_session(request)
