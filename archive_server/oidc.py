"""Logging in through the region's identity provider: OpenID Connect, the
authorization code flow with PKCE (RFC 7636, S256).

:func:`begin_login` makes a fresh ``state`` (also set as a cookie in the
browser that started, so that a login cannot be planted in another browser),
``nonce`` and PKCE verifier, keeps them in the database (``oidc_logins``: any
archive process may receive the callback) and answers the IdP's authorization
URL. :func:`complete_login` takes the callback: the state must match the
cookie and a request in flight (used once, at most ten minutes old); the code
is exchanged at the token endpoint with the client secret and the verifier;
the ID token's signature is checked against the provider's JWKS (PyJWT; a
key unknown by ``kid`` makes one fresh fetch of the JWKS, for key rotation),
and ``iss``, ``aud`` (and ``azp``), ``exp``, ``iat`` and ``nonce``; the
configured claim (the HSA-id, say) names the person, and the archive user
linked to that value (``admin user link``) gets a session from
:class:`~archive_server.logins.Logins`. What that user may do is decided by
the archive's own rights, never by the IdP.

Every refusal is audited (``auth.login``, method ``oidc``) with a stable
reason: ``STATE_MISMATCH``, ``STATE_UNKNOWN``, ``IDP_ERROR``,
``IDP_UNAVAILABLE``, ``ID_TOKEN_SIGNATURE``, ``ID_TOKEN_EXPIRED``,
``ID_TOKEN_WRONG_AUDIENCE``, ``ID_TOKEN_WRONG_ISSUER``, ``ID_TOKEN_NONCE``,
``ID_TOKEN_INVALID``, ``CLAIM_MISSING``, ``NO_ARCHIVE_USER``.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from archive_server.authz import Unauthenticated
from archive_server.config import OidcConfig
from archive_server.errors import ArchiveError, Unavailable
from archive_server.logins import Issued, Logins

log = logging.getLogger(__name__)

# Asymmetric signatures only: an HMAC-signed ID token would be keyed with the
# client secret, which every process holding the config knows.
_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_JWKS_REFETCH_S = 30.0
REQUEST_MAX_AGE_S = 600


class LoginRefused(Unauthenticated):
    """The IdP's answer does not log anybody in (see the module's reasons)."""


@dataclasses.dataclass(frozen=True)
class Begun:
    url: str
    state: str


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def safe_next(path: str | None) -> str:
    """Only a path on this archive: never an open redirect to elsewhere."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or len(path) > 1000:
        return "/"
    return path


