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

from agent.identity.reserve import ReserveFormat, ReserveFormatError, from_config as reserve_from_config
from agent.model import Device, Mode


class ConfigError(Exception):
    """The configuration file or a flag is wrong; the message says which key and why."""


def default_spool_dir() -> pathlib.Path:
    if os.geteuid() == 0:
        return pathlib.Path("/var/lib/bildsluss/spool")
    state = os.environ.get("XDG_STATE_HOME") or str(pathlib.Path.home() / ".local" / "state")
    return pathlib.Path(state) / "bildsluss" / "spool"


@dataclasses.dataclass(frozen=True)
class ArchiveConfig:
    address: str = "127.0.0.1:50051"
    insecure: bool = False
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    tls_ca: pathlib.Path | None = None
    # Deadline of each unary call.
    call_timeout_s: float = 10.0
    # How long to wait for the first connection before the card is deferred.
    connect_timeout_s: float = 5.0
    # How long to keep retrying an unavailable archive within one ingest.
    retry_budget_s: float = 30.0
    chunk_bytes: int = 1 << 20


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
    # Time budget for reading identity from one frame.
    identify_budget_s: float = 2.0
    # Raw [identity] table, handed to the identity readers.
    identity: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The enabled reservnummer formats (R2), checked at load.
    reserve_formats: tuple[ReserveFormat, ...] = ()


_AGENT_KEYS = {"id", "department", "mode", "spool_dir"}
_ARCHIVE_KEYS = {f.name for f in dataclasses.fields(ArchiveConfig)}
_TOP_KEYS = {"agent", "archive", "devices", "identity"}


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(unknown))}")


def load(path: pathlib.Path | None) -> AgentConfig:
    """Read a config file (or the defaults when path is None)."""
    if path is None:
        return AgentConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return from_dict(data, source=str(path))


def from_dict(data: dict[str, Any], source: str = "config") -> AgentConfig:
    _check_keys(data, _TOP_KEYS, source)
    agent = data.get("agent", {})
    _check_keys(agent, _AGENT_KEYS, f"{source} [agent]")
    archive = dict(data.get("archive", {}))
    _check_keys(archive, _ARCHIVE_KEYS, f"{source} [archive]")
    for key in ("tls_cert", "tls_key", "tls_ca"):
        if archive.get(key):
            archive[key] = pathlib.Path(archive[key])
    try:
        archive_cfg = ArchiveConfig(**archive)
    except TypeError as exc:
        raise ConfigError(f"{source} [archive]: {exc}") from None
    devices = []
    for i, entry in enumerate(data.get("devices", [])):
        _check_keys(entry, {"make", "model", "serial"}, f"{source} [[devices]] #{i + 1}")
        if not entry.get("make") or not entry.get("model"):
            raise ConfigError(f"{source} [[devices]] #{i + 1}: make and model are required")
        devices.append(Device(str(entry["make"]), str(entry["model"]), str(entry.get("serial", ""))))
    kwargs: dict[str, Any] = {"archive": archive_cfg, "devices": tuple(devices)}
    if "id" in agent:
        kwargs["agent_id"] = str(agent["id"])
    if "department" in agent:
        kwargs["department"] = str(agent["department"])
    if "mode" in agent:
        kwargs["mode"] = parse_mode(agent["mode"])
    if "spool_dir" in agent:
        kwargs["spool_dir"] = pathlib.Path(agent["spool_dir"]).expanduser()
    identity = dict(data.get("identity", {}))
    if "budget_s" in identity:
        kwargs["identify_budget_s"] = float(identity.pop("budget_s"))
    kwargs["identity"] = identity
    try:
        kwargs["reserve_formats"] = reserve_from_config(identity)
    except ReserveFormatError as exc:
        raise ConfigError(f"{source} [identity]: {exc}") from None
    return AgentConfig(**kwargs)


def parse_mode(value: str) -> Mode:
    try:
        return Mode(str(value).lower())
    except ValueError:
        allowed = ", ".join(m.value for m in Mode)
        raise ConfigError(f"unknown mode {value!r}; use one of: {allowed}") from None
