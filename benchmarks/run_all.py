"""The whole benchmark suite in one command: every script's side-by-side table, one after the other.

    python benchmarks/run_all.py [--quick] [--out benchmarks/results/suite.md]

Runs, in this order (each prints a markdown table and writes its JSON under benchmarks/results/):
pre-training step speed (mini, then base), fine-tuning vs transformers' Trainer, sentence embeddings vs
sentence-transformers, `prepare` throughput and memory, and peak step memory of base at seq 128 / 512.
The scripts run one at a time: on a small machine, two benchmarks at once measure each other.
`--quick` shortens every run (for checking that the suite works, not for numbers).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

SUITE = [
    ("Pre-training step, mini", ["pretrain_speed.py", "--reference-paths"], ["--steps", "2", "--rounds", "1"]),
    ("Pre-training step, base", ["pretrain_speed.py", "--config", "base", "--steps", "3", "--batch-size", "8",
                                 "--reference-paths", "--json", os.path.join(HERE, "results", "pretrain_speed_base.json")],
     ["--steps", "1", "--rounds", "1"]),
    ("Fine-tuning vs Trainer (SST-2)", ["finetune_vs_trainer.py"], ["--examples", "256", "--seeds", "1"]),
    ("Sentence embeddings vs sentence-transformers", ["embed_speed.py"], ["--rounds", "1"]),
    ("Data preparation", ["prepare_speed.py"], ["--gigabytes", "0.05"]),
    ("Step memory, base", ["step_memory.py"], ["--seq-lens", "128", "--precisions", "bf16"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated numbers (1-based) of the suite's entries to run")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "suite.md"))
    args = parser.parse_args()
    chosen = {int(i) for i in args.only.split(",")} if args.only else set(range(1, len(SUITE) + 1))
    import torch

    sections = [f"# bertkit benchmark suite\n\n{platform.platform()}, Python {platform.python_version()}, "
                f"torch {torch.__version__}; `{' '.join(sys.argv)}`\n"]
    for number, (title, command, quick) in enumerate(SUITE, 1):
        if number not in chosen:
            continue
        argv = [sys.executable, os.path.join(HERE, command[0]), *command[1:], *(quick if args.quick else [])]
        print(f"== {number}. {title}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
        minutes = (time.perf_counter() - start) / 60
        print(proc.stdout, flush=True)
        status = "" if proc.returncode == 0 else f" (FAILED, exit {proc.returncode})"
        shown = " ".join(os.path.relpath(c) if os.path.isabs(c) else c for c in command)
        sections.append(f"## {number}. {title}{status}\n\n`python benchmarks/{shown}` "
                        f"({minutes:.1f} min)\n{proc.stdout}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
