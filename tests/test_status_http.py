"""The local status page over real HTTP on loopback: the page, the JSON, the
live updates (Server-Sent Events), loopback-only binding, and what it must not show."""
from __future__ import annotations

import http.client
import json
import threading

import pytest

from agent.desk.ehr_context import ContextStore
from agent.desk.status import StatusBoard
from agent.desk.page import StatusHttpServer, parse_loopback, render_body

PATIENT = "191212121212"


def finished(kind: str, reason: str | None = None) -> dict:
    return {"outcome": kind, "reason": reason, "message": "m", "patient": PATIENT, "case_id": None,
            "wiped": kind == "archived", "files": [{"status": "archived"}] * 4}


@pytest.fixture
def board() -> StatusBoard:
    return StatusBoard("pc-1", "0.1.0", "SE2321000016-15CQ")


@pytest.fixture
def page(board):
    contexts = ContextStore()
    server = StatusHttpServer("127.0.0.1:0", board, contexts=contexts)
    server.start()
    yield server
    server.stop()


def get(page: StatusHttpServer, path: str, host: str | None = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    headers = {"Host": host} if host else {}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, dict(response.getheaders()), body


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:8787", ("127.0.0.1", 8787)),
    ("127.0.0.2:0", ("127.0.0.2", 0)),
    ("[::1]:8787", ("::1", 8787)),
    ("localhost:80", ("127.0.0.1", 80)),
])
def test_loopback_addresses_are_accepted(address, expected):
    assert parse_loopback(address) == expected


@pytest.mark.parametrize("address", ["0.0.0.0:8787", "[::]:8787", "192.168.1.5:8787", "10.0.0.1:80",
                                     "example.org:80", "8787", "127.0.0.1:http", "127.0.0.1:70000"])
def test_anything_but_loopback_is_refused(address):
    with pytest.raises(ValueError):
        parse_loopback(address)
    with pytest.raises(ValueError):
        StatusHttpServer(address, StatusBoard("pc-1", "0", None))


