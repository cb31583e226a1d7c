"""The web client's foundation (issue 11): the login page, security headers,
CSRF on every form, session timeout back to the login page, errors as pages.
In this process on a real database (SQLite and PostgreSQL)."""
from __future__ import annotations

import pytest

from tests.archive.world import OWN
from tests.support.web import fresh_site, HTML, PASSWORD, Site, csrf_of


@pytest.fixture(scope="module")
def site(db_backend, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"web-{db_backend}")
    with fresh_site(db_backend, directory) as site:
        yield site


def test_login_page_headers_and_a_local_login(site):
    user = site.person(OWN, ["case.read"])
    client = site.browser()
    page = client.get("/login")
    assert page.status_code == 200 and "Logga in" in page.text
    assert "Logga in med regionens inloggning" not in page.text  # no [oidc] configured
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store" and "strict-transport-security" not in page.headers
    assert "<script>" not in page.text and 'src="/static/app.js"' in page.text
    assert client.get("/static/app.css").status_code == 200

    done = client.post("/login", data={"username": user, "password": PASSWORD, "next": "/cases?x=1",
                                       "csrf": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["location"] == "/cases?x=1"
    assert "bildsluss_session=" in done.headers["set-cookie"]


def test_wrong_password_and_open_redirects(site):
    user = site.person(OWN, ["case.read"])
    client = site.browser()
    token = csrf_of(client.get("/login").text)
    wrong = client.post("/login", data={"username": user, "password": "fel", "csrf": token})
    assert wrong.status_code == 401 and "Fel användarnamn eller lösenord." in wrong.text
    away = client.post("/login", data={"username": user, "password": PASSWORD, "csrf": token,
                                       "next": "//evil.example/x"})
    assert away.status_code == 303 and away.headers["location"] == "/"


def test_a_forged_login_post_is_refused_and_audited(site):
    user = site.person(OWN, ["case.read"])
    client = site.browser()
    client.get("/login")
    before = site.last_seq()
    forged = client.post("/login", data={"username": user, "password": PASSWORD, "csrf": "x" * 43})
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    assert "säkerhetskontroll" in forged.text
    missing = site.browser().post("/login", data={"username": user, "password": PASSWORD})
    assert missing.status_code == 403
    told = [(e.action, e.outcome, e.details["reason"]) for e in site.events_since(before)]
    assert told == [("web.form", "refused", "CSRF_INVALID")] * 2


def test_logout_needs_the_session_token_and_ends_the_session(site):
    user = site.person(OWN, ["case.read"])
    client = site.logged_in(user)
    search = client.get("/cases")
    assert search.status_code == 200 and user in search.text
    before = site.last_seq()
    # Another site's form cannot log the user out (nor do anything else).
    assert client.post("/logout", data={"csrf": "0" * 64}).status_code == 403
    assert client.get("/cases").status_code == 200
    out = client.post("/logout", data={"csrf": csrf_of(search.text)})
    assert out.status_code == 303 and out.headers["location"] == "/login?why=out"
    actions = [e.action for e in site.events_since(before)]
    assert actions[0] == "web.form" and "auth.logout" in actions
    again = site.browser().get("/cases")
    assert again.status_code == 303 and again.headers["location"] == "/login?next=%2Fcases"


def test_an_ended_session_goes_to_the_login_page_and_back(site):
    user = site.person(OWN, ["case.read"])
    client = site.logged_in(user)
    clock = site.context.logins.clock
    import datetime as dt

    site.context.logins.clock = lambda: clock() + dt.timedelta(hours=13)
    try:
        gone = client.get("/cases")
    finally:
        site.context.logins.clock = clock
    assert gone.status_code == 303
    assert gone.headers["location"] == "/login?next=%2Fcases&why=expired"
    page = client.get(gone.headers["location"])
    assert "Din session har gått ut" in page.text and 'value="/cases"' in page.text


def test_errors_are_pages_for_browsers_and_json_for_programs(site):
    user = site.person(OWN, ["case.read"])
    client = site.logged_in(user)
    page = client.get("/no/such/page")
    assert page.status_code == 404 and "Finns inte" in page.text and page.headers["content-type"].startswith("text/html")
    api = client.get("/api/v1/no-such", headers={"Accept": "application/json"})
    assert api.status_code == 404 and api.json()["error"] == "HTTP"
    assert HTML  # browsers send Accept: text/html (the client's default here)
