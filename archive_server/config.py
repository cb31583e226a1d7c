"""The archive's configuration: one TOML file, every key optional.

``archive_server/archive.example.toml`` annotates every key. Defaults work on
one machine: SQLite and a blob directory inside the data directory, plaintext
gRPC on 127.0.0.1:50051. Command-line flags override the file (see ``cli.py``).
The file is read only when given with ``--config FILE``.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import tomllib
from typing import Any
from urllib.parse import urlsplit

from archive_server.errors import ConfigError
from bildsluss_common.identity import reserve
from bildsluss_common.net import is_loopback_host
from bildsluss_common.paths import default_state_dir
from bildsluss_common.identity.reserve import ReserveFormat


def default_data_dir() -> pathlib.Path:
    # The packaged service runs as the user bildsluss with StateDirectory=bildsluss-archive
    # (systemd sets $STATE_DIRECTORY); root's admin commands default to the same folder,
    # apart from the agent's private /var/lib/bildsluss should both run on one machine.
    state_directory = os.environ.get("STATE_DIRECTORY")
    if state_directory:
        return pathlib.Path(state_directory.split(":")[0])
    if os.geteuid() == 0:
        return pathlib.Path("/var/lib/bildsluss-archive")
    return default_state_dir("archive")


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    cert: pathlib.Path | None = None
    key: pathlib.Path | None = None
    client_ca: pathlib.Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert is not None


@dataclasses.dataclass(frozen=True)
class LoginConfig:
    """[login]: sessions and the throttle on failed logins (``logins.py``)."""

    # A session (bearer token) ends this long after login, used or not (a shift).
    session_ttl_s: int = 8 * 3600
    # ... or after this long unused.
    idle_timeout_s: int = 30 * 60
    # Failed logins within window_s after which the user name, or the source
    # address, is refused for cooldown_s (HTTP 429); then it may try again.
    max_failures_per_user: int = 5
    max_failures_per_address: int = 30
    failure_window_s: int = 15 * 60
    cooldown_s: int = 5 * 60
    min_password_length: int = 12


@dataclasses.dataclass(frozen=True)
class OidcConfig:
    """[oidc]: the region's OpenID Connect identity provider (``oidc.py``)."""

    issuer: str
    client_id: str
    client_secret: str
    redirect_url: str
    # The ID-token claim whose value names the person (their HSA-id, say); it
    # is linked to an archive user with `admin user link USER VALUE`.
    claim: str = "sub"
    scopes: tuple[str, ...] = ("openid",)
    # CA bundle (PEM) for the IdP's TLS certificate; None: the system's.
    ca_file: pathlib.Path | None = None
    # Clock skew tolerated on exp/iat/nbf, seconds.
    leeway_s: int = 60


