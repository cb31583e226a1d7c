"""Logging in through the region's identity provider (issue 10): a real OIDC
provider (``oidc-provider-mock``) started by the test, an archive process on
TLS, the authorization-code flow with PKCE driven by an HTTP client as a
browser would, then the user's cases over HTTP with the cookie and over gRPC
with the token. Then the IdP lies (tests/support/oidc.py), and each lie is
refused with a clear status and an audit row, and logs nobody in."""
from __future__ import annotations

import base64
import hashlib
import shutil
from urllib.parse import parse_qsl, urlsplit

import grpc
import httpx
import pytest
import sqlalchemy as sa

from archive_server import admin
from archive_server.authz import Principal
from archive_server.logins import link_idp_subject
from archive_server.models import AuditEvent, UserSession
from bildsluss.v1 import archive_pb2 as pb
from bildsluss.v1 import archive_pb2_grpc as pb_grpc
from tests.archive.client import personnummer
from tests.archive.world import OTHER, OWN, World
from tests.support.archive_process import ArchiveProcess
from tests.support.logins import bearer
from tests.support.oidc import free_port, running_idp, sign_in_at_idp
from tests.support.pki import make_pki

pytestmark = [pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool"),
              pytest.mark.slow]  # about 25 s: an archive process, an IdP, one held-back token
LOCAL = Principal.local("test")
ANNA_HSA = "SE2321000016-9ANN"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An archive with two departments and a case in each; Anna may read her
    department's, and logs in at the IdP as ``anna`` whose hsa_id claim is linked to her."""
    tmp = tmp_path_factory.mktemp("oidc")
    pki = tmp / "pki"
    make_pki(pki)
    world = World.create(f"sqlite:///{tmp / 'data' / 'archive.sqlite3'}", tmp / "data")
    patient = personnummer("19560716")
    own_case = world.ingest(patient=patient, department=OWN)
    world.ingest(patient=patient, department=OTHER)
    admin.add_role(world.db, LOCAL, "reader", ["case.read"])
    admin.add_user(world.db, LOCAL, "anna", OWN, "reader")
    link_idp_subject(world.db, LOCAL, "anna", ANNA_HSA)
    admin.add_user(world.db, LOCAL, "bertil", OWN, "reader")  # not linked: the IdP knows him, we do not
    http_port = free_port()
    users = {"anna": {"hsa_id": ANNA_HSA, "name": "Anna Sköterska"}, "bertil": {"hsa_id": "SE2321000016-9BER"}}
    with running_idp(users, token_max_age_s=3) as idp:
        config = tmp / "archive.toml"
        config.write_text(
            "[oidc]\n"
            f'issuer = "{idp.url}"\nclient_id = "bildsluss-archive"\nclient_secret = "region-secret"\n'
            f'redirect_url = "https://127.0.0.1:{http_port}/auth/oidc/callback"\n'
            'claim = "hsa_id"\nscopes = ["openid", "profile"]\nleeway_s = 0\n')
        archive = ArchiveProcess(
            data=tmp / "data", insecure=False, http=f"127.0.0.1:{http_port}",
            extra_args=("--config", str(config), "--tls-cert", str(pki / "server.crt"),
                        "--tls-key", str(pki / "server.key"), "--client-ca", str(pki / "ca.crt"))).start()
        try:
            yield {"archive": archive, "idp": idp, "db": world.db, "pki": pki, "patient": patient,
                   "own_case": own_case, "base": f"https://127.0.0.1:{http_port}"}
        finally:
            archive.stop()
            world.db.dispose()


def browser(site) -> httpx.Client:
    """An HTTP client that keeps cookies and trusts the archive's CA, as a browser would."""
    return httpx.Client(base_url=site["base"], verify=str(site["pki"] / "ca.crt"), timeout=30)


def walk(site, client: httpx.Client, sub: str) -> httpx.Response:
    """Start at the archive, sign in at the IdP, come back: the callback's answer."""
    start = client.get("/auth/oidc/login", params={"next": "/api/v1/cases"})
    assert start.status_code == 302 and start.headers["location"].startswith(site["idp"].url)
    back = sign_in_at_idp(start.headers["location"], sub)
    assert back.status_code == 302 and back.headers["location"].startswith(f"{site['base']}/auth/oidc/callback?")
    return client.get(back.headers["location"])


def audit(site, action: str) -> list[AuditEvent]:
    with site["db"].read() as s:
        return list(s.scalars(sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def sessions(site) -> int:
    with site["db"].read() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(UserSession)) or 0)


