"""Who is on the other end of a gRPC call: its address and, on TLS, its certificate.

gRPC has verified the certificate against ``--client-ca`` in the handshake;
what it means (which agent, which department) is
:class:`archive_server.agentcerts.AgentGate`'s to decide.
"""
from __future__ import annotations

import grpc

from archive_server.agentcerts import Peer

# gRPC's auth-context property holding the peer's leaf certificate in PEM.
_PEM_CERT = "x509_pem_cert"


def peer_of(context: grpc.ServicerContext) -> Peer:
    certificates = (context.auth_context() or {}).get(_PEM_CERT) or []
    return Peer(address=context.peer(), certificate=certificates[0] if certificates else None)
