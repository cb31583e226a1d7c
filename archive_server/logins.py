"""Who is calling (issue 10, users): logins, sessions, the throttle.

A person logs in once, through the archive's HTTPS endpoint, with a local
password (an Argon2id hash set by ``admin user passwd``) or through the
region's identity provider (``oidc.py`` verifies the ID token; the configured
claim is linked to an archive user with ``admin user link``). Either way
:class:`Logins` issues a **session**: an opaque random bearer token, of which
only the SHA-256 is stored (``user_sessions``), so that a copy of the database
logs nobody in and every archive process on the same database honours the
token and sees its logout. Every later call — the gRPC ``Cases`` service, each
page and API request — presents the token and :meth:`Logins.authenticate`
turns it into the :class:`~archive_server.authz.Principal` that the one gate
(``authz.operation``) checks and audits. A caller never names a user.

What is refused, with a stable reason and an audit event (actor
``anonymous``, action ``auth.login`` or ``auth.token``, outcome ``refused``):
a wrong password or unknown user (``BAD_PASSWORD``, ``UNKNOWN_USER``,
``NO_PASSWORD``: the caller hears only "wrong user name or password"), a
missing, unknown, expired or logged-out token (``TOKEN_MISSING``,
``TOKEN_UNKNOWN``, ``TOKEN_EXPIRED``, ``TOKEN_REVOKED``), an ID token that
does not verify (``oidc.py``'s reasons), an IdP subject linked to no user.

The throttle: failed logins are counted per user name and per source address
within ``failure_window_s``; at ``max_failures_per_user`` (or
``…_per_address``) that key is refused without looking at the password for
``cooldown_s`` (HTTP 429, ``RATE_LIMITED``), audited once as
``auth.login_blocked`` when the block starts. A block always ends: the real
user is kept out for one cool-down at most after the attack stops, never
locked out for good. The counts live in the database, so several archive
processes share them.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

import argon2
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from archive_server.audit import append_audit
from archive_server.authz import USERNAME, NotPermitted, Principal, Unauthenticated, check_username, operation
from archive_server.config import LoginConfig
from archive_server.db import Database
from archive_server.errors import ArchiveError, InvalidArgument, NotFound
from archive_server.models import LoginThrottle, OidcLogin, User, UserSession, utcnow

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
METHODS = ("local", "oidc")
# Argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile: 64 MiB,
# 3 passes). At most two hashes at once, so a burst of logins cannot take the
# archive's memory; the throttle keeps a flood from reaching here at all.
_hasher = argon2.PasswordHasher()
_hashing = threading.BoundedSemaphore(2)
_dummy_hash: str | None = None
_MAX_PASSWORD = 1024
# last_used_at is written at most this often per session (a write per call is waste).
_TOUCH_EVERY = dt.timedelta(seconds=60)


class Throttled(ArchiveError):
    """Too many failed logins for this user name or source address: refused
    without checking the password until ``retry_after_s`` have passed."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_s} s")
        self.reason = "RATE_LIMITED"
        self.retry_after_s = retry_after_s


@dataclasses.dataclass(frozen=True)
class Issued:
    """A new session: the bearer token (shown once, never stored) and when it ends."""

    token: str
    expires: dt.datetime
    user: str
    method: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def address_of(origin: str) -> str:
    """The IP address in a peer string (``ipv4:10.1.2.3:5555``,
    ``ipv6:[::1]:5555``, ``10.1.2.3``): the throttle's per-address key."""
    text = origin.split(":", 1)[1] if origin.startswith(("ipv4:", "ipv6:")) else origin
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    host, sep, port = text.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else text


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)


# -- passwords --------------------------------------------------------------------------


def hash_password(password: str) -> str:
    with _hashing:
        return _hasher.hash(password)


