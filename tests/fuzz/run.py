#!/usr/bin/env python3
"""Run one fuzz target with atheris (libFuzzer) for a bounded number of inputs.

    .venv/bin/python tests/fuzz/run.py TARGET [--runs N] [--workdir DIR] [LIBFUZZER FLAGS]
    .venv/bin/python tests/fuzz/run.py TARGET CRASH-FILE...     # replay inputs once

Seeds come from the shared corpus in place (``-seed_inputs``, never copied) and
from inputs made by ``targets.made_seeds``; libFuzzer's own corpus (new inputs
it keeps) and any crash input go to ``--workdir`` (a temporary folder by
default). The last line is a JSON object: target, runs asked, seeds. libFuzzer
prints ``Done N runs in S second(s)`` on success; on a crash it prints the
traceback and the input's file and exits non-zero.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import atheris  # noqa: E402

from tests.fuzz import targets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target", choices=sorted(targets.TARGETS))
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--workdir", type=pathlib.Path)
    parser.add_argument("--max-len", type=int, default=8192)
    # libFuzzer's own flags (-seed=N, -max_total_time=S, a crash file to replay) pass
    # through as they are: argparse cannot take "-seed=1" as a positional value.
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    fuzz = targets.load(args.target)  # first: its modules are imported instrumented
    replay = [a for a in extra if not a.startswith("-") and pathlib.Path(a).is_file()]
    if replay:  # libFuzzer runs each given input once and reports what it raises
        atheris.Setup([sys.argv[0], *extra], fuzz)
        atheris.Fuzz()
        return
    work = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix=f"bildsluss-fuzz-{args.target}-"))
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    (work / "made").mkdir(exist_ok=True)
    seeds = [str(p) for p in targets.corpus_seeds(args.target)]
    for i, data in enumerate(targets.made_seeds(args.target)):
        made = work / "made" / f"seed-{i}"
        made.write_bytes(data)
        seeds.append(str(made))
    print(json.dumps({"target": args.target, "runs": args.runs, "seeds": len(seeds)}), flush=True)
    argv = [sys.argv[0], str(work / "corpus"), f"-runs={args.runs}", f"-max_len={args.max_len}",
            f"-artifact_prefix={work}/", "-timeout=20", "-rss_limit_mb=2048", "-print_final_stats=1",
            *extra]
    words = targets.dictionary(args.target)
    if words:
        (work / "words.dict").write_text("".join(f'"{w.decode().replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"\n'
                                                 for w in words))
        argv.append(f"-dict={work / 'words.dict'}")
    if seeds:
        listing = work / "seeds.txt"
        listing.write_text(",".join(seeds))
        argv.append(f"-seed_inputs=@{listing}")
    atheris.Setup(argv, fuzz)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
