"""The one boundary between gRPC and the archive's domain, for every service.

:class:`ErrorInterceptor` wraps every handler of every servicer (Ingest,
Cases, AgentRegistry): domain errors (:mod:`archive_server.errors`) become
status codes here and nowhere else, and every call is logged with its outcome
and duration and counted in ``bildsluss_archive_rpc_duration_seconds``
(:mod:`archive_server.metrics`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from sqlalchemy import exc as sa_exc

from archive_server.errors import ArchiveError, OutOfRange
from archive_server.metrics import RPC_SECONDS
from bildsluss_common.identity.masking import mask_numbers_in_text

log = logging.getLogger(__name__)

# Trailing metadata on OUT_OF_RANGE: the committed size, for clients that prefer
# it to parsing the message.
COMMITTED_SIZE_KEY = "bildsluss-committed-size"


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message for an exception raised by a handler."""
    if isinstance(error, ArchiveError):
        return grpc.StatusCode[error.code], str(error)
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return grpc.StatusCode.UNAVAILABLE, "database unavailable"
    return grpc.StatusCode.INTERNAL, "internal error in the archive (logged); nothing was acknowledged"


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps exceptions of every handler to status codes and logs each call."""

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # streaming responses (health Watch) pass through


_QUIET_WHEN_OK = ("/grpc.health", "/bildsluss.v1.AgentRegistry/")


def _wrap(method: str, behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.monotonic()
        try:
            response = behavior(request, context)
        except grpc.RpcError:
            # The client cancelled or the deadline passed while we read its stream.
            log.info("rpc cancelled", extra={"method": method, "peer": context.peer(),
                                             "ms": _ms(start)})
            _observe(method, "CANCELLED", start)
            raise
        except Exception as error:  # noqa: BLE001 - this is the one boundary
            code, message = status_for(error)
            # The caller gets the whole sentence (it sent the number); the log
            # never holds a whole identity number (a refusal may quote one).
            extra = {"method": method, "code": code.name, "peer": context.peer(), "ms": _ms(start),
                     "detail": mask_numbers_in_text(message)}
            if code is grpc.StatusCode.INTERNAL:
                log.exception("rpc failed", extra=extra)
            elif code is grpc.StatusCode.UNAVAILABLE:
                log.warning("rpc failed", extra=extra)
            else:
                log.info("rpc refused", extra=extra)
            if isinstance(error, OutOfRange):
                context.set_trailing_metadata(((COMMITTED_SIZE_KEY, str(error.committed_size)),))
            _observe(method, code.name, start)
            context.abort(code, message)
        _observe(method, "OK" if context.is_active() else "CANCELLED", start)
        if not context.is_active():
            log.info("rpc cancelled", extra={"method": method, "peer": context.peer(), "ms": _ms(start)})
        elif not method.startswith(_QUIET_WHEN_OK):
            log.info("rpc ok", extra={"method": method, "peer": context.peer(), "ms": _ms(start)})
        else:
            # Every agent heartbeats every few seconds: a line per success would
            # drown the log at region scale; failures above are still logged.
            log.debug("rpc ok", extra={"method": method, "peer": context.peer(), "ms": _ms(start)})
        return response

    return wrapped


def _observe(method: str, code: str, start: float) -> None:
    RPC_SECONDS.labels(method=method, code=code).observe(time.monotonic() - start)


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
