#!/usr/bin/env python3
"""Strip throughput against plain copying, and stay-open exiftool against one process per file.

Generates N seeded 12 MP camera-like JPEGs (with real EXIF, GPS and maker notes
copied from the shared corpus when it is there), then measures in the same run:

* ``cp``: copying the same bytes into a spool folder (the floor: I/O only);
* ``strip_all``: the strip stage with one stay-open exiftool: JPEGs rewritten
  in Python (no exiftool write), checked segment by segment against the
  original (tables, frames, every scan byte-identical), fsynced, then read back
  by exiftool in one batch against the allow-list;
* a 1080p H.264 + AAC camera clip (``--video-seconds``, ~30 Mbit/s, with
  QuickTime metadata, GPS and a timecode track): scan (ffprobe reads every
  packet), strip (ffmpeg remux of the audio/video streams, per-packet hash
  comparison, exiftool read-back), against ``cp`` of the same bytes;
* metadata reads of 20 files with one stay-open exiftool (one batch, and one
  request per file) against one ``exiftool`` process per file.

Figures are printed as ratios against the baseline of the same run, never asserted.

    .venv/bin/python benchmarks/strip.py [--files 6] [--seed 0] [--video-seconds 10] [--keep DIR]
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

from agent.card.metadata import MetadataReader  # noqa: E402
from agent.card.scan import scan  # noqa: E402
from agent.card.strip import strip_all  # noqa: E402

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


def make_video(path: pathlib.Path, seconds: float) -> None:
    """A 1080p30 H.264 + AAC clip as a camera writes it (noise keeps the bitrate camera-like)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
                    "-t", str(seconds), "-vf", "noise=alls=6:allf=t", "-c:v", "libx264",
                    "-preset", "ultrafast", "-crf", "23", "-c:a", "aac",
                    "-metadata", "make=Canon", "-metadata", "model=Canon EOS 250D",
                    "-metadata", "location=+59.3293+018.0686/", "-timecode", "10:00:00:00",
                    "-movflags", "use_metadata_tags", str(path)], check=True)


def copy_fsync(files, dest_dir: pathlib.Path) -> None:
    dest_dir.mkdir(exist_ok=True)
    for f in files:
        dest = dest_dir / f.name
        shutil.copyfile(f, dest)
        fd = os.open(dest, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--read-files", type=int, default=20)
    ap.add_argument("--video-seconds", type=float, default=10.0, help="0: no video")
    ap.add_argument("--keep", type=pathlib.Path)
    args = ap.parse_args()

    print(f"load average at start: {os.getloadavg()[0]:.1f} (2-core machine: above 2 means other work competes)")
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

            t_cp, _ = timed(lambda: copy_fsync(files, work / "cp"))

            spool = work / "spool"
            spool.mkdir(mode=0o700)
            t_strip, stripped = timed(lambda: strip_all(result.media, spool, tool=reader))
            assert len(stripped) == args.files

            # stay-open vs one process per file, on the same files (cycled to read_files)
            paths = [files[i % len(files)] for i in range(args.read_files)]
            t_batch, _ = timed(lambda: reader.read(paths))
            t_each, _ = timed(lambda: [reader.read_one(p) for p in paths])
            video = None
            if args.video_seconds > 0:
                clip_card = work / "clip" / "DCIM" / "100CANON"
                clip_card.mkdir(parents=True)
                print(f"generating a {args.video_seconds:g} s 1080p clip ...", flush=True)
                make_video(clip_card / "MVI_0001.MP4", args.video_seconds)
                clip = clip_card / "MVI_0001.MP4"
                t_vscan, vresult = timed(lambda: scan(work / "clip", reader=reader))
                assert len(vresult.media) == 1, vresult.refused
                t_vcp, _ = timed(lambda: copy_fsync([clip], work / "cp-clip"))
                vspool = work / "spool-clip"
                vspool.mkdir(mode=0o700)
                t_vstrip, _ = timed(lambda: strip_all(vresult.media, vspool, tool=reader))
                video = (clip.stat().st_size / 1e6, t_vscan, t_vcp, t_vstrip)
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
        if video:
            vmb, t_vscan, t_vcp, t_vstrip = video
            print(f"\n1080p clip, {args.video_seconds:g} s, {vmb:.1f} MB:")
            print(f"scan (hash + ffprobe every packet + metadata): {t_vscan:6.2f} s  {vmb / t_vscan:7.1f} MB/s")
            print(f"cp + fsync (baseline):                         {t_vcp:6.2f} s  {vmb / t_vcp:7.1f} MB/s")
            print(f"strip (remux + packet hashes + read-back):     {t_vstrip:6.2f} s  {vmb / t_vstrip:7.1f} MB/s")
            print(f"  strip / cp ratio:                            {t_vstrip / t_vcp:6.1f} x")
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
