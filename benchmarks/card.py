#!/usr/bin/env python3
"""A full camera card, end to end, against the naive chain (issue 12).

Writes a seeded camera card once (``tests/support/cardgen.py``): N JPEGs of
12 MP with real Canon EXIF and maker notes copied from the shared corpus, the
patient's barcode label on the first and the last frame, the housekeeping a
camera and computers leave. Then, alternating, ``--repeat`` times each:

  naive   ``cp -r CARD COPY`` + ``exiftool -all= -overwrite_original -r COPY``
          + ``sync``: what someone without the agent would do (no identity, no
          proof, no archive, no wipe);
  agent   ``bildsluss-agent ingest CARD --json`` from a fresh copy of the card
          into a real archive (``bildsluss-archive serve`` on loopback, SQLite
          and a blob folder), started fresh for each run so that nothing is
          deduplicated; timed from the command's start to its exit (the card
          wiped, exit code 0 required). The code is byte-compiled first, as the
          installed package's is; ``--before`` runs another checkout's agent
          and archive in the same alternation.

and, in the same alternation, the floor that R8 sets: the content check alone
(every frame's reduced decode, ``identify.open_reduced`` as the agent's readers
call it, in one process per core), the least any agent that keeps R8 must do.

The card is the issue's: JPEGs as a camera's fine quality writes them
(``--quality 96 --subsampling 4:2:2``: about 3.5 MB per 12 MP frame; the issue
measured 100 frames, 336 MB). ``--quality 90 --subsampling 4:2:0`` writes the
smaller card (154 MiB) measured before 2026-12-05.

Prints the medians, the ratio agent / naive (the issue's target: <= 5x), the
per-stage split of the agent's runs (median of each stage's wall seconds, from
the outcome's ``timings``; before ``timings`` existed, from the structured
log's timestamps), where the CPU went (the agent's own process, its reader
processes, its exiftools, and the archive receiving the card on the same cores;
the agent's processes sampled from /proc every 50 ms, so each is up to 50 ms
short) and the load average before and after (the machine is shared).

    .venv/bin/python benchmarks/card.py [--frames 100] [--megapixels 12] [--repeat 3] [--seed 0] [--quality 96]
    .venv/bin/python benchmarks/card.py --keep /tmp/card12   # reuse (or write) the card there
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.card import identify  # noqa: E402
from tests.support.archive_process import ArchiveProcess  # noqa: E402
from tests.support.cardgen import make_card  # noqa: E402
from tests.support.e2e import AGENT, DEPARTMENT, PATIENT  # noqa: E402


def naive_chain(card: pathlib.Path, work: pathlib.Path) -> float:
    copy = work / "naive"
    shutil.rmtree(copy, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(card), str(copy)], check=True)
    # Exit status 1: exiftool refuses the card's AppleDouble file (._IMG_0001.JPG) and cleans the rest.
    done = subprocess.run(["exiftool", "-q", "-q", "-all=", "-overwrite_original", "-r", str(copy)],
                          stderr=subprocess.DEVNULL)
    if done.returncode not in (0, 1):
        raise SystemExit(f"exiftool -all= ended {done.returncode}")
    subprocess.run(["sync"], check=True)
    took = time.perf_counter() - start
    shutil.rmtree(copy)
    return took


def _content_check(path: pathlib.Path) -> float:
    """CPU seconds of one frame's reduced decode, as the agent's reader does it (R8)."""
    start = time.process_time()
    image, _ = identify.open_reduced(path, None)
    image.close()
    return time.process_time() - start


def content_check_floor(card: pathlib.Path) -> tuple[float, float]:
    """Wall and CPU seconds of R8's content check of every JPEG on the card, one
    process per core (forked with this module loaded, started before the clock)."""
    frames = sorted(card.rglob("*.JPG"))
    frames = [p for p in frames if not p.name.startswith("._")]
    with concurrent.futures.ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(time.sleep, [0.05] * len(os.sched_getaffinity(0))))
        start = time.perf_counter()
        cpu = sum(pool.map(_content_check, frames))
        return time.perf_counter() - start, cpu


def _log_stages(stderr: str) -> dict[str, float]:
    """Stage seconds from the structured log (for a build whose JSON has no ``timings``)."""
    marks: dict[str, float] = {}
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
            marks.setdefault(entry["msg"], dt.datetime.fromisoformat(entry["ts"]).timestamp())
        except (ValueError, KeyError, TypeError):
            continue
    order = [("scan", "scanned card"), ("identify", "identified patient"),
             ("strip+upload", "archive confirmed every file"), ("wipe", "card archived and wiped")]
    out, last = {}, min(marks.values(), default=0.0)
    for name, msg in order:
        if msg in marks:
            out[name] = marks[msg] - last
            last = marks[msg]
    return out


def agent_command(source: pathlib.Path | None) -> list[str]:
    """The installed agent, or the one in another checkout (its code, this virtualenv)."""
    if source is None:
        return list(AGENT)
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(source)!r}); "
            "from agent.cli import main; sys.exit(main())"]


def compile_sources(checkout: pathlib.Path) -> None:
    """Byte-compile a checkout's code, as the package does when it is installed
    (``packaging/deb/postinst``): an agent started from a checkout under
    PYTHONDONTWRITEBYTECODE would otherwise compile every module on every start."""
    folders = [str(checkout / d) for d in ("agent", "archive_server", "bildsluss_common", "protos")
               if (checkout / d).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", *folders], check=True,
                   stdout=subprocess.DEVNULL)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> tuple[int, str, float] | None:
    """(parent pid, command name, CPU seconds so far) of a process, from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    name, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()
    return int(rest[1]), name, (int(rest[11]) + int(rest[12])) / _TICK


