"""Central operations on the web (R21, issue 11/17), against a REAL ``serve
--http`` process on SQLite and PostgreSQL and real agents' heartbeats:

* ``GET /api/v1/agents`` (right ``ops.read``): the fleet with liveness, spool
  space, clock skew, refused cards; an agent turns ``silent`` when its
  heartbeats stop; ``/api/v1/agents/{id}`` carries its history; a user without
  the right is refused (403, audited), no login is 401;
* the ops page in headless Chromium (Debian's): the agent's row turns red
  when its heartbeats stop, and its own page shows its refused cards.
"""
from __future__ import annotations

import pathlib
import re
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
import sqlalchemy as sa

from agent.config import AgentConfig, ArchiveConfig as AgentArchiveConfig, DaemonConfig
from agent.daemon.heartbeat import Heartbeater
from agent.desk.status import StatusBoard
from archive_server.models import AuditEvent
from tests.archive.databases import temp_database
from tests.archive.world import OWN, World
from tests.support.archive_process import ArchiveProcess
from tests.support.web import PASSWORD, Site

SILENT_RED = "rgb(198, 40, 40)"
# Free spool space as shown: "12,3 GB" (never "12.3 GB"; a no-break space between thousands).
DECIMAL_GB = re.compile(r"\d{1,3}(\u00a0\d{3})*(,\d)? GB")


@pytest.fixture(scope="module")
def served(db_backend, tmp_path_factory) -> Iterator[tuple[Site, ArchiveProcess]]:
    directory = tmp_path_factory.mktemp(f"ops-{db_backend}")
    with temp_database(db_backend, directory / "db") as url:
        world = World.create(url, directory / "data")
        archive = ArchiveProcess(data=directory / "data", db=url, blobs=str(directory / "data" / "blobs"),
                                 http="127.0.0.1:0").start()
        try:
            yield Site.create(world), archive
        finally:
            archive.stop()
            world.close()


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def beating(archive: ArchiveProcess, agent_id: str, spool: pathlib.Path) -> Heartbeater:
    """A real agent's heartbeats (every second) with a refused card and a card being uploaded;
    ``spool``: its spool folder, made here (the default, /var/lib/bildsluss/spool for root, need
    not exist on a test machine: its free space would then be sent as unknown)."""
    spool.mkdir(parents=True, exist_ok=True)
    board = StatusBoard(agent_id, "0.1.0", OWN)
    board.card_detected("sdb1", "usb-1", "udev")
    board.card_finished("sdb1", {"outcome": "refused", "reason": "UNREGISTERED_DEVICE", "message": "a phone",
                                 "files": [{"status": "refused"}] * 2})
    board.card_detected("sdc1", "usb-2", "udev")
    board.progress("sdc1", "upload", {"files_done": 1, "files_total": 4, "bytes_done": 10, "bytes_total": 40})
    assert archive.address
    config = AgentConfig(agent_id=agent_id, department=OWN, daemon=DaemonConfig(heartbeat_s=1.0), spool_dir=spool,
                         archive=AgentArchiveConfig(address=archive.address, insecure=True, call_timeout_s=10.0))
    beater = Heartbeater(config, board)
    beater.start()
    wait_until(lambda: beater.sent >= 1, "the first heartbeat")
    return beater


