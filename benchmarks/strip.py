#!/usr/bin/env python3
"""Strip throughput against plain copying, and stay-open exiftool against one process per file.

Generates N seeded 12 MP camera-like JPEGs (with real EXIF, GPS and maker notes
copied from the shared corpus when it is there), then measures in the same run:

* ``cp``: copying the same bytes into a spool folder (the floor: I/O only);
* ``strip_all``: the strip stage (copy, exiftool write, read-back, losslessness
  and pixel checks) with one stay-open exiftool;
* metadata reads of 20 files with one stay-open exiftool (one batch, and one
  request per file) against one ``exiftool`` process per file.

Figures are printed as ratios against the baseline of the same run, never asserted.

    .venv/bin/python benchmarks/strip.py [--files 6] [--seed 0] [--keep DIR]
"""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from agent.metadata import MetadataReader  # noqa: E402
from agent.scan import scan  # noqa: E402
from agent.strip import strip_all  # noqa: E402

CORPUS = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus")) / "exif"


def make_jpeg(path: pathlib.Path, seed: int, size=(4000, 3000)) -> None:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.int16)
    base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], -1)
    noise = rng.integers(-40, 41, size=base.shape, dtype=np.int16)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue())
    if CORPUS.is_dir():
        subprocess.run(["exiftool", "-q", "-q", "-overwrite_original",
                        "-tagsFromFile", str(CORPUS / "Canon.jpg"), "-all:all",
                        "-tagsFromFile", str(CORPUS / "GPS.jpg"), "-gps:all",
                        f"-DateTimeOriginal=2026:03:14 09:{30 + seed % 30:02d}:00", str(path)],
                       check=True)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--read-files", type=int, default=20)
    ap.add_argument("--keep", type=pathlib.Path)
    args = ap.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="bildsluss-bench-"))
    try:
        card = work / "card" / "DCIM" / "100CANON"
        card.mkdir(parents=True)
        print(f"generating {args.files} x 12 MP JPEG (seed {args.seed}) ...", flush=True)
        for i in range(args.files):
            make_jpeg(card / f"IMG_{i + 1:04d}.JPG", args.seed + i)
        files = sorted(card.iterdir())
        total = sum(f.stat().st_size for f in files)
        mb = total / 1e6

        with MetadataReader() as reader:
            t_scan, result = timed(lambda: scan(work / "card", reader=reader))
            assert len(result.media) == args.files, result.refused

            cp_dir = work / "cp"
            cp_dir.mkdir()

            def copy_all():
                for f in files:
                    dest = cp_dir / f.name
                    shutil.copyfile(f, dest)
                    fd = os.open(dest, os.O_RDONLY)
                    os.fsync(fd)
                    os.close(fd)
            t_cp, _ = timed(copy_all)

            spool = work / "spool"
            spool.mkdir(mode=0o700)
            t_strip, stripped = timed(lambda: strip_all(result.media, spool, tool=reader))
            assert len(stripped) == args.files

            # stay-open vs one process per file, on the same files (cycled to read_files)
            paths = [files[i % len(files)] for i in range(args.read_files)]
            t_batch, _ = timed(lambda: reader.read(paths))
            t_each, _ = timed(lambda: [reader.read_one(p) for p in paths])
        t_proc, _ = timed(lambda: [subprocess.run(["exiftool", "-j", "-G0:1", "-a", str(p)],
                                                  capture_output=True, check=True) for p in paths])
        t_start, _ = timed(lambda: MetadataReader().close())

        print(f"\n{args.files} files, {mb:.1f} MB ({mb / args.files:.1f} MB each)")
        print(f"scan (hash + full decode + metadata): {t_scan:6.2f} s  {mb / t_scan:7.1f} MB/s"
              f"  {t_scan / args.files * 1000:6.0f} ms/file")
        print(f"cp + fsync (baseline):                {t_cp:6.2f} s  {mb / t_cp:7.1f} MB/s")
        print(f"strip_all (stay-open exiftool):       {t_strip:6.2f} s  {mb / t_strip:7.1f} MB/s"
              f"  {t_strip / args.files * 1000:6.0f} ms/file")
        print(f"  strip / cp ratio:                   {t_strip / t_cp:6.1f} x")
        print(f"\nmetadata read of {len(paths)} files:")
        print(f"  stay-open, one batch:               {t_batch * 1000:6.0f} ms")
        print(f"  stay-open, one request per file:    {t_each * 1000:6.0f} ms")
        print(f"  one exiftool process per file:      {t_proc * 1000:6.0f} ms"
              f"  ({t_proc / t_batch:.1f}x the batch, {t_proc / t_each:.1f}x per-file stay-open)")
        print(f"  (starting + stopping one exiftool:  {t_start * 1000:6.0f} ms)")
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
