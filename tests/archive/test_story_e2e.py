"""Issue 6, done when: R13–R20 shown with the command line on an archive that
real agent ingests filled, and the audit log tells the whole story afterwards.

Two generated camera cards go through the real ``bildsluss-agent ingest`` into
a real archive process; then the administrator, a nurse, a doctor and a log
operator do what the region's routines describe, through ``bildsluss-archive``.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tests.support.archive_process import ArchiveProcess
from tests.support.cardgen import make_card, make_personnummer
from tests.support.e2e import DEPARTMENT, exif_tags, ingest
from tests.archive.world import run_cli

OTHER = "SE2321000016-A1B2"


def lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_routines_on_really_ingested_cards(fresh_db_url, tmp_path):
    first, second = make_personnummer("19560704", "315"), make_personnummer("19890211", "462")
    p1, p2 = first.replace("-", ""), second.replace("-", "")
    with ArchiveProcess(data=tmp_path / "archive", db=fresh_db_url) as archive:
        assert archive.address
        outcomes = []
        for n, patient in enumerate((first, second)):
            card = tmp_path / f"card{n}"
            make_card(card, patient=patient, n_images=3, megapixels=1.0, seed=40 + n)
            code, out = ingest(card, archive.address, tmp_path / f"agent{n}")
            assert code == 0, out
            outcomes.append(out)
    case_a, case_b = (o["case_id"] for o in outcomes)
    store = ["--db", fresh_db_url, "--data", str(tmp_path / "archive")]

    def cli(*args: str, ok: bool = True):
        return run_cli(store, *args, ok=ok)

    # R15, R16: the department the agent registered gets its EHR name; roles and users.
    cli("admin", "department", "add", DEPARTMENT, "--name", "Hudkliniken Universitetssjukhuset")
    cli("admin", "department", "add", OTHER, "--name", "Akutmottagningen")
    cli("admin", "role", "add", "nurse", "--rights", "case.read,case.sign,case.revise,case.print,consent.record")
    cli("admin", "role", "add", "teacher", "--rights", "case.read,teaching.copy")
    cli("admin", "role", "add", "doctor", "--rights", "case.read,case.emergency_open")
    cli("admin", "user", "add", "sara.sjukskoterska", "--department", DEPARTMENT, "--role", "nurse")
    cli("admin", "user", "add", "lars.lakare", "--department", DEPARTMENT, "--role", "doctor")
    cli("admin", "user", "add", "lars.lakare", "--department", OTHER, "--role", "teacher")
    cli("admin", "user", "add", "tove.larare", "--department", DEPARTMENT, "--role", "teacher")
    cli("admin", "user", "add", "admin", "--department", DEPARTMENT, "--role", "sysadmin")
    cli("admin", "user", "add", "logg", "--department", OTHER, "--role", "log-operator")
    nurse = "sara.sjukskoterska"

    # R13: the cards arrived as unsigned cases with an empty form.
    listed = {c["case_id"]: c for c in lines(cli("cases", "--json", "--as", nurse))}
    assert set(listed) == {case_a, case_b}
    assert [(listed[c]["status"], listed[c]["version"], listed[c]["media_count"], listed[c]["form"])
            for c in (case_a, case_b)] == [("unsigned", 1, 3, {}), ("unsigned", 1, 3, {})]
    assert listed[case_a]["patient"] == p1 and listed[case_a]["department"] == DEPARTMENT
    cli("case", "revise", case_a, "--as", nurse, "--reason", "formuläret ifyllt",
        "--field", "what=Bensår höger", "--field", "why=Uppföljning", "--field", "verbal_consent=ja",
        "--field", "captured_by=Sara", "--field", "captured_at=2026-03-14T09:30")

    # R14: signing locks; a correction is a new version; both readable and comparable.
    cli("case", "sign", case_a, "--as", nurse)
    media = json.loads(cli("case", "show", case_a, "--as", nurse, "--json").stdout)["media"]
    cli("case", "revise", case_a, "--as", nurse, "--reason", "en bild för mycket",
        "--drop-media", media[1]["sha256"])
    history = lines(cli("case", "history", case_a, "--as", nurse, "--json"))
    assert [(v["version"], v["status"], v["media_count"]) for v in history] == [(1, "signed", 3), (2, "unsigned", 2)]
    diff = json.loads(cli("case", "diff", case_a, "1", "2", "--as", nurse, "--json").stdout)
    assert [m["sha256"] for m in diff["media_removed"]] == [media[1]["sha256"]]
    assert [c["version"] for c in lines(cli("cases", "--json", "--patient", p1))] == [2]

    # R16: what a role does not include is refused (exit 5) and said.
    refused = cli("purge", case_b, "--as", nurse, "--decision", "X", ok=False)
    assert refused.returncode == 5 and "case.purge" in refused.stderr

    # R17: the second patient blocks their record.
    cli("admin", "confidential", p2, "on", "--as", "admin")
    masked = {"case_id": case_b, "confidential": True, "display": "Konfidentiellt"}
    assert [c for c in lines(cli("cases", "--json", "--as", nurse)) if c["case_id"] == case_b] == [masked]
    assert cli("case", "show", case_b, "--as", nurse, "--json", ok=False).returncode == 5
    opened = json.loads(cli("case", "show", case_b, "--as", "lars.lakare", "--json", "--emergency",
                            "--reason", "medvetslös, tidigare skador").stdout)
    assert opened["patient"] == p2

    # R18: printing asks for a reason.
    pdf = tmp_path / "fall.pdf"
    assert cli("case", "print", case_a, "--as", nurse, "--out", str(pdf), ok=False).returncode == 2
    cli("case", "print", case_a, "--as", nurse, "--reason", "begärt av Polismyndigheten", "--out", str(pdf))
    assert pdf.read_bytes().startswith(b"%PDF")

    # R20: written consent, then a de-identified teaching copy; the original untouched.
    copies = tmp_path / "teaching"
    no_consent = cli("case", "teaching-copy", case_a, "--as", "tove.larare", "--out", str(copies), ok=False)
    assert no_consent.returncode == 1 and "consent" in no_consent.stderr
    scan = tmp_path / "samtycke.pdf"
    scan.write_bytes(b"%PDF-1.4\n% skannat samtycke\n")
    cli("case", "consent", case_a, "--as", nurse, "--document", str(scan))
    cli("case", "teaching-copy", case_a, "--as", "tove.larare", "--out", str(copies))
    written = sorted(copies.iterdir())
    assert len(written) == 2 and all(p1 not in p.name for p in written)
    for path in written:
        assert not [k for k in exif_tags(path) if k.split(":")[0] in ("EXIF", "ExifIFD", "GPS", "XMP", "IFD0")]
    kept = json.loads(cli("case", "show", case_a, "--as", nurse, "--json").stdout)["media"]
    export = tmp_path / "export"
    cli("export", case_a, str(export))
    assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in export.rglob("*.JPG")) == \
        sorted(m["sha256"] for m in kept)

    # R19: purge under a decision; the blobs go, the log keeps what, who, when, decision.
    cli("purge", case_b, "--as", "admin", "--decision", "Gallringsbeslut RS 2026:12")
    assert [c["case_id"] for c in lines(cli("cases", "--json"))] == [case_a]
    shutil.rmtree(export)

    # The audit log tells the story, in order, and is intact.
    story = lines(cli("audit", "list", "--json", "--as", "logg"))
    told = [(e["who"], e["action"], e["outcome"], e["case_id"]) for e in story]
    steps = [(who, action, outcome) for who, action, outcome, case in told
             if case in (case_a, case_b) or action.startswith("patient.")]
    wanted = [
        (nurse, "case.revise", "permitted"), (nurse, "case.sign", "permitted"), (nurse, "case.show", "permitted"),
        (nurse, "case.revise", "permitted"), (nurse, "case.history", "permitted"),
        (nurse, "case.diff", "permitted"), ("admin", "patient.confidential_on", "permitted"),
        (nurse, "case.show", "refused"), ("lars.lakare", "case.emergency_open", "permitted"),
        (nurse, "case.print", "refused"), (nurse, "case.print", "permitted"),
        ("tove.larare", "case.teaching_copy", "failed"), (nurse, "consent.recorded", "permitted"),
        ("tove.larare", "case.teaching_copy", "permitted"), ("admin", "case.purged", "permitted"),
    ]
    remaining = iter(steps)
    missing = [step for step in wanted if step not in remaining]  # in this order, others in between
    assert missing == [], steps
    assert sum(1 for who, action, *_ in told if action == "case.ingested") == 2
    purge = [e for e in story if e["action"] == "case.purged" and e["outcome"] == "permitted"][0]
    # The purge row names the patient, so that the patient's audit report shows the purge (issue 13).
    assert (purge["why"], purge["patient"], purge["who"]) == ("Gallringsbeslut RS 2026:12", p2, "admin")
    emergency = [e for e in story if e["action"] == "case.emergency_open"][0]
    assert emergency["why"] == "medvetslös, tidigare skador" and emergency["patient"] == p2
    printed = [e for e in story if e["action"] == "case.print" and e["outcome"] == "permitted"][0]
    assert printed["why"] == "begärt av Polismyndigheten"
    report = cli("audit", "report", "--by", "department", "--csv", "--as", "logg").stdout.splitlines()
    assert f"{DEPARTMENT},case.emergency_open,1,0" in report
    assert cli("audit", "verify").stdout.startswith("audit chain intact")
