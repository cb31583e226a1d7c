"""RFC 5424 audit syslog: the format, parsed back strictly, and real UDP, TCP
and Unix listener sockets on loopback."""
from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import threading

import pytest

from archive_server.atna import SD_ID, SyslogSink, format_rfc5424
from archive_server.errors import ConfigError

WHEN = dt.datetime(2026, 11, 26, 9, 5, 7, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
EVENT = {
    "when": WHEN, "who": "anna.a", "action": "case.print", "target": "c0ffee00-42",
    "department": "SE2321000016-15CQ", "patient": "191212121212", "why": "Remiss", "outcome": "success",
}
NASTY = 'Polisen bad om "bild 3" [beslut 2026:14] via C:\\delning\\ — åäö ÅÄÖ'

HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) "
    rb"(?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) (?P<rest>.*)$", re.S)


def parse(message: bytes) -> dict:
    """A strict reading of one RFC 5424 message with one SD element."""
    m = HEADER.match(message)
    assert m, message
    rest = m["rest"].decode("utf-8")
    assert rest.startswith("[")
    sd_id, params, i = "", {}, 1
    while rest[i] not in " ]":
        sd_id += rest[i]
        i += 1
    while rest[i] == " ":
        name_end = rest.index("=", i)
        name = rest[i + 1:name_end]
        assert re.fullmatch(r'[!-~]{1,32}', name) and not set(name) & set('= ]"'), name
        assert rest[name_end + 1] == '"'
        i, value = name_end + 2, ""
        while rest[i] != '"':
            if rest[i] == "\\" and rest[i + 1] in '"\\]':
                value += rest[i + 1]
                i += 2
            else:
                assert rest[i] != "]", "an unescaped ] inside a value"
                value += rest[i]
                i += 1
        params[name] = value
        i += 1
    assert rest[i] == "]"
    msg = rest[i + 1:]
    return {"pri": int(m["pri"]), "ts": m["ts"].decode(), "host": m["host"].decode(),
            "app": m["app"].decode(), "procid": m["procid"].decode(), "msgid": m["msgid"].decode(),
            "sd_id": sd_id, "params": params, "msg": msg}


def test_an_event_becomes_one_strict_rfc5424_message():
    raw = format_rfc5424(EVENT, hostname="arkiv01", procid=4242)
    parsed = parse(raw)
    assert parsed["pri"] == 10 * 8 + 5  # authpriv.notice
    assert parsed["ts"] == "2026-11-26T08:05:07.123456Z"
    assert (parsed["host"], parsed["app"], parsed["procid"], parsed["msgid"]) == \
        ("arkiv01", "bildsluss-archive", "4242", "case.print")
    assert parsed["sd_id"] == SD_ID
    assert parsed["params"] == {**{k: v for k, v in EVENT.items() if k != "when"}, "patient": "19121212-****"}
    assert raw.endswith(b" \xef\xbb\xbfanna.a case.print c0ffee00-42 success")
    assert b"\n" not in raw


def test_values_are_escaped_and_utf8():
    event = {**EVENT, "why": NASTY, "who": "åsa.ö]\\\"", "patient": None}
    raw = format_rfc5424(event, hostname="arkiv01")
    assert b'\\"bild 3\\" [beslut 2026:14\\] via C:\\\\delning\\\\' in raw
    assert "åäö ÅÄÖ".encode("utf-8") in raw
    parsed = parse(raw)
    assert parsed["params"]["why"] == NASTY
    assert parsed["params"]["who"] == "åsa.ö]\\\""
    assert "patient" not in parsed["params"]  # None is left out


def test_line_breaks_and_long_values_cannot_split_or_swell_a_message():
    raw = format_rfc5424({**EVENT, "why": "rad ett\nrad två\r\n" + "x" * 5000}, hostname="h")
    assert b"\n" not in raw and b"\r" not in raw
    assert len(raw) < 2048
    assert parse(raw)["params"]["why"].endswith("…")


@pytest.mark.parametrize("outcome, severity", [
    ("success", 5), ("SUCCESS", 5), ("permitted", 5), ("denied", 4), ("refused", 4), ("failed", 3),
    ("failure", 3), ("error", 3),
    ("something new", 4), (None, 4),
])
def test_severity_follows_the_outcome(outcome, severity):
    assert parse(format_rfc5424({**EVENT, "outcome": outcome}, hostname="h"))["pri"] == 80 + severity
    assert parse(format_rfc5424({**EVENT, "outcome": outcome}, hostname="h", facility="auth"))["pri"] == \
        32 + severity


def test_header_fields_stay_printable_ascii_and_a_missing_time_is_nil():
    raw = format_rfc5424({"action": "case öppnad med mellanslag och mycket mer än 32 tecken"},
                         hostname="värd 1")
    parsed = parse(raw)
    assert parsed["ts"] == "-"
    assert parsed["host"] == "v_rd_1"
    assert len(parsed["msgid"]) == 32 and " " not in parsed["msgid"]
    naive = parse(format_rfc5424({**EVENT, "when": dt.datetime(2026, 1, 2, 3, 4, 5)}, hostname="h"))
    assert naive["ts"] == "2026-01-02T03:04:05.000000Z"


