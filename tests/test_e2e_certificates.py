"""End to end over mutual TLS (issue 10): `bildsluss-agent ingest` with its own
certificate against a real TLS archive, the PKI made by openssl as a region's
would be. A bound agent archives its card; an agent configured with another
department, or whose certificate is unbound or revoked, is refused by the
archive: ARCHIVE_REJECTED, exit 3, the card byte-identical."""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from tests.archive.world import run_cli
from tests.support.cardgen import make_card
from tests.support.e2e import AGENT, DEPARTMENT, PATIENT, PATIENT_CANONICAL, snapshot
from tests.support.pki import bound_pki, serve_tls

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")
OTHER = "SE2321000016-A1B2"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    pki, store = bound_pki(tmp_path_factory.mktemp("e2e-tls"),
                           {DEPARTMENT: "Hudkliniken", OTHER: "Akutmottagningen"},
                           {"pc-7": DEPARTMENT, "pc-revoked": DEPARTMENT}, unbound=("pc-unbound",))
    run_cli(store, "admin", "agent", "revoke", "pc-revoked")
    with serve_tls(pki, *store) as address:
        yield address, pki, store


def ingest_tls(card: pathlib.Path, address: str, pki: pathlib.Path, tmp_path: pathlib.Path, *,
               cert: str, agent_id: str, department: str = DEPARTMENT) -> tuple[int, dict]:
    result = subprocess.run(
        [*AGENT, "ingest", str(card), "--archive", address, "--department", department, "--agent-id", agent_id,
         "--tls-cert", str(pki / f"{cert}.crt"), "--tls-key", str(pki / f"{cert}.key"),
         "--tls-ca", str(pki / "ca.crt"), "--spool", str(tmp_path / "spool"), "--json"],
        capture_output=True, text=True, timeout=300)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_a_bound_agent_archives_its_card_over_tls(tls, tmp_path):
    address, pki, store = tls
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=2, seed=101)
    code, out = ingest_tls(card, address, pki, tmp_path, cert="pc-7", agent_id="pc-7")
    assert code == 0 and out["outcome"] == "archived" and out["wiped"], out
    (case,) = [json.loads(line) for line in run_cli(
        store, "cases", "--patient", PATIENT_CANONICAL, "--json").stdout.splitlines()]
    assert case["case_id"] == out["case_id"] and case["department"] == DEPARTMENT


@pytest.mark.parametrize("cert, agent_id, department, status", [
    ("pc-7", "pc-7", OTHER, "PERMISSION_DENIED"),          # configured with another department
    ("pc-7", "pc-8", DEPARTMENT, "PERMISSION_DENIED"),     # speaking as another agent
    ("pc-unbound", "pc-unbound", DEPARTMENT, "UNAUTHENTICATED"),
    ("pc-revoked", "pc-revoked", DEPARTMENT, "UNAUTHENTICATED"),
])
def test_the_archive_refusing_the_certificate_leaves_the_card(tls, tmp_path, cert, agent_id, department, status):
    address, pki, _ = tls
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=2, seed=102)
    before = snapshot(card)
    code, out = ingest_tls(card, address, pki, tmp_path, cert=cert, agent_id=agent_id, department=department)
    assert code == 3, out
    assert (out["outcome"], out["reason"], out["case_id"], out["wiped"]) == (
        "refused", "ARCHIVE_REJECTED", None, False)
    assert status in out["detail"]
    assert snapshot(card) == before
