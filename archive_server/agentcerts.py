"""Agent certificates (issue 10): on a TLS archive the certificate is the agent.

An administrator binds one certificate, by the SHA-256 fingerprint of its DER
bytes, to one agent id and one department (``admin agent add``); binding a new
certificate replaces the old one (key rotation), ``admin agent revoke`` ends it.
Both go through the one authorization gate and audit writer (R18).

:class:`AgentGate` is what every Ingest and AgentRegistry call passes. On a TLS
archive it takes the peer's certificate (already verified against
``--client-ca`` by the TLS handshake), fingerprints it and looks up its
binding: the agent id and department come from there, never from the request.
A request that names another agent or department, an unbound or a revoked
certificate is refused (:class:`~archive_server.errors.AgentRefused`) and the
refusal audited with the fingerprint. On a plaintext archive (``--insecure``,
loopback only: development) there is no certificate, the gate yields None and
the request's own agent id and department are taken as they are.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from archive_server import validation as v
from archive_server.audit import append_audit
from archive_server.authz import Principal, operation
from archive_server.cases import iso
from archive_server.errors import (
    AgentNotPermitted,
    AgentRefused,
    AgentUnauthenticated,
    ArchiveError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from archive_server.metrics import AGENT_CALLS_REFUSED
from archive_server.models import Agent, AgentBinding, Department, utcnow

if TYPE_CHECKING:
    from archive_server.db import Database

log = logging.getLogger(__name__)

# The same refusal (certificate, call, reason, claims) is audited once per this
# many seconds and counted in between: an agent configured with the wrong
# department heartbeats every few seconds, and a flood of refused calls must
# not queue every ingest behind the audit chain's lock. The service log keeps
# every one.
AUDIT_REPEAT_WINDOW_S = 60.0
_AUDIT_KEYS_KEPT = 4096


def fingerprint_der(der: bytes) -> str:
    """The SHA-256 fingerprint of a certificate's DER bytes: 64 lowercase hex digits
    (``openssl x509 -noout -fingerprint -sha256`` prints the same, upper case with colons)."""
    return hashlib.sha256(der).hexdigest()


def fingerprint_pem(pem: bytes) -> str:
    return fingerprint_der(ssl.PEM_cert_to_DER_cert(pem.decode("ascii")))


@dataclasses.dataclass(frozen=True)
class CertificateInfo:
    fingerprint: str
    subject: str
    not_after: dt.datetime


def read_certificate(data: bytes, now: dt.datetime | None = None) -> CertificateInfo:
    """The agent certificate in ``data`` (PEM, the first of a chain; or DER),
    checked to be one a TLS client can use: not a CA, allowed for client
    authentication, not expired. Raises InvalidArgument saying what is wrong."""
    if b"PRIVATE KEY-----" in data:
        raise InvalidArgument("the file holds a private key: give the agent's certificate only "
                              "(the private key never leaves the capture PC)")
    try:
        cert = (x509.load_pem_x509_certificates(data)[0] if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data))
    except ValueError:
        raise InvalidArgument("the file is not an X.509 certificate (PEM or DER)") from None
    now = now or utcnow()
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise InvalidArgument("this is a CA certificate, not an agent's: give the certificate the "
                                  "region's CA issued to the capture PC")
    except x509.ExtensionNotFound:
        pass
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise InvalidArgument("the certificate is not for TLS client authentication (its extended key "
                              "usage lacks clientAuth): the archive's handshake would refuse it")
    if cert.not_valid_after_utc <= now:
        raise InvalidArgument(f"the certificate expired on {cert.not_valid_after_utc.isoformat()}")
    return CertificateInfo(fingerprint=fingerprint_der(cert.public_bytes(Encoding.DER)),
                           subject=cert.subject.rfc4514_string()[:1024], not_after=cert.not_valid_after_utc)


# -- administration (admin agent add / revoke / list) -------------------------------------


def bind_agent(db: "Database", principal: Principal, agent_id: str, department: str,
               certificate: bytes) -> str:
    """Bind ``certificate`` to ``agent_id`` in ``department``; returns bound,
    replaced (a new certificate or department: the old one stops working at
    once) or unchanged. One certificate is one agent."""
    agent_id = v.agent_id(agent_id.strip())
    hsa = v.hsa_id(department.strip(), "--department")
    cert = read_certificate(certificate)
    with operation(db, principal, "agent.bound", target=f"agent:{agent_id}") as op:
        op.require("admin.agents")
        op.department = hsa
        op.details.update(agent_id=agent_id, department=hsa, fingerprint=cert.fingerprint,
                          subject=cert.subject, not_after=cert.not_after.isoformat())
        s = op.session
        dep = s.execute(sa.select(Department).where(Department.hsa_id == hsa)).scalar_one_or_none()
        if dep is None:
            raise NotFound(f"unknown department {hsa} (admin department add): on a TLS archive departments "
                           "are registered by an administrator, never by an agent")
        other = s.execute(sa.select(AgentBinding.agent_id).where(
            AgentBinding.fingerprint == cert.fingerprint, AgentBinding.agent_id != agent_id)).scalar()
        if other is not None:
            raise FailedPrecondition(f"this certificate is already bound to agent {other}: one certificate "
                                     "is one agent (issue each capture PC its own)")
        binding = s.get(AgentBinding, agent_id, with_for_update=True)
        if binding is None:
            s.add(AgentBinding(agent_id=agent_id, department_id=dep.id, fingerprint=cert.fingerprint,
                               subject=cert.subject, not_after=cert.not_after, bound_by=principal.actor))
            return "bound"
        if binding.fingerprint == cert.fingerprint and binding.revoked_at is not None:
            raise FailedPrecondition(f"this certificate of agent {agent_id} was revoked on "
                                     f"{iso(binding.revoked_at)}: issue the agent a new one and bind that")
        if binding.fingerprint == cert.fingerprint and binding.department_id == dep.id:
            op.action = "agent.unchanged"
            return "unchanged"
        op.action = "agent.rebound"
        op.details.update(old_fingerprint=binding.fingerprint, old_department=binding.department.hsa_id,
                          was_revoked=binding.revoked_at is not None)
        binding.department_id, binding.fingerprint = dep.id, cert.fingerprint
        binding.subject, binding.not_after = cert.subject, cert.not_after
        binding.bound_at, binding.bound_by = utcnow(), principal.actor
        binding.revoked_at = binding.revoked_by = None
        return "replaced"


def revoke_agent(db: "Database", principal: Principal, agent_id: str) -> str:
    """Refuse every further call of the agent's certificate; returns revoked
    or unchanged (already revoked). Binding a new certificate re-admits it."""
    with operation(db, principal, "agent.revoked", target=f"agent:{agent_id}") as op:
        op.require("admin.agents")
        binding = op.session.get(AgentBinding, agent_id, with_for_update=True)
        if binding is None:
            raise NotFound(f"agent {agent_id} has no certificate bound (admin agent list)")
        op.department = binding.department.hsa_id
        op.details.update(agent_id=agent_id, fingerprint=binding.fingerprint)
        if binding.revoked_at is not None:
            op.action = "agent.unchanged"
            return "unchanged"
        binding.revoked_at, binding.revoked_by = utcnow(), principal.actor
        return "revoked"


def list_bindings(db: "Database", principal: Principal) -> list[dict[str, Any]]:
    """Every bound agent: what ``admin agent list --json`` prints."""
    with operation(db, principal, "agent.list") as op:
        op.require("admin.agents")
        rows = op.session.execute(
            sa.select(AgentBinding, Department.hsa_id, Agent.last_seen)
            .join(Department, Department.id == AgentBinding.department_id)
            .outerjoin(Agent, Agent.agent_id == AgentBinding.agent_id)
            .order_by(AgentBinding.agent_id)).all()
        return [{
            "agent_id": b.agent_id, "department": hsa, "fingerprint": b.fingerprint,
            "revoked": b.revoked_at is not None, "last_seen": iso(seen),
            "subject": b.subject, "not_after": iso(b.not_after), "bound_at": iso(b.bound_at),
            "bound_by": b.bound_by, "revoked_at": iso(b.revoked_at), "revoked_by": b.revoked_by,
        } for b, hsa, seen in rows]


# -- the gate every agent call passes ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Peer:
    """The other end of a call: its address, and on TLS its verified certificate (PEM)."""

    address: str
    certificate: bytes | None


@dataclasses.dataclass(frozen=True)
class AgentCaller:
    """Who calls, as the archive's binding of the certificate says."""

    agent_id: str
    department_id: int
    department_hsa_id: str
    fingerprint: str

    def check_claims(self, agent_id: str, department_hsa_id: str) -> None:
        """The request's agent id and department must be the certificate's own."""
        if agent_id != self.agent_id:
            raise AgentNotPermitted(
                "WRONG_AGENT", f"this certificate is agent {self.agent_id}'s; the request names agent "
                f"{agent_id}. Set [agent] id = \"{self.agent_id}\" on the capture PC, or bind its own "
                "certificate to that id", claimed_agent_id=agent_id)
        if department_hsa_id != self.department_hsa_id:
            raise AgentNotPermitted(
                "WRONG_DEPARTMENT", f"agent {self.agent_id} is bound to department {self.department_hsa_id}; "
                f"the request names {department_hsa_id}. An agent files into its own department only: "
                "fix [agent] department, or re-bind the agent (admin agent add … --department)",
                claimed_department=department_hsa_id)

    def check_session(self, session_id: str, agent_id: str, department_id: int) -> None:
        """A session belongs to the agent (and department) that opened it."""
        if agent_id != self.agent_id or department_id != self.department_id:
            raise AgentNotPermitted(
                "SESSION_OF_ANOTHER_AGENT", f"session {session_id} was opened by another agent or for "
                f"another department than agent {self.agent_id} of {self.department_hsa_id}",
                session_id=session_id, session_agent_id=agent_id)