def test_bad_facility_or_sd_id_is_refused():
    with pytest.raises(ValueError):
        format_rfc5424(EVENT, facility="local0")
    with pytest.raises(ValueError):
        format_rfc5424(EVENT, sd_id="bad id")
    with pytest.raises(ConfigError):
        SyslogSink.from_url("udp://127.0.0.1:514", facility="user")


@pytest.mark.parametrize("url", ["udp://127.0.0.1", "tcp://:514", "udp://host:port", "syslog://h:1",
                                 "unix://relative/dev/log", "tcp://h:514/path", "/dev/log"])
def test_malformed_urls_are_refused(url):
    with pytest.raises(ConfigError):
        SyslogSink.from_url(url)


def test_udp_one_datagram_per_event():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        port = listener.getsockname()[1]
        with SyslogSink.from_url(f"udp://127.0.0.1:{port}", hostname="arkiv01") as sink:
            assert sink.emit({**EVENT, "why": NASTY})
            assert sink.emit({**EVENT, "outcome": "denied"})
        first, second = listener.recv(65535), listener.recv(65535)
    assert parse(first)["params"]["why"] == NASTY
    assert parse(second)["pri"] == 84


def _closing(frame: bytes) -> bool:
    return b'target="close-now"' in frame


def _tcp_collector(listener: socket.socket, frames: list[bytes], connections: int,
                   closed: threading.Event) -> None:
    """Reads octet-counted frames (RFC 6587) from ``connections`` connections in
    turn; the first one is closed after the frame for target "close-now"."""
    for _ in range(connections):
        conn, _ = listener.accept()
        with conn:
            buf = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    m = re.match(rb"([1-9][0-9]*) ", buf)
                    if not m or len(buf) < m.end() + int(m[1]):
                        break
                    frames.append(buf[m.end():m.end() + int(m[1])])
                    buf = buf[m.end() + int(m[1]):]
                    if _closing(frames[-1]):
                        break
                if frames and _closing(frames[-1]):
                    break
            assert buf == b"" or _closing(frames[-1]), buf
        closed.set()


def test_tcp_octet_counting_and_reconnect_after_the_collector_closes():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(10)
        frames: list[bytes] = []
        closed = threading.Event()
        reader = threading.Thread(target=_tcp_collector, args=(listener, frames, 2, closed), daemon=True)
        reader.start()
        sink = SyslogSink.from_url(f"tcp://127.0.0.1:{listener.getsockname()[1]}", hostname="arkiv01")
        assert sink.emit({**EVENT, "why": NASTY})
        assert sink.emit({**EVENT, "why": "andra"})
        assert sink.emit({**EVENT, "target": "close-now"})  # the collector drops this connection
        # Once the collector has closed, the next event goes over a new connection.
        assert closed.wait(10)
        assert sink.emit({**EVENT, "why": "efter omstart"})
        sink.close()
        reader.join(10)
    assert not reader.is_alive()
    whys = [parse(f)["params"]["why"] for f in frames]
    assert whys == [NASTY, "andra", "Remiss", "efter omstart"]


def test_unix_datagram_socket(tmp_path):
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(5)
        with SyslogSink.from_url(f"unix://{path}", hostname="arkiv01") as sink:
            assert sink.emit({**EVENT, "why": NASTY})
        assert parse(listener.recv(65535))["params"]["why"] == NASTY


def test_unix_stream_socket_gets_newline_framing(tmp_path):
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        listener.settimeout(5)
        with SyslogSink.from_url(f"unix://{path}", hostname="arkiv01") as sink:
            assert sink.emit(EVENT)
            assert sink.emit({**EVENT, "why": NASTY})
        conn, _ = listener.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert parse(lines[1])["params"]["why"] == NASTY


def test_an_unreachable_receiver_never_raises_into_the_caller(tmp_path, caplog):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    caplog.set_level(logging.WARNING, logger="archive_server.atna")
    for url in (f"tcp://127.0.0.1:{port}", f"unix://{tmp_path / 'no-such-socket'}",
                "udp://no-such-host.invalid:514"):
        with SyslogSink.from_url(url) as sink:
            assert sink.emit(EVENT) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("event not sent" in r.getMessage() for r in warnings)


def test_an_event_that_cannot_be_formatted_never_raises_either(caplog):
    class Unprintable:
        def __str__(self):
            raise RuntimeError("boom")

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        sink = SyslogSink.from_url(f"udp://127.0.0.1:{listener.getsockname()[1]}")
        assert sink.emit({**EVENT, "who": Unprintable()}) is False
        sink.close()


def test_a_syslog_address_that_is_not_a_url_is_a_config_error():
    # Found by the archive_config fuzz target: urlparse raised ValueError on "[".
    with pytest.raises(ConfigError, match="not a URL"):
        SyslogSink.from_url("udp://[::1")
