"""Audit events as RFC 5424 syslog, in the spirit of IHE ATNA (R18).

The audit table is the record; this is a copy for the region's central log
collector (SIEM), which is how IHE's Audit Trail and Node Authentication
profile expects every system to report who did what to which patient's data.
:func:`format_rfc5424` turns one event into one syslog message;
:class:`SyslogSink` sends it over UDP (RFC 5426), TCP with octet-counting
framing (RFC 6587 section 3.4.1) or a local Unix socket, and never raises into
the caller: a collector that is down costs a warning in the service log, not a
refused request.

A message (one line, UTF-8)::

    <85>1 2026-11-26T09:05:00.000000Z arkiv01 bildsluss-archive 4242 case.print
        [bildsluss@32473 who="anna.a" action="case.print" target="c0ffee…" department="SE2321000016-15CQ"
         patient="19121212-****" why="Remiss" outcome="success"] BOM anna.a case.print c0ffee… success

* PRI: facility ``authpriv`` (10; ``auth``, 4, on request), severity by outcome:
  success/permitted ``notice`` (5), refused/denied ``warning`` (4),
  failed/failure/error ``err`` (3); an unknown outcome is a ``warning``.
* The structured data element carries the event; PARAM-VALUEs escape ``"``,
  ``\\`` and ``]`` with a backslash (RFC 5424 section 6.3.3) and are UTF-8.
  Each value is cut at :data:`MAX_VALUE_CHARS` characters so that a message
  fits a UDP datagram. The SD-ID's enterprise number 32473 is the one RFC 5612
  reserves for documentation; a region with its own IANA number configures it.
* This is not the DICOM PS3.15 audit message XML that a full ATNA actor
  sends; it carries the same who/what/when/where/outcome fields in syslog's own
  structure, which any collector parses without a schema.

A message never carries a whole identity number: ``patient`` is masked with
:func:`~bildsluss_common.identity.masking.mask_patient` (the birth date stays,
enough to tell patients apart in a report) and every other field with
:func:`~bildsluss_common.identity.masking.mask_numbers_in_text` (a reason
typed by a user may quote a number). The audit table keeps the whole number;
``bildsluss-archive audit list --patient ID`` finds a patient's events there.
The messages still say who did what when: send them only to a collector inside
the region's network, or through the local syslog daemon (``unix:///dev/log``),
which can forward over TLS (RFC 5425).
"""
from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import select
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from archive_server.errors import ConfigError
from bildsluss_common.identity.masking import mask_numbers_in_text, mask_patient

log = logging.getLogger(__name__)

FACILITIES = {"auth": 4, "authpriv": 10}
SEVERITY_ERR, SEVERITY_WARNING, SEVERITY_NOTICE = 3, 4, 5
_SEVERITY_BY_OUTCOME = {
    "success": SEVERITY_NOTICE, "ok": SEVERITY_NOTICE, "allowed": SEVERITY_NOTICE, "permitted": SEVERITY_NOTICE,
    "refused": SEVERITY_WARNING, "denied": SEVERITY_WARNING, "not_permitted": SEVERITY_WARNING,
    "failure": SEVERITY_ERR, "failed": SEVERITY_ERR, "error": SEVERITY_ERR,
}
SD_ID = "bildsluss@32473"
APP_NAME = "bildsluss-archive"
# The event's keys, in the order they appear in the structured data element.
FIELDS = ("who", "action", "target", "department", "patient", "why", "outcome")
MAX_VALUE_CHARS = 1000
UTF8_BOM = b"\xef\xbb\xbf"
# A TCP collector that does not answer within this holds no request up for longer.
SEND_TIMEOUT_S = 2.0


