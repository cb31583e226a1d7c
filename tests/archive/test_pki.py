"""``bildsluss-archive pki`` (issue 10): the optional private CA for small sites.
What it makes must work as a real PKI: the archive serves TLS with its server
certificate, and an agent certificate it signed (from a key made here, or from
a CSR made on the capture PC with openssl) is accepted once bound."""
from __future__ import annotations

import shutil
import stat
import subprocess

import grpc
import pytest
from cryptography import x509

from archive_server.agentcerts import fingerprint_pem
from bildsluss.v1 import agents_pb2 as apb
from bildsluss.v1 import agents_pb2_grpc as apb_grpc
from tests.archive.world import OWN, run_cli
from tests.support.pki import serve

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")


def test_a_private_ca_serves_tls_and_signs_agents_that_work_once_bound(tmp_path):
    data = tmp_path / "data"
    store = ["--data", str(data)]
    out = run_cli(store, "pki", "init", "--host", "localhost", "--host", "127.0.0.1").stdout
    ca_dir = data / "pki"
    assert f"--client-ca {ca_dir / 'ca.crt'}" in out
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    again = run_cli(store, "pki", "init", ok=False)
    assert again.returncode == 2 and "a CA is made once" in again.stderr

    issued = run_cli(store, "pki", "issue-agent", "pc-1").stdout
    cert, key = ca_dir / "agents" / "pc-1.crt", ca_dir / "agents" / "pc-1.key"
    assert fingerprint_pem(cert.read_bytes()) in issued and "admin agent add pc-1" in issued
    assert x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string() == "CN=pc-1"
    # The capture PC makes its own key and request; only the request travels.
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(tmp_path / "pc-2.key"), "-out", str(tmp_path / "pc-2.csr"),
                    "-subj", "/CN=whatever"], check=True, capture_output=True)
    run_cli(store, "pki", "issue-agent", "pc-2", "--csr", str(tmp_path / "pc-2.csr"), "--out", str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pc-2.crt"]  # no key made here

    run_cli(store, "admin", "department", "add", OWN, "--name", "Hudkliniken")
    run_cli(store, "admin", "agent", "add", "pc-1", "--department", OWN, "--cert", str(cert))
    run_cli(store, "admin", "agent", "add", "pc-2", "--department", OWN, "--cert", str(tmp_path / "out" / "pc-2.crt"))
    with serve(*store, "--tls-cert", str(ca_dir / "server.crt"), "--tls-key", str(ca_dir / "server.key"),
               "--client-ca", str(ca_dir / "ca.crt")) as address:
        for agent, agent_key, agent_cert in (("pc-1", key, cert),
                                             ("pc-2", tmp_path / "pc-2.key", tmp_path / "out" / "pc-2.crt")):
            creds = grpc.ssl_channel_credentials((ca_dir / "ca.crt").read_bytes(), agent_key.read_bytes(),
                                                 agent_cert.read_bytes())
            with grpc.secure_channel(address, creds) as channel:
                response = apb_grpc.AgentRegistryStub(channel).Heartbeat(apb.HeartbeatRequest(
                    agent_id=agent, department_hsa_id=OWN, state=apb.AGENT_STATE_IDLE, interval_s=5.0), timeout=30)
            assert response.next_interval_s == 5.0


def test_issuing_without_a_ca_says_how_to_make_one(tmp_path):
    result = run_cli(["--data", str(tmp_path)], "pki", "issue-agent", "pc-1", ok=False)
    assert result.returncode == 2 and "pki init" in result.stderr
