#!/usr/bin/env python3
"""Upload throughput: the agent's uploader against a real archive on loopback.

Writes N files of random bytes (seeded), then measures, in the same run:
  baseline  `cp` of the same files into a folder on the same disk, plus fsync
            (`sync -f`), i.e. what the storage alone costs;
  upload    OpenSession + FindMissingBlobs + Write (1 MiB chunks) + CommitSession
            to `bildsluss-archive serve` (SQLite + blob folder, fsync per blob);
  dedup     the same files again in a new session (FindMissingBlobs says none
            are missing, so only the commit runs).
  --tls     the same two against an archive serving mutual TLS, the agent's
            certificate bound to it (every call through the certificate gate,
            issue 10), as a ratio to the plaintext upload of the same run.
Prints MiB/s and the ratio upload/baseline, and the archive process's CPU
time per uploaded blob (Write stage only, and the whole session with
OpenSession and CommitSession): CPU time is the figure to compare on a
loaded machine, wall time is not.
  --before  also run the archive of another checkout (e.g. `git worktree add
            /tmp/base main`), alternating with this one --repeat times, and
            print both archives' median CPU per blob (issue 12).

    .venv/bin/python benchmarks/upload.py [--files 20] [--mib 6] [--tls]
    .venv/bin/python benchmarks/upload.py --files 200 --mib 0.0625 --before /tmp/base --repeat 5
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import ArchiveConfig  # noqa: E402
from agent.card.model import Decision, Evidence, MediaFile, MediaKind, Method, Mode, StrippedFile  # noqa: E402
from agent.card.upload import ArchiveClient, build_open_request  # noqa: E402
from tests.support.archive_process import ArchiveProcess  # noqa: E402

PATIENT = "191212121212"


def make_files(folder: pathlib.Path, count: int, mib: float, seed: int) -> list[StrippedFile]:
    rng = random.Random(seed)
    files = []
    for i in range(count):
        data = rng.randbytes(int(mib * (1 << 20)))
        path = folder / f"IMG_{i:04d}.JPG"
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        media = MediaFile(path=path, relative_path=f"DCIM/100CANON/{path.name}", kind=MediaKind.IMAGE,
                          media_type="image/jpeg", size=len(data), sha256=sha, mtime_ns=0)
        files.append(StrippedFile(source=media, spool_path=path, sha256=sha, size=len(data)))
    return files


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def upload_session(address: str, files: list[StrippedFile], tls: pathlib.Path | None = None,
                   archive_pid: int | None = None, cpu: dict[str, float] | None = None) -> float:
    """Wall seconds of one session; with ``archive_pid``, ``cpu`` gets the
    archive's CPU seconds for the Writes ("write") and the whole session ("session")."""
    decision = Decision(patient_id=PATIENT, reason=None, evidence=(
        Evidence(files[0].source.relative_path, 0, Method.BARCODE, "19121212-1212", PATIENT, "Code128"),))
    session = str(uuid.uuid4())
    request = build_open_request(session, "bench", "SE2321000016-15CQ", Mode.PHOTO, decision, files)
    start = time.perf_counter()
    config = (ArchiveConfig(address=address, insecure=True) if tls is None else
              ArchiveConfig(address=address, tls_cert=tls / "bench.crt", tls_key=tls / "bench.key",
                            tls_ca=tls / "ca.crt"))
    sample = (lambda: process_cpu(archive_pid)) if archive_pid is not None else (lambda: 0.0)
    with ArchiveClient(config) as client:
        before_session = sample()
        client.open_session(request)
        before_write = sample()
        client.upload(session, files)
        after_write = sample()
        result = client.commit(session)
        after_session = sample()
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu["write"] = after_write - before_write
        cpu["session"] = after_session - before_session
    assert len(result.receipts) == len(files)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mib", type=float, default=6.0, help="size of each file (a 12 MP JPEG is ~6 MiB)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tls", action="store_true", help="also upload over mutual TLS with a bound certificate")
    parser.add_argument("--before", type=pathlib.Path, help="a checkout whose archive to compare (CPU per blob)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs with --before")
    args = parser.parse_args()
    if args.before is not None:
        compare_cpu(args)
        return
    with tempfile.TemporaryDirectory(prefix="bildsluss-bench-", dir=ROOT.parent) as tmp:
        work = pathlib.Path(tmp)
        src = work / "src"
        src.mkdir()
        files = make_files(src, args.files, args.mib, args.seed)
        total_mib = sum(f.size for f in files) / (1 << 20)

        dest = work / "cp"
        dest.mkdir()
        start = time.perf_counter()
        subprocess.run(["cp", *[str(f.spool_path) for f in files], str(dest)], check=True)
        subprocess.run(["sync", "-f", str(dest)], check=True)
        baseline = time.perf_counter() - start

        cpu: dict[str, float] = {}
        with ArchiveProcess(data=work / "archive") as archive:
            assert archive.proc is not None
            upload = upload_session(archive.address, files, archive_pid=archive.proc.pid, cpu=cpu)
            dedup = upload_session(archive.address, files)
        if args.tls:
            from tests.support.pki import bound_pki

            pki, _ = bound_pki(work / "tls", {"SE2321000016-15CQ": "Bench"}, {"bench": "SE2321000016-15CQ"})
            tls = (pki / "server.crt", pki / "server.key", pki / "ca.crt")
            with ArchiveProcess(data=work / "tls" / "data", tls=tls) as archive:
                tls_upload = upload_session(archive.address, files, pki)
                tls_dedup = upload_session(archive.address, files, pki)

    print(f"{args.files} files, {total_mib:.0f} MiB in all")
    print(f"baseline cp+sync : {baseline:7.3f} s  {total_mib / baseline:8.1f} MiB/s")
    print(f"upload (gRPC)    : {upload:7.3f} s  {total_mib / upload:8.1f} MiB/s  "
          f"ratio {upload / baseline:5.2f}x the baseline's time")
    print(f"re-upload (dedup): {dedup:7.3f} s  ratio {dedup / baseline:5.2f}x")
    print(f"archive CPU      : {cpu['write'] / args.files * 1000:7.2f} ms per Write, "
          f"{cpu['session'] / args.files * 1000:7.2f} ms per blob for the whole session")
    if args.tls:
        print(f"upload (mTLS)    : {tls_upload:7.3f} s  {total_mib / tls_upload:8.1f} MiB/s  "
              f"ratio {tls_upload / upload:5.2f}x the plaintext upload's time")
        print(f"re-upload (mTLS) : {tls_dedup:7.3f} s  ratio {tls_dedup / dedup:5.2f}x the plaintext re-upload's")