def format_rfc5424(
    event: Mapping[str, Any],
    *,
    facility: str = "authpriv",
    hostname: str | None = None,
    app_name: str = APP_NAME,
    procid: int | None = None,
    sd_id: str = SD_ID,
) -> bytes:
    """One RFC 5424 message (no framing, no trailing newline) for an audit event.

    ``event``: ``when`` (datetime; naive means UTC), ``who``, ``action``,
    ``target``, ``department``, ``patient``, ``why``, ``outcome``; missing or
    None values are left out of the structured data.
    """
    if facility not in FACILITIES:
        raise ValueError(f"facility must be one of {sorted(FACILITIES)}, not {facility!r}")
    if not _valid_sd_id(sd_id):
        raise ValueError(f"not an RFC 5424 SD-ID: {sd_id!r}")
    outcome = str(event.get("outcome") or "").strip().lower()
    pri = FACILITIES[facility] * 8 + _SEVERITY_BY_OUTCOME.get(outcome, SEVERITY_WARNING)
    header = " ".join((
        f"<{pri}>1",
        _timestamp(event.get("when")),
        _header_field(hostname if hostname is not None else socket.gethostname(), 255),
        _header_field(app_name, 48),
        _header_field(str(os.getpid() if procid is None else procid), 128),
        _header_field(str(event.get("action") or ""), 32),
    ))
    shown = _masked(event)
    params = "".join(
        f' {name}="{_escape(_cut(shown[name]))}"'
        for name in FIELDS if name in shown
    )
    structured = f"[{sd_id}{params}]"
    summary = " ".join(_cut(shown[k]) for k in ("who", "action", "target", "outcome") if k in shown)
    message = f"{header} {structured}".encode("utf-8")
    if summary:
        message += b" " + UTF8_BOM + " ".join(summary.split()).encode("utf-8")
    return message


def _masked(event: Mapping[str, Any]) -> dict[str, str]:
    """The event's fields as sent: no whole identity number in any of them."""
    shown = {name: str(event[name]) for name in FIELDS if event.get(name) is not None}
    for name, value in shown.items():
        shown[name] = (mask_patient(value) or "") if name == "patient" else mask_numbers_in_text(value)
    return shown


def _timestamp(when: Any) -> str:
    if not isinstance(when, dt.datetime):
        return "-"  # NILVALUE: the receiver's time stands in
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _header_field(value: str, limit: int) -> str:
    """PRINTUSASCII (33-126) only, at most ``limit`` characters; NILVALUE when empty."""
    cleaned = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value)[:limit]
    return cleaned or "-"


def _escape(value: str) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' MUST be escaped inside PARAM-VALUE.
    # Line breaks are replaced too: a collector reading line by line must not
    # take the rest of a reason for a new message.
    value = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    return value.replace("\r", " ").replace("\n", " ")


def _cut(value: str) -> str:
    return value if len(value) <= MAX_VALUE_CHARS else value[: MAX_VALUE_CHARS - 1] + "…"


