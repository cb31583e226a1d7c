"""The agent's ``GET /metrics`` on its local status port: a REAL ``bildsluss-agent
run`` daemon against a real archive files one card and refuses another, and
the Prometheus text shows cards by outcome, stage and card durations, the
queue, the spool, the clock skew the archive measured and the registered
devices; the page still answers loopback names only."""
from __future__ import annotations

import http.client
import os
import socket
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.support.cardgen import make_card, make_personnummer
from tests.support.daemon import daemons  # noqa: F401
from tests.support.e2e import DEPARTMENT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, host: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": host} if host else {})
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, body


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_daemons_metrics_after_an_archived_and_a_refused_card(daemons, archive, tmp_path):
    watch = tmp_path / "media"
    watch.mkdir()
    port = free_port()
    daemon = daemons(tmp_path / "d", archive.address, watch=watch,
                     extra_agent='[[devices]]\nmake = "Canon"\nmodel = "Canon EOS 250D"\n')
    daemon.config_path.write_text(daemon.config_path.read_text().replace(
        'status_http = ""', f'status_http = "127.0.0.1:{port}"'))
    daemon.start()
    make_card(tmp_path / "s1", patient=make_personnummer("19720202", "123"), n_images=2, megapixels=0.5, seed=7)
    make_card(tmp_path / "s2", patient=None, n_images=1, megapixels=0.5, seed=8)
    daemon.wait_for("the daemon to be ready", lambda _: daemon.socket.exists())
    os.rename(tmp_path / "s1", watch / "CARD1")
    daemon.wait_for("the first card", lambda cs: any(c["state"] == "done" for c in cs), timeout=120)
    os.rename(tmp_path / "s2", watch / "CARD2")
    daemon.wait_for("the second card", lambda cs: any(c["state"] == "refused" for c in cs), timeout=120)
    deadline = time.monotonic() + 30
    # The journal records a card's end before the status board counts it (the
    # durable record first), and the last heartbeat's answer brings the clock
    # skew: wait for both, then judge what /metrics says.
    while True:
        status, body = get(port, "/metrics")
        counted = 'bildsluss_agent_cards_total{outcome="refused"} 1.0' in body
        if ("bildsluss_agent_clock_skew_seconds" in body and counted) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200
    found = samples(body)

    def value(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert value("bildsluss_agent_cards_total", outcome="archived") == 1
    assert value("bildsluss_agent_cards_total", outcome="refused") == 1
    assert value("bildsluss_agent_cards_total", outcome="detected") == 2
    for stage in ("scan", "identify", "strip", "upload", "verify", "wipe"):
        assert value("bildsluss_agent_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert value("bildsluss_agent_card_duration_seconds_count", outcome="archived") == 1
    assert value("bildsluss_agent_card_duration_seconds_count", outcome="refused") == 1
    assert value("bildsluss_agent_queue_length") == 0
    assert value("bildsluss_agent_spool_free_bytes") > 0 and value("bildsluss_agent_spool_bytes") == 0
    assert abs(value("bildsluss_agent_clock_skew_seconds")) < 5
    assert value("bildsluss_agent_registered_devices") == 1
    assert value("bildsluss_agent_info", agent="daemon-test-agent", department=DEPARTMENT, version=_version()) == 1
    assert "19720202" not in body
    assert get(port, "/metrics", host="evil.example")[0] == 421


def _version() -> str:
    from agent import __version__

    return __version__
