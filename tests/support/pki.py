"""Test PKI and a TLS archive process: shared by the mTLS tests of ingest and heartbeats.

The PKI is made by the ``openssl`` tool, as a region's own would be (the
archive's optional ``pki`` helper is never needed): a CA, a server certificate
and client certificates. :func:`throwaway_certificate` makes a certificate in
memory for tests that only bind one and never connect with it.
"""
from __future__ import annotations

import contextlib
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def make_pki(d: pathlib.Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all P-256."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=Bildsluss test CA", cwd=d)
    issue(d, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    issue(d, "client")


def issue(d: pathlib.Path, name: str, ext: str = "extendedKeyUsage=clientAuth") -> pathlib.Path:
    """``NAME.key`` and ``NAME.crt`` signed by ``d``'s CA (a client certificate by
    default); returns the certificate's path."""
    _openssl("req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN=bildsluss-{name}", cwd=d)
    (d / f"{name}.ext").write_text(ext + "\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d / f"{name}.crt"


def bound_pki(root: pathlib.Path, departments: dict[str, str], agents: dict[str, str],
              unbound: tuple[str, ...] = ()) -> tuple[pathlib.Path, list[str]]:
    """A PKI in ``root/pki`` and an archive's data in ``root/data`` with
    ``departments`` (HSA-id -> name) registered and each of ``agents`` (agent id
    -> HSA-id) given a certificate bound to it; ``unbound`` get certificates
    only. Returns the PKI folder and the admin CLI's storage arguments."""
    from tests.archive.world import run_cli

    pki, store = root / "pki", ["--data", str(root / "data")]
    make_pki(pki)
    for hsa, name in departments.items():
        run_cli(store, "admin", "department", "add", hsa, "--name", name)
    for agent, hsa in agents.items():
        issue(pki, agent)
        run_cli(store, "admin", "agent", "add", agent, "--department", hsa, "--cert", str(pki / f"{agent}.crt"))
    for name in unbound:
        issue(pki, name)
    return pki, store


def serve_tls(pki: pathlib.Path, *args: str) -> contextlib.AbstractContextManager[str]:
    """:func:`serve` with mutual TLS: ``pki``'s server certificate and CA."""
    return serve(*args, "--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key"),
                 "--client-ca", str(pki / "ca.crt"))


def throwaway_certificate(name: str = "agent") -> bytes:
    """A self-signed client certificate (PEM), made in memory: to bind, not to connect."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@contextlib.contextmanager
def serve(*args: str) -> Iterator[str]:
    """``bildsluss-archive serve ARGS`` (no --insecure); yields the address."""
    proc = subprocess.Popen([sys.executable, "-m", "archive_server.cli", "serve", "--listen", "127.0.0.1:0",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server prints this line once ready
        assert line.startswith("listening on "), f"archive did not start: {line!r}"
        yield line.split()[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
