"""Heartbeats (R21): the agent's Heartbeater against a REAL archive process,
then ``bildsluss-archive agents --json`` shows what it knows; the registry's
storage on SQLite and PostgreSQL; failure paths (archive down, department
refused, malformed heartbeats) never crash the agent."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import socket
import subprocess
import sys
import time

import grpc
import pytest

from agent.config import AgentConfig, ArchiveConfig, DaemonConfig
from agent.daemon.heartbeat import Heartbeater, build_request
from agent.desk.status import StatusBoard
from archive_server.agents import MAX_REFUSALS_KEPT, AgentRegistryCore, list_agents
from archive_server.blobstores import open_blobstore
from archive_server.config import ArchiveConfig as ServerConfig
from archive_server.db import Database
from archive_server.ingest import IngestCore
from bildsluss.v1 import agents_pb2 as pb
from bildsluss.v1 import agents_pb2_grpc as pb_grpc
from tests.archive.databases import BACKENDS, temp_database
from tests.support.archive_process import ArchiveProcess

DEPARTMENT = "SE2321000016-15CQ"
PATIENT = "191212121212"


def agent_config(address: str, agent_id: str, heartbeat_s: float = 60.0) -> AgentConfig:
    return AgentConfig(agent_id=agent_id, department=DEPARTMENT,
                       archive=ArchiveConfig(address=address, insecure=True, call_timeout_s=5.0),
                       daemon=DaemonConfig(heartbeat_s=heartbeat_s))


def busy_board(agent_id: str) -> StatusBoard:
    """A board with one refused card, one archived, one deferred and one queued."""
    board = StatusBoard(agent_id, "0.1.0", DEPARTMENT)
    board.card_detected("sdb1", "usb-1", "udev")
    board.card_finished("sdb1", {"outcome": "refused", "reason": "MIXED_PATIENTS",
                                 "message": f"two patients, one is {PATIENT}", "patient": PATIENT,
                                 "files": [{"status": "refused"}] * 3})
    board.card_detected("sdc1", "usb-2", "udev")
    board.card_finished("sdc1", {"outcome": "archived", "reason": None, "message": "done",
                                 "patient": PATIENT, "wiped": True, "files": [{"status": "archived"}]})
    board.card_detected("sdb1-again", "usb-1", "udev")
    board.card_state("sdb1-again", "uploading", patient=PATIENT)
    board.progress("sdb1-again", "upload", {"files_done": 2, "files_total": 5, "bytes_done": 20, "bytes_total": 50})
    board.card_deferred("sdb1-again", "ARCHIVE_UNAVAILABLE", "keep the card", retry_at=time.time() + 60)
    board.card_detected("sdd1", "usb-1", "udev")
    return board


def wait_for(predicate, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def agents_json(archive: ArchiveProcess) -> dict[str, dict]:
    out = subprocess.run([sys.executable, "-m", "archive_server.cli", "agents", "--data", str(archive.data),
                          "--json"], capture_output=True, text=True, timeout=60, check=True)
    return {a["agent_id"]: a for a in map(json.loads, out.stdout.splitlines())}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- what a heartbeat carries ------------------------------------------------------------


def test_a_heartbeat_carries_counts_codes_and_progress_but_no_patient_number():
    board = busy_board("pc-1")
    request = build_request(board.snapshot(), department=DEPARTMENT, host="capture-pc-7", interval_s=5.0)
    assert request.state == pb.AGENT_STATE_DEFERRED and request.queue_length == 1
    assert (request.counts.detected, request.counts.refused, request.counts.archived,
            request.counts.deferred) == (4, 1, 1, 1)
    (refused,) = request.refused
    assert (refused.card_key, refused.reader, refused.reason_code, refused.file_count) == (
        "sdb1", "usb-1", "MIXED_PATIENTS", 3)
    by_key = {c.card_key: c for c in request.in_progress}
    assert by_key["sdb1-again"].state == "deferred" and by_key["sdb1-again"].reason_code == "ARCHIVE_UNAVAILABLE"
    assert (by_key["sdb1-again"].files_done, by_key["sdb1-again"].bytes_total) == (2, 50)
    assert by_key["sdd1"].state == "queued"
    wire = request.SerializeToString()
    assert PATIENT.encode() not in wire and b"19121212" not in wire and b"121212-1212" not in wire


def test_free_text_shaped_like_a_number_is_masked_before_it_leaves():
    board = StatusBoard("pc-1", "0.1.0", DEPARTMENT)
    board.archive_reachable(False, "archive said: patient_id 19121212-1212 is not valid")
    request = build_request(board.snapshot(), department=DEPARTMENT, host="pc", interval_s=5.0)
    assert request.last_error.code == "ARCHIVE_UNAVAILABLE"
    assert "1212-1212" not in request.last_error.message and "*************" in request.last_error.message
    assert not request.archive_reachable and request.state == pb.AGENT_STATE_IDLE


# -- against a real archive process ----------------------------------------------------------


def test_heartbeats_reach_the_archive_and_agents_json_shows_them(archive):
    board = busy_board("pc-heart")
    beater = Heartbeater(agent_config(archive.address, "pc-heart", heartbeat_s=1.0), board, host="capture-pc-7")
    beater.start()
    try:
        wait_for(lambda: beater.sent >= 1, "the first heartbeat")
        assert board.snapshot()["archive"]["reachable"] is True
        agent = agents_json(archive)["pc-heart"]
    finally:
        beater.stop()
    assert agent["alive"] is True and agent["state"] == "deferred" and agent["host"] == "capture-pc-7"
    assert agent["department"] == DEPARTMENT and agent["version"] == "0.1.0" and agent["queue"] == 1
    assert agent["counts"]["refused"] == 1 and agent["counts"]["archived"] == 1
    assert [(r["card_key"], r["reason"], r["files"]) for r in agent["refused"]] == [("sdb1", "MIXED_PATIENTS", 3)]
    assert agent["last_error"]["code"] == "ARCHIVE_UNAVAILABLE"
    assert {c["card_key"] for c in agent["in_progress"]} == {"sdb1-again", "sdd1"}
    assert PATIENT not in json.dumps(agent)
    # the last word on stop
    assert agents_json(archive)["pc-heart"]["state"] == "stopping"


def test_repeated_heartbeats_store_each_refusal_once(archive):
    board = busy_board("pc-repeat")
    beater = Heartbeater(agent_config(archive.address, "pc-repeat"), board)
    beater.start()
    try:
        wait_for(lambda: beater.sent >= 1, "the first heartbeat")
        assert beater.beat() and beater.beat()
        board.card_detected("sde1", "usb-3", "udev")
        board.card_finished("sde1", {"outcome": "refused", "reason": "NO_ID_FOUND", "message": "m",
                                     "patient": None, "files": []})
        assert beater.beat()
    finally:
        beater.stop()
    refused = agents_json(archive)["pc-repeat"]["refused"]
    assert [r["reason"] for r in refused] == ["NO_ID_FOUND", "MIXED_PATIENTS"], "newest first, no duplicates"


def test_a_finished_card_is_reported_before_the_next_regular_beat(archive):
    board = StatusBoard("pc-news", "0.1.0", DEPARTMENT)
    beater = Heartbeater(agent_config(archive.address, "pc-news", heartbeat_s=3600.0), board)
    beater.start()
    try:
        wait_for(lambda: beater.sent >= 1, "the first heartbeat")
        board.card_detected("sdb1", "usb-1", "udev")
        board.progress("sdb1", "upload", {"files_done": 1, "files_total": 2})
        board.card_finished("sdb1", {"outcome": "refused", "reason": "UNREGISTERED_DEVICE", "message": "m",
                                     "patient": None, "files": []})
        wait_for(lambda: beater.sent >= 2, "the early heartbeat")  # the hour-long interval is not waited out
        assert beater.sent == 2, "progress alone brings nothing forward"
    finally:
        beater.stop()
    assert agents_json(archive)["pc-news"]["refused"][0]["reason"] == "UNREGISTERED_DEVICE"


def test_an_unreachable_archive_is_reported_and_heartbeats_resume_when_it_is_back(tmp_path):
    port = free_port()
    board = StatusBoard("pc-down", "0.1.0", DEPARTMENT)
    beater = Heartbeater(agent_config(f"127.0.0.1:{port}", "pc-down", heartbeat_s=0.2), board)
    beater.start()
    try:
        wait_for(lambda: board.snapshot()["archive"]["reachable"] is False, "archive reported unreachable")
        snap = board.snapshot()
        assert snap["archive"]["error"].startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED"))
        assert snap["last_error"]["code"] == "ARCHIVE_UNAVAILABLE" and beater.sent == 0
        with ArchiveProcess(tmp_path / "archive", listen=f"127.0.0.1:{port}"):
            wait_for(lambda: board.snapshot()["archive"]["reachable"] is True, "archive reachable again")
            assert beater.sent >= 1
    finally:
        beater.stop()  # the last word fails quietly: the archive is gone again
    assert board.snapshot()["archive"]["reachable"] is False


def test_a_department_the_archive_does_not_know_is_refused(tmp_path):
    config = tmp_path / "archive.toml"
    config.write_text("accept_unknown_departments = false\n")
    board = StatusBoard("pc-stranger", "0.1.0", DEPARTMENT)
    with ArchiveProcess(tmp_path / "archive", extra_args=("--config", str(config))) as archive:
        beater = Heartbeater(agent_config(archive.address, "pc-stranger"), board)
        beater.start()
        try:
            wait_for(lambda: beater.failed >= 1, "the refused heartbeat")
        finally:
            beater.stop()
        archive_state = board.snapshot()["archive"]
        assert archive_state["reachable"] is True, "refused is not unreachable"
        assert archive_state["error"].startswith("FAILED_PRECONDITION") and DEPARTMENT in archive_state["error"]
        assert "pc-stranger" not in agents_json(archive)


@pytest.mark.parametrize("change, field", [
    (dict(interval_s=0), "interval_s"),
    (dict(department_hsa_id="15CQ"), "department_hsa_id"),
    (dict(agent_id="pc with spaces"), "agent_id"),
    (dict(host="x" * 256), "host"),
    (dict(refused=[pb.RefusedCard(card_key="k", reason_code="not a code")]), "reason_code"),
    (dict(refused=[pb.RefusedCard(card_key=f"k{i}", reason_code="NO_ID_FOUND") for i in range(51)]), "refused"),
    (dict(in_progress=[pb.CardInProgress(card_key="a\nb")]), "card_key"),
])
def test_malformed_heartbeats_are_invalid_arguments(archive, change, field):
    request = pb.HeartbeatRequest(agent_id="pc-bad", department_hsa_id=DEPARTMENT, agent_version="0.1.0",
                                  state=pb.AGENT_STATE_IDLE, interval_s=5.0)
    for name, value in change.items():
        if isinstance(value, list):
            getattr(request, name).extend(value)
        else:
            setattr(request, name, value)
    if "refused" in change:  # refused_at is required; set it so only the tested field is wrong
        for card in request.refused:
            card.refused_at.GetCurrentTime()
    with grpc.insecure_channel(archive.address) as channel:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.AgentRegistryStub(channel).Heartbeat(request, timeout=10)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()


# -- the registry's storage on both databases ---------------------------------------------------


@pytest.fixture(params=BACKENDS)
def registry(request, tmp_path):
    with temp_database(request.param, tmp_path / "db") as url:
        db = Database(url, pool_size=2, max_overflow=2)
        db.upgrade_schema()
        core = IngestCore(db, open_blobstore(str(tmp_path / "blobs")), ServerConfig(data_dir=tmp_path))
        clock = {"now": dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)}
        yield AgentRegistryCore(db, core._department, clock=lambda: clock["now"]), db, clock
        db.dispose()


def heartbeat(agent_id: str = "pc-1", **fields) -> pb.HeartbeatRequest:
    values = dict(host="pc", agent_version="0.1.0", department_hsa_id=DEPARTMENT, state=pb.AGENT_STATE_IDLE,
                  interval_s=5.0)
    return pb.HeartbeatRequest(agent_id=agent_id, **{**values, **fields})


def refusal(key: str, ms: int) -> pb.RefusedCard:
    card = pb.RefusedCard(card_key=key, reader="usb-1", reason_code="NO_ID_FOUND", file_count=2)
    card.refused_at.FromMilliseconds(ms)
    return card


def test_registry_stores_the_latest_snapshot_and_judges_liveness(registry):
    core, db, clock = registry
    response = core.heartbeat(heartbeat(state=pb.AGENT_STATE_BUSY, queue_length=2))
    assert response.next_interval_s == 5.0 and response.server_time.ToDatetime(dt.timezone.utc) == clock["now"]
    assert core.heartbeat(heartbeat(interval_s=0.1)).next_interval_s == 1.0, "the archive's minimum"
    # A dead agent must not look alive for hours: 3,600 s asked, 300 s kept and told.
    assert core.heartbeat(heartbeat(interval_s=3600.0)).next_interval_s == 300.0
    assert list_agents(db, now=clock["now"] + dt.timedelta(seconds=901))[0]["alive"] is False
    assert list_agents(db, now=clock["now"])[0]["interval_s"] == 300.0
    core.heartbeat(heartbeat(state=pb.AGENT_STATE_DEFERRED, queue_length=1, interval_s=5.0))
    (agent,) = list_agents(db, now=clock["now"])
    assert (agent["state"], agent["queue"], agent["department"], agent["alive"]) == ("deferred", 1, DEPARTMENT, True)
    assert list_agents(db, now=clock["now"] + dt.timedelta(seconds=15))[0]["alive"] is True
    assert list_agents(db, now=clock["now"] + dt.timedelta(seconds=15.5))[0]["alive"] is False


def test_registry_keeps_refusals_once_and_at_most_a_hundred(registry):
    core, db, _ = registry
    base = 1_795_000_000_000
    for batch in range(3):
        core.heartbeat(heartbeat(refused=[refusal(f"card-{batch}-{i}", base + batch * 1000 + i) for i in range(50)]))
    core.heartbeat(heartbeat(refused=[refusal("card-2-49", base + 2049)]))  # a repeat
    refused = list_agents(db)[0]["refused"]
    assert len(refused) == MAX_REFUSALS_KEPT
    assert refused[0]["card_key"] == "card-2-49" and refused[-1]["card_key"] == "card-1-0"
    (fleet_view,) = list_agents(db, refusals=3)  # the ops page's view: the newest few, and the count
    assert [r["card_key"] for r in fleet_view["refused"]] == ["card-2-49", "card-2-48", "card-2-47"]
    assert fleet_view["refused_count"] == MAX_REFUSALS_KEPT
    assert list_agents(db, refusals=0)[0]["refused"] == []


def test_registry_masks_number_shaped_text(registry):
    core, db, _ = registry
    core.heartbeat(heartbeat(host="pc-19121212-1212",
                             last_error=pb.AgentError(code="INVALID_ID", message="read 121212-1212"),
                             refused=[refusal("vol 191212121212", 1_795_000_000_000)]))
    text = json.dumps(list_agents(db))
    assert "1212-1212" not in text and PATIENT not in text and "pc-*************" in text


def test_agents_known_only_from_ingest_are_listed_as_silent(registry):
    core, db, clock = registry
    from archive_server.models import Agent

    with db.write() as s:
        department = core._department_for(s, DEPARTMENT, "test")
        s.add(Agent(agent_id="pc-old", department_id=department.id, version="0.0.9"))
    (agent,) = list_agents(db)
    assert (agent["agent_id"], agent["alive"], agent["state"], agent["refused"]) == ("pc-old", False, None, [])


def test_heartbeats_use_the_uploaders_mutual_tls(tmp_path):
    """The same channel factory as the upload (agent.channel.open_channel): with the
    agent's client certificate, bound to it, the heartbeat is accepted; without TLS
    it never reaches the service."""
    from tests.support.pki import bound_pki, serve_tls

    pki, store = bound_pki(tmp_path, {DEPARTMENT: "Hud"}, {"pc-tls": DEPARTMENT})
    with serve_tls(pki, *store) as address:
        tls = ArchiveConfig(address=address, tls_cert=pki / "pc-tls.crt", tls_key=pki / "pc-tls.key",
                            tls_ca=pki / "ca.crt", call_timeout_s=5.0)
        board = StatusBoard("pc-tls", "0.1.0", DEPARTMENT)
        beater = Heartbeater(dataclasses.replace(agent_config(address, "pc-tls"), archive=tls), board)
        beater.start()
        try:
            wait_for(lambda: beater.sent >= 1, "a heartbeat over mTLS")
        finally:
            beater.stop()
        plain_board = StatusBoard("pc-plain", "0.1.0", DEPARTMENT)
        plain = Heartbeater(agent_config(address, "pc-plain", heartbeat_s=0.2), plain_board)
        plain.start()
        try:
            wait_for(lambda: plain.failed >= 1, "the plaintext heartbeat to fail")
        finally:
            plain.stop()
        assert plain.sent == 0 and plain_board.snapshot()["archive"]["reachable"] is False


def test_registry_keeps_a_history_of_what_changed(registry):
    core, db, clock = registry
    from archive_server.agents import agent_history

    start = dt.datetime(2026, 11, 26, 11, 0, tzinfo=dt.timezone.utc)

    def beat(started: dt.datetime = start, **fields) -> None:
        request = heartbeat(**fields)
        request.started_at.FromDatetime(started)
        core.heartbeat(request)

    beat(state=pb.AGENT_STATE_IDLE)
    beat(state=pb.AGENT_STATE_IDLE)  # nothing changed: no entry
    beat(state=pb.AGENT_STATE_BUSY, last_error=pb.AgentError(code="NO_ID_FOUND", message="no label"))
    clock["now"] += dt.timedelta(seconds=60)  # 12 intervals of 5 s without a word
    beat(state=pb.AGENT_STATE_BUSY, agent_version="0.2.0", started=start + dt.timedelta(minutes=61))
    kinds = [(h["kind"], h["detail"]) for h in reversed(agent_history(db, "pc-1"))]
    assert kinds == [
        ("first_heartbeat", {"state": "idle", "version": "0.1.0"}),
        ("state", {"from": "idle", "to": "busy"}),
        ("error", {"at": None, "code": "NO_ID_FOUND", "message": "no label"}),
        ("returned", {"silent_s": 60.0}),
        ("restarted", {"version": "0.2.0"}),
        ("version", {"from": "0.1.0", "to": "0.2.0"}),
    ]


def test_clock_skew_is_measured_from_sent_at_and_unknown_without_it(registry):
    core, db, clock = registry
    request = heartbeat()
    request.sent_at.FromDatetime(clock["now"] + dt.timedelta(seconds=-90.5))
    assert core.heartbeat(request).clock_skew_s == -90.5
    assert list_agents(db, now=clock["now"])[0]["clock_skew_s"] == -90.5
    response = core.heartbeat(heartbeat())  # an older agent: no sent_at
    assert not response.HasField("clock_skew_s") and list_agents(db, now=clock["now"])[0]["clock_skew_s"] is None
    garbage = heartbeat()
    garbage.sent_at.FromSeconds(0)  # 1970: not a clock, not stored as a skew of 56 years
    assert not core.heartbeat(garbage).HasField("clock_skew_s")