def token(archive: ArchiveProcess, user: str) -> str:
    response = httpx.post(f"http://{archive.http_address}/api/v1/login",
                          json={"username": user, "password": PASSWORD}, timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def fleet(archive: ArchiveProcess, bearer: str | None, **params: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.get(f"http://{archive.http_address}/api/v1/agents", params=params, headers=headers, timeout=30)


def test_the_api_shows_an_agent_go_silent_and_refuses_who_may_not_see(served, tmp_path):
    site, archive = served
    ops_user, nurse = site.person(OWN, ["ops.read"]), site.person(OWN, ["case.read"])
    bearer = token(archive, ops_user)
    agent_id = f"pc-api-{uuid.uuid4().hex[:6]}"

    def mine() -> dict:
        (found,) = [a for a in fleet(archive, bearer).json()["agents"] if a["agent_id"] == agent_id]
        return found

    beater = beating(archive, agent_id, tmp_path / "spool")
    try:
        agent = mine()
        assert agent["liveness"] == "alive" and agent["department"] == OWN and agent["version"] == "0.1.0"
        assert agent["refused"][0]["reason"] == "UNREGISTERED_DEVICE" and agent["refused"][0]["files"] == 2
        assert agent["refused_count"] == 1
        assert agent["in_progress"][0]["stage"] == "upload" and agent["in_progress"][0]["files_done"] == 1
        assert agent["spool_free_bytes"] > 0 and abs(agent["clock_skew_s"]) < 5
    finally:
        beater.stop()
    wait_until(lambda: mine()["liveness"] == "silent", "the agent to turn silent")
    assert [a["agent_id"] for a in fleet(archive, bearer, liveness="silent").json()["agents"]].count(agent_id) == 1
    assert agent_id not in {a["agent_id"] for a in fleet(archive, bearer, department="SE2321000016-ZZZZ").json()["agents"]}

    one = httpx.get(f"http://{archive.http_address}/api/v1/agents/{agent_id}",
                    headers={"authorization": f"Bearer {bearer}"}, timeout=30).json()
    kinds = [h["kind"] for h in one["history"]]
    assert kinds[-1] == "first_heartbeat" and "state" in kinds, kinds
    assert one["history"][0]["detail"] == {"from": "busy", "to": "stopping"}

    assert fleet(archive, bearer, liveness="dead").status_code == 400
    assert fleet(archive, None).status_code == 401
    before = site.last_seq()
    refused = fleet(archive, token(archive, nurse))
    assert refused.status_code == 403 and refused.json()["reason"] == "NOT_PERMITTED"
    assert "ops.read" in refused.json()["message"]
    with site.world.db.read() as s:
        audited = s.scalars(sa.select(AuditEvent).where(AuditEvent.seq > before,
                                                        AuditEvent.action == "agents.list")).all()
    assert [(e.actor, e.outcome) for e in audited] == [(nurse, "refused")]
    missing = httpx.get(f"http://{archive.http_address}/api/v1/agents/pc-nobody",
                        headers={"authorization": f"Bearer {bearer}"}, timeout=30)
    assert missing.status_code == 404


@pytest.mark.browser
@pytest.mark.slow
def test_the_ops_page_turns_an_agent_red_when_its_heartbeats_stop(served, chromium, tmp_path):
    site, archive = served
    user = site.person(OWN, ["ops.read"])
    agent_id = f"pc-page-{uuid.uuid4().hex[:6]}"
    beater = beating(archive, agent_id, tmp_path / "spool")
    stopped = False
    try:
        with chromium.new_context(base_url=f"http://{archive.http_address}") as context:
            page = context.new_page()
            page.goto("/ops")
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", PASSWORD)
            page.click("#login")
            page.wait_for_selector("#nav-ops")
            if "/ops" not in page.url:
                page.goto("/ops")
            row = f"tr.agent-row[data-agent='{agent_id}']"
            page.wait_for_selector(f"{row}[data-liveness='alive']")
            cell = page.locator(f"{row} td").first
            assert cell.evaluate("td => getComputedStyle(td).backgroundColor") != SILENT_RED
            assert "UNREGISTERED_DEVICE" in page.inner_text(row)
            (spool,) = [c for c in page.locator(f"{row} td").all_inner_texts() if c.endswith(" GB")]
            assert DECIMAL_GB.fullmatch(spool), spool  # a decimal comma, as staff write it
            beater.stop()
            stopped = True
            # Heartbeats stop: within 3 intervals and a poll or two the row is red.
            page.wait_for_selector(f"{row}.liveness-silent", timeout=60_000)
            assert cell.evaluate("td => getComputedStyle(td).backgroundColor") == SILENT_RED
            assert page.inner_text(f"{row} td.liveness") == "Tyst"
            page.select_option("#filter-liveness", "alive")
            page.wait_for_selector(row, state="detached")
            page.select_option("#filter-liveness", "silent")
            page.wait_for_selector(row)

            page.click(f"{row} a")
            page.wait_for_selector("#agent-liveness")
            assert page.inner_text("#agent-liveness") == "Tyst"
            assert "UNREGISTERED_DEVICE" in page.inner_text("#refused")
            assert "Första hjärtslaget" in page.inner_text("#history")
            assert DECIMAL_GB.fullmatch(page.inner_text("#agent-spool")), page.inner_text("#agent-spool")
    finally:
        if not stopped:
            beater.stop()