def compare_cpu(args: argparse.Namespace) -> None:
    """The archive's CPU per blob, this checkout's against ``args.before``'s,
    runs alternating (each a fresh archive, SQLite + blob folder)."""
    checkouts = {"before": args.before.resolve(), "after": ROOT}
    figures: dict[str, dict[str, list[float]]] = {k: {"write": [], "session": []} for k in checkouts}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bildsluss-bench-", dir=ROOT.parent) as tmp:
        work = pathlib.Path(tmp)
        src = work / "src"
        src.mkdir()
        files = make_files(src, args.files, args.mib, args.seed)
        for run in range(args.repeat):
            for label, source in checkouts.items():
                cpu: dict[str, float] = {}
                with ArchiveProcess(data=work / f"{label}-{run}", source=source) as archive:
                    assert archive.proc is not None
                    upload_session(archive.address, files, archive_pid=archive.proc.pid, cpu=cpu)
                for k, seconds in cpu.items():
                    figures[label][k].append(seconds / args.files * 1000)
                print(f"  run {run + 1} {label:6}: {figures[label]['write'][-1]:6.2f} ms CPU per Write, "
                      f"{figures[label]['session'][-1]:6.2f} ms per blob in all")
    print(f"{args.files} blobs of {args.mib} MiB; load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for label in checkouts:
        print(f"{label:6} (median): {statistics.median(figures[label]['write']):6.2f} ms archive CPU per Write, "
              f"{statistics.median(figures[label]['session']):6.2f} ms per blob for the whole session")


if __name__ == "__main__":
    main()
