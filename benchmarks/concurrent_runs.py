"""Two bertkit runs at once on one machine: each one's speed against the same run alone.

    python benchmarks/concurrent_runs.py [--steps 120] [--variant "NAME::ENV;ENV" ...] [--json PATH]

Each variant runs `bertkit pretrain` (tiny, fp32, batch 8 x 64: the run of the issue that found a 60x
slowdown) once alone, then twice at the same time (the second started `--stagger` seconds after the first,
as a second job is), and reports the steps/s of each. Two processes sharing
the cores should each get about half the speed of one alone (slowdown about 2x); much worse means the
processes fight for the cores rather than share them (OpenMP threads spinning while they wait for a core
the other process holds).

Variants are environment settings for the two processes, e.g. `--variant "spinning::OMP_WAIT_POLICY=ACTIVE"`;
the default set compares bertkit as it ships with always-sleeping idle threads and with one thread each.
The steps/s of a run is the median of its logged windows after the first (which holds start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bertkit.device import machine_summary as machine_line

DEFAULT_VARIANTS = [
    "as shipped::",
    "idle threads always sleep (OMP_WAIT_POLICY=PASSIVE)::OMP_WAIT_POLICY=PASSIVE",
    "one thread each (--threads 1)::BERTKIT_BENCH_ARGS=--threads 1",
]


def bertkit(*args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "bertkit", *map(str, args)], env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def prepare_data(root: str) -> str:
    from bertkit.demo import python_docs_corpus

    corpus = os.path.join(root, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(python_docs_corpus(600_000))
    for args in (["vocab", "--input", corpus, "--vocab-size", 2000, "--out", os.path.join(root, "tok"), "--quiet"],
                 ["prepare", "--input", corpus, "--tokenizer", os.path.join(root, "tok"), "--out",
                  os.path.join(root, "data"), "--workers", 1, "--quiet"]):
        proc = bertkit(*args)
        if proc.wait() != 0:
            sys.exit(proc.stderr.read())
    return os.path.join(root, "data")


def steps_per_s(out: str, batch: int, seq: int) -> float:
    """Median steps/s over the logged windows after the first (the first holds the start-up)."""
    rates = []
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if "tokens_per_s" in row:
                rates.append(row["tokens_per_s"])
    tokens_per_step = batch * seq  # the demo corpus fills every sequence: measured tokens/s / this = steps/s
    return statistics.median(rates[1:] or rates) / tokens_per_step


def run(data: str, root: str, name: str, copies: int, steps: int, env: dict, extra: list[str],
        stagger: float) -> list[float]:
    outs = [os.path.join(root, f"{name}-{copies}-{i}") for i in range(copies)]
    procs = []
    for i, out in enumerate(outs):
        if i:
            time.sleep(stagger)  # the second run starts while the first is busy, as a user's second job does
        procs.append(bertkit("pretrain", "--data", data, "--out", out, "--model-config", "tiny", "--precision",
                             "fp32", "--batch-size", 8, "--seq-len", 64, "--steps", steps, "--log-every", 10,
                             "--eval-every", 10 ** 6, "--save-every", 10 ** 6, "--seed", i,
                             "--dropout", 0.1, "--quiet", *extra, env=env))  # dropout as in the recorded runs
    for proc in procs:
        if proc.wait() != 0:
            sys.exit(f"{name}: {proc.stderr.read()[-2000:]}")
    return [steps_per_s(out, 8, 64) for out in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--variant", action="append",
                        help="NAME::ENV;ENV (ENV as KEY=VALUE; BERTKIT_BENCH_ARGS holds extra pretrain arguments)")
    parser.add_argument("--stagger", type=float, default=3.0, help="seconds between the two starts")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        data = prepare_data(root)
        for spec in args.variant or DEFAULT_VARIANTS:
            name, _, settings = spec.partition("::")
            env = dict(kv.split("=", 1) for kv in settings.split(";") if kv)
            extra = env.pop("BERTKIT_BENCH_ARGS", "").split()
            slug = "".join(c if c.isalnum() else "-" for c in name)
            alone = run(data, root, slug, 1, args.steps, env, extra, 0)[0]
            time.sleep(2)
            together = run(data, root, slug, 2, args.steps, env, extra, args.stagger)
            rows.append({"variant": name, "env": env, "args": extra, "alone_steps_per_s": alone,
                         "together_steps_per_s": together,
                         "slowdown": alone / statistics.fmean(together)})
            time.sleep(2)
    print(f"\n{machine_line()}\n")
    print("| variant | alone, steps/s | two at once, steps/s each | slowdown (2x = a fair share) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['alone_steps_per_s']:.1f} | "
              f"{' / '.join(f'{x:.1f}' for x in r['together_steps_per_s'])} | {r['slowdown']:.1f}x |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": machine_line(), "steps": args.steps, "stagger_s": args.stagger, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
