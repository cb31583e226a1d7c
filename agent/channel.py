"""The agent's one gRPC channel to the archive, for card uploads and heartbeats alike.

The one place that decides transport security: mutual TLS with the agent's
certificate (its identity at the archive), or plaintext by explicit flag.
"""
from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import grpc

from agent.config import ArchiveConfig, check_transport


# Calls are spread over every address the target names or resolves to
# (``ipv4:H1:P1,H2:P2``, ``dns:///name:port``): an archive process that goes
# away leaves the rotation, and a retried call lands on another one.
_ROUND_ROBIN = ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))


def open_channel(config: ArchiveConfig, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
    """A channel to the archive (any gRPC target, round-robin over its
    addresses): mTLS, or plaintext when ``insecure`` (development, loopback
    only: checked here too, whoever built the config)."""
    options = [_ROUND_ROBIN, *options]
    if config.insecure:
        check_transport(config)
        return grpc.insecure_channel(config.address, options=list(options))
    if config.tls_server_name:
        # The certificate is checked against this name instead of the target's host
        # (an ipv4: list of addresses names no host), and it is the calls' :authority.
        options += [("grpc.ssl_target_name_override", config.tls_server_name),
                    ("grpc.default_authority", config.tls_server_name)]
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
