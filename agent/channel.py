"""The agent's one gRPC channel to the archive, for card uploads and heartbeats alike.

The one place that decides transport security: mutual TLS with the agent's
certificate (its identity at the archive), or plaintext by explicit flag.
"""
from __future__ import annotations

import pathlib
from collections.abc import Sequence

import grpc

from agent.config import ArchiveConfig, check_transport


def open_channel(config: ArchiveConfig, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
    """A channel to the archive: mTLS, or plaintext when ``insecure`` (development,
    loopback only: checked here too, whoever built the config)."""
    if config.insecure:
        check_transport(config)
        return grpc.insecure_channel(config.address, options=list(options))
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(config.tls_ca),
        private_key=_read(config.tls_key),
        certificate_chain=_read(config.tls_cert),
    )
    return grpc.secure_channel(config.address, creds, options=list(options))


def _read(path: pathlib.Path | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as fh:
        return fh.read()