class OidcClient:
    """The relying party for one provider: discovery, code exchange, ID-token checks."""

    def __init__(self, config: OidcConfig, http: httpx.Client | None = None) -> None:
        self.config = config
        self.http = http or httpx.Client(verify=str(config.ca_file) if config.ca_file else True, timeout=10.0)
        self._lock = threading.RLock()
        self._metadata: dict[str, Any] | None = None
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_at = 0.0

    # -- the provider's documents

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None:
                doc = self._get_json(f"{self.config.issuer}/.well-known/openid-configuration")
                if doc.get("issuer", "").rstrip("/") != self.config.issuer:
                    raise Unavailable(f"the identity provider at {self.config.issuer} names itself "
                                      f"{doc.get('issuer')!r}: [oidc] issuer must be exactly its issuer")
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(doc.get(key), str):
                        raise Unavailable(f"the identity provider's discovery document has no {key}")
                self._metadata = doc
            return self._metadata

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = self.http.get(url)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as e:
            raise Unavailable(f"the identity provider cannot be reached ({url}: {e})") from None
        if not isinstance(body, dict):
            raise Unavailable(f"the identity provider's answer from {url} is not a JSON object")
        return body

    def _key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            for fresh in (False, True):
                if self._jwks is None or (fresh and time.monotonic() - self._jwks_at > _JWKS_REFETCH_S):
                    self._jwks = jwt.PyJWKSet.from_dict(self._get_json(self.metadata()["jwks_uri"]))
                    self._jwks_at = time.monotonic()
                candidates = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
                if len(candidates) == 1:
                    return candidates[0]
        raise LoginRefused("ID_TOKEN_SIGNATURE", "the ID token is signed with a key the identity provider "
                                                 "does not publish")

    # -- the flow

    def authorization_url(self, state: str, nonce: str, code_verifier: str) -> str:
        query = {"response_type": "code", "client_id": self.config.client_id,
                 "redirect_uri": self.config.redirect_url, "scope": " ".join(self.config.scopes),
                 "state": state, "nonce": nonce, "code_challenge": _s256(code_verifier),
                 "code_challenge_method": "S256"}
        endpoint = self.metadata()["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"

    def exchange(self, code: str, code_verifier: str) -> str:
        """The ID token for ``code`` (client_secret_basic, with the PKCE verifier)."""
        try:
            response = self.http.post(
                self.metadata()["token_endpoint"],
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": self.config.redirect_url,
                      "code_verifier": code_verifier},
                auth=(self.config.client_id, self.config.client_secret),
                headers={"Accept": "application/json"})
        except httpx.HTTPError as e:
            raise Unavailable(f"the identity provider's token endpoint cannot be reached: {e}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("id_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            raise LoginRefused("IDP_ERROR", f"the identity provider did not issue an ID token "
                                            f"(HTTP {response.status_code}, {error or 'no id_token'})")
        return str(body["id_token"])

    def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims once signature, iss, aud/azp, exp, iat and nonce hold."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.InvalidTokenError:
            raise LoginRefused("ID_TOKEN_INVALID", "the ID token is not a signed JWT") from None
        allowed = [a for a in _ALGORITHMS
                   if a in self.metadata().get("id_token_signing_alg_values_supported", _ALGORITHMS)]
        if header.get("alg") not in allowed:
            raise LoginRefused("ID_TOKEN_SIGNATURE", f"the ID token's algorithm {header.get('alg')!r} is not "
                                                     "accepted (asymmetric signatures only)")
        key = self._key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token, key=key.key, algorithms=[header["alg"]], audience=self.config.client_id,
                issuer=self.config.issuer, leeway=self.config.leeway_s,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]})
        except jwt.ExpiredSignatureError:
            raise LoginRefused("ID_TOKEN_EXPIRED", "the ID token has expired") from None
        except jwt.InvalidAudienceError:
            raise LoginRefused("ID_TOKEN_WRONG_AUDIENCE", "the ID token was issued to another client") from None
        except jwt.InvalidIssuerError:
            raise LoginRefused("ID_TOKEN_WRONG_ISSUER", "the ID token was issued by another provider") from None
        except (jwt.InvalidSignatureError, jwt.DecodeError):
            raise LoginRefused("ID_TOKEN_SIGNATURE", "the ID token's signature does not verify") from None
        except jwt.InvalidTokenError as e:
            raise LoginRefused("ID_TOKEN_INVALID", f"the ID token is not valid: {e}") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.config.client_id:
            raise LoginRefused("ID_TOKEN_WRONG_AUDIENCE", "the ID token was issued to another client (azp)")
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
            raise LoginRefused("ID_TOKEN_NONCE", "the ID token does not answer this login (nonce)")
        return claims

    def subject(self, claims: dict[str, Any]) -> str:
        value = claims.get(self.config.claim)
        if not isinstance(value, str) or not value.strip():
            raise LoginRefused("CLAIM_MISSING", f"the ID token has no {self.config.claim!r} claim to name you by")
        return value.strip()


def begin_login(logins: Logins, client: OidcClient, next_path: str | None) -> Begun:
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48)
    url = client.authorization_url(state, nonce, verifier)
    logins.remember_oidc_request(state, nonce, verifier, safe_next(next_path))
    return Begun(url, state)


def complete_login(logins: Logins, client: OidcClient, *, state: str | None, browser_state: str | None,
                   code: str | None, error: str | None, origin: str) -> tuple[Issued, str]:
    """The session and the path to go on to, or an audited refusal."""
    try:
        if error:
            raise LoginRefused("IDP_ERROR", f"the identity provider refused the login ({error[:100]})")
        if not state or not browser_state or not secrets.compare_digest(state, browser_state):
            raise LoginRefused("STATE_MISMATCH", "this login was not started in this browser; start it again")
        pending = logins.take_oidc_request(state, REQUEST_MAX_AGE_S)
        if pending is None:
            raise LoginRefused("STATE_UNKNOWN", "this login is unknown, used already or too old; start it again")
        if not code:
            raise LoginRefused("IDP_ERROR", "the identity provider sent no authorization code")
        claims = client.verify(client.exchange(code, pending.code_verifier), pending.nonce)
        subject = client.subject(claims)
    except ArchiveError as e:
        reason = getattr(e, "reason", None) or ("IDP_UNAVAILABLE" if isinstance(e, Unavailable) else e.code)
        logins.refuse_login("oidc", origin, reason, str(e), {"issuer": client.config.issuer})
        log.info("oidc login refused", extra={"reason": reason, "peer": origin})
        raise
    return logins.login_idp(subject, origin, client.config.claim), pending.next_path