class AgentGate:
    """Identifies the agent behind a call by its certificate, and audits refusals."""

    def __init__(self, db: "Database", *, tls: bool, clock: Callable[[], float] = time.monotonic,
                 repeat_window_s: float = AUDIT_REPEAT_WINDOW_S) -> None:
        self.db = db
        self.tls = tls
        self._clock = clock
        self._window = repeat_window_s
        self._lock = threading.Lock()
        self._audited: dict[tuple[Any, ...], tuple[float, int]] = {}

    @contextlib.contextmanager
    def call(self, peer: Peer, method: str) -> Iterator[AgentCaller | None]:
        """Around one call: yields the caller (None on a plaintext archive);
        every AgentRefused raised before or inside is audited, then re-raised."""
        if not self.tls:
            yield None
            return
        fingerprint: str | None = None
        caller: AgentCaller | None = None
        try:
            if peer.certificate is None:
                raise AgentUnauthenticated("NO_CLIENT_CERTIFICATE", "no client certificate: agents of a TLS "
                                                                    "archive call with their own")
            fingerprint = fingerprint_pem(peer.certificate)
            caller = self._identify(fingerprint)
            yield caller
        except AgentRefused as refusal:
            AGENT_CALLS_REFUSED.labels(reason=refusal.reason).inc()
            self._audit(refusal, method, peer, fingerprint, caller)
            raise

    def _identify(self, fingerprint: str) -> AgentCaller:
        with self.db.read() as s:
            row = s.execute(
                sa.select(AgentBinding, Department.hsa_id)
                .join(Department, Department.id == AgentBinding.department_id)
                .where(AgentBinding.fingerprint == fingerprint)).one_or_none()
        if row is None:
            raise AgentUnauthenticated(
                "CERTIFICATE_NOT_BOUND", f"this client certificate (SHA-256 {fingerprint}) is not bound to an "
                "agent of this archive: an administrator binds it with `bildsluss-archive admin agent add "
                "AGENT_ID --department HSA-ID --cert AGENT.pem`")
        binding, hsa = row
        if binding.revoked_at is not None:
            raise AgentUnauthenticated(
                "AGENT_REVOKED", f"agent {binding.agent_id}'s certificate was revoked on "
                f"{iso(binding.revoked_at)}; an administrator must bind a new one",
                agent_id=binding.agent_id)
        return AgentCaller(agent_id=binding.agent_id, department_id=binding.department_id,
                           department_hsa_id=hsa, fingerprint=fingerprint)

    def _audit(self, refusal: AgentRefused, method: str, peer: Peer, fingerprint: str | None,
               caller: AgentCaller | None) -> None:
        extra = {"method": method, "peer": peer.address, "reason": refusal.reason, "fingerprint": fingerprint,
                 "agent_id": caller.agent_id if caller else refusal.audit.get("agent_id")}
        repeats = self._due((fingerprint, method, refusal.reason, tuple(sorted(refusal.audit.items()))))
        if repeats is None:
            log.info("agent call refused (audited less than a minute ago)", extra=extra)
            return
        log.warning("agent call refused", extra={**extra, "detail": str(refusal)})
        agent_id = caller.agent_id if caller else refusal.audit.get("agent_id")
        details: dict[str, Any] = {"reason": refusal.reason, "message": str(refusal), "method": method,
                                   "peer": peer.address, "fingerprint": fingerprint,
                                   **{k: str(val) for k, val in refusal.audit.items()}}
        if repeats:
            details["repeats_not_audited"] = repeats
        try:
            with self.db.write() as s:
                append_audit(s, f"agent:{agent_id}" if agent_id else f"cert:{fingerprint or 'none'}",
                             "agent.refused", target=f"agent:{agent_id}" if agent_id else None,
                             department=caller.department_hsa_id if caller else None,
                             details=details, outcome="refused")
        except ArchiveError:
            log.exception("could not audit a refused agent call", extra=extra)

    def _due(self, key: tuple[Any, ...]) -> int | None:
        """None when the same refusal was audited within the window (counted);
        otherwise how many repeats went unaudited since the last one."""
        now = self._clock()
        with self._lock:
            last = self._audited.get(key)
            if last is not None and now - last[0] < self._window:
                self._audited[key] = (last[0], last[1] + 1)
                return None
            self._audited[key] = (now, 0)
            if len(self._audited) > _AUDIT_KEYS_KEPT:
                self._audited = {k: t for k, t in self._audited.items() if now - t[0] < self._window}
            return last[1] if last is not None else 0