class _ProcessTree:
    """The CPU seconds of a process and of every process below it, by kind (the
    agent itself, its reader processes, exiftool), sampled from /proc while it
    runs: a process that ended counts with its last sample."""

    def __init__(self, pid: int) -> None:
        self.root = pid
        self.seen: dict[int, tuple[int, str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    pid = int(entry)
                    found = _process_cpu(pid)
                    if found is not None and (pid == self.root or pid in self.seen or found[0] in self.seen):
                        self.seen[pid] = found
            self._stop.wait(0.05)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        split = {"agent": 0.0, "readers": 0.0, "exiftool": 0.0}
        for pid, (_, name, cpu) in self.seen.items():
            kind = "agent" if pid == self.root else "exiftool" if name in ("exiftool", "perl") else "readers"
            split[kind] += cpu
        return split


def agent_run(template: pathlib.Path, work: pathlib.Path, run: str,
              source: pathlib.Path | None = None) -> tuple[float, float, dict[str, float], dict[str, float]]:
    """Wall seconds, CPU seconds (the agent, its reader processes, exiftool, tesseract:
    every process it waited for; not the archive), the stage split of one run and
    where the CPU went (:class:`_ProcessTree`, and the archive's)."""
    card = work / f"card-{run}"
    shutil.copytree(template, card)
    with ArchiveProcess(data=work / f"archive-{run}", source=source or ROOT) as archive:
        assert archive.proc is not None
        archive_before = _process_cpu(archive.proc.pid)
        start, cpu = time.perf_counter(), _children_cpu()
        agent = subprocess.Popen(
            [*agent_command(source), "ingest", str(card), "--archive", archive.address, "--department", DEPARTMENT,
             "--insecure", "--json", "--spool", str(work / f"spool-{run}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tree = _ProcessTree(agent.pid)
        stdout, stderr = agent.communicate()
        took, cpu = time.perf_counter() - start, _children_cpu() - cpu
        where = tree.stop()
        archive_after = _process_cpu(archive.proc.pid)
        if archive_before is not None and archive_after is not None:
            where["archive"] = archive_after[2] - archive_before[2]
    result = subprocess.CompletedProcess(agent.args, agent.returncode, stdout, stderr)
    try:
        out = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"ingest printed no outcome ({result.returncode}):\n{result.stderr[-3000:]}") from None
    if result.returncode != 0 or not out.get("wiped"):
        raise SystemExit(f"ingest ended {result.returncode}: {out.get('reason')} {out.get('detail')}")
    shutil.rmtree(card)
    shutil.rmtree(work / f"archive-{run}", ignore_errors=True)
    stages = out.get("timings") or _log_stages(result.stderr)
    return took, cpu, {k: float(v) for k, v in stages.items()}, where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=int, default=96, help="JPEG quality of the card (camera fine: 96)")
    parser.add_argument("--subsampling", default="4:2:2", help="JPEG chroma subsampling (cameras: 4:2:2)")
    parser.add_argument("--keep", type=pathlib.Path, help="write the card here once and reuse it")
    parser.add_argument("--before", type=pathlib.Path, metavar="CHECKOUT",
                        help="also run the agent of another checkout (e.g. a git worktree of the "
                             "commit before a change), alternating, for a before/after ratio")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-card-") as tmp:
        work = pathlib.Path(tmp)
        template = args.keep or work / "template"
        if not (template / "DCIM").is_dir():
            print(f"writing a {args.frames}-frame card at {args.megapixels} MP (seed {args.seed}, JPEG quality "
                  f"{args.quality}, {args.subsampling}) ...", flush=True)
            make_card(template, patient=PATIENT, n_images=args.frames, megapixels=args.megapixels, seed=args.seed,
                      quality=args.quality, subsampling=args.subsampling)
        files = [p for p in template.rglob("*") if p.is_file()]
        mib = sum(p.stat().st_size for p in files) / (1 << 20)
        load_before = os.getloadavg()
        print(f"card: {len(files)} files, {mib:.1f} MiB; load average {load_before[0]:.2f} "
              f"{load_before[1]:.2f} {load_before[2]:.2f} on {os.cpu_count()} CPUs "
              "(other sessions share this machine)", flush=True)

        for checkout in (ROOT, *([args.before] if args.before else [])):
            compile_sources(checkout)
        naive, agent, stages, before, cpus, before_cpus = [], [], [], [], [], []
        floors: list[tuple[float, float]] = []
        wheres: list[dict[str, float]] = []
        before_wheres: list[dict[str, float]] = []
        for run in range(args.repeat):
            naive.append(naive_chain(template, work))
            floors.append(content_check_floor(template))
            took, cpu, split, where = agent_run(template, work, str(run))
            agent.append(took)
            cpus.append(cpu)
            stages.append(split)
            wheres.append(where)
            print(f"  run {run + 1}: naive {naive[-1]:6.2f} s   R8 floor {floors[-1][0]:5.2f} s   agent {took:6.2f} s ({cpu:6.1f} s CPU)   "
                  + " ".join(f"{k} {v:.2f}" for k, v in split.items()), flush=True)
            if args.before:
                took, cpu, split, where = agent_run(template, work, f"before-{run}", args.before)
                before.append(took)
                before_cpus.append(cpu)
                before_wheres.append(where)
                print(f"         before {took:6.2f} s ({cpu:6.1f} s CPU)   "
                      + " ".join(f"{k} {v:.2f}" for k, v in split.items()), flush=True)
        n, a = statistics.median(naive), statistics.median(agent)
        print(f"\nnaive   cp -r + exiftool -all= + sync   {n:7.2f} s  {mib / n:7.1f} MiB/s")
        print(f"agent   bildsluss-agent ingest          {a:7.2f} s  {mib / a:7.1f} MiB/s   "
              f"{a / n:5.1f}x the naive chain (target <= 5x); {statistics.median(cpus):.1f} s CPU")
        f = statistics.median(w for w, _ in floors)
        print(f"floor   R8's content check alone         {f:7.2f} s  {mib / f:7.1f} MiB/s   "
              f"{f / n:5.1f}x the naive chain; {statistics.median(c for _, c in floors):.1f} s CPU "
              f"(every frame's reduced decode, one process per core)")
        if before:
            b = statistics.median(before)
            print(f"before  {args.before}   {b:7.2f} s  {mib / b:7.1f} MiB/s   "
                  f"{b / n:5.1f}x the naive chain; {statistics.median(before_cpus):.1f} s CPU; "
                  f"now {a / b:.2f}x its time")
        names = list(dict.fromkeys(k for s in stages for k in s))
        print("stages (median wall s): " + ", ".join(
            f"{k} {statistics.median(s.get(k, 0.0) for s in stages):.2f}" for k in names))
        for label, runs in (("agent", wheres), ("before", before_wheres)):
            if runs:
                kinds = list(dict.fromkeys(k for w in runs for k in w))
                print(f"CPU (median s), {label}: " + ", ".join(
                    f"{k} {statistics.median(w.get(k, 0.0) for w in runs):.2f}" for k in kinds))
        after = os.getloadavg()
        print(f"load average after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
