"""Addresses: the one loopback rule both programs use.

Plaintext (``--insecure``) and the agent's local status page are allowed on a
loopback address only; "loopback" is decided here and nowhere else.
"""
from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (brackets allowed: ``[::1]``)."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host without brackets, port).
    ValueError when it is not of that form or the port is out of range."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{address!r} is not HOST:PORT")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: write an IPv6 address in brackets, [::1]:PORT")
    return host, int(port)
