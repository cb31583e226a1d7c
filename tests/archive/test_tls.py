"""Mutual TLS: the archive serves only clients with a certificate from the agents' CA."""
from __future__ import annotations

import shutil

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.pki import make_pki, serve

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")


def test_mutual_tls(tmp_path):
    pki = tmp_path / "pki"
    make_pki(pki)
    args = ("--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key"),
            "--client-ca", str(pki / "ca.crt"))
    with serve("--data", str(tmp_path / "data"), *args) as address:
        good = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.crt").read_bytes(),
            private_key=(pki / "client.key").read_bytes(),
            certificate_chain=(pki / "client.crt").read_bytes(),
        )
        with grpc.secure_channel(address, good) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="bildsluss.v1.Ingest"), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        anonymous = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.crt").read_bytes())
        with grpc.secure_channel(address, anonymous) as channel:
            with pytest.raises(grpc.RpcError) as info:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError):
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_address_list_checked_against_the_configured_server_name(tmp_path):
    """An ``ipv4:`` list of addresses names no host: the archive's certificate is
    checked against ``tls_server_name``, and a certificate naming another host is
    still refused."""
    import dataclasses

    from agent.channel import open_channel
    from agent.config import ArchiveConfig
    from tests.support.pki import issue

    pki = tmp_path / "pki"
    make_pki(pki)
    issue(pki, "named", "subjectAltName=DNS:archive.region.test")  # no IP address in it
    args = ("--tls-cert", str(pki / "named.crt"), "--tls-key", str(pki / "named.key"),
            "--client-ca", str(pki / "ca.crt"))

    def health(config: ArchiveConfig) -> int:
        with open_channel(config) as channel:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="bildsluss.v1.Ingest"), timeout=10).status

    with serve("--data", str(tmp_path / "data"), *args) as address:
        base = ArchiveConfig(address=f"ipv4:{address},{address}", tls_cert=pki / "client.crt",
                             tls_key=pki / "client.key", tls_ca=pki / "ca.crt")
        with pytest.raises(grpc.RpcError) as info:
            health(base)  # the addresses are not the certificate's name
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert health(dataclasses.replace(base, tls_server_name="archive.region.test")) == \
            health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health(dataclasses.replace(base, tls_server_name="other.region.test"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
