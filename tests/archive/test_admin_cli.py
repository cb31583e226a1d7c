"""The command-line contract of issue 6: admin, cases --as, case …, purge and
audit, with their exit codes (5 refused, 2 missing reason) and JSON fields,
on SQLite and PostgreSQL. Cases are filed through the real ingest code."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pypdf
import pytest
import sqlalchemy as sa

from archive_server.audit import configure_syslog
from archive_server.db import Database
from archive_server.models import AuditEvent, Blob
from tests.archive.client import personnummer
from tests.archive.world import COMPLETE_FORM, OTHER, OWN, World, run_cli

ARCHIVE = [sys.executable, "-m", "archive_server.cli"]


def _cli(db_url: str, data, blobs_url: str | None = None) -> Iterator:
    world = World.create(db_url, data, blobs_url)
    store = ["--db", db_url, "--data", str(data), "--blobs", world.blobs.url]

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(store, *args, ok=ok)

    run.world = world  # type: ignore[attr-defined]
    yield run
    world.close()


@pytest.fixture
def cli(fresh_db_url, fresh_blobs_url, tmp_path):
    """The CLI on a fresh database and blob store of each backend."""
    yield from _cli(fresh_db_url, tmp_path / "data", fresh_blobs_url)


def lines(result: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_the_contract_from_admin_to_purge(cli, tmp_path):
    world: World = cli.world
    patient = personnummer("19750812")
    own = world.ingest(patient=patient, department=OWN)
    other = world.ingest(department=OTHER)

    rights = cli("admin", "rights", "--json")
    assert {"case.read", "case.sign", "case.revise", "case.print", "case.emergency_open", "case.purge",
            "audit.read"} <= {r["right"] for r in lines(rights)}
    cli("admin", "role", "add", "nurse", "--rights", "case.read,case.sign,case.revise,case.print")
    cli("admin", "user", "add", "anna", "--department", OWN, "--role", "nurse")
    cli("admin", "user", "add", "sys", "--department", OWN, "--role", "sysadmin")
    cli("admin", "user", "add", "logga", "--department", OTHER, "--role", "log-operator")

    # cases --json without --as: the local operator, every case, the agreed fields.
    listed = {c["case_id"]: c for c in lines(cli("cases", "--json"))}
    assert set(listed) == {own, other}
    first = listed[own]
    assert {"case_id", "version", "patient", "department", "status", "media", "media_count", "created"} <= set(first)
    assert (first["version"], first["patient"], first["status"], first["media_count"]) == (1, patient, "unsigned", 2)
    assert first["media"] == 2 and len(first["media_items"]) == 2  # `cases --json`: media is a count
    assert [c["case_id"] for c in lines(cli("cases", "--json", "--as", "anna"))] == [own]

    refused = cli("case", "show", other, "--as", "anna", "--json", ok=False)
    assert refused.returncode == 5 and "no access to department SE2321000016-A1B2" in refused.stderr
    no_right = cli("purge", own, "--as", "anna", "--decision", "D-1", ok=False)
    assert no_right.returncode == 5 and "case.purge" in no_right.stderr

    incomplete = cli("case", "sign", own, "--as", "anna", ok=False)
    assert incomplete.returncode == 1 and "FORM_INCOMPLETE" in incomplete.stderr
    cli("case", "revise", own, "--as", "anna", "--reason", "ifyllt",
        *[x for k, v in COMPLETE_FORM for x in ("--field", f"{k}={v}")])
    cli("case", "sign", own, "--as", "anna")
    media = json.loads(cli("case", "show", own, "--as", "anna", "--json").stdout)["media"]
    revised = json.loads(cli("case", "revise", own, "--as", "anna", "--reason", "en bild för mycket",
                             "--drop-media", media[1]["sha256"], "--json").stdout)
    assert (revised["version"], revised["new_version"]) == (2, True)
    history = lines(cli("case", "history", own, "--as", "anna", "--json"))
    assert [(v["version"], v["status"], v["media_count"]) for v in history] == [(1, "signed", 2), (2, "unsigned", 1)]
    diff = json.loads(cli("case", "diff", own, "1", "2", "--as", "anna", "--json").stdout)
    assert [m["sha256"] for m in diff["media_removed"]] == [media[1]["sha256"]]

    # Print: the reason is required (exit 2, nothing written, audited), then a PDF.
    pdf = tmp_path / "fall.pdf"
    no_reason = cli("case", "print", own, "--as", "anna", "--out", str(pdf), ok=False)
    assert no_reason.returncode == 2 and "reason" in no_reason.stderr and not pdf.exists()
    cli("case", "print", own, "--as", "anna", "--reason", "begärt av polisen", "--out", str(pdf))
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(pdf).pages)
    assert "anna" in text and "begärt av polisen" in text and own in text

    # Confidential: masked everywhere, emergency open by the sysadmin (right + department + reason).
    cli("admin", "confidential", patient, "on", "--as", "sys")
    masked = {"case_id": own, "confidential": True, "display": "Konfidentiellt"}
    assert [c for c in lines(cli("cases", "--json")) if c["case_id"] == own] == [masked]
    assert lines(cli("cases", "--json", "--as", "anna")) == [masked]
    hidden = cli("case", "show", own, "--as", "anna", "--json", ok=False)
    assert hidden.returncode == 5 and patient not in hidden.stderr + hidden.stdout
    opened = json.loads(cli("case", "show", own, "--as", "sys", "--json", "--emergency",
                            "--reason", "akut, medvetslös").stdout)
    assert opened["patient"] == patient

    # Audit for the log operator; refused for the nurse.
    assert cli("audit", "list", "--json", "--as", "anna", ok=False).returncode == 5
    story = lines(cli("audit", "list", "--json", "--patient", patient, "--as", "logga"))
    told = [(e["who"], e["action"], e["outcome"]) for e in story]
    assert ("agent:test-agent", "case.ingested", "permitted") in told
    assert ("anna", "case.sign", "failed") in told and ("anna", "case.sign", "permitted") in told
    assert ("anna", "case.print", "refused") in told and ("anna", "case.print", "permitted") in told
    assert ("anna", "case.show", "refused") in told
    assert ("sys", "case.emergency_open", "permitted") in told
    emergency = [e for e in story if e["action"] == "case.emergency_open"][0]
    assert emergency["why"] == "akut, medvetslös" and emergency["department"] == OWN
    assert len(lines(cli("audit", "list", "--json", "--since", "1d", "--patient", patient))) == len(story) + 1
    assert lines(cli("audit", "list", "--json", "--since", "2099-01-01T01:00+01:00")) == []
    report = cli("audit", "report", "--by", "user", "--csv", "--as", "logga").stdout.splitlines()
    assert report[0] == "user,action,events,refused_or_failed"
    assert "anna,case.print,2,1" in report

    # Purge: sysadmin only; the case and its blobs are gone, the log keeps the decision.
    blobs_before = {m["sha256"] for m in media}
    cli("purge", own, "--as", "sys", "--decision", "Gallringsbeslut 2026:4")
    assert [c["case_id"] for c in lines(cli("cases", "--json"))] == [other]
    assert not any(world.blobs.stat(sha) for sha in blobs_before)
    purged = lines(cli("audit", "list", "--json", "--user", "sys", "--as", "logga"))[-1]
    assert (purged["action"], purged["why"], purged["patient"]) == ("case.purged", "Gallringsbeslut 2026:4", patient)
    assert purged["details"]["patients"] == [patient]
    # ... so the patient's own audit trail shows it (R18, R19).
    mine = lines(cli("audit", "list", "--json", "--patient", patient, "--as", "logga"))
    assert "case.purged" in [e["action"] for e in mine]
    assert cli("audit", "verify").stdout.startswith("audit chain intact")


def test_purge_keeps_blobs_another_case_uses(cli):
    world: World = cli.world
    shared = world.files(1)
    first = world.ingest(files={**shared, **world.files(1)})
    second = world.ingest(files=shared)
    sha_shared = next(iter({m["sha256"] for m in world_media(world, second)}))
    only_first = {m["sha256"] for m in world_media(world, first)} - {sha_shared}
    purged = json.loads(cli("purge", first, "--as", "root-admin", "--decision", "D-2", "--json", ok=False).stdout
                        or "{}")
    assert purged == {}  # unknown user: refused
    cli("admin", "user", "add", "root-admin", "--department", OWN, "--role", "sysadmin")
    result = json.loads(cli("purge", first, "--as", "root-admin", "--decision", "D-2", "--json").stdout)
    assert (result["blobs_deleted"], result["blobs_kept"]) == (1, 1)
    assert world.blobs.stat(sha_shared) and not any(world.blobs.stat(s) for s in only_first)
    with world.db.read() as s:
        assert set(s.scalars(sa.select(Blob.sha256))) == {sha_shared}
    assert [c["case_id"] for c in lines(cli("cases", "--json"))] == [second]
    cli("export", second, str(world.data / "out"))  # the survivor is whole
    assert len(list((world.data / "out").rglob("*.JPG"))) == 1


def world_media(world: World, case_id: str) -> list[dict]:
    from archive_server.cases import show_case
    from tests.archive.world import LOCAL

    return show_case(world.db, LOCAL, case_id)["media"]


TAMPERS = {
    "edit": ["UPDATE audit_events SET patient = '191212121212' WHERE seq = 3"],
    "edit_outcome": ["UPDATE audit_events SET outcome = 'refused' WHERE seq = 3"],
    "delete": ["DELETE FROM audit_events WHERE seq = 3"],
    # swap events 3 and 4, renumbering them to hide it
    "reorder": ["UPDATE audit_events SET seq = -1 WHERE seq = 3", "UPDATE audit_events SET seq = 3 WHERE seq = 4",
                "UPDATE audit_events SET seq = 4 WHERE seq = -1"],
}


def test_audit_verify_names_the_first_broken_entry(cli, fresh_db_url):
    world: World = cli.world
    for _ in range(3):
        world.ingest()
    engine = sa.create_engine(fresh_db_url)
    events = AuditEvent.__table__
    with engine.connect() as conn:
        original = [dict(r._mapping) for r in conn.execute(sa.select(events).order_by(events.c.seq))]
    assert len(original) >= 5
    for name, statements in TAMPERS.items():
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
        broken = cli("audit", "verify", ok=False)
        assert broken.returncode == 1, name
        assert "BROKEN at event 3" in broken.stderr and len(broken.stderr.strip().splitlines()) == 1, name
        with engine.begin() as conn:  # put the log back as it was (and drop the verify events)
            conn.execute(sa.delete(events))
            conn.execute(sa.insert(events), original)
            conn.execute(sa.text("UPDATE audit_head SET seq = :seq, hash = :hash"),
                         {"seq": original[-1]["seq"], "hash": original[-1]["hash"]})
    engine.dispose()
    assert cli("audit", "verify").stdout.startswith(f"audit chain intact: {len(original)} event(s)")
    assert cli("audit", "verify", "--as", "nobody", ok=False).returncode == 5


def test_the_console_script_exits_5_with_one_sentence(cli):
    """The real process: exit status and stderr as a caller sees them."""
    case_id = cli.world.ingest()
    db = cli.world.db.url
    result = subprocess.run([*ARCHIVE, "case", "show", case_id, "--as", "mallory", "--json", "--db", db],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 5 and result.stdout == ""
    assert result.stderr.strip() == ("bildsluss-archive: refused (UNKNOWN_USER): mallory is not a user of this "
                                     "archive: an administrator must give them access to a department first.")


def test_usage_errors(cli):
    assert cli("case", "show", "x", "--json", ok=False).returncode == 2  # --as is required
    assert cli("purge", "x", "--as", "a", ok=False).returncode == 2  # --decision is required
    assert cli("admin", "confidential", "191212121212", "maybe", ok=False).returncode == 2
    bad_user = cli("case", "show", "x", "--as", "Not Valid!", ok=False)
    assert bad_user.returncode == 1 and "user name" in bad_user.stderr
    db = Database(cli.world.db.url)
    with db.read() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) >= 2
    db.dispose()


def test_audit_events_also_go_to_syslog_when_configured(cli, tmp_path):
    """[audit] syslog: each committed event, permitted or refused, as RFC 5424."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    config = tmp_path / "archive.toml"
    config.write_text(f'[audit]\nsyslog = "udp://127.0.0.1:{receiver.getsockname()[1]}"\n')
    try:
        cli("admin", "department", "add", "SE2321000016-5YSL", "--name", "Syslogkliniken", "--config", str(config))
        cli("audit", "list", "--json", "--as", "nobody", "--config", str(config), ok=False)
        received = [receiver.recv(65536).decode() for _ in range(2)]
    finally:
        configure_syslog(None)
        receiver.close()
    assert received[0].startswith("<") and "department.added" in received[0]
    assert "SE2321000016-5YSL" in received[0]
    assert "audit.list" in received[1] and "refused" in received[1] and "nobody" in received[1]
    bad = tmp_path / "bad.toml"
    bad.write_text('[audit]\nsyslog = "http://x"\n')
    assert cli("cases", "--json", "--config", str(bad), ok=False).returncode == 2
