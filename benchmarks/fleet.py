#!/usr/bin/env python3
"""The fleet's cost at region scale: 200 agents heartbeating into the archive.

On a fresh database (SQLite file, or PostgreSQL with --pg), with N agents in
one department, each holding 100 refused cards and a history, measures in the
same run:
  baseline   one write transaction updating one agent_status row (what any
             heartbeat costs at the least);
  heartbeat  AgentRegistryCore.heartbeat(): validate, store the snapshot and
             the skew, history, refusals, and answer the department's devices;
  fleet      list_agents() of all N with their newest 10 refused cards (the ops
             page's poll, GET /api/v1/agents); fleet+100 with all 100 kept (agents --json);
  metrics    the fleet and audit series of GET /metrics, read from the database
             (FleetCollector without its cache).
Prints p50/p99 in ms and each as a ratio to the baseline's p50.

    .venv/bin/python benchmarks/fleet.py [--agents 200] [--beats 400] [--pg]
"""
from __future__ import annotations

import argparse
import datetime as dt
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from archive_server import devices  # noqa: E402
from archive_server.agents import FLEET_REFUSALS, AgentRegistryCore, list_agents  # noqa: E402
from archive_server.blobstores import open_blobstore  # noqa: E402
from archive_server.config import ArchiveConfig  # noqa: E402
from archive_server.db import Database  # noqa: E402
from archive_server.ingest import IngestCore  # noqa: E402
from archive_server.metrics import FleetCollector  # noqa: E402
from archive_server.models import AgentStatus  # noqa: E402
from bildsluss.v1 import agents_pb2 as pb  # noqa: E402
from tests.archive.world import LOCAL  # noqa: E402

DEPARTMENT = "SE2321000016-15CQ"


def request(agent: int, beat: int) -> pb.HeartbeatRequest:
    r = pb.HeartbeatRequest(agent_id=f"pc-{agent:03d}", host=f"pc-{agent:03d}", agent_version="0.1.0",
                            department_hsa_id=DEPARTMENT, state=pb.AGENT_STATE_BUSY if beat % 7 else pb.AGENT_STATE_IDLE,
                            queue_length=beat % 3, interval_s=5.0, spool_free_bytes=50 << 30, spool_bytes=0)
    r.sent_at.GetCurrentTime()
    for i in range(50):  # a full heartbeat: the newest 50 refusals, repeated every beat
        card = r.refused.add(card_key=f"card-{beat}-{i}", reader="usb-1", reason_code="NO_ID_FOUND", file_count=3)
        card.refused_at.FromMilliseconds(1_795_000_000_000 + beat * 1000 + i)
    return r


def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def report(name: str, ms: list[float], base: float) -> None:
    ms = sorted(ms)
    p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{name:10s} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  ratio {p50 / base:6.1f}x baseline")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--beats", type=int, default=400, help="heartbeats measured")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL (tests/archive/databases.py's server)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bildsluss-fleet-") as tmp:
        if args.pg:
            from tests.archive.databases import temp_database

            context = temp_database("postgresql", pathlib.Path(tmp))
        else:
            import contextlib

            context = contextlib.nullcontext(f"sqlite:///{tmp}/archive.sqlite3")
        with context as url:
            db = Database(url, pool_size=4, max_overflow=2)
            db.upgrade_schema()
            core = IngestCore(db, open_blobstore(f"{tmp}/blobs", db), ArchiveConfig(data_dir=pathlib.Path(tmp)))
            registry = AgentRegistryCore(db, core._department, devices_for=lambda hsa: devices.devices_of(db, hsa))
            from archive_server import admin

            admin.add_department(db, LOCAL, DEPARTMENT, "Hud")
            for model in ("EOS 250D", "D7500", "ILCE-6400"):
                devices.add_device(db, LOCAL, DEPARTMENT, "Maker", model)
            for agent in range(args.agents):  # warm: every agent known, 100 refusals each
                registry.heartbeat(request(agent, 0))
                registry.heartbeat(request(agent, 1))

            def baseline(i: int) -> None:
                with db.write() as s:
                    s.execute(sa.update(AgentStatus).where(AgentStatus.agent_id == f"pc-{i % args.agents:03d}")
                              .values(heartbeats=AgentStatus.heartbeats + 1))

            base_ms = timed(baseline, args.beats)
            base = statistics.median(base_ms)
            beat_ms = timed(lambda i: registry.heartbeat(request(i % args.agents, 2 + i // args.agents)), args.beats)
            fleet_ms = timed(lambda i: list_agents(db, dt.datetime.now(dt.timezone.utc), refusals=FLEET_REFUSALS), 20)
            all_ms = timed(lambda i: list_agents(db, dt.datetime.now(dt.timezone.utc)), 10)
            collector = FleetCollector(db, cache_s=0)
            metrics_ms = timed(lambda i: list(collector.collect()), 20)
            print(f"{args.agents} agents, {'PostgreSQL' if args.pg else 'SQLite'}; {args.beats} heartbeats")
            report("baseline", base_ms, base)
            report("heartbeat", beat_ms, base)
            report("fleet", fleet_ms, base)
            report("fleet+100", all_ms, base)
            report("metrics", metrics_ms, base)
            db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
