#!/usr/bin/env python3
"""The web client on PostgreSQL with many cases (issue 11). Run by hand;
figures go into the README.

  search     the patient search page (POST /cases: CSRF, authorization, the
             query, the audit event, the template) and the case page (GET
             /cases/{id}) through the ASGI app in this process, server-side
             (no network, no browser), p50/p95 over --queries requests, on N
             generated cases (COPY, as benchmarks/archive_load.py p5). Baseline
             in the same run: the domain call alone (cases.find_cases /
             cases.case_page, authorization and audit included); the ratio is
             what the page adds.
  thumbnails 12 MP camera-like JPEGs: thumbnails made per second by
             previews.make against Pillow's plain decode of the same bytes
             (the baseline), and thumbnails served per second by the
             endpoint, first (made) and again (from the cache; each one
             still an authorized, audited read).

    .venv/bin/python benchmarks/web.py [--cases 100000] [--queries 300] [--photos 8]

Needs the PostgreSQL server of the development machine (BILDSLUSS_PG_URL).
"""
from __future__ import annotations

import argparse
import io
import pathlib
import random
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from archive_load import CASES_PER_PATIENT, DEPARTMENTS, generate, load, ms, patient_number, pct  # noqa: E402

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def camera_jpeg(seed: int, width: int = 4000, height: int = 3000) -> bytes:
    """A 12 MP photograph-like JPEG: smooth shading, a few shapes, sensor noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([180 + 40 * np.sin(x / 700 + seed), 140 + 30 * np.cos(y / 500), 120 + 20 * np.sin((x + y) / 900)],
                    axis=-1)
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        cx, cy, r = int(rng.integers(400, width - 400)), int(rng.integers(400, height - 400)), int(rng.integers(80, 300))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.integers(60, 200, 3)))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--photos", type=int, default=8)
    args = parser.parse_args(argv)

    from starlette.testclient import TestClient

    from archive_server import admin, previews
    from archive_server.authz import Principal
    from archive_server.cases import case_page, find_cases
    from archive_server.config import ArchiveConfig, LoginConfig
    from archive_server.logins import Logins, set_password
    from archive_server.web import create_app
    from archive_server.web.context import WebContext
    from tests.archive.databases import temp_database
    from tests.archive.world import OWN, World
    from tests.support.web import ingest_media

    print(f"web: {args.cases:,} cases on PostgreSQL, {args.queries} requests each; {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bildsluss-web-bench-") as tmp, \
            temp_database("postgresql", pathlib.Path(tmp) / "db") as url:
        from archive_server.db import Database

        schema = Database(url)
        schema.upgrade_schema()
        schema.dispose()
        took = generate(url, 0, args.cases)
        print(f"generated {args.cases:,} cases in {took:.0f} s ({load()})", flush=True)
        world = World.create(url, pathlib.Path(tmp) / "data")  # two more departments, a blob folder
        db = world.db
        local = Principal(actor="cli:bench", user=None)
        admin.add_role(db, local, "kliniker", ["case.read"])
        for d in range(1, 6):  # a clinician in a quarter of the departments
            admin.add_user(db, local, "anna", f"SE2321000016-B{d:03d}", "kliniker")
        admin.add_user(db, local, "anna", OWN, "kliniker")
        set_password(db, local, "anna", "ett långt lösenord 4711", LoginConfig())
        anna = Principal.named("anna", login="local", origin="bench")
        context = WebContext(db=db, config=ArchiveConfig(data_dir=world.data), logins=Logins(db, LoginConfig()),
                             blobs=world.blobs)
        client = TestClient(create_app(context), base_url="https://testserver", headers={"Accept": "text/html"})
        page = client.get("/login")
        client.post("/login", data={"username": "anna", "password": "ett långt lösenord 4711",
                                    "csrf": CSRF.search(page.text).group(1)}, follow_redirects=False)
        token = CSRF.search(client.get("/cases").text).group(1)

        rng = random.Random(args.cases)
        readable = [i for i in (rng.randrange(args.cases) for _ in range(args.queries * 8))
                    if i % DEPARTMENTS < 5][:args.queries]
        case_ids = [str(uuid.UUID(int=i + 1)) for i in readable]
        patients = [patient_number(i // CASES_PER_PATIENT) for i in readable]
        for i in range(20):  # warm the pool and the templates
            client.post("/cases", data={"patient": patients[i], "csrf": token})
            client.get(f"/cases/{case_ids[i]}")
        domain_search = timed(lambda i: find_cases(db, anna, patient_text=patients[i]), len(readable))
        page_search = timed(lambda i: client.post("/cases", data={"patient": patients[i], "csrf": token}),
                            len(readable))
        domain_case = timed(lambda i: case_page(db, anna, case_ids[i]), len(readable))
        page_case = timed(lambda i: client.get(f"/cases/{case_ids[i]}"), len(readable))
        assert client.get(f"/cases/{case_ids[0]}").status_code == 200
        found = client.post("/cases", data={"patient": patients[0], "csrf": token}).text.count('class="case-row')
        print(f"search page  {ms(page_search)}; domain alone {ms(domain_search)}; "
              f"ratio p95 {pct(page_search, 95) / pct(domain_search, 95):.2f} ({found} cases per search)")
        print(f"case page    {ms(page_case)}; domain alone {ms(domain_case)}; "
              f"ratio p95 {pct(page_case, 95) / pct(domain_case, 95):.2f}; {load()}", flush=True)

        photos = [camera_jpeg(seed) for seed in range(args.photos)]
        mib = sum(map(len, photos)) / (1 << 20)
        from PIL import Image

        def decode(i: int) -> None:
            with Image.open(io.BytesIO(photos[i])) as img:
                img.load()

        decoded = timed(decode, len(photos))
        made = timed(lambda i: previews.make(photos[i], "image", "thumb"), len(photos))
        print(f"thumbnails   {len(photos) / sum(made):.2f}/s made from 12 MP JPEGs ({mib / len(photos):.1f} MiB each); "
              f"plain decode {len(photos) / sum(decoded):.2f}/s; ratio {sum(made) / sum(decoded):.2f}", flush=True)

        files = {f"DCIM/100CANON/IMG_{n:04d}.JPG": (data, "image", "image/jpeg") for n, data in enumerate(photos)}
        case_id = ingest_media(world, files, patient=patient_number(10**6), department=OWN)
        shas = re.findall(r"/media/([0-9a-f]{64})/thumb", client.get(f"/cases/{case_id}").text)
        first = timed(lambda i: client.get(f"/cases/{case_id}/media/{shas[i]}/thumb").raise_for_status(), len(shas))
        again = timed(lambda i: client.get(f"/cases/{case_id}/media/{shas[i % len(shas)]}/thumb").raise_for_status(),
                      len(shas) * 10)
        print(f"endpoint     {len(first) / sum(first):.2f} thumbnails/s made (read, verified, made, audited); "
              f"{len(again) / sum(again):.1f}/s from the cache (authorized and audited each); {load()}")
        client.close()
        world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
