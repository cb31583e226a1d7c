"""A private CA for small sites and the demo (``bildsluss-archive pki``, issue 10).

Optional: a region plugs in its own PKI (any CA given to ``serve --client-ca``;
docs/security.md) and never needs this. For a site without one:

* :func:`init` makes a CA (P-256, ten years) and the archive's server
  certificate for its host names, in one folder (keys 0600, never overwritten);
* :func:`issue_agent` signs an agent's client certificate: from a CSR made on
  the capture PC (the private key never leaves it), or with a new key pair
  written beside it for the administrator to carry over.

Issuing grants nothing: a certificate works only once bound to an agent and a
department (``admin agent add``, audited).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import pathlib
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from archive_server import validation as v
from archive_server.agentcerts import fingerprint_der
from archive_server.errors import ConfigError, InvalidArgument

CA_DAYS = 3650
SERVER_DAYS = 825
AGENT_DAYS = 825


@dataclasses.dataclass(frozen=True)
class Issued:
    certificate: pathlib.Path
    key: pathlib.Path | None  # None when signed from a CSR
    fingerprint: str


def init(folder: pathlib.Path, hosts: list[str] | None = None, *, days: int = CA_DAYS) -> dict[str, pathlib.Path]:
    """A new CA and the archive's server certificate in ``folder``; refuses to
    replace an existing CA (every agent certificate hangs on its key)."""
    if (folder / "ca.key").exists():
        raise ConfigError(f"{folder / 'ca.key'} exists: a CA is made once (its agents' certificates depend on it)")
    hosts = hosts or default_hosts()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Bildsluss private CA ({hosts[0]})")])
    now = _now()
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    _write_key(folder / "ca.key", ca_key)
    _write_cert(folder / "ca.crt", ca)
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = (_leaf(ca, ca_key, server_key.public_key(), hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, SERVER_DAYS)
              .add_extension(x509.SubjectAlternativeName(names), critical=False)
              .sign(ca_key, hashes.SHA256()))
    _write_key(folder / "server.key", server_key)
    _write_cert(folder / "server.crt", server)
    return {"ca": folder / "ca.crt", "server_cert": folder / "server.crt", "server_key": folder / "server.key"}


def issue_agent(folder: pathlib.Path, agent_id: str, out: pathlib.Path, *, csr: bytes | None = None,
                days: int = AGENT_DAYS) -> Issued:
    """The client certificate of ``agent_id`` (CN = the agent id, clientAuth),
    signed by the CA in ``folder``, written to ``out/AGENT_ID.crt``."""
    v.agent_id(agent_id)
    try:
        ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        loaded = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    except FileNotFoundError as e:
        raise ConfigError(f"no CA in {folder} ({e.filename} missing): run `bildsluss-archive pki init` first, "
                          "or use the region's own CA") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{folder / 'ca.key'} is not the EC key `pki init` makes")
    ca_key = loaded
    key: ec.EllipticCurvePrivateKey | None = None
    if csr is not None:
        try:
            request = x509.load_pem_x509_csr(csr)
        except ValueError:
            raise InvalidArgument("--csr is not a PEM certificate signing request") from None
        if not request.is_signature_valid:
            raise InvalidArgument("the certificate signing request's signature does not verify")
        public = request.public_key()
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
    cert = _leaf(ca, ca_key, public, agent_id, ExtendedKeyUsageOID.CLIENT_AUTH, days).sign(ca_key, hashes.SHA256())
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = out / f"{agent_id}.crt", out / f"{agent_id}.key"
    for path in (cert_path, key_path) if key is not None else (cert_path,):
        if path.exists():
            raise ConfigError(f"{path} exists; not replaced (move it away to issue a new one)")
    if key is not None:
        _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return Issued(cert_path, key_path if key is not None else None,
                  fingerprint_der(cert.public_bytes(serialization.Encoding.DER)))


def default_hosts() -> list[str]:
    """This machine's fully qualified name, and loopback for local clients."""
    names = [socket.getfqdn(), "localhost", "127.0.0.1", "::1"]
    return list(dict.fromkeys(n for n in names if n))


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, public: object, common_name: str,
          usage: x509.ObjectIdentifier, days: int) -> x509.CertificateBuilder:
    now = _now()
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.subject).public_key(public)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_key(path: pathlib.Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_cert(path: pathlib.Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
