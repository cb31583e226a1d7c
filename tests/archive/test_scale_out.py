"""Several archive processes serving one archive (issue 14): one PostgreSQL,
one S3 bucket (SeaweedFS), agents reaching them through one gRPC target with
round-robin. Sessions move between processes, one audit chain, and an upload
begun on a process that is killed finishes on the other."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from bildsluss.v1 import ingest_pb2 as pb
from tests.archive.client import (
    commit,
    ingest_stub,
    open_request,
    query_status,
    sha256_hex,
    upload_missing,
    write_blob,
    write_requests,
)
from tests.archive.databases import temp_database
from tests.support.archive_process import ArchiveProcess

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]
PART = 5 << 20
ARCHIVE = [sys.executable, "-m", "archive_server.cli"]


@dataclasses.dataclass
class Region:
    """Two `serve` processes on one database and one bucket prefix."""

    db: str
    blobs: str
    a: ArchiveProcess
    b: ArchiveProcess

    @property
    def target(self) -> str:
        return f"ipv4:{self.a.address},{self.b.address}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ARCHIVE, *args, "--db", self.db, "--blobs", self.blobs],
                              capture_output=True, text=True, timeout=120)

    def writes_started(self, proc: ArchiveProcess) -> list[dict]:
        lines = proc.stderr_path.read_text(errors="replace").splitlines()
        return [e for e in map(_json, lines) if e and e.get("msg") == "write started"]


def _json(line: str) -> dict | None:
    try:
        return json.loads(line)
    except ValueError:
        return None


@pytest.fixture
def region(tmp_path: pathlib.Path, s3_server) -> Iterator[Region]:
    config = tmp_path / "archive.toml"
    config.write_text(f"[blobs]\npart_size_mib = {PART >> 20}\n")
    with temp_database("postgresql", tmp_path / "db") as db:
        blobs = s3_server.fresh_url()
        # Generous start-up time: two Python processes starting at once on a
        # busy 2-core machine take tens of seconds to import and migrate.
        procs = [ArchiveProcess(tmp_path / name / "data", db=db, blobs=blobs, ready_timeout_s=180,
                                extra_args=("--config", str(config), "--log-level", "debug"))
                 for name in ("a", "b")]
        started = []
        try:
            for p in procs:  # started together: both migrate-or-wait under the lock
                threading.Thread(target=lambda p=p: started.append(p.start())).start()
            deadline = time.monotonic() + 200
            while len(started) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(started) == 2, "both archive processes must come up"
            yield Region(db, blobs, *procs)
        finally:
            for p in procs:
                p.stop()


def test_two_processes_serve_one_archive_with_one_audit_chain(region: Region):
    """Sessions opened on one process are uploaded and committed on the other,
    from several threads at once; every case is whole and the audit log one chain."""
    def card(i: int) -> pb.CommitSessionResponse:
        files = {f"DCIM/IMG_{i:04d}_{n}.JPG": os.urandom(150_000 + n) for n in range(3)}
        request = open_request(files)
        first, second = (region.a, region.b) if i % 2 else (region.b, region.a)
        with ingest_stub(first.address) as s1, ingest_stub(second.address) as s2:
            s1.OpenSession(request, timeout=10)
            upload_missing(s2, request.session_id, files)
            response = commit(s1, request.session_id)
            assert commit(s2, request.session_id) == response  # a retry on the other process
            assert [r.sha256 for r in response.receipts] == [sha256_hex(d) for d in files.values()]
            return response

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(card, range(12)))
    assert len({r.case_id for r in responses}) == 12
    verify = region.cli("audit", "verify")
    assert verify.returncode == 0 and "audit chain intact" in verify.stdout, verify.stderr
    fsck = region.cli("fsck", "--json")
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert json.loads(fsck.stdout)["blobs_in_database"] == 36


def test_a_multipart_upload_begun_on_a_killed_process_resumes_on_the_other(region: Region):
    data = os.urandom(2 * PART + 300_000)
    files = {"DCIM/MVI_0001.MP4": data}
    request = open_request(files)
    sent = 2 * PART + 100_000
    release = threading.Event()
    with ingest_stub(region.a.address) as a, ingest_stub(region.b.address) as b:
        a.OpenSession(request, timeout=10)

        def two_parts_then_hang():
            yield from write_requests(request.session_id, data, end=sent, chunk_size=1 << 20, finish=False)
            release.wait(60)

        call = a.Write.future(two_parts_then_hang(), timeout=60)
        deadline = time.monotonic() + 60
        while query_status(b, request.session_id, data).committed_size < 2 * PART:
            assert time.monotonic() < deadline, "two parts never became durable"
            time.sleep(0.1)
        region.a.kill()  # mid-upload, no goodbye
        release.set()
        with pytest.raises(grpc.RpcError):
            call.result()
        # The other process knows how far the upload got: the whole parts.
        assert query_status(b, request.session_id, data).committed_size == 2 * PART
        assert write_blob(b, request.session_id, data, offset=2 * PART).complete
        receipt = commit(b, request.session_id).receipts[0]
    assert receipt.sha256 == sha256_hex(data)
    resumed = [w for w in region.writes_started(region.b) if w["sha256"] == sha256_hex(data)]
    assert resumed and resumed[-1]["offset"] == 2 * PART
    fsck = region.cli("fsck", "--json")
    assert fsck.returncode == 0, fsck.stdout


def test_an_agent_finishes_a_card_on_the_other_process_when_the_one_it_writes_to_dies(
        region: Region, tmp_path: pathlib.Path):
    from agent.config import AgentConfig, ArchiveConfig
    from agent.card.pipeline import IngestRequest, ingest_card
    from tests.support.cardgen import make_card
    from tests.support.e2e import DEPARTMENT, PATIENT_CANONICAL, PATIENT, OnStage

    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=4, seed=77)
    killed: list[str] = []

    def kill_the_writer(stage: str, info: dict) -> None:
        # Mid-file: the process that received the running Write is killed.
        if killed or stage != "upload" or not info.get("bytes_done") or info.get("files_done") != 1:
            return
        last = {p: writes[-1]["ts"] for p in (region.a, region.b) if (writes := region.writes_started(p))}
        if not last:
            return
        victim = max(last, key=last.__getitem__)
        killed.append(str(victim.address))
        victim.kill()

    cfg = AgentConfig(agent_id="pc-scale-out", spool_dir=tmp_path / "spool", archive=ArchiveConfig(
        address=region.target, insecure=True, connect_timeout_s=5.0, retry_budget_s=30.0,
        chunk_bytes=256 * 1024))
    outcome = ingest_card(IngestRequest(root=card, department=DEPARTMENT), cfg, progress=OnStage(kill_the_writer))
    assert killed, "no Write was seen in flight"
    assert outcome.outcome == "archived" and outcome.wiped, outcome
    survivor = region.b if killed[0] == region.a.address else region.a
    assert survivor.proc is not None and survivor.proc.poll() is None
    listed = subprocess.run([*ARCHIVE, "cases", "--db", region.db, "--patient", PATIENT_CANONICAL, "--json"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(listed) == 1 and json.loads(listed[0])["media"] == 4
    verify = region.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr


def test_a_dns_target_reaches_the_archive(region: Region, tmp_path: pathlib.Path):
    from agent.config import ArchiveConfig
    from agent.card.upload import ArchiveClient

    port = region.a.address.rsplit(":", 1)[1]
    with ArchiveClient(ArchiveConfig(address=f"dns:///127.0.0.1:{port}", insecure=True)) as client:
        client.wait_until_reachable()
        request = open_request({"a.jpg": b"x" * 10})
        assert client.open_session(request).session_id == request.session_id
