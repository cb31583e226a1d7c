"""A real ``bildsluss-archive serve`` process on a free loopback port.

Used by the end-to-end tests and the README demo. The server prints
``listening on HOST:PORT`` once it accepts calls, and with ``http=`` then
``http listening on HOST:PORT`` for its HTTPS endpoint; we wait for both.
"""
from __future__ import annotations

import os
import pathlib
import re
import selectors
import signal
import subprocess
import sys
import time

_READY = re.compile(r"^listening on (\S+:\d+)")
_HTTP_READY = re.compile(r"^http listening on (\S+:\d+)")


class ArchiveProcess:
    def __init__(
        self,
        data: pathlib.Path,
        *,
        db: str | None = None,
        blobs: str | None = None,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        listen: str = "127.0.0.1:0",
        http: str | None = None,
        insecure: bool = True,
        # Generous: on a loaded 2-core CI machine a PostgreSQL + S3 archive takes
        # tens of seconds to migrate, check its store and bind; a healthy start
        # returns as soon as it prints.
        ready_timeout_s: float = 90.0,
        tls: tuple[pathlib.Path, pathlib.Path, pathlib.Path] | None = None,
        source: pathlib.Path | None = None,
    ) -> None:
        """``tls``: (server certificate, its key, the agents' CA) to serve mutual
        TLS; None serves plaintext (--insecure, unless ``insecure`` is False and
        ``extra_args`` say how) on loopback. ``source``: run the archive of that
        checkout (a benchmark's "before"), not the one this process imports."""
        self.data = data
        self.db = db
        self.blobs = blobs
        self.env = env or {}
        self.extra_args = extra_args
        self.listen = listen
        self.http = http
        self.insecure = insecure
        self.http_address: str | None = None
        self.ready_timeout_s = ready_timeout_s
        self.tls = tls
        self.source = source
        self.address: str | None = None
        self.proc: subprocess.Popen | None = None
        self.stderr_path = data.parent / f"{data.name}.archive.log"

    def start(self) -> "ArchiveProcess":
        self.data.mkdir(parents=True, exist_ok=True)
        transport = (["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1]), "--client-ca", str(self.tls[2])]
                     if self.tls is not None else ["--insecure"] if self.insecure else [])
        cmd = [sys.executable, "-m", "archive_server.cli", "serve", "--data", str(self.data),
               "--listen", self.listen, *transport, *self.extra_args]
        if self.http:
            cmd += ["--http", self.http]
        if self.db:
            cmd += ["--db", self.db]
        if self.blobs:
            cmd += ["--blobs", self.blobs]
        self._stderr = open(self.stderr_path, "ab")
        # ``-m`` puts the working directory first on the module path.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, cwd=self.source,
                                     env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + self.ready_timeout_s
        seen = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if sel.select(timeout=0.1):
                line = self.proc.stdout.readline()
                seen += line
                text = line.decode(errors="replace")
                if match := _READY.search(text):
                    self.address = match.group(1)
                    if self.http:
                        # Printed right after, possibly already in the pipe's
                        # buffer, where select() would not see it.
                        text = self.proc.stdout.readline().decode(errors="replace")
                        seen += text.encode()
                if match := _HTTP_READY.search(text):
                    self.http_address = match.group(1)
                if self.address and (self.http is None or self.http_address):
                    return self
        self.stop()
        raise RuntimeError(
            f"archive did not start: stdout={seen!r}\nstderr:\n{self.stderr_path.read_text(errors='replace')}"
        )

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """Crash the archive (SIGKILL): no graceful shutdown."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> "ArchiveProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