def _verify(stored: str | None, password: str) -> bool:
    """Argon2id verification; an absent hash is checked against a dummy so
    that an unknown user takes as long as a wrong password."""
    global _dummy_hash
    if stored is None:
        if _dummy_hash is None:
            _dummy_hash = hash_password(secrets.token_hex(16))
        stored = _dummy_hash
    try:
        with _hashing:
            return _hasher.verify(stored, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def check_password_policy(password: str, config: LoginConfig) -> str:
    password = password.rstrip("\r\n")
    if len(password) < config.min_password_length:
        raise InvalidArgument(f"a password needs at least {config.min_password_length} characters")
    if len(password) > _MAX_PASSWORD:
        raise InvalidArgument(f"a password may have at most {_MAX_PASSWORD} characters")
    return password


def set_password(db: Database, principal: Principal, username: str, password: str,
                 config: LoginConfig) -> dict[str, Any]:
    """Set (or replace) a local user's password; the user's open sessions end.
    Needs ``admin.users``; audited as ``user.password_set`` (never the password)."""
    name = check_username(username)
    password = check_password_policy(password, config)
    digest = hash_password(password)
    with operation(db, principal, "user.password_set", target=f"user:{name}") as op:
        op.require("admin.users")
        user = _user_named(op.session, name)
        user.password_hash, user.password_set_at = digest, utcnow()
        ended = _revoke_sessions(op.session, user.id)
        op.details.update(user=name, sessions_ended=ended)
        return {"user": name, "sessions_ended": ended}


def link_idp_subject(db: Database, principal: Principal, username: str, subject: str | None) -> dict[str, Any]:
    """Link the identity provider's claim value (an HSA-id, say) to an archive
    user, or unlink it (``subject`` None). Needs ``admin.users``; audited."""
    name = check_username(username)
    subject = subject.strip() if subject is not None else None
    if subject is not None and not 0 < len(subject) <= 255:
        raise InvalidArgument("the identity provider's value must be 1-255 characters")
    action = "user.idp_linked" if subject is not None else "user.idp_unlinked"
    with operation(db, principal, action, target=f"user:{name}") as op:
        op.require("admin.users")
        s = op.session
        user = _user_named(s, name)
        if subject is not None:
            holder = s.execute(sa.select(User).where(User.idp_subject == subject)).scalar_one_or_none()
            if holder is not None and holder.id != user.id:
                raise InvalidArgument(f"{subject!r} is linked to {holder.username} already; unlink it there first")
        op.details.update(user=name, idp_subject=subject, old_idp_subject=user.idp_subject)
        user.idp_subject = subject
        if subject is None:
            op.details["sessions_ended"] = _revoke_sessions(s, user.id, method="oidc")
        return {"user": name, "idp_subject": subject}


def end_sessions(db: Database, principal: Principal, username: str) -> dict[str, Any]:
    """Log a user out everywhere (a lost laptop, a person who left). Needs
    ``admin.users``; audited as ``user.sessions_ended``."""
    name = check_username(username)
    with operation(db, principal, "user.sessions_ended", target=f"user:{name}") as op:
        op.require("admin.users")
        user = _user_named(op.session, name)
        ended = _revoke_sessions(op.session, user.id)
        op.details.update(user=name, sessions_ended=ended)
        return {"user": name, "sessions_ended": ended}


def _user_named(s: Session, name: str) -> User:
    user = s.execute(sa.select(User).where(User.username == name)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"unknown user {name}: give them access to a department first (admin user add)")
    return user


def _revoke_sessions(s: Session, user_id: int, method: str | None = None) -> int:
    query = sa.update(UserSession).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
    if method is not None:
        query = query.where(UserSession.method == method)
    result: Any = s.execute(query.values(revoked_at=utcnow()))
    return int(result.rowcount or 0)


# -- sessions ---------------------------------------------------------------------------


class Logins:
    """Logins and sessions on one database. ``clock`` is replaceable so that
    expiry and cool-downs are tested without waiting."""

    def __init__(self, db: Database, config: LoginConfig,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        # Blocks this process has seen (key -> until): a flood of attempts is
        # refused from memory, not with a query each; other processes learn a
        # block from the database on their first attempt.
        self._blocks: dict[str, dt.datetime] = {}
        self._blocks_lock = threading.Lock()

    # -- local accounts

    def login_local(self, username: str, password: str, origin: str) -> Issued:
        """Check a local password and open a session. Raises Throttled while
        the user name or the address cools down, Unauthenticated
        (BAD_CREDENTIALS) for a wrong name or password."""
        name = username.strip().lower()
        valid_name = bool(USERNAME.match(name))
        keys = {"user": f"user:{name}" if valid_name else "user:?", "addr": f"addr:{address_of(origin)}"}
        self._check_not_blocked(keys.values())
        user = None
        if valid_name and len(password) <= _MAX_PASSWORD:
            with self.db.read() as s:
                user = s.execute(sa.select(User).where(User.username == name)).scalar_one_or_none()
        ok = _verify(user.password_hash if user is not None else None, password[:_MAX_PASSWORD])
        if not ok or user is None:
            reason = "UNKNOWN_USER" if user is None else ("NO_PASSWORD" if user.password_hash is None
                                                          else "BAD_PASSWORD")
            self._failed_login(keys, name if valid_name else None, origin, reason)
            raise Unauthenticated("BAD_CREDENTIALS", "wrong user name or password")
        assert user.password_hash is not None
        rehash = _hasher.check_needs_rehash(user.password_hash)
        new_hash = hash_password(password) if rehash else None
        return self._open_session(user.username, "local", origin, forget=keys["user"], new_hash=new_hash)

    # -- the identity provider (oidc.py verified the ID token)

    def login_idp(self, subject: str, origin: str, claim: str) -> Issued:
        """Open a session for the archive user linked to ``subject`` (the
        configured claim's value in a verified ID token). An IdP login of a
        person the archive does not know is refused (PERMISSION_DENIED)."""
        with self.db.read() as s:
            user = s.execute(sa.select(User).where(User.idp_subject == subject)).scalar_one_or_none()
        if user is None:
            self.refuse_login("oidc", origin, "NO_ARCHIVE_USER",
                              f"the identity provider's {claim} {subject!r} is linked to no archive user",
                              {"claim": claim, "subject": subject})
            raise NotPermitted("NO_ARCHIVE_USER", "you are logged in at the identity provider, but this archive "
                                                  "does not know you: ask a system administrator for access.")
        return self._open_session(user.username, "oidc", origin, details={"claim": claim, "subject": subject})

    def refuse_login(self, method: str, origin: str, reason: str, message: str,
                     details: dict[str, Any] | None = None, target: str | None = None) -> None:
        """Audit a refused login (for example an ID token that did not verify)."""
        with self.db.write() as s:
            append_audit(s, ANONYMOUS, "auth.login", target=target, outcome="refused",
                         details={**(details or {}), "reason": reason, "message": message,
                                  "login": {"method": method, "from": origin}})

    # -- every call

    def authenticate(self, token: str | None, origin: str) -> Principal:
        """The principal a bearer token names, or Unauthenticated (audited)."""
        if not token:
            self._refuse_token(None, origin, "TOKEN_MISSING", "log in first: this call needs a bearer token")
        assert token is not None
        now = self.clock()
        with self.db.read() as s:
            row = s.execute(sa.select(UserSession, User.username).join(User, User.id == UserSession.user_id)
                            .where(UserSession.token_sha256 == token_digest(token))).one_or_none()
        if row is None:
            self._refuse_token(None, origin, "TOKEN_UNKNOWN", "the token is not one this archive issued; log in again")
        assert row is not None
        session, username = row
        if session.revoked_at is not None:
            self._refuse_token(username, origin, "TOKEN_REVOKED", "this session was logged out; log in again",
                               session.method)
        if _aware(session.expires_at) <= now:
            self._refuse_token(username, origin, "TOKEN_EXPIRED", "the session has ended; log in again",
                               session.method)
        idle = dt.timedelta(seconds=self.config.idle_timeout_s)
        if _aware(session.last_used_at) + idle <= now:
            self._refuse_token(username, origin, "TOKEN_EXPIRED",
                               "the session ended after a time without use; log in again", session.method)
        if now - _aware(session.last_used_at) >= _TOUCH_EVERY:
            with self.db.write() as s:
                s.execute(sa.update(UserSession).where(UserSession.token_sha256 == session.token_sha256)
                          .values(last_used_at=now))
        return Principal.named(username, login=session.method, origin=origin)

    def session_of(self, token: str) -> dict[str, Any]:
        """Who a (valid) token belongs to and when it ends; call authenticate first."""
        with self.db.read() as s:
            session = s.get(UserSession, token_digest(token))
            if session is None:
                raise Unauthenticated("TOKEN_UNKNOWN", "the token is not one this archive issued")
            return {"user": session.user.username, "method": session.method,
                    "expires": _aware(session.expires_at).isoformat()}

    def logout(self, token: str | None, origin: str) -> Principal:
        """End the session of ``token``; a replay of it is then refused (TOKEN_REVOKED)."""
        principal = self.authenticate(token, origin)
        assert token is not None
        with self.db.write() as s:
            s.execute(sa.update(UserSession).where(UserSession.token_sha256 == token_digest(token))
                      .values(revoked_at=self.clock()))
            append_audit(s, principal.actor, "auth.logout", target=f"user:{principal.user}",
                         details={"login": principal.login_details()})
        return principal

    # -- OpenID Connect requests in flight (state, nonce, PKCE verifier)

    def remember_oidc_request(self, state: str, nonce: str, code_verifier: str, next_path: str) -> None:
        with self.db.write() as s:
            s.add(OidcLogin(state_sha256=token_digest(state), nonce=nonce, code_verifier=code_verifier,
                            next_path=next_path, created_at=self.clock()))

    def take_oidc_request(self, state: str, max_age_s: int = 600) -> OidcLogin | None:
        """The request ``state`` names, removed (a state is used once); None
        when unknown, used already or older than ``max_age_s``."""
        with self.db.write() as s:
            row = s.get(OidcLogin, token_digest(state))
            if row is None:
                return None
            s.delete(row)
            fresh = _aware(row.created_at) + dt.timedelta(seconds=max_age_s) > self.clock()
            return row if fresh else None

    # -- inside

    def _open_session(self, username: str, method: str, origin: str, *, forget: str | None = None,
                      new_hash: str | None = None, details: dict[str, Any] | None = None) -> Issued:
        now = self.clock()
        token = secrets.token_urlsafe(32)
        expires = now + dt.timedelta(seconds=self.config.session_ttl_s)
        with self.db.write() as s:
            user = s.execute(sa.select(User).where(User.username == username)).scalar_one()
            if new_hash is not None:
                user.password_hash = new_hash
            s.add(UserSession(token_sha256=token_digest(token), user_id=user.id, method=method,
                              origin=origin[:255], created_at=now, expires_at=expires, last_used_at=now))
            if forget is not None:
                s.execute(sa.delete(LoginThrottle).where(LoginThrottle.key == forget))
            self._sweep(s, now)
            append_audit(s, username, "auth.login", target=f"user:{username}",
                         details={**(details or {}), "expires": expires.isoformat(),
                                  "login": {"method": method, "from": origin}})
        log.info("login", extra={"user": username, "method": method, "peer": origin})
        return Issued(token, expires, username, method)

    def _sweep(self, s: Session, now: dt.datetime) -> None:
        """Forget ended sessions, stale throttle counts and abandoned OIDC requests."""
        day = dt.timedelta(days=1)
        s.execute(sa.delete(UserSession).where(UserSession.expires_at < now - day))
        s.execute(sa.delete(LoginThrottle).where(
            LoginThrottle.window_start < now - dt.timedelta(seconds=self.config.failure_window_s) - day,
            sa.or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until < now)))
        s.execute(sa.delete(OidcLogin).where(OidcLogin.created_at < now - day))

    def _check_not_blocked(self, keys: Any) -> None:
        now, keys = self.clock(), list(keys)
        with self._blocks_lock:
            later = [self._blocks[k] for k in keys if k in self._blocks and self._blocks[k] > now]
        if not later:
            with self.db.read() as s:
                rows = s.execute(sa.select(LoginThrottle.key, LoginThrottle.blocked_until)
                                 .where(LoginThrottle.key.in_(keys))).all()
            for key, until in rows:
                if until is not None and _aware(until) > now:
                    self._remember_block(key, _aware(until))
                    later.append(_aware(until))
        if later:
            raise Throttled(max(1, int((max(later) - now).total_seconds() + 0.999)))

    def _remember_block(self, key: str, until: dt.datetime) -> None:
        with self._blocks_lock:
            if len(self._blocks) > 10_000:
                now = self.clock()
                self._blocks = {k: t for k, t in self._blocks.items() if t > now}
            self._blocks[key] = until

    def _failed_login(self, keys: dict[str, str], name: str | None, origin: str, reason: str) -> None:
        limits = {"user": self.config.max_failures_per_user, "addr": self.config.max_failures_per_address}
        for attempt in range(2):
            try:
                with self.db.write() as s:
                    blocked = [key for kind, key in keys.items() if self._count_failure(s, key, limits[kind])]
                    login = {"method": "local", "from": origin}
                    target = f"user:{name}" if name else None
                    append_audit(s, ANONYMOUS, "auth.login", target=target, outcome="refused",
                                 details={"reason": reason, "message": "wrong user name or password",
                                          "user": name, "login": login})
                    for key in blocked:
                        append_audit(s, ANONYMOUS, "auth.login_blocked", target=target, outcome="refused",
                                     details={"reason": "RATE_LIMITED", "key": key, "login": login,
                                              "cooldown_s": self.config.cooldown_s,
                                              "message": "too many failed logins: refused until the "
                                                         "cool-down has passed"})
                return
            except sa_exc.IntegrityError:
                if attempt:  # two processes counted the first failure of a key at once
                    raise

    def _count_failure(self, s: Session, key: str, limit: int) -> bool:
        """Count one failure of ``key``; True when this one starts a block."""
        now = self.clock()
        row = s.execute(sa.select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()).scalar_one_or_none()
        if row is None:
            row = LoginThrottle(key=key, failures=0, window_start=now)
            s.add(row)
        elif _aware(row.window_start) + dt.timedelta(seconds=self.config.failure_window_s) <= now:
            row.failures, row.window_start = 0, now
        row.failures += 1
        if row.failures < limit:
            s.flush()
            return False
        row.failures, row.window_start = 0, now
        row.blocked_until = now + dt.timedelta(seconds=self.config.cooldown_s)
        s.flush()
        self._remember_block(key, row.blocked_until)
        log.warning("login blocked", extra={"key": key, "cooldown_s": self.config.cooldown_s})
        return True

    def _refuse_token(self, username: str | None, origin: str, reason: str, message: str,
                      method: str = "bearer") -> None:
        with self.db.write() as s:
            append_audit(s, ANONYMOUS, "auth.token", target=f"user:{username}" if username else None,
                         outcome="refused", details={"reason": reason, "message": message,
                                                     "login": {"method": method, "from": origin}})
        raise Unauthenticated(reason, message)
