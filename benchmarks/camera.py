#!/usr/bin/env python3
"""A camera on a cable: the camera source against the `gphoto2` command-line tool (issue 16).

Writes a seeded series of N frames (a real generated card: labels on the first
and last frame, camera EXIF) and presents it as a camera through libgphoto2's
Directory Browse camera (``disk:`` port). Measured in the same run:

  baseline    `gphoto2 --camera "Directory Browse" --port disk:… --get-all-files`
              (Debian's gphoto2 tool, its own libgphoto2) into a fresh folder;
  download    the agent's camera source (agent.card.camera): DeviceInfo, listing,
              and the download into a locked private spool folder with the size
              check, i.e. what stands in for the baseline;
  ingest      `bildsluss-agent ingest --camera disk:…` end to end against a real
              archive on loopback (download, scan, identify, strip, upload,
              verify, delete on the camera, a fresh listing);
  card        `bildsluss-agent ingest PATH` of the same files as a card, so the
              price of the camera path over the card path shows.

The transfers run --repeat times (median); the two ingests once each (each
empties its copy). Prints seconds, MiB/s and ratios.

    .venv/bin/python benchmarks/camera.py [--frames 100] [--megapixels 6] [--repeat 3] [--seed 0]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.card.camera import CameraConnection, download_area  # noqa: E402
from tests.support.archive_process import ArchiveProcess  # noqa: E402
from tests.support.cardgen import make_card  # noqa: E402
from tests.support.e2e import AGENT, DEPARTMENT, PATIENT  # noqa: E402


def gphoto2_get_all(card: pathlib.Path, work: pathlib.Path) -> float:
    out = pathlib.Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    subprocess.run(["gphoto2", "--camera", "Directory Browse", "--port", f"disk:{card}", "--get-all-files"],
                   cwd=out, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.perf_counter() - start
    shutil.rmtree(out)
    return took


def camera_source_download(card: pathlib.Path, spool: pathlib.Path) -> tuple[float, int]:
    start = time.perf_counter()
    with download_area(spool) as folder, CameraConnection.open(f"disk:{card}") as cam:
        cam.info()
        entries = cam.list_files()
        for entry in entries:
            cam.download(entry, folder)
        took = time.perf_counter() - start
    return took, len(entries)


def ingest(target: list[str], address: str, spool: pathlib.Path) -> tuple[float, dict, dict]:
    """Run one ingest; also the seconds of its phases, from its structured log's timestamps."""
    start = time.perf_counter()
    result = subprocess.run([*AGENT, "ingest", *target, "--archive", address, "--department", DEPARTMENT,
                             "--insecure", "--json", "--spool", str(spool)], capture_output=True, text=True)
    took = time.perf_counter() - start
    out = json.loads(result.stdout)
    if result.returncode != 0:
        raise SystemExit(f"ingest {target} ended {result.returncode}: {out['reason']} {out['detail']}")
    marks: dict[str, float] = {}
    for line in result.stderr.splitlines():
        try:
            entry = json.loads(line)
            marks.setdefault(entry["msg"], dt.datetime.fromisoformat(entry["ts"]).timestamp())
        except (ValueError, KeyError, TypeError):
            continue
    first = min(marks.values())
    confirmed = marks["archive confirmed every file"]
    phases = {"download": marks.get("downloaded the camera's files", first) - first,
              "stages": confirmed - marks.get("downloaded the camera's files", first),
              "wipe": marks["card archived and wiped"] - confirmed}
    return took, out, phases


def _phases(p: dict) -> str:
    return f"(download {p['download']:.2f} s, card stages {p['stages']:.1f} s, wipe {p['wipe']:.2f} s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--megapixels", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not shutil.which("gphoto2"):
        raise SystemExit("the gphoto2 command-line tool is missing (scripts/setup.sh installs it)")

    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        work = pathlib.Path(tmp)
        print(f"writing a {args.frames}-frame series at {args.megapixels} MP (seed {args.seed}) ...", flush=True)
        spec = make_card(work / "series", patient=PATIENT, n_images=args.frames, megapixels=args.megapixels,
                         seed=args.seed, housekeeping=False)
        card = spec.root
        size = sum(p.stat().st_size for p in card.rglob("*") if p.is_file())
        mib = size / (1 << 20)
        print(f"{args.frames} frames, {mib:.1f} MiB; load average {os.getloadavg()[0]:.2f} "
              "(other sessions share this machine)\n")

        base, ours = [], []
        for _ in range(args.repeat):
            base.append(gphoto2_get_all(card, work))
            took, n = camera_source_download(card, work / "spool")
            assert n == args.frames, f"listed {n} files"
            ours.append(took)
        b, o = statistics.median(base), statistics.median(ours)
        print(f"baseline  gphoto2 --get-all-files     {b:7.2f} s  {mib / b:7.1f} MiB/s")
        print(f"download  camera source (spool)       {o:7.2f} s  {mib / o:7.1f} MiB/s   {o / b:5.2f}x baseline")

        as_card = work / "as-card"
        shutil.copytree(card, as_card)
        with ArchiveProcess(data=work / "archive") as archive:
            cam_s, cam_out, cam_p = ingest(["--camera", f"disk:{card}"], archive.address, work / "spool")
            card_s, _, card_p = ingest([str(as_card)], archive.address, work / "spool-card")
        assert cam_out["wiped"] and not any(card.rglob("*.JPG")), "the camera was not emptied"
        print(f"ingest    --camera disk: end to end   {cam_s:7.2f} s  {mib / cam_s:7.1f} MiB/s   "
              f"{cam_s / b:5.2f}x baseline {_phases(cam_p)}")
        print(f"card      ingest PATH, same files     {card_s:7.2f} s  {mib / card_s:7.1f} MiB/s   "
              f"camera/card {cam_s / card_s:4.2f}x {_phases(card_p)}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
