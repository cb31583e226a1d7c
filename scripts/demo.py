#!/usr/bin/env python3
"""The README's demo: an archive on the embedded default, two sample cards, the result.

Makes a private CA with ``bildsluss-archive pki`` (a region plugs in its own,
docs/security.md), registers the department, issues the capture PC's
certificate and binds it to the agent and department, then starts
``bildsluss-archive serve`` (SQLite + a blob folder) with mutual TLS on a free
loopback port. Writes a realistic camera card for one patient and one that
mixes two patients, ingests both with ``bildsluss-agent ingest`` over TLS, and
shows what the archive holds, what an export looks like, and what is left on
each card.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from tests.support.cardgen import CAMERAS, make_card, make_personnummer  # noqa: E402
from tests.support.archive_process import ArchiveProcess  # noqa: E402

DEPARTMENT = "SE2321000016-15CQ"
AGENT_ID = "demo-capture-pc"
PATIENT = "19121212-1212"
OTHER = make_personnummer("19820415", "238")


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def tree(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def show_tree(root: pathlib.Path) -> None:
    for path in sorted(root.rglob("*")):
        kind = "/" if path.is_dir() else f"  ({path.stat().st_size} bytes)"
        print(f"  {path.relative_to(root)}{kind}")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], text=True, **kw)


def main() -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="bildsluss-demo-"))
    data = work / "archive"
    spool = work / "spool"
    # The agent's config: the department's registered camera (R6), quiet logs.
    camera = CAMERAS["canon"]
    agent_config = work / "agent.toml"
    agent_config.write_text(
        f'[agent]\nspool_dir = "{spool}"\n\n'
        f'[[devices]]\nmake = "{camera.make}"\nmodel = "{camera.model}"\nserial = "{camera.serial}"\n'
    )
    archive_cli = [BIN / "bildsluss-archive"]
    pki, certs = data / "pki", work / "agent-pki"
    agent = [BIN / "bildsluss-agent", "--log-level", "ERROR", "ingest"]
    common = ["--department", DEPARTMENT, "--agent-id", AGENT_ID, "--config", agent_config,
              "--tls-cert", certs / f"{AGENT_ID}.crt", "--tls-key", certs / f"{AGENT_ID}.key",
              "--tls-ca", pki / "ca.crt"]
    try:
        banner("a private CA, the department, the capture PC's certificate bound to it")
        for step in (["pki", "init", "--host", "127.0.0.1", "--host", "localhost"],
                     ["admin", "department", "add", DEPARTMENT, "--name", "Hudkliniken"],
                     ["pki", "issue-agent", AGENT_ID, "--out", certs],
                     ["admin", "agent", "add", AGENT_ID, "--department", DEPARTMENT,
                      "--cert", certs / f"{AGENT_ID}.crt"],
                     ["admin", "agent", "list", "--json"]):
            if run([*archive_cli, *step, "--data", data]).returncode != 0:
                return 1
        tls = (pki / "server.crt", pki / "server.key", pki / "ca.crt")
        with ArchiveProcess(data=data, tls=tls) as archive:
            banner(f"archive listening on {archive.address} with mutual TLS (SQLite + blobs in {data})")

            good = work / "card-good"
            make_card(good, patient=PATIENT, n_images=4)
            banner("a camera card for patient " + PATIENT)
            show_tree(good)
            originals = {p: good / p for p in tree(good)
                         if p.upper().endswith(".JPG") and not pathlib.Path(p).name.startswith("._")}
            first_original = sorted(originals)[0]
            kept = work / "original.jpg"
            shutil.copy2(good / first_original, kept)

            banner("bildsluss-agent ingest")
            banner("agent config (registered capture device, R6)")
            print(agent_config.read_text())
            result = run([*agent, good, "--archive", archive.address, *common])
            print(f"(exit code {result.returncode})")
            if result.returncode != 0:
                return 1
            banner("the card afterwards: media deleted, folders and camera files kept")
            show_tree(good)

            banner("bildsluss-archive cases --patient " + PATIENT)
            cases = run([BIN / "bildsluss-archive", "cases", "--data", data, "--patient", PATIENT,
                         "--json"], capture_output=True, check=True)
            case = json.loads(cases.stdout.splitlines()[0])
            print(json.dumps(case, indent=2, ensure_ascii=False))

            export = work / "export"
            banner("bildsluss-archive export")
            run([BIN / "bildsluss-archive", "export", case["case_id"], export, "--data", data],
                check=True)
            show_tree(export)

            banner(f"metadata of {first_original}: on the card vs in the archive")
            exported = export / first_original
            fields = ["-Make", "-Model", "-SerialNumber", "-GPSPosition", "-DateTimeOriginal",
                      "-MakerNoteVersion", "-CanonModelID", "-ImageSize"]
            print("on the card:")
            run(["exiftool", "-s", *fields, kept])
            print("in the archive:")
            run(["exiftool", "-s", *fields, exported])

            mixed = work / "card-mixed"
            make_card(mixed, patient=PATIENT, n_images=4, extra_patient_at=2, extra_patient=OTHER)
            before = tree(mixed)
            banner("a card with a second patient's label in the middle")
            result = run([*agent, mixed, "--archive", archive.address, *common])
            print(f"(exit code {result.returncode}; card unchanged: {tree(mixed) == before})")
            if result.returncode != 3 or tree(mixed) != before:
                return 1
        banner("done")
        print(f"work folder: {work}")
        return 0
    finally:
        if not os.environ.get("BILDSLUSS_DEMO_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