@dataclasses.dataclass(frozen=True)
class ArchiveConfig:
    data_dir: pathlib.Path = dataclasses.field(default_factory=default_data_dir)
    listen: str = "127.0.0.1:50051"
    # The HTTPS endpoint (login, JSON API, the web client): HOST:PORT, TLS with
    # the [tls] certificate and key, plaintext only on loopback with --insecure.
    http: str | None = None
    # http_trusted_proxies: addresses of reverse proxies whose
    # X-Forwarded-For/-Proto are believed (the client's address for the audit
    # and the login throttle); none by default.
    http_trusted_proxies: tuple[str, ...] = ()
    # GET /metrics (Prometheus): with a token file, only with "Authorization:
    # Bearer <its content>"; without one, only to clients on a loopback address.
    metrics_token_file: pathlib.Path | None = None
    login: LoginConfig = LoginConfig()
    oidc: OidcConfig | None = None
    # SQLAlchemy URL; None: sqlite:///DATA_DIR/archive.sqlite3
    db_url: str | None = None
    # file:///path, a plain path or s3://BUCKET[/PREFIX]; None: DATA_DIR/blobs
    blobs_url: str | None = None
    # [blobs] for s3://: multipart part size, addressing style, AWS profile
    # (endpoint, region and credentials: the standard AWS settings)
    blobs_part_size_mib: int = 8
    blobs_addressing_style: str = "path"
    blobs_profile: str | None = None
    insecure: bool = False
    tls: TlsConfig = TlsConfig()
    # Register a department an agent names on first use. Plaintext (development)
    # archives only, where it defaults to true; on a TLS archive departments
    # come from the certificates' bindings, never from a request, and setting
    # it true there is a configuration error. None: the default.
    accept_unknown_departments: bool | None = None
    # A group given read access to what the archive writes on this machine
    # (folders 2750, files 0640; localfiles.use_group). None: private, 0700/0600.
    file_group: str | None = None
    max_blob_bytes: int = 16 << 30
    max_message_bytes: int = 8 << 20
    max_workers: int = 32
    max_concurrent_rpcs: int = 256
    # Denial of service (issue 13, archive_server/limits.py): Write streams at
    # once (fewer than max_workers: the rest serve other calls and health), and
    # per agent: streams, uncommitted sessions of the last 24 h, bytes they declare.
    max_write_streams: int | None = None  # None: three quarters of max_workers
    agent_max_write_streams: int = 4
    agent_max_open_sessions: int = 64
    agent_max_declared_bytes: int = 1 << 40
    write_idle_timeout_s: float = 30.0
    grace_period_s: float = 10.0
    health_check_interval_s: float = 5.0
    partial_max_age_days: float = 7.0
    # [identity] reserve_formats: the region's reservnummer formats accepted as
    # patient ids (the agent's table, the same loader); none by default.
    reserve_formats: tuple[ReserveFormat, ...] = ()
    db_pool_size: int = 10
    db_max_overflow: int = 20
    sqlite_busy_timeout_ms: int = 30_000
    log_level: str = "info"
    # [audit] syslog: also send every audit event as RFC 5424 syslog (IHE ATNA
    # style) to udp://host:port, tcp://host:port or unix:///dev/log; None: the database only.
    audit_syslog: str | None = None

    @property
    def registers_unknown_departments(self) -> bool:
        return not self.tls.enabled and self.accept_unknown_departments is not False

    @property
    def effective_max_write_streams(self) -> int:
        """Write streams at once: as configured, else three quarters of the workers."""
        return self.max_write_streams or max(1, self.max_workers * 3 // 4)

    @property
    def effective_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'archive.sqlite3'}"

    @property
    def effective_blobs_url(self) -> str:
        return self.blobs_url or str(self.data_dir / "blobs")

    def s3_options(self) -> Any:
        from archive_server.blobstores.s3 import S3Options

        return S3Options(part_size=self.blobs_part_size_mib << 20,
                         addressing_style=self.blobs_addressing_style, profile=self.blobs_profile)

    def replace(self, **changes: Any) -> "ArchiveConfig":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_PATHS = {"data_dir", "metrics_token_file"}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "data_dir": str, "listen": str, "http": str, "db_url": str, "blobs_url": str, "metrics_token_file": str,
    "insecure": bool, "accept_unknown_departments": bool, "max_blob_bytes": int,
    "max_message_bytes": int, "max_workers": int, "max_concurrent_rpcs": int,
    "max_write_streams": int, "agent_max_write_streams": int, "agent_max_open_sessions": int,
    "agent_max_declared_bytes": int, "write_idle_timeout_s": (int, float),
    "grace_period_s": (int, float), "health_check_interval_s": (int, float),
    "partial_max_age_days": (int, float),
    "db_pool_size": int, "db_max_overflow": int, "sqlite_busy_timeout_ms": int, "log_level": str,
    "file_group": str,
}
_TLS_KEYS = {"cert", "key", "client_ca"}
_BLOBS_KEYS: dict[str, type] = {"url": str, "part_size_mib": int, "addressing_style": str, "profile": str}


def load(path: pathlib.Path | None) -> ArchiveConfig:
    """Read ``path`` (None: all defaults). Raises ConfigError naming the bad key."""
    if path is None:
        return ArchiveConfig()
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from None
    return from_dict(raw, source=str(path))


