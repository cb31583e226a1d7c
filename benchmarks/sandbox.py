#!/usr/bin/env python3
"""What confining a parser costs (issue 13, agent/card/sandbox.py). Run by hand as root.

  worker    a fresh process that confines itself (no_new_privs, Landlock, user switch,
            seccomp, a new network namespace) vs the same fork without it: ms per
            process, and the ratio. A card's pool pays this once per worker.
  program   `exiftool -ver` (a Perl start, what the strip stage pays per batch) and
            `ffmpeg -version` run through `python -m agent.card.sandbox` vs directly:
            ms per run, and the ratio.

    .venv/bin/python benchmarks/sandbox.py [--runs 30]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from agent.card import sandbox  # noqa: E402


def _fork(confinement: sandbox.Confinement | None) -> float:
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if confinement is not None:
                sandbox.confine(confinement)
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return time.perf_counter() - start


def _run(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def _row(what: str, plain: list[float], confined: list[float]) -> None:
    p, c = statistics.median(plain) * 1e3, statistics.median(confined) * 1e3
    print(f"{what:<28} plain {p:7.1f} ms   confined {c:7.1f} ms   ratio {c / p:5.2f}x   (+{c - p:.1f} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    base = pathlib.Path(tempfile.mkdtemp(prefix="bildsluss-bench-sandbox-"))
    try:
        base.chmod(0o711)
        (base / "card").mkdir()
        (base / "spool").mkdir()
        confinement = sandbox.confinement_for(base / "card", base / "spool")
        sandbox.hand_over(confinement)
        print(f"support: {sandbox.support()}")
        _row("worker process", [_fork(None) for _ in range(args.runs)],
             [_fork(confinement) for _ in range(args.runs)])
        for program in (["exiftool", "-ver"], ["ffmpeg", "-hide_banner", "-version"]):
            _row(" ".join(program[:1]) + " start", [_run(program) for _ in range(args.runs)],
                 [_run(sandbox.command(confinement, program)) for _ in range(args.runs)])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
