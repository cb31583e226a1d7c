"""Addresses: the one loopback rule both programs use.

Plaintext (``--insecure``) and the agent's local status page are allowed on a
loopback address only; "loopback" is decided here and nowhere else, also for
a gRPC target that names several addresses (:func:`remote_hosts`).
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


# gRPC's name resolvers (doc/naming.md in grpc/grpc); a target whose scheme is
# none of these is taken as ``dns:///TARGET`` by gRPC, and so here.
_GRPC_SCHEMES = ("dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock", "xds", "google-c2p")


def remote_hosts(target: str) -> list[str]:
    """The hosts of a gRPC channel target that are NOT loopback (empty: every
    host is on this machine). The forms of gRPC's naming: ``HOST:PORT``,
    ``[IPv6]:PORT``, ``dns:[//DNS-SERVER/]HOST[:PORT]``, ``ipv4:A[:P],A[:P]…``,
    ``ipv6:[A]:P,…``; ``unix:``/``unix-abstract:`` sockets are local. A scheme
    that cannot be judged here (``vsock:``, ``xds:`` …) counts as remote.
    ValueError when the target names no host at all."""
    text = target.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in _GRPC_SCHEMES:
        scheme, rest = "dns", text
    if scheme in ("unix", "unix-abstract"):
        return []
    if scheme == "dns":
        if rest.startswith("//"):
            authority, slash, rest = rest[2:].partition("/")  # the DNS server, not the archive
            if not slash:
                raise ValueError(f"{target!r}: dns://SERVER/HOST:PORT needs the host after the server")
            host = _host_of(rest, target)
            if authority and not _is_ip(host):
                # Another DNS server may answer "localhost" with any address.
                return [host]
        hosts = [_host_of(rest, target)]
    elif scheme in ("ipv4", "ipv6"):
        hosts = [_host_of(part, target) for part in rest.split(",")]
    else:
        return [text]
    return [h for h in hosts if not is_loopback_host(h)]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_of(address: str, target: str) -> str:
    """The host of ``HOST``, ``HOST:PORT``, ``[IPv6]``, ``[IPv6]:PORT`` or a bare IPv6 address."""
    address = address.strip()
    if address.startswith("["):
        host, bracket, _ = address[1:].partition("]")
        if not bracket:
            raise ValueError(f"{target!r}: unclosed '[' in {address!r}")
    elif address.count(":") == 1:
        host = address.partition(":")[0]
    else:
        host = address  # no port, or a bare IPv6 address
    if not host:
        raise ValueError(f"{target!r} names no host")
    return host