class SyslogSink:
    """Sends audit events to one syslog receiver; see the module notes.

    ``emit`` never raises: a failure is logged as a warning and the event is
    dropped (the audit table holds it). A TCP connection is kept open and
    re-opened once per event after a failure.
    """

    def __init__(self, scheme: str, address: str | tuple[str, int], *, facility: str = "authpriv",
                 sd_id: str = SD_ID, hostname: str | None = None) -> None:
        if facility not in FACILITIES:
            raise ConfigError(f"syslog facility must be one of {sorted(FACILITIES)}, not {facility!r}")
        if not _valid_sd_id(sd_id):
            raise ConfigError(f"syslog structured-data id {sd_id!r} is not an RFC 5424 SD-ID (name@number)")
        self.scheme = scheme
        self.address = address
        self.facility = facility
        self.sd_id = sd_id
        self.hostname = hostname
        self._sock: socket.socket | None = None
        self._peer: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SyslogSink:
        """``udp://host:port``, ``tcp://host:port`` or ``unix:///dev/log``."""
        try:
            parsed = urllib.parse.urlparse(url)
        except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 address
            raise ConfigError(f"syslog address {url!r} is not a URL: {exc}") from None
        if parsed.scheme in ("udp", "tcp"):
            try:
                port = parsed.port
            except ValueError:
                port = None
            if not parsed.hostname or port is None or parsed.path not in ("", "/"):
                raise ConfigError(f"syslog URL must be {parsed.scheme}://host:port, got {url!r}")
            return cls(parsed.scheme, (parsed.hostname, port), **options)
        if parsed.scheme == "unix":
            if parsed.netloc or not parsed.path.startswith("/"):
                raise ConfigError(f"syslog URL must be unix:///absolute/path, got {url!r}")
            return cls("unix", urllib.parse.unquote(parsed.path), **options)
        raise ConfigError(f"unsupported syslog URL {url!r} (use udp://, tcp:// or unix://)")

    def emit(self, event: Mapping[str, Any]) -> bool:
        """Send one event; True when it was handed to the transport."""
        try:
            message = format_rfc5424(event, facility=self.facility, hostname=self.hostname,
                                     sd_id=self.sd_id)
            with self._lock:
                self._send(message)
            return True
        except Exception as exc:  # the audit row is the record: never fail the caller
            log.warning("audit syslog: event not sent to %s: %s", self._where(), exc,
                        extra={"syslog": self._where(), "action": str(event.get("action"))})
            return False

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> SyslogSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transports -----------------------------------------------------------------

    def _send(self, message: bytes) -> None:
        for attempt in (1, 2):
            try:
                self._send_once(message)
                return
            except OSError:
                self._drop()  # the receiver restarted: one new socket, then give up
                if attempt == 2:
                    raise

    def _send_once(self, message: bytes) -> None:
        if self.scheme == "tcp":
            if self._sock is not None and _closed_by_peer(self._sock):
                self._drop()  # else the first event after a collector restart vanishes in the old connection
            if self._sock is None:
                assert isinstance(self.address, tuple)  # a tcp:// URL parses to (host, port)
                self._sock = socket.create_connection(self.address, timeout=SEND_TIMEOUT_S)
            self._sock.sendall(f"{len(message)} ".encode("ascii") + message)  # RFC 6587 octet counting
        elif self.scheme == "udp":
            if self._sock is None:
                assert isinstance(self.address, tuple)  # a udp:// URL parses to (host, port)
                host, port = self.address
                family, _, _, _, self._peer = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
                self._sock = self._open(family, socket.SOCK_DGRAM)
            self._sock.sendto(message, self._peer)
        else:
            if self._sock is None:
                try:
                    self._open(socket.AF_UNIX, socket.SOCK_DGRAM).connect(self.address)
                except OSError as exc:
                    self._drop()
                    if exc.errno != errno.EPROTOTYPE:
                        raise
                    # A daemon listening on a stream socket (syslog-ng unix-stream).
                    self._open(socket.AF_UNIX, socket.SOCK_STREAM).connect(self.address)
            if self._sock.type == socket.SOCK_STREAM:  # type: ignore[union-attr]
                self._sock.sendall(message + b"\n")  # type: ignore[union-attr]  # newline framing: the message has none
            else:
                self._sock.send(message)  # type: ignore[union-attr]

    def _open(self, family: int, kind: int) -> socket.socket:
        sock = socket.socket(family, kind)
        sock.settimeout(SEND_TIMEOUT_S)
        self._sock = sock
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _where(self) -> str:
        if isinstance(self.address, tuple):
            return f"{self.scheme}://{self.address[0]}:{self.address[1]}"
        return f"unix://{self.address}"


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the other end has closed (EOF or reset is waiting to be read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _valid_sd_id(sd_id: str) -> bool:
    """SD-NAME (RFC 5424 section 6.3.2): 1-32 printable ASCII characters except '=', ' ', ']', '"'."""
    return 0 < len(sd_id) <= 32 and all(33 <= ord(ch) <= 126 and ch not in '= ]"' for ch in sd_id)
