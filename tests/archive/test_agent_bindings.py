"""``admin agent add | revoke | list`` (issue 10) on SQLite and PostgreSQL: what may
be bound, re-binding as key rotation, revocation, the audit of each; and the
gate's audit of repeated refusals."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from archive_server.agentcerts import AgentGate, Peer, fingerprint_pem
from archive_server.errors import AgentUnauthenticated
from tests.archive.world import OTHER, OWN, World, run_cli
from tests.support.pki import throwaway_certificate


@pytest.fixture
def world(fresh_db_url, tmp_path):
    w = World.create(fresh_db_url, tmp_path / "data")
    yield w
    w.close()


@pytest.fixture
def store(fresh_db_url):
    return ["--db", fresh_db_url]


def certificate(*, ca: bool = False, usage=ExtendedKeyUsageOID.CLIENT_AUTH, days: float = 2) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pc")])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=3))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def agents(store: list[str]) -> dict[str, dict]:
    out = run_cli(store, "admin", "agent", "list", "--json").stdout
    return {row["agent_id"]: row for row in map(json.loads, out.splitlines())}


def test_bind_rebind_revoke_and_list_are_audited(world, store, tmp_path):
    first, second = tmp_path / "first.pem", tmp_path / "second.pem"
    first.write_bytes(throwaway_certificate("pc-7"))
    second.write_bytes(throwaway_certificate("pc-7"))
    out = run_cli(store, "admin", "agent", "add", "pc-7", "--department", OWN, "--cert", str(first))
    assert "certificate bound" in out.stdout
    row = agents(store)["pc-7"]
    assert (row["department"], row["fingerprint"], row["revoked"], row["last_seen"]) == (
        OWN, fingerprint_pem(first.read_bytes()), False, None)
    assert "unchanged" in run_cli(store, "admin", "agent", "add", "pc-7", "--department", OWN,
                                  "--cert", str(first)).stdout
    # Key rotation (and a move to another department): the new certificate replaces the old.
    run_cli(store, "admin", "agent", "add", "pc-7", "--department", OTHER, "--cert", str(second))
    row = agents(store)["pc-7"]
    assert (row["department"], row["fingerprint"]) == (OTHER, fingerprint_pem(second.read_bytes()))
    run_cli(store, "admin", "agent", "revoke", "pc-7")
    assert agents(store)["pc-7"]["revoked"] is True
    assert "already revoked" in run_cli(store, "admin", "agent", "revoke", "pc-7").stdout
    events = [(e.action, e.outcome) for e in world.events() if e.action.startswith("agent.")]
    assert events == [("agent.bound", "permitted"), ("agent.list", "permitted"), ("agent.unchanged", "permitted"),
                      ("agent.rebound", "permitted"), ("agent.list", "permitted"), ("agent.revoked", "permitted"),
                      ("agent.list", "permitted"), ("agent.unchanged", "permitted")]
    rebound = next(e for e in world.events() if e.action == "agent.rebound")
    assert rebound.details["old_fingerprint"] == fingerprint_pem(first.read_bytes())
    assert rebound.details["old_department"] == OWN and rebound.department == OTHER
    # A revoked certificate is not taken back: the agent gets a new one.
    again = run_cli(store, "admin", "agent", "add", "pc-7", "--department", OTHER, "--cert", str(second), ok=False)
    assert again.returncode == 1 and "was revoked" in again.stderr
    run_cli(store, "admin", "agent", "add", "pc-7", "--department", OTHER, "--cert", str(first))
    assert agents(store)["pc-7"]["revoked"] is False


@pytest.mark.parametrize("content, message", [
    (lambda: certificate(ca=True), "CA certificate"),
    (lambda: certificate(usage=ExtendedKeyUsageOID.SERVER_AUTH), "client authentication"),
    (lambda: certificate(days=-1), "expired"),
    (lambda: b"-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n", "private key"),
    (lambda: b"not a certificate", "not an X.509 certificate"),
])
def test_what_cannot_be_bound_is_refused_with_the_reason(world, store, tmp_path, content, message):
    path = tmp_path / "agent.pem"
    path.write_bytes(content())
    result = run_cli(store, "admin", "agent", "add", "pc-1", "--department", OWN, "--cert", str(path), ok=False)
    assert result.returncode == 1 and message in result.stderr
    assert agents(store) == {}


def test_one_certificate_is_one_agent_and_departments_must_exist(world, store, tmp_path):
    path = tmp_path / "agent.pem"
    path.write_bytes(throwaway_certificate())
    run_cli(store, "admin", "agent", "add", "pc-1", "--department", OWN, "--cert", str(path))
    twice = run_cli(store, "admin", "agent", "add", "pc-2", "--department", OWN, "--cert", str(path), ok=False)
    assert twice.returncode == 1 and "already bound to agent pc-1" in twice.stderr
    unknown = run_cli(store, "admin", "agent", "add", "pc-3", "--department", "SE2321000016-NEW9",
                      "--cert", str(throwaway_path(tmp_path)), ok=False)
    assert unknown.returncode == 1 and "unknown department" in unknown.stderr
    missing = run_cli(store, "admin", "agent", "add", "pc-3", "--department", OWN,
                      "--cert", str(tmp_path / "nope.pem"), ok=False)
    assert missing.returncode == 2 and "cannot read --cert" in missing.stderr
    assert run_cli(store, "admin", "agent", "revoke", "pc-9", ok=False).returncode == 1
    assert sorted(agents(store)) == ["pc-1"]


def throwaway_path(tmp_path):
    path = tmp_path / "other.pem"
    path.write_bytes(throwaway_certificate())
    return path


def test_the_same_refusal_is_audited_once_a_minute_and_counted(world):
    """An agent with a wrong configuration calls every few seconds: one audit
    event per minute and kind, the repeats counted in the next one."""
    clock = {"now": 1000.0}
    gate = AgentGate(world.db, tls=True, clock=lambda: clock["now"])
    peer = Peer("ipv4:127.0.0.1:5555", throwaway_certificate("stranger"))

    def knock() -> None:
        with pytest.raises(AgentUnauthenticated):
            with gate.call(peer, "AgentRegistry.Heartbeat"):
                pass

    for seconds in (0, 5, 10, 59):
        clock["now"] = 1000.0 + seconds
        knock()
    clock["now"] = 1061.0
    knock()
    events = [e for e in world.events() if e.action == "agent.refused"]
    assert len(events) == 2
    assert "repeats_not_audited" not in events[0].details and events[1].details["repeats_not_audited"] == 3
    assert events[0].details["fingerprint"] == fingerprint_pem(peer.certificate)
    assert events[0].details["peer"] == "ipv4:127.0.0.1:5555"
