"""Users who log in, for tests of the Cases service and the web API: a
password set through the admin function, a login at the archive's HTTP
endpoint, the bearer token back."""
from __future__ import annotations

import httpx

from archive_server.authz import Principal
from archive_server.config import LoginConfig
from archive_server.db import Database
from archive_server.logins import set_password

PASSWORD = "ett långt lösenord 4711"
LOCAL = Principal.local("test")


def log_in(db: Database, http_address: str, user: str, password: str = PASSWORD) -> str:
    """Give ``user`` (made with admin.add_user) a password and log them in; the token."""
    set_password(db, LOCAL, user, password, LoginConfig())
    response = httpx.post(f"http://{http_address}/api/v1/login", json={"username": user, "password": password},
                          timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)
