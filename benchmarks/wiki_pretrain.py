"""Pre-training on real Wikipedia, bertkit vs `transformers.BertForPreTraining`, on the same wall-clock budget.

    python benchmarks/wiki_pretrain.py [--minutes 15] [--work /tmp/bertkit-wiki] [--corpus ../shared/data/corpus/...]

1. `bertkit vocab` learns a 30,522-token uncased WordPiece vocabulary from the WikiExtractor files;
   `bertkit prepare --format wikiextractor` makes the shards (1% of the documents held out).
2. `bertkit pretrain` trains a `mini` BERT (L4/H256/A4) with MLM + NSP, seq 128, batch 32, bf16, for
   `--minutes` of wall-clock time (`--max-minutes`).
3. transformers' BertForPreTraining starts from the same initial weights (bertkit's seeded init, saved and
   loaded into transformers) and trains on exactly the same samples (bertkit's NSP pairs and 80/10/10 masks,
   in the same order), with the same optimizer, schedule, clipping and bf16 autocast, for the same minutes.
4. Both final models are evaluated by the same code (transformers' forward on bertkit's saved directory and
   on the transformers model) on the same held-out samples: MLM accuracy at the chosen positions, NSP accuracy.

Prints a markdown table and writes JSON and a PNG of both loss curves to the work directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CORPUS = os.path.join(HERE, "..", "..", "shared", "data", "corpus", "enwiki-wikiextractor")
LR, WARMUP, BATCH, SEQ, PLANNED_STEPS, SEED = 5e-4, 0.05, 32, 128, 2000, 0


def bertkit(*args: str) -> None:
    cmd = [sys.executable, "-m", "bertkit", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


@torch.no_grad()
def evaluate_hf(model, dataset, n: int) -> dict:
    """Held-out MLM accuracy (chosen positions) and NSP accuracy of a transformers BertForPreTraining."""
    from bertkit.data.pretraining import collate

    model.eval()
    dataset.set_epoch(0)
    mlm_ok = mlm_n = nsp_ok = nsp_n = 0
    for start in range(0, n, 64):
        batch = collate([dataset[i] for i in range(start, min(n, start + 64))], dataset.pad_id)
        out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                    attention_mask=batch["attention_mask"])
        chosen = batch["labels"] != -100
        mlm_ok += (out.prediction_logits[chosen].argmax(-1) == batch["labels"][chosen]).sum().item()
        mlm_n += chosen.sum().item()
        nsp_ok += (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()
        nsp_n += len(batch["next_sentence_label"])
    return {"mlm_accuracy": mlm_ok / mlm_n, "nsp_accuracy": nsp_ok / nsp_n, "eval_samples": n}


def train_hf(data_dir: str, minutes: float, log_path: str):
    """transformers' model on bertkit's exact sample stream, schedule and optimizer, for `minutes`."""
    import transformers

    from bertkit.data.pretraining import PreparedCorpus, PretrainingDataset, collate
    from bertkit.model import BertForPreTraining
    from bertkit.tokenizer import Tokenizer
    from bertkit.config import preset
    from bertkit.train.optim import build_optimizer, set_lr, warmup_linear
    from bertkit.train.pretrain import epoch_order

    tokenizer = Tokenizer.from_pretrained(os.path.join(data_dir, "tokenizer"))
    config = preset("mini", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(SEED)  # bertkit's pretrain seeds its initial weights the same way
    init = BertForPreTraining(config)
    with tempfile.TemporaryDirectory() as tmp:
        init.save_pretrained(tmp)
        model = transformers.BertForPreTraining.from_pretrained(tmp)
    model.train()
    optimizer = build_optimizer(model, LR, 0.01)
    train = PretrainingDataset.from_tokenizer(PreparedCorpus([data_dir], "train"), tokenizer, seq_len=SEQ, seed=SEED)
    epoch, offset, step = 0, 0, 0
    train.set_epoch(epoch)
    order = epoch_order(len(train), SEED, epoch)
    started = time.perf_counter()
    tokens = 0
    with open(log_path, "w") as log:
        while time.perf_counter() - started < 60 * minutes:
            batch = collate([train[int(i)] for i in order[offset:offset + BATCH]], train.pad_id)
            set_lr(optimizer, LR * warmup_linear(step, round(WARMUP * PLANNED_STEPS), PLANNED_STEPS))
            torch.manual_seed(SEED * 1_000_003 + step * 1009)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(**batch)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += int(batch["attention_mask"].sum())
            offset += BATCH
            if offset + BATCH > len(train):
                epoch, offset = epoch + 1, 0
                train.set_epoch(epoch)
                order = epoch_order(len(train), SEED, epoch)
            if step % 25 == 0:
                log.write(json.dumps({"step": step, "loss": out.loss.item(),
                                      "elapsed_s": time.perf_counter() - started}) + "\n")
                log.flush()
    return model, step, tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bertkit-wiki"))
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--eval-samples", type=int, default=2000)
    args = parser.parse_args()
    import transformers

    from bertkit.data.pretraining import PreparedCorpus, PretrainingDataset
    from bertkit.tokenizer import Tokenizer

    if not os.path.isdir(args.corpus):
        sys.exit(f"no corpus at {args.corpus}: this benchmark needs ../shared/data")
    os.makedirs(args.work, exist_ok=True)
    tok, data, run = (os.path.join(args.work, name) for name in ("tokenizer", "data", "bertkit-run"))
    t0 = time.perf_counter()
    if not os.path.isdir(tok):
        bertkit("vocab", "--input", args.corpus, "--format", "wikiextractor", "--vocab-size", "30522", "--out", tok,
                "--quiet")
    vocab_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not os.path.isdir(data):
        bertkit("prepare", "--input", args.corpus, "--format", "wikiextractor", "--tokenizer", tok, "--out", data,
                "--workers", str(os.cpu_count()), "--validation-fraction", "0.01", "--quiet")
    prepare_s = time.perf_counter() - t0
    if not os.path.isdir(os.path.join(run, "model")):
        bertkit("pretrain", "--data", data, "--out", run, "--model-config", "mini", "--steps", str(PLANNED_STEPS),
                "--batch-size", str(BATCH), "--seq-len", str(SEQ), "--precision", "bf16", "--lr", str(LR),
                "--warmup", str(WARMUP), "--seed", str(SEED), "--max-minutes", str(args.minutes), "--log-every", "25",
                "--eval-every", "250", "--eval-samples", "500", "--save-every", "100000", "--device", "cpu",
                "--dropout", "0.1", "--quiet")  # dropout as the transformers model's config (pretrain's default is 0)
    hf_model, hf_steps, hf_tps = train_hf(data, args.minutes, os.path.join(args.work, "hf-metrics.jsonl"))

    tokenizer = Tokenizer.from_pretrained(os.path.join(data, "tokenizer"))
    held_out = PretrainingDataset.from_tokenizer(PreparedCorpus([data], "validation"), tokenizer, seq_len=SEQ,
                                                 seed=SEED)
    n = min(args.eval_samples, len(held_out))
    ours = transformers.BertForPreTraining.from_pretrained(os.path.join(run, "model"))
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    train_rows = [r for r in rows if r.get("split") != "validation"]
    result = {
        "minutes": args.minutes, "vocab_s": vocab_s, "prepare_s": prepare_s,
        "manifest": json.load(open(os.path.join(data, "manifest.json")))["splits"],
        "bertkit": {"steps": train_rows[-1]["step"],
                    "tokens_per_s": sum(r["tokens_per_s"] for r in train_rows) / len(train_rows),
                    **evaluate_hf(ours, held_out, n)},
        "transformers": {"steps": hf_steps, "tokens_per_s": hf_tps, **evaluate_hf(hf_model, held_out, n)},
    }
    json.dump(result, open(os.path.join(args.work, "result.json"), "w"), indent=2)
    print(f"\n{args.minutes:g} minutes each on {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"transformers {transformers.__version__}; mini (L4/H256/A4), vocab 30522, batch {BATCH} x {SEQ}, bf16")
    print(f"data: {result['manifest']}; vocab {vocab_s:.0f} s, prepare {prepare_s:.0f} s\n")
    print("| | steps | tokens/s | held-out MLM accuracy | held-out NSP accuracy |")
    print("|---|---:|---:|---:|---:|")
    for name in ("bertkit", "transformers"):
        r = result[name]
        print(f"| {name} | {r['steps']} | {r['tokens_per_s']:,.0f} | {r['mlm_accuracy']:.2%} | {r['nsp_accuracy']:.2%} |")
    plot(run, os.path.join(args.work, "hf-metrics.jsonl"), os.path.join(args.work, "wiki_pretrain.png"))


def plot(run: str, hf_log: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    theirs = [json.loads(line) for line in open(hf_log)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in ours if r.get("split") != "validation"],
            [r["loss"] for r in ours if r.get("split") != "validation"], label="bertkit (train)")
    ax.plot([r["step"] for r in theirs], [r["loss"] for r in theirs], label="transformers (train)")
    held = [r for r in ours if r.get("split") == "validation"]
    ax.plot([r["step"] for r in held], [r["loss"] for r in held], "o--", label="bertkit (held-out)")
    ax.set_xlabel("step")
    ax.set_ylabel("MLM + NSP loss")
    ax.set_title("mini BERT on Wikipedia, same wall-clock budget")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"curves: {out}")


if __name__ == "__main__":
    main()