def test_the_page_shows_the_outcome_in_plain_words(page, board):
    status, headers, body = get(page, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "Sätt i ett kort" in body and 'src="/app.js"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["Cache-Control"] == "no-store"

    board.card_detected("sdb1", "usb-1", "udev")
    board.card_finished("sdb1", finished("archived"))
    body = get(page, "/")[2]
    assert "Klart – kortet är tomt" in body and "19121212-****" in body and PATIENT not in body

    board.card_detected("sdb1", "usb-1", "udev")
    board.card_finished("sdb1", finished("refused", "MIXED_PATIENTS"))
    body = get(page, "/")[2]
    assert "Nekat: flera patienter på kortet" in body and PATIENT not in body


def test_status_json_and_the_context_are_masked(page, board):
    page.contexts.put(PATIENT, None, 600, set_by="anna")
    board.card_detected("sdb1", "usb-1", "udev")
    board.card_finished("sdb1", finished("archived"))
    status, headers, body = get(page, "/status.json")
    data = json.loads(body)
    assert status == 200 and data["agent_id"] == "pc-1" and data["recent"][0]["outcome"] == "archived"
    assert data["context"]["patient"] == "19121212-****"
    assert PATIENT not in body and PATIENT not in get(page, "/")[2]
    assert "Nästa kort ska vara patient 19121212-****" in get(page, "/")[2]


def test_other_hosts_are_refused_dns_rebinding(page):
    assert get(page, "/", host="evil.example:8787")[0] == 421
    assert get(page, "/status.json", host="192.168.1.5")[0] == 421
    assert get(page, "/", host=f"localhost:{page.port}")[0] == 200
    assert get(page, "/nothing")[0] == 404
    assert get(page, "/app.js")[1]["Content-Type"].startswith("text/javascript")


def test_text_from_the_card_is_escaped(board):
    board.card_detected("<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "watch")
    board.card_state("<img src=x onerror=alert(1)>", "scanned")
    body = render_body(board.snapshot())
    assert "<script>" not in body and "&lt;script&gt;" in body


def read_event(stream) -> dict:
    data = None
    while True:
        line = stream.readline().decode()
        assert line, "the event stream closed"
        if line.startswith("data: "):
            data = json.loads(line[len("data: "):])
        elif line == "\n" and data is not None:
            return data


def test_the_page_updates_live_over_server_sent_events(page, board):
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    conn.request("GET", "/events")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    first = read_event(response)
    assert "Sätt i ett kort" in first["html"]

    board.card_detected("sdb1", "usb-1", "udev")
    board.card_state("sdb1", "uploading")
    board.progress("sdb1", "upload", {"files_done": 1, "files_total": 4, "bytes_done": 10, "bytes_total": 40})
    board.card_deferred("sdb1", "ARCHIVE_UNAVAILABLE", "keep the card", retry_at=0)
    seen = []
    while "Arkivet nås inte – använd inte kortet" not in (event := read_event(response))["html"]:
        seen.append(event)
    assert all(a["seq"] < b["seq"] for a, b in zip(seen, seen[1:])), "never an older state after a newer one"
    conn.close()


def test_stop_ends_open_event_streams(board):
    server = StatusHttpServer("127.0.0.1:0", board)
    server.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/events")
    response = conn.getresponse()
    read_event(response)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(timeout=30)
    assert not stopper.is_alive(), "stop() must not hang on an open page"
    assert response.read() == b"", "the stream ends"


def test_a_refused_mixed_card_says_which_files_show_which_masked_number(page, board):
    # The outcome as the pipeline writes it (IngestOutcome.to_json), through the
    # board, on the real page, in the JSON and in `bildsluss-agent status`.
    from agent.card.model import Evidence, Method
    from agent.card.outcome import Outcome
    from agent.card.pipeline import IngestOutcome
    from agent.card.reasons import Reason
    from agent.desk.commands import format_status

    other = "198204152386"
    files = ["DCIM/100CANON/IMG_0001.JPG", "DCIM/100CANON/IMG_0002.JPG", "DCIM/100CANON/IMG_0003.JPG"]
    evidence = (Evidence(files[0], 0, Method.BARCODE, PATIENT, PATIENT),
                Evidence(files[1], 0, Method.OCR, "19820415-2386", other),
                Evidence(files[2], 0, Method.BARCODE, PATIENT, PATIENT),
                Evidence(files[1], 0, Method.BARCODE, "lot 4711", None))
    outcome = IngestOutcome(Outcome.REFUSED, Reason.MIXED_PATIENTS, "two patients",
                            detail=f"2 patients on the card: {PATIENT} on ...", evidence=evidence).to_json()
    assert outcome["patients_shown"] == [{"patient": "19121212-****", "files": [files[0], files[2]]},
                                         {"patient": "19820415-****", "files": [files[1]]}]
    board.card_detected("sdb1", "usb-1", "udev")
    board.card_finished("sdb1", outcome)

    body = get(page, "/")[2]
    assert "Nekat: flera patienter på kortet" in body
    assert (f"Bilder per patient: 19121212-**** på {files[0]}, {files[2]}; "
            f"19820415-**** på {files[1]}.") in body
    assert PATIENT not in body and other not in body
    data = json.loads(get(page, "/status.json")[2])
    assert data["recent"][0]["patients_shown"][1] == {"patient": "19820415-****", "files": [files[1]], "more": 0}
    assert PATIENT not in json.dumps(data) and other not in json.dumps(data)
    assert f"19820415-**** på {files[1]}" in format_status(board.snapshot())


def test_numbers_shown_per_file_are_masked_on_the_board_whatever_it_is_given(page, board):
    # Defence in depth: an outcome that carried an unmasked number, and a card of
    # many pictures, still shows the masked number and a bounded list.
    many = [f"IMG_{i:04d}.JPG" for i in range(30)]
    outcome = {**finished("refused", "MIXED_PATIENTS"),
               "patients_shown": [{"patient": PATIENT, "files": many}, {"patient": "19820415-2386", "files": ["X.JPG"]}]}
    board.card_detected("sdb1", "usb-1", "udev")
    board.card_finished("sdb1", outcome)
    body = get(page, "/")[2]
    assert PATIENT not in body and "198204152386" not in body and "19820415-2386" not in body
    assert "19121212-**** på IMG_0000.JPG" in body and "IMG_0011.JPG och 18 till" in body
    assert "IMG_0012.JPG" not in body
