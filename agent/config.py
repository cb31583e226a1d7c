"""The agent's configuration: one TOML file, every key optional.

The annotated example with every key is ``packaging/agent.example.toml``;
``docs/configuration.md`` explains them. Defaults work on one machine: an
archive on 127.0.0.1:50051 and a spool under the user's state directory.
Command-line flags override the file.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import socket
import tomllib
from typing import Any

from bildsluss_common.identity.reserve import ReserveFormat, ReserveFormatError, from_config as reserve_from_config
from agent.card.model import Device, Mode
from bildsluss_common.net import remote_hosts
from bildsluss_common.paths import default_state_dir


class ConfigError(Exception):
    """The configuration file or a flag is wrong; the message says which key and why."""


def default_spool_dir() -> pathlib.Path:
    return default_state_dir("spool")


@dataclasses.dataclass(frozen=True)
class ArchiveConfig:
    address: str = "127.0.0.1:50051"
    insecure: bool = False
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    tls_ca: pathlib.Path | None = None
    # The name the archive's certificate must carry, when the target does not say it
    # (an ``ipv4:H1:P1,H2:P2`` list of addresses); empty: the target's own host name.
    tls_server_name: str = ""
    # Deadline of each unary call.
    call_timeout_s: float = 10.0
    # How long to wait for the first connection before the card is deferred.
    connect_timeout_s: float = 5.0
    # How long to keep retrying an unavailable archive within one ingest.
    retry_budget_s: float = 30.0
    chunk_bytes: int = 1 << 20
    # Write streams at once (files sent in parallel; the archive fsyncs each blob).
    upload_streams: int = 4


def check_transport(archive: ArchiveConfig) -> None:
    """Plaintext (``insecure``) only towards an archive on this machine: it
    would carry images and patient numbers readable by anyone on the network.
    Every address of the target must be loopback. Raises ConfigError."""
    if not archive.insecure:
        return
    try:
        remote = remote_hosts(archive.address)
    except ValueError as exc:
        raise ConfigError(f"archive address: {exc}") from None
    if remote:
        raise ConfigError(
            f"refusing plaintext (--insecure) to {archive.address}: {', '.join(remote)} is not this "
            "machine, and plaintext would send images and patient numbers readable on the network. "
            "--insecure is for a development archive on 127.0.0.1, [::1] or localhost only; "
            "use --tls-cert/--tls-key/--tls-ca")


def default_control_socket() -> pathlib.Path:
    if os.geteuid() == 0:
        return pathlib.Path("/run/bildsluss/control.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return pathlib.Path(runtime) / "bildsluss" / "control.sock"
    return pathlib.Path(f"/tmp/bildsluss-{os.geteuid()}") / "control.sock"


# The packaged daemon runs as root from this file (bildsluss-agent package) and listens on
# the root default socket unless the file names another.
SYSTEM_CONFIG = pathlib.Path("/etc/bildsluss/agent.toml")
SYSTEM_CONTROL_SOCKET = pathlib.Path("/run/bildsluss/control.sock")


def client_control_socket(config_path: pathlib.Path | None) -> pathlib.Path:
    """Where ``expect``, ``status`` and ``notify-relay`` find the daemon, for any user.

    The socket the config file names (``--config``, else ``$BILDSLUSS_AGENT_CONFIG`` or
    /etc/bildsluss/agent.toml when it exists). A file that names none means the daemon's
    own default, which depends on the daemon's user, not the caller's: the system
    daemon's /run/bildsluss/control.sock and this user's own default (a developer's
    daemon) are tried, the system one first where the system config exists; the first
    that exists wins, else the first (a relay waits there for the daemon to start).
    """
    if config_path is None:
        system = pathlib.Path(os.environ.get("BILDSLUSS_AGENT_CONFIG") or SYSTEM_CONFIG)
        config_path = system if system.exists() else None
    named = None
    if config_path is not None:
        cfg = load(config_path)
        if "control_socket" in _raw(config_path).get("daemon", {}):
            named = cfg.daemon.control_socket
    if named is not None:
        return named
    candidates = [SYSTEM_CONTROL_SOCKET, default_control_socket()]
    if config_path is None:
        candidates.reverse()
    return next((path for path in candidates if path.exists()), candidates[0])


def default_mount_root() -> pathlib.Path:
    if os.geteuid() == 0:
        return pathlib.Path("/run/bildsluss/cards")
    return default_control_socket().parent / "cards"


@dataclasses.dataclass(frozen=True)
class DaemonConfig:
    """The ``[daemon]`` table: what ``bildsluss-agent run`` needs beyond one ingest."""

    # The card journal (journal.sqlite3) lives here.
    state_dir: pathlib.Path = dataclasses.field(default_factory=default_state_dir)
    # Finished cards (done, refused) stay in the journal this many days, then their
    # rows are deleted. A finished row holds no patient number either way.
    journal_keep_days: float = 30.0
    # Cards are mounted privately below this folder (nosuid,nodev,noexec).
    mount_root: pathlib.Path = dataclasses.field(default_factory=default_mount_root)
    control_socket: pathlib.Path = dataclasses.field(default_factory=default_control_socket)
    # The group, besides the agent's own user, allowed to use the control socket.
    control_group: str = ""
    # Local status page; "" disables it. Loopback only.
    status_http: str = "127.0.0.1:8787"
    heartbeat_s: float = 5.0
    # Backoff of a deferred card (archive unreachable, R12): first wait, doubling to the max.
    retry_initial_s: float = 5.0
    retry_max_s: float = 300.0
    # How long an EHR context handed over with ``bildsluss-agent expect`` stays valid.
    context_ttl_s: float = 600.0
    notify: bool = True
    # Cards worked on at the same time (each reader holds one card at a time).
    workers: int = 1
    # How long a watched card folder must stay unchanged before it is read.
    settle_s: float = 2.0
    # File systems the agent mounts; anything else is refused as CARD_UNREADABLE.
    filesystems: tuple[str, ...] = ("vfat", "exfat", "ntfs3", "ntfs", "ext4", "ext3", "ext2")
    # Loop devices are cards too (tests, demos). Off in production.
    allow_loop: bool = False
    # With allow_loop: only loop devices whose backing file lies below this folder ("": any).
    loop_backing_dir: str = ""


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """The ``[cameras]`` table: cameras reached over PTP (issue 16)."""

    # Take cameras on USB (still-image interface class 06, or an MTP interface) as the
    # daemon notices them. Phones and unregistered cameras are refused either way (R6).
    usb: bool = True
    # PTP/IP cameras (Wi-Fi) by address, "HOST" or "HOST:PORT" (default port 15740);
    # the daemon tries each every ``ptpip_poll_s`` seconds.
    ptpip: tuple[str, ...] = ()
    ptpip_poll_s: float = 15.0
    # Other libgphoto2 ports the daemon watches like the PTP/IP addresses, by
    # presence: "disk:/PATH" (a folder presented as a camera: demos and tests).
    ports: tuple[str, ...] = ()

    def watched_ports(self) -> tuple[str, ...]:
        return tuple(f"ptpip:{h}" for h in self.ptpip) + self.ports


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    agent_id: str = dataclasses.field(default_factory=socket.gethostname)
    department: str | None = None
    mode: Mode = Mode.PHOTO
    spool_dir: pathlib.Path = dataclasses.field(default_factory=default_spool_dir)
    archive: ArchiveConfig = ArchiveConfig()
    # Registered capture devices of the department (R6). Empty: devices are not
    # checked (a one-machine development default; production configs list them).
    devices: tuple[Device, ...] = ()
    # Budget for reading identity from one frame, in CPU seconds of the reading
    # thread, tesseract's included (bildsluss_common/readers/budget.py; a wall-clock
    # backstop of 10x + 1 s applies too).
    identify_budget_s: float = 2.0
    # Raw [identity] table, handed to the identity readers.
    identity: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The enabled reservnummer formats (R2), checked at load.
    reserve_formats: tuple[ReserveFormat, ...] = ()
    daemon: DaemonConfig = dataclasses.field(default_factory=DaemonConfig)
    cameras: CameraConfig = CameraConfig()


# The schema: every key each table takes, with its TOML type. The loader, the error
# messages and the test that holds packaging/agent.example.toml to it all read this.
# Types: "string", "path" (a string), "boolean", "number" (int or float, >= 0),
# "integer", "list of strings".
SCHEMA: dict[str, dict[str, str]] = {
    "agent": {"id": "string", "department": "string", "mode": "string", "spool_dir": "path"},
    "archive": {
        "address": "string", "insecure": "boolean", "tls_cert": "path", "tls_key": "path",
        "tls_ca": "path", "tls_server_name": "string", "call_timeout_s": "number", "connect_timeout_s": "number",
        "retry_budget_s": "number", "chunk_bytes": "integer", "upload_streams": "integer",
    },
    "identity": {"budget_s": "number", "reserve_formats": "list of formats"},
    "daemon": {
        "state_dir": "path", "mount_root": "path", "control_socket": "path", "control_group": "string",
        "status_http": "string", "heartbeat_s": "number", "retry_initial_s": "number",
        "retry_max_s": "number", "context_ttl_s": "number", "notify": "boolean", "workers": "integer",
        "settle_s": "number", "filesystems": "list of strings", "allow_loop": "boolean",
        "loop_backing_dir": "path", "journal_keep_days": "number",
    },
    "devices": {"make": "string", "model": "string", "serial": "string"},
    "cameras": {"usb": "boolean", "ptpip": "list of strings", "ptpip_poll_s": "number", "ports": "list of strings"},
}
_TLS_FILES = ("tls_cert", "tls_key", "tls_ca")


def _typed(value: Any, expected: str) -> bool:
    if expected in ("string", "path"):
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "list of strings":
        return isinstance(value, list) and all(isinstance(v, str) and v for v in value)
    return True  # "list of formats": checked by agent.identity.reserve, which names the entry


def _table(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    """``data[name]`` checked against SCHEMA: unknown keys and wrong types are errors."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    return _checked(table, name, f"{source}: [{name}]")


