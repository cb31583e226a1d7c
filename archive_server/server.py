"""Build and run the archive's gRPC server (and its HTTPS endpoint).

One process serves the Ingest, AgentRegistry and Cases services and the
standard ``grpc.health.v1`` health service on one port, and with ``--http``
the web application (``archive_server/web``: logins, the JSON API, pages) on
another, sharing the database; ``http listening on HOST:PORT`` follows the
gRPC line once that endpoint accepts connections. A monitor thread
reports "bildsluss.v1.Ingest", "bildsluss.v1.AgentRegistry",
"bildsluss.v1.Cases" (and "") SERVING while the database and blob store answer, NOT_SERVING otherwise.
SIGTERM/SIGINT drain in-flight calls for ``grace_period_s`` and stop. Once the
port is bound, ``listening on HOST:PORT`` (the real port, also for ``:0``) is
printed on stdout so that scripts can wait for it.
"""
from __future__ import annotations

import concurrent.futures
import logging
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from archive_server import devices, metrics
from archive_server.audit import configure_syslog
from archive_server import blobs as catalogue
from archive_server.blobstores import BlobStore, open_blobstore
from archive_server.config import ArchiveConfig, parse_listen
from archive_server.db import Database
from archive_server.localfiles import private_data_dir
from archive_server.errors import ArchiveError, ConfigError, Unavailable
from archive_server.agentcerts import AgentGate
from archive_server.agents import AgentRegistryCore
from archive_server.ingest import IngestCore
from archive_server.interceptor import ErrorInterceptor
from archive_server.logins import Logins
from bildsluss_common.net import is_loopback_host
from archive_server.services import agents as agents_service
from archive_server.services import cases as cases_service
from archive_server.services import ingest as ingest_service
from bildsluss.v1 import agents_pb2_grpc, archive_pb2_grpc
from bildsluss.v1 import ingest_pb2_grpc as pb_grpc

from bildsluss_common import __version__

if TYPE_CHECKING:
    from archive_server.web.server import HttpServer

log = logging.getLogger(__name__)
_SWEEP_EVERY_S = 24 * 3600.0


def check_transport(config: ArchiveConfig) -> None:
    """TLS with client certificates, or plaintext by the explicit --insecure flag
    and only on a loopback address (development). Raises ConfigError otherwise."""
    tls = config.tls
    given = [x for x in (tls.cert, tls.key, tls.client_ca) if x is not None]
    if given and len(given) != 3:
        raise ConfigError("TLS needs all of --tls-cert, --tls-key and --client-ca")
    if given and config.insecure:
        raise ConfigError("--insecure and TLS exclude each other")
    if given:
        return
    if not config.insecure:
        raise ConfigError(
            "no transport security: give --tls-cert/--tls-key/--client-ca, "
            "or --insecure for development on a loopback address"
        )
    for flag, address in (("--listen", config.listen), ("--http", config.http)):
        if address is None:
            continue
        host, _ = parse_listen(address)
        if not is_loopback_host(host):
            raise ConfigError(
                f"refusing plaintext on non-loopback address {address} ({flag}): "
                "plaintext (--insecure) is for development on 127.0.0.1 or [::1] only; use TLS"
            )


