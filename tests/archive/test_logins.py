"""Users log in (issue 10): local accounts with Argon2id passwords, sessions as
hashed bearer tokens, the throttle, and the Cases service that takes a token and
never a name. On a real archive process (HTTP and gRPC) and on the domain with
a clock the test moves, SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid

import grpc
import httpx
import pytest
import sqlalchemy as sa

from archive_server import admin
from archive_server.authz import Principal, Unauthenticated
from archive_server.cli import main as cli_main
from archive_server.cli import os_account
from archive_server.config import LoginConfig
from archive_server.db import Database
from archive_server.logins import Logins, Throttled, set_password
from archive_server.models import AuditEvent, User, UserSession
from bildsluss.v1 import archive_pb2 as pb
from bildsluss.v1 import archive_pb2_grpc as pb_grpc
from tests.support.logins import LOCAL, PASSWORD, bearer, log_in


def new_user(db: Database, role_rights: tuple[str, ...] = ("case.read",)) -> tuple[str, str]:
    """A user with a role in a new department; (user, department)."""
    tag = uuid.uuid4().hex[:6]
    dep = f"SE2321000016-L{tag[:4].upper()}"
    admin.add_department(db, LOCAL, dep, "Hudmottagningen")
    admin.add_role(db, LOCAL, f"reader-{tag}", list(role_rights))
    admin.add_user(db, LOCAL, f"user-{tag}", dep, f"reader-{tag}")
    return f"user-{tag}", dep


def events(db: Database, **where: str) -> list[AuditEvent]:
    with db.read() as s:
        query = sa.select(AuditEvent).order_by(AuditEvent.seq)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        return list(s.scalars(query))


def refusals(db: Database, action: str, since: int) -> list[str]:
    return [e.details["reason"] for e in events(db, action=action) if e.seq > since and e.outcome == "refused"]


def last_seq(db: Database) -> int:
    with db.read() as s:
        return int(s.scalar(sa.select(sa.func.max(AuditEvent.seq))) or 0)


# -- over HTTP and gRPC, on the real process ----------------------------------------------


def test_login_use_logout_and_replay(running_archive, archive_db):
    user, _ = new_user(archive_db)
    set_password(archive_db, LOCAL, user, PASSWORD, LoginConfig())
    base = f"http://{running_archive.http_address}/api/v1"
    before = last_seq(archive_db)

    response = httpx.post(f"{base}/login", json={"username": user, "password": PASSWORD}, timeout=30)
    assert response.status_code == 200
    body = response.json()
    token, expires = body["token"], dt.datetime.fromisoformat(body["expires"])
    assert body["user"] == user and expires > dt.datetime.now(dt.timezone.utc)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"bildsluss_session={token};")
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= {p.strip().lower() for p in cookie.split(";")}
    assert response.headers["cache-control"] == "no-store"
    with archive_db.read() as s:  # only the token's hash is kept
        stored = s.scalars(sa.select(UserSession.token_sha256)).all()
    assert token not in stored and len(stored) >= 1

    # The bearer token and the cookie both work, for the same user.
    for headers in ({"Authorization": f"Bearer {token}"}, {"Cookie": f"bildsluss_session={token}"}):
        listed = httpx.get(f"{base}/cases", headers=headers, timeout=30)
        assert listed.status_code == 200 and listed.json() == {"cases": []}
    assert httpx.get(f"{base}/session", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["user"] == user
    with grpc.insecure_channel(running_archive.address) as channel:
        assert list(pb_grpc.CasesStub(channel).List(pb.ListCasesRequest(), metadata=bearer(token), timeout=10).cases) == []

    out = httpx.post(f"{base}/logout", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert out.status_code == 200 and out.json()["logged_out"] is True
    assert 'bildsluss_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    replay = httpx.get(f"{base}/cases", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert replay.status_code == 401 and replay.json()["reason"] == "TOKEN_REVOKED"
    assert replay.headers["www-authenticate"].startswith("Bearer")
    with grpc.insecure_channel(running_archive.address) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.CasesStub(channel).List(pb.ListCasesRequest(), metadata=bearer(token), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert httpx.post(f"{base}/logout", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 401

    mine = [e for e in events(archive_db) if e.seq > before and (e.actor == user or e.target == f"user:{user}")]
    told = [(e.actor, e.action, e.outcome, e.details.get("reason")) for e in mine]
    assert told[:1] == [(user, "auth.login", "permitted", None)]
    assert (user, "case.search", "permitted", None) in told and (user, "auth.logout", "permitted", None) in told
    assert told.count(("anonymous", "auth.token", "refused", "TOKEN_REVOKED")) == 3
    search = next(e for e in mine if e.action == "case.search")
    assert search.details["login"]["method"] == "local"
    assert search.details["login"]["from"].startswith("ipv4:127.0.0.1:")


def test_bad_logins_and_tokens_are_refused_and_audited(running_archive, archive_db):
    user, _ = new_user(archive_db)
    set_password(archive_db, LOCAL, user, PASSWORD, LoginConfig())
    base = f"http://{running_archive.http_address}/api/v1"
    before = last_seq(archive_db)

    wrong = httpx.post(f"{base}/login", json={"username": user, "password": "not the password"}, timeout=30)
    assert wrong.status_code == 401 and wrong.json()["reason"] == "BAD_CREDENTIALS"
    nobody = httpx.post(f"{base}/login", json={"username": f"x{user}", "password": PASSWORD}, timeout=30)
    assert nobody.status_code == 401 and nobody.json()["message"] == wrong.json()["message"]  # no user enumeration
    as_form = httpx.post(f"{base}/login", data={"username": user, "password": PASSWORD}, timeout=30)
    assert as_form.status_code == 400 and "set-cookie" not in as_form.headers

    token = httpx.post(f"{base}/login", json={"username": user, "password": PASSWORD}, timeout=30).json()["token"]
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for headers, reason in (({}, "TOKEN_MISSING"), ({"Authorization": f"Bearer {tampered}"}, "TOKEN_UNKNOWN"),
                            ({"Authorization": f"Basic {token}"}, "TOKEN_MISSING"),
                            # the old way: a user named in a header, no token
                            ({"bildsluss-user": user}, "TOKEN_MISSING")):
        refused = httpx.get(f"{base}/cases", headers=headers, timeout=30)
        assert (refused.status_code, refused.json()["reason"]) == (401, reason)

    assert refusals(archive_db, "auth.login", before) == ["BAD_PASSWORD", "UNKNOWN_USER"]
    assert refusals(archive_db, "auth.token", before) == ["TOKEN_MISSING", "TOKEN_UNKNOWN", "TOKEN_MISSING",
                                                          "TOKEN_MISSING"]
    assert all(e.actor == "anonymous" for e in events(archive_db, outcome="refused") if e.seq > before)


def test_a_name_in_the_metadata_reaches_no_case(running_archive, archive_db):
    """The attack of the issue: a caller naming a user in ``bildsluss-user``
    (with or without an agent's certificate) is refused on every Cases method,
    and the audit names nobody it claimed to be."""
    user, _ = new_user(archive_db, ("case.read", "case.sign", "case.revise", "case.emergency_open"))
    before = last_seq(archive_db)
    service = pb.DESCRIPTOR.services_by_name["Cases"]
    with grpc.insecure_channel(running_archive.address) as channel:
        stub = pb_grpc.CasesStub(channel)
        for method in service.methods:
            request = getattr(pb, method.input_type.name)()
            with pytest.raises(grpc.RpcError) as refused:
                getattr(stub, method.name)(request, metadata=(("bildsluss-user", user),), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, method.name
            with pytest.raises(grpc.RpcError) as forged:
                getattr(stub, method.name)(request, metadata=bearer("forged-" + user), timeout=10)
            assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED, method.name
    after = [e for e in events(archive_db) if e.seq > before]
    assert len(after) == 2 * len(service.methods) and {e.actor for e in after} == {"anonymous"}
    assert [e.details["reason"] for e in after[:2]] == ["TOKEN_MISSING", "TOKEN_UNKNOWN"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")
def test_an_agent_certificate_alone_never_reaches_cases(tmp_path):
    from tests.support.pki import make_pki, serve

    pki = tmp_path / "pki"
    make_pki(pki)
    data = tmp_path / "data"
    db = Database(f"sqlite:///{data / 'archive.sqlite3'}")
    db.upgrade_schema()
    user, _ = new_user(db)
    db.dispose()
    with serve("--data", str(data), "--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key"),
               "--client-ca", str(pki / "ca.crt")) as address:
        agent = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.crt").read_bytes(),
                                             private_key=(pki / "client.key").read_bytes(),
                                             certificate_chain=(pki / "client.crt").read_bytes())
        with grpc.secure_channel(address, agent) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.CasesStub(channel).List(pb.ListCasesRequest(), metadata=(("bildsluss-user", user),),
                                                timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_throttle_over_http_answers_429_with_retry_after(tmp_path):
    """Five wrong passwords block the user name for the cool-down: the sixth
    attempt, even with the right password, is 429 with Retry-After."""
    from tests.support.archive_process import ArchiveProcess

    data = tmp_path / "data"
    db = Database(f"sqlite:///{data / 'archive.sqlite3'}")
    db.upgrade_schema()
    user, _ = new_user(db)
    set_password(db, LOCAL, user, PASSWORD, LoginConfig())
    config = tmp_path / "archive.toml"
    config.write_text("[login]\nmax_failures_per_user = 5\ncooldown_s = 600\n")
    with ArchiveProcess(data=data, http="127.0.0.1:0", extra_args=("--config", str(config))) as archive:
        url = f"http://{archive.http_address}/api/v1/login"
        codes = [httpx.post(url, json={"username": user, "password": f"guess {i}"}, timeout=30).status_code
                 for i in range(5)]
        blocked = httpx.post(url, json={"username": user, "password": PASSWORD}, timeout=30)
    db.dispose()
    assert codes == [401] * 5
    assert blocked.status_code == 429 and blocked.json()["reason"] == "RATE_LIMITED"
    assert 590 <= int(blocked.headers["retry-after"]) <= 600


# -- the domain, with a clock the test moves ----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 14, 8, 0, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def domain(fresh_db_url):
    db = Database(fresh_db_url, pool_size=2, max_overflow=2)
    db.upgrade_schema()
    yield db
    db.dispose()


def test_ten_thousand_wrong_passwords(domain):
    """One address tries 10,000 passwords against a user: five are checked
    (and audited), then both keys are refused without hashing until the
    cool-down ends; the real user, from another address, is kept out for that
    cool-down and no longer, and the attacker's address stays blocked."""
    user, _ = new_user(domain)
    config = LoginConfig(max_failures_per_user=5, max_failures_per_address=50, cooldown_s=300)
    set_password(domain, LOCAL, user, PASSWORD, config)
    clock = Clock()
    logins = Logins(domain, config, clock)
    attacker, nurse = "ipv4:10.9.8.7:40000", "ipv4:10.1.1.1:50000"
    before = last_seq(domain)
    outcomes: dict[str, int] = {}
    for i in range(10_000):
        try:
            logins.login_local(user, f"guess-{i:05d}", attacker)
        except Unauthenticated as e:
            outcomes[e.reason] = outcomes.get(e.reason, 0) + 1
        except Throttled as e:
            outcomes[e.reason] = outcomes.get(e.reason, 0) + 1
            assert 0 < e.retry_after_s <= 300
    assert outcomes == {"BAD_CREDENTIALS": 5, "RATE_LIMITED": 9_995}
    after = [(e.action, e.outcome, e.details["reason"]) for e in events(domain) if e.seq > before]
    assert after == [("auth.login", "refused", "BAD_PASSWORD")] * 5 + [("auth.login_blocked", "refused",
                                                                        "RATE_LIMITED")]
    with pytest.raises(Throttled):  # the real user, during the cool-down
        logins.login_local(user, PASSWORD, nurse)
    clock.advance(301)
    issued = logins.login_local(user, PASSWORD, nurse)
    assert issued.user == user and logins.authenticate(issued.token, nurse).user == user
    with domain.read() as s:
        assert s.execute(sa.select(User.password_hash).where(User.username == user)).scalar().startswith("$argon2id$")


def test_the_address_limit_stops_spraying_many_user_names(domain):
    config = LoginConfig(max_failures_per_user=5, max_failures_per_address=8, cooldown_s=60)
    logins = Logins(domain, config, Clock())
    for i in range(8):
        with pytest.raises(Unauthenticated):
            logins.login_local(f"guess{i}", "password-password", "ipv6:[2001:db8::7]:4000")
    with pytest.raises(Throttled):
        logins.login_local("someone-else", "password-password", "ipv6:[2001:db8::7]:4001")
    blocked = [e for e in events(domain, action="auth.login_blocked")]
    assert [e.details["key"] for e in blocked] == ["addr:2001:db8::7"]


def test_sessions_end_expire_and_idle_out(domain):
    user, _ = new_user(domain)
    config = LoginConfig(session_ttl_s=3600, idle_timeout_s=600)
    set_password(domain, LOCAL, user, PASSWORD, config)
    clock = Clock()
    logins = Logins(domain, config, clock)
    here = "ipv4:127.0.0.1:1"

    idle = logins.login_local(user, PASSWORD, here)
    used = logins.login_local(user, PASSWORD, here)
    for _ in range(6):  # used every 9 minutes: stays alive until the hour is up
        clock.advance(540)
        assert logins.authenticate(used.token, here).user == user
    with pytest.raises(Unauthenticated) as idled:
        logins.authenticate(idle.token, here)
    assert idled.value.reason == "TOKEN_EXPIRED"
    clock.advance(400)  # 3,640 s after login, 400 s after the last use
    with pytest.raises(Unauthenticated) as ended:
        logins.authenticate(used.token, here)
    assert ended.value.reason == "TOKEN_EXPIRED"

    fresh = logins.login_local(user, PASSWORD, here)
    set_password(domain, LOCAL, user, PASSWORD + "!", config)  # a new password ends every session
    with pytest.raises(Unauthenticated) as revoked:
        logins.authenticate(fresh.token, here)
    assert revoked.value.reason == "TOKEN_REVOKED"
    reasons = [e.details["reason"] for e in events(domain, action="auth.token")]
    assert reasons == ["TOKEN_EXPIRED", "TOKEN_EXPIRED", "TOKEN_REVOKED"]


# -- the command line ---------------------------------------------------------------------


def test_cli_passwd_and_the_os_account_in_the_audit(domain, monkeypatch, capsys):
    url = str(domain.engine.url.render_as_string(hide_password=False))
    user, _ = new_user(domain)
    monkeypatch.setenv("USER", "mallory")  # the environment names nobody
    monkeypatch.setenv("LOGNAME", "mallory")
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("short\n"))
    assert cli_main(["admin", "user", "passwd", user, "--db", url]) == 1
    assert "at least 12" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(PASSWORD + "\n"))
    assert cli_main(["admin", "user", "passwd", user, "--db", url]) == 0
    assert Logins(domain, LoginConfig()).login_local(user, PASSWORD, "ipv4:127.0.0.1:1").user == user
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(""))
    assert cli_main(["admin", "user", "passwd", user, "--db", url]) == 2
    assert cli_main(["cases", "--json", "--as", user, "--db", url]) == 0

    account = os_account()
    assert account != "mallory" or os.getuid() != 0
    set_by = events(domain, action="user.password_set")
    assert [e.outcome for e in set_by] == ["permitted"]  # a too-short password changed nothing
    assert set_by[-1].actor == f"cli:{account}"
    assert set_by[-1].details["login"] == {"method": "cli", "from": f"os:{account}"}
    search = events(domain, action="case.search")[-1]
    assert search.actor == user and search.details["login"] == {"method": "cli", "from": f"os:{account}"}