def _checked(table: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    schema = SCHEMA[name]
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise ConfigError(f"{where} unknown key(s): {', '.join(unknown)} (known: {', '.join(sorted(schema))})")
    for key, value in table.items():
        if not _typed(value, schema[key]):
            hint = " >= 0" if schema[key] == "number" else ""
            raise ConfigError(f"{where} {key}: expected a {schema[key]}{hint}, got {value!r}")
    return table


def load(path: pathlib.Path | None) -> AgentConfig:
    """Read a config file (or the defaults when path is None)."""
    if path is None:
        return AgentConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return from_dict(data, source=str(path))


def _raw(path: pathlib.Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def from_dict(data: dict[str, Any], source: str = "config") -> AgentConfig:
    unknown = sorted(set(data) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) or key(s): {', '.join(unknown)} "
                          f"(known: {', '.join(f'[{t}]' for t in SCHEMA)})")
    agent = _table(data, "agent", source)
    archive = dict(_table(data, "archive", source))
    given = [key for key in _TLS_FILES if archive.get(key)]
    if given and len(given) < len(_TLS_FILES):
        missing = [key for key in _TLS_FILES if key not in given]
        raise ConfigError(f"{source}: [archive] {', '.join(given)} without {', '.join(missing)}: "
                          "mutual TLS needs all three files (or none, with insecure = true)")
    for key in _TLS_FILES:
        archive[key] = pathlib.Path(archive[key]) if archive.get(key) else None
    for key in ("call_timeout_s", "connect_timeout_s", "retry_budget_s"):
        if key in archive:
            archive[key] = float(archive[key])
    archive_cfg = ArchiveConfig(**archive)
    if archive_cfg.tls_server_name and archive_cfg.insecure:
        raise ConfigError(f"{source}: [archive] tls_server_name is for TLS; insecure = true sends plaintext")
    try:
        check_transport(archive_cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: [archive] {exc}") from None
    devices_table = data.get("devices", [])
    if not isinstance(devices_table, list):
        raise ConfigError(f"{source}: devices must be [[devices]] tables")
    devices = []
    for i, entry in enumerate(devices_table):
        where = f"{source}: [[devices]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        _checked(entry, "devices", where)
        if not entry.get("make") or not entry.get("model"):
            raise ConfigError(f"{where}: make and model are required")
        devices.append(Device(entry["make"], entry["model"], entry.get("serial", "")))
    kwargs: dict[str, Any] = {
        "archive": archive_cfg,
        "devices": tuple(devices),
        "daemon": _daemon_from_dict(_table(data, "daemon", source), source),
        "cameras": _cameras_from_dict(_table(data, "cameras", source), source),
    }
    if "id" in agent:
        kwargs["agent_id"] = agent["id"]
    if "department" in agent:
        kwargs["department"] = agent["department"]
    if "mode" in agent:
        kwargs["mode"] = parse_mode(agent["mode"])
    if "spool_dir" in agent:
        kwargs["spool_dir"] = _path(agent["spool_dir"], f"{source}: [agent] spool_dir")
    identity = dict(_table(data, "identity", source))
    if "budget_s" in identity:
        kwargs["identify_budget_s"] = float(identity.pop("budget_s"))
    kwargs["identity"] = identity
    try:
        kwargs["reserve_formats"] = reserve_from_config(identity)
    except ReserveFormatError as exc:
        raise ConfigError(f"{source}: [identity] {exc}") from None
    return AgentConfig(**kwargs)


def _path(value: str, where: str) -> pathlib.Path:
    """A configured path, ``~`` and ``~user`` expanded; a user this machine does not
    know (found by fuzzing: it raised RuntimeError) or a NUL byte is a config error."""
    if "\x00" in value:
        raise ConfigError(f"{where}: a path cannot contain a NUL character")
    try:
        return pathlib.Path(value).expanduser()
    except RuntimeError:
        raise ConfigError(f"{where}: {value!r} names a home folder this computer does not know") from None


_DAEMON_PATHS = {k for k, t in SCHEMA["daemon"].items() if t == "path"} - {"loop_backing_dir"}


def _daemon_from_dict(table: dict[str, Any], source: str) -> DaemonConfig:
    values: dict[str, Any] = {}
    for key, value in table.items():
        kind = SCHEMA["daemon"][key]
        if key in _DAEMON_PATHS:
            values[key] = _path(value, f"{source}: [daemon] {key}")
        elif kind == "number":
            values[key] = float(value)
        elif key == "workers" and value < 1:
            raise ConfigError(f"{source}: [daemon] workers: expected an integer >= 1, got {value!r}")
        elif kind == "list of strings":
            values[key] = tuple(value)
        else:
            values[key] = value
    cfg = DaemonConfig(**values)
    if cfg.retry_initial_s <= 0 or cfg.retry_max_s < cfg.retry_initial_s:
        raise ConfigError(f"{source}: [daemon] need 0 < retry_initial_s <= retry_max_s")
    return cfg


def _cameras_from_dict(table: dict[str, Any], source: str) -> CameraConfig:
    """``[cameras]``, its types already checked against SCHEMA: here what the values mean."""
    where = f"{source}: [cameras]"
    hosts = table.get("ptpip", [])
    if not all("/" not in h for h in hosts):
        raise ConfigError(f"{where} ptpip: expected a list of addresses like \"192.0.2.20\" or \"camera-3:15740\"")
    poll = table.get("ptpip_poll_s", CameraConfig.ptpip_poll_s)
    if poll <= 0:
        raise ConfigError(f"{where} ptpip_poll_s: expected a number of seconds > 0, got {poll!r}")
    ports = table.get("ports", [])
    if not all(p.startswith("disk:/") for p in ports):
        raise ConfigError(f"{where} ports: expected a list of ports like \"disk:/srv/camera\"")
    return CameraConfig(usb=table.get("usb", True), ptpip=tuple(hosts), ptpip_poll_s=float(poll), ports=tuple(ports))


def parse_mode(value: str) -> Mode:
    try:
        return Mode(str(value).lower())
    except ValueError:
        allowed = ", ".join(m.value for m in Mode)
        raise ConfigError(f"unknown mode {value!r}; use one of: {allowed}") from None
