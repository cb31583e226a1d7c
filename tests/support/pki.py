"""Test PKI and a TLS archive process: shared by the mTLS tests of ingest and heartbeats."""
from __future__ import annotations

import contextlib
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: pathlib.Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all P-256."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=Bildsluss test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                      ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=bildsluss-{name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


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