def test_a_nurse_logs_in_at_the_idp_and_reads_her_cases(site):
    with browser(site) as client:
        landed = walk(site, client, "anna")
        assert landed.status_code == 200 and "Inloggad som anna" in landed.text
        assert 'content="0;url=/api/v1/cases"' in landed.text  # on to next, same-site
        assert landed.headers["strict-transport-security"].startswith("max-age=")
        token = client.cookies["bildsluss_session"]
        # Over HTTPS with the cookie: her department's case, not the other one.
        listed = client.get("/api/v1/cases", params={"patient": site["patient"]})
        assert listed.status_code == 200
        assert [c["case_id"] for c in listed.json()["cases"]] == [site["own_case"]]
        assert client.get("/api/v1/session").json() == {**client.get("/api/v1/session").json(),
                                                        "user": "anna", "method": "oidc"}

    # Over gRPC with the token (the TLS archive wants a client certificate on
    # the channel too; the token is what names the user).
    pki = site["pki"]
    creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.crt").read_bytes(),
                                         private_key=(pki / "client.key").read_bytes(),
                                         certificate_chain=(pki / "client.crt").read_bytes())
    with grpc.secure_channel(site["archive"].address, creds) as channel:
        found = pb_grpc.CasesStub(channel).List(pb.ListCasesRequest(patient_id=site["patient"]),
                                                metadata=bearer(token), timeout=10).cases
    assert [c.case_id for c in found] == [site["own_case"]]

    # PKCE: S256 of the verifier the archive sent to the token endpoint is the
    # challenge it sent with the authorization request.
    authorize = [q for kind, q in site["idp"].requests if kind == "authorize"][0]
    exchange = [f for kind, f in site["idp"].requests if kind == "token"][0]
    assert authorize["code_challenge_method"] == "S256" and authorize["nonce"] and authorize["state"]
    digest = hashlib.sha256(exchange["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == authorize["code_challenge"]

    login = audit(site, "auth.login")[-1]
    assert (login.actor, login.outcome, login.details["login"]["method"]) == ("anna", "permitted", "oidc")
    assert login.details["subject"] == ANNA_HSA
    searches = [e for e in audit(site, "case.search") if e.actor == "anna"]
    assert {e.details["login"]["method"] for e in searches} == {"oidc"}
    assert all(e.details["login"]["from"].startswith("ipv4:127.0.0.1:") for e in searches)


@pytest.mark.parametrize("mode, reason", [
    ("tamper", "ID_TOKEN_SIGNATURE"),
    ("wrong_audience", "ID_TOKEN_WRONG_AUDIENCE"),
    ("wrong_issuer", "ID_TOKEN_WRONG_ISSUER"),
    ("nonce", "ID_TOKEN_NONCE"),
    ("expired", "ID_TOKEN_EXPIRED"),
])
def test_a_lying_idp_logs_nobody_in(site, mode, reason):
    before, refused_before = sessions(site), len(audit(site, "auth.login"))
    site["idp"].mode = mode
    try:
        with browser(site) as client:
            answer = walk(site, client, "anna")
            assert "bildsluss_session" not in client.cookies
    finally:
        site["idp"].mode = None
    assert (answer.status_code, answer.json()["reason"]) == (401, reason)
    assert sessions(site) == before
    new = audit(site, "auth.login")[refused_before:]
    assert [(e.actor, e.outcome, e.details["reason"], e.details["login"]["method"]) for e in new] == \
        [("anonymous", "refused", reason, "oidc")]


def test_state_is_bound_to_the_browser_and_used_once(site):
    with browser(site) as client:
        start = client.get("/auth/oidc/login")
        back = sign_in_at_idp(start.headers["location"], "anna").headers["location"]
        with browser(site) as other:  # the callback opened in another browser (login CSRF)
            planted = other.get(back)
        assert (planted.status_code, planted.json()["reason"]) == (401, "STATE_MISMATCH")
        assert client.get(back).status_code == 200
        state = dict(parse_qsl(urlsplit(back).query))["state"]
        assert client.get(back).json()["reason"] == "STATE_MISMATCH"  # its state cookie is gone
        client.cookies.set("bildsluss_oidc_state", state, domain="127.0.0.1", path="/auth/oidc/")
        replayed = client.get(back)  # the same callback again, cookie and all
        assert (replayed.status_code, replayed.json()["reason"]) == (401, "STATE_UNKNOWN")


def test_a_person_the_archive_does_not_know_is_refused(site):
    before = sessions(site)
    with browser(site) as client:
        answer = walk(site, client, "bertil")
    assert (answer.status_code, answer.json()["reason"]) == (403, "NO_ARCHIVE_USER")
    assert sessions(site) == before
    last = audit(site, "auth.login")[-1]
    assert (last.outcome, last.details["reason"], last.details["subject"]) == \
        ("refused", "NO_ARCHIVE_USER", "SE2321000016-9BER")


def test_the_login_page_offers_the_regions_login_and_hsts(site):
    """The web client's login page (issue 11): the region's login beside the
    local one, leading to /auth/oidc/login with the page to come back to."""
    with browser(site) as client:
        page = client.get("/login?next=/cases", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "Logga in med regionens inloggning" in page.text
    assert 'href="/auth/oidc/login?next=/cases"' in page.text
    assert page.headers["strict-transport-security"].startswith("max-age=")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