def from_dict(raw: dict[str, Any], source: str = "configuration") -> ArchiveConfig:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "tls":
            values["tls"] = _tls(value, source)
            continue
        if key == "audit":
            values["audit_syslog"] = _audit(value, source)
            continue
        if key == "identity":
            values["reserve_formats"] = _identity(value, source)
            continue
        if key == "login":
            values["login"] = _login(value, source)
            continue
        if key == "oidc":
            values["oidc"] = _oidc(value, source)
            continue
        if key == "http_trusted_proxies":
            values[key] = _proxies(value, source)
            continue
        if key == "reserve_number_pattern":
            raise ConfigError(
                f"{source}: reserve_number_pattern is no longer read; list the region's reserve "
                "number formats under [identity] reserve_formats, as in the agent's configuration "
                "(docs/configuration.md)")
        if key == "blobs":
            values.update(_blobs(value, source, bool(raw.get("blobs_url"))))
            continue
        expected = _TYPES.get(key)
        if expected is None:
            raise ConfigError(f"{source}: unknown key {key!r}")
        if isinstance(value, bool) and expected is not bool:
            raise ConfigError(f"{source}: {key} must be {_name(expected)}, not a boolean")
        if not isinstance(value, expected):
            raise ConfigError(f"{source}: {key} must be {_name(expected)}, got {value!r}")
        values[key] = pathlib.Path(str(value)) if key in _PATHS else value
    for key in ("http", "db_url", "blobs_url"):
        if values.get(key) == "":
            values[key] = None
    if str(values.get("metrics_token_file", "")) in ("", "."):
        values.pop("metrics_token_file", None)
    config = ArchiveConfig(**values)
    validate(config, source)
    return config


def validate(config: ArchiveConfig, source: str = "configuration") -> None:
    for key in ("max_blob_bytes", "max_message_bytes", "max_workers", "max_concurrent_rpcs", "db_pool_size",
                "agent_max_write_streams", "agent_max_open_sessions",
                "agent_max_declared_bytes", "write_idle_timeout_s"):
        if getattr(config, key) <= 0:
            raise ConfigError(f"{source}: {key} must be positive")
    if config.max_write_streams is not None and not 0 < config.max_write_streams <= config.max_workers - 4:
        raise ConfigError(f"{source}: max_write_streams must leave at least 4 of the max_workers threads "
                          "for other calls and the health check")
    if config.max_message_bytes < (1 << 20) + 4096:
        raise ConfigError(f"{source}: max_message_bytes must hold a 1 MiB chunk plus overhead")
    parse_listen(config.listen)
    if config.blobs_part_size_mib < 5:
        raise ConfigError(f"{source}: blobs.part_size_mib must be at least 5 (S3's smallest part)")
    if config.blobs_addressing_style not in ("path", "virtual", "auto"):
        raise ConfigError(f"{source}: blobs.addressing_style must be path, virtual or auto")
    if config.tls.enabled and config.accept_unknown_departments:
        raise ConfigError(
            f"{source}: accept_unknown_departments = true cannot apply to a TLS archive: there an agent's "
            "department is the one its certificate is bound to (admin agent add), never one it names; "
            "register departments with `admin department add` and remove the key")
    if config.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"{source}: log_level must be debug, info, warning or error")


