"""A real OpenID Connect provider for the login tests, and a way to make it lie.

:class:`IdP` runs ``oidc-provider-mock`` (discovery, JWKS, an authorization
form, a token endpoint issuing RS256-signed ID tokens; authlib underneath) on
a loopback port, behind a small forwarding server — the address the archive
is configured with — so that a test can play the attacker between archive and
IdP: ``idp.mode`` set to one of

    "tamper"          the ID token's payload changed after signing
    "wrong_audience"  the login done for another client (the token's aud is not ours)
    "wrong_issuer"    the token issued under another host name (iss is not ours, the key is)
    "nonce"           the authorization request's nonce replaced (a token for another login)
    "expired"         the token answer held back until the token has expired

Everything else passes through unchanged. ``idp.requests`` records what the
archive sent (authorization query, token form), to check PKCE.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import oidc_provider_mock
import werkzeug.serving

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}
OTHER_CLIENT = "another-client"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class IdP:
    url: str
    token_max_age_s: int
    mode: str | None = None
    requests: list[tuple[str, dict[str, str]]] = dataclasses.field(default_factory=list)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _tamper(id_token: str) -> str:
    header, payload, signature = id_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["hsa_id"] = "SE2321000016-EVIL"
    return ".".join((header, _b64(json.dumps(claims).encode()), signature))


@contextmanager
def running_idp(users: dict[str, dict[str, object]], token_max_age_s: int = 3) -> Iterator[IdP]:
    """The provider with ``users`` (sub -> claims) and the forwarder in front; yields the IdP."""
    app = oidc_provider_mock.app(
        require_nonce=True, access_token_max_age=dt.timedelta(seconds=token_max_age_s),
        user_claims=[oidc_provider_mock.User(sub=sub, claims=claims) for sub, claims in users.items()])
    provider = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    upstream = f"http://127.0.0.1:{provider.server_port}"
    forward = httpx.Client(base_url=upstream, timeout=30)
    state = IdP(url="", token_max_age_s=token_max_age_s)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._forward()

        def do_POST(self) -> None:
            self._forward()

        def _forward(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            host = self.headers["host"]
            if parts.path == "/oauth2/authorize":
                state.requests.append(("authorize", dict(query)))
                if state.mode == "wrong_audience":
                    query["client_id"] = OTHER_CLIENT
                if state.mode == "nonce":
                    query["nonce"] = "a-nonce-of-another-login"
            if parts.path == "/oauth2/token":
                state.requests.append(("token", dict(parse_qsl(body.decode()))))
                if state.mode == "wrong_audience":
                    headers["Authorization"] = "Basic " + base64.b64encode(f"{OTHER_CLIENT}:x".encode()).decode()
                if state.mode == "wrong_issuer":  # the same IdP by another name: iss differs
                    host = host.replace("127.0.0.1", "localhost")
            headers["Host"] = host
            path = parts.path + ("?" + urlencode(query) if query else "")
            answer = forward.request(self.command, path, content=body, headers=headers)
            content = answer.content
            if parts.path == "/oauth2/token" and answer.status_code == 200:
                if state.mode == "tamper":
                    doc = answer.json()
                    doc["id_token"] = _tamper(doc["id_token"])
                    content = json.dumps(doc).encode()
                if state.mode == "expired":
                    time.sleep(state.token_max_age_s + 1.5)
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in _HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{proxy.server_port}"
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (provider, proxy)]
    for t in threads:
        t.start()
    try:
        yield state
    finally:
        for s in (proxy, provider):
            s.shutdown()
            s.server_close()
        forward.close()


def sign_in_at_idp(authorize_url: str, sub: str) -> httpx.Response:
    """What the person does at the IdP: submit the authorization form as ``sub``.
    Answers the provider's redirect back to the archive (not followed)."""
    return httpx.post(authorize_url, data={"sub": sub}, timeout=30)