class ArchiveServer:
    def __init__(self, config: ArchiveConfig) -> None:
        check_transport(config)
        self.config = config
        private_data_dir(config)
        self.db = Database(
            config.effective_db_url, pool_size=config.db_pool_size,
            max_overflow=config.db_max_overflow, busy_timeout_ms=config.sqlite_busy_timeout_ms,
        )
        self.blobs: BlobStore = open_blobstore(config.effective_blobs_url, self.db, config.s3_options())
        self.core = IngestCore(self.db, self.blobs, config)
        self.health = health.HealthServicer()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.port = 0
        self._server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=config.max_workers,
                                                  thread_name_prefix="rpc"),
            interceptors=[ErrorInterceptor()],
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        # Every agent call passes one gate: on TLS the certificate's binding
        # names the agent and department (issue 10).
        self.gate = AgentGate(self.db, tls=config.tls.enabled)
        pb_grpc.add_IngestServicer_to_server(ingest_service.IngestServicer(self.core, self.gate), self._server)
        # Agent heartbeats (R21), held to the ingest service's department rule.
        # The answer hands each agent its department's registered devices (R6).
        self.agents = AgentRegistryCore(self.db, self.core._department, tls=config.tls.enabled,
                                        devices_for=lambda hsa: devices.devices_of(self.db, hsa))
        agents_pb2_grpc.add_AgentRegistryServicer_to_server(
            agents_service.AgentRegistryServicer(self.agents, self.gate), self._server)
        # The clinical client's Cases service: a logged-in user's bearer token,
        # then the same authz + audit as the CLI.
        self.logins = Logins(self.db, config.login)
        archive_pb2_grpc.add_CasesServicer_to_server(
            cases_service.CasesServicer(self.db, config, self.logins), self._server)
        self.http: HttpServer | None = None
        metrics.INFO.labels(version=__version__).set(1)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)

    def start(self) -> int:
        """Prepare storage, bind, start serving; returns the bound port."""
        self.db.upgrade_schema()
        configure_syslog(self.config.audit_syslog)
        try:
            self._housekeeping()
        except ArchiveError as e:  # the store down: serve NOT_SERVING until it is back
            log.warning("housekeeping of the blob store failed", extra={"reason": str(e)})
        if self.config.tls.enabled:
            tls = self.config.tls
            assert tls.key is not None and tls.client_ca is not None and tls.cert is not None
            creds = grpc.ssl_server_credentials(
                [(_read(tls.key, "--tls-key"), _read(tls.cert, "--tls-cert"))],
                root_certificates=_read(tls.client_ca, "--client-ca"),
                require_client_auth=True,
            )
        else:
            creds = None
        try:
            if creds is None:
                self.port = self._server.add_insecure_port(self.config.listen)
            else:
                self.port = self._server.add_secure_port(self.config.listen, creds)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise Unavailable(f"cannot listen on {self.config.listen}: address in use or not local")
        if self.config.http:
            from archive_server.web.context import WebContext
            from archive_server.web.server import HttpServer

            self.http = HttpServer(WebContext.for_archive(self.db, self.config, self.logins, self.blobs),
                                   self.config)
        self._check_health()
        self._server.start()
        if self.http is not None:
            self.http.start()
        self._monitor = threading.Thread(target=self._watch, name="health", daemon=True)
        self._monitor.start()
        log.info("archive started", extra={
            "listen": self.config.listen, "port": self.port, "db": self.db.describe(),
            "blobs": self.blobs.url, "tls": self.config.tls.enabled})
        return self.port

    @property
    def address(self) -> str:
        host, _ = parse_listen(self.config.listen)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        self._stop.set()
        self.health.enter_graceful_shutdown()
        grace = self.config.grace_period_s if grace is None else grace
        if self.http is not None:
            self.http.stop()
        self._server.stop(grace).wait()
        self.db.dispose()
        log.info("archive stopped")

    def _check_health(self) -> None:
        # Each checked on its own, so that /metrics tells which one is down.
        database_ok, blobstore_ok = self._check("database", self.db.ping), self._check("blob store", self.blobs.check)
        status = (health_pb2.HealthCheckResponse.SERVING if database_ok and blobstore_ok
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        metrics.health_seen(database_ok, blobstore_ok)
        # All three depend on the same database and blob store.
        for name in ("", ingest_service.SERVICE_NAME, agents_service.SERVICE_NAME, cases_service.SERVICE_NAME):
            self.health.set(name, status)

    @staticmethod
    def _check(what: str, check: Callable[[], object]) -> bool:
        try:
            check()
        except ArchiveError as e:
            log.warning("not serving", extra={"reason": str(e), "failed": what})
            return False
        except Exception as e:  # noqa: BLE001 - a check that breaks must not stop the monitor
            log.exception("not serving: the health check failed", extra={"reason": repr(e), "failed": what})
            return False
        return True

    def _watch(self) -> None:
        last_sweep = time.monotonic()
        while not self._stop.wait(self.config.health_check_interval_s):
            self._check_health()
            if time.monotonic() - last_sweep > _SWEEP_EVERY_S:
                last_sweep = time.monotonic()
                try:
                    self._housekeeping()
                except (OSError, ArchiveError):
                    log.exception("sweeping stale partial uploads failed")

    def _housekeeping(self) -> None:
        """Stale partial uploads go; purges that stopped halfway are finished."""
        swept = self.blobs.sweep_partials(self.config.partial_max_age_days * 86400)
        if swept:
            log.info("removed stale partial uploads", extra={"count": swept})
        finished = catalogue.finish_purges(self.db, self.blobs)
        if finished:
            log.info("finished purges that had stopped halfway", extra={"count": finished})


def _read(path: pathlib.Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None


def serve(config: ArchiveConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    server = ArchiveServer(config)
    server.start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("archive serving", extra={"version": __version__, "address": server.address})
    print(f"listening on {server.address}", flush=True)
    if server.http is not None:
        print(f"http listening on {server.http.address}", flush=True)
    sys.stdout.flush()
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0