def parse_listen(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port). Port 0 picks a free port."""
    m = re.fullmatch(r"\[(?P<h6>[0-9A-Fa-f:.]+)\]:(?P<p6>\d+)|(?P<h>[^:\[\]]+):(?P<p>\d+)", address)
    if not m:
        raise ConfigError(f"listen address must be HOST:PORT, got {address!r}")
    host = m["h6"] or m["h"]
    port = int(m["p6"] or m["p"])
    if port > 65535:
        raise ConfigError(f"listen port out of range: {address!r}")
    return host, port


def _tls(value: Any, source: str) -> TlsConfig:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [tls] must be a table")
    unknown = set(value) - _TLS_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [tls]: {', '.join(sorted(unknown))}")
    paths: dict[str, pathlib.Path | None] = {}
    for key in _TLS_KEYS:
        v = value.get(key)
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{source}: tls.{key} must be a path string")
        paths[key] = pathlib.Path(v) if v else None
    given = sorted(k for k, v in paths.items() if v is not None)
    if given and len(given) < len(_TLS_KEYS):
        missing = sorted(_TLS_KEYS - set(given))
        raise ConfigError(f"{source}: [tls] {', '.join(given)} without {', '.join(missing)}: "
                          "mutual TLS needs all three files (or none)")
    return TlsConfig(**paths)


def _blobs(value: Any, source: str, url_given: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [blobs] must be a table")
    out: dict[str, Any] = {}
    for key, v in value.items():
        expected = _BLOBS_KEYS.get(key)
        if expected is None:
            raise ConfigError(f"{source}: unknown key in [blobs]: {key}")
        if not isinstance(v, expected) or isinstance(v, bool):
            raise ConfigError(f"{source}: blobs.{key} must be {expected.__name__}, got {v!r}")
        out["blobs_url" if key == "url" else f"blobs_{key}"] = v or None
    if url_given and out.get("blobs_url"):
        raise ConfigError(f"{source}: give the blob store once: blobs_url or [blobs] url")
    return {k: v for k, v in out.items() if v is not None}


def _audit(value: Any, source: str) -> str | None:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [audit] must be a table")
    unknown = set(value) - {"syslog"}
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [audit]: {', '.join(sorted(unknown))}")
    url = value.get("syslog", "")
    if not isinstance(url, str):
        raise ConfigError(f"{source}: audit.syslog must be a URL string")
    if url:
        from archive_server.atna import SyslogSink  # checks the URL's form; connects on first use

        try:
            SyslogSink.from_url(url)
        except ConfigError as e:
            raise ConfigError(f"{source}: audit.syslog: {e}") from None
    return url or None


def _identity(value: Any, source: str) -> tuple[ReserveFormat, ...]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [identity] must be a table")
    unknown = set(value) - {"reserve_formats"}
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [identity]: {', '.join(sorted(unknown))}")
    try:
        return reserve.from_config(value)
    except reserve.ReserveFormatError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _table(value: Any, name: str, known: set[str], source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
    return value


def _login(value: Any, source: str) -> LoginConfig:
    fields = {f.name for f in dataclasses.fields(LoginConfig)}
    table = _table(value, "login", fields, source)
    for key, v in table.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{source}: login.{key} must be a positive integer, got {v!r}")
    return LoginConfig(**table)


def _proxies(value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ConfigError(f"{source}: http_trusted_proxies must be a list of IP addresses")
    return tuple(value)


def _oidc(value: Any, source: str) -> OidcConfig | None:
    known = {"issuer", "client_id", "client_secret", "client_secret_file", "redirect_url", "claim", "scopes",
             "ca_file", "leeway_s"}
    table = _table(value, "oidc", known, source)
    if not table:
        return None
    for key in known - {"scopes", "leeway_s"}:
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"{source}: oidc.{key} must be a string")
    secret = table.get("client_secret", "")
    if table.get("client_secret_file"):
        if secret:
            raise ConfigError(f"{source}: give oidc.client_secret or oidc.client_secret_file, not both")
        try:
            secret = pathlib.Path(table["client_secret_file"]).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{source}: cannot read oidc.client_secret_file: {e.strerror}") from None
    missing = [k for k in ("issuer", "client_id", "redirect_url") if not table.get(k)]
    if not secret:
        missing.append("client_secret (or client_secret_file)")
    if missing:
        raise ConfigError(f"{source}: [oidc] needs {', '.join(missing)}")
    scopes = table.get("scopes", ["openid"])
    if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes) or "openid" not in scopes:
        raise ConfigError(f"{source}: oidc.scopes must be a list of strings including \"openid\"")
    leeway = table.get("leeway_s", 60)
    if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= 300:
        raise ConfigError(f"{source}: oidc.leeway_s must be an integer from 0 to 300")
    for key in ("issuer", "redirect_url"):
        _https_or_loopback(table[key], f"oidc.{key}", source)
    return OidcConfig(
        issuer=table["issuer"].rstrip("/"), client_id=table["client_id"], client_secret=secret,
        redirect_url=table["redirect_url"], claim=table.get("claim", "sub") or "sub", scopes=tuple(scopes),
        ca_file=pathlib.Path(table["ca_file"]) if table.get("ca_file") else None, leeway_s=leeway)


def _https_or_loopback(url: str, key: str, source: str) -> None:
    """The IdP is reached, and the browser sent back, over HTTPS; plain http
    only on a loopback address (development and the tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return
    raise ConfigError(f"{source}: {key} must be an https:// URL (http:// only on a loopback address), got {url!r}")


def _name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return t.__name__
