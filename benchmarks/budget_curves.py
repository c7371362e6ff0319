"""Held-out MLM accuracy against wall-clock minutes: three ways to pre-train on the same data and the same budget.

    python benchmarks/budget_curves.py --data DATA --minutes 30 --work /tmp/budget-curves

DATA is a `bertkit prepare` directory (e.g. of ../shared/data/corpus/enwiki-wikiextractor, made by `bertkit vocab`
and `bertkit prepare --format wikiextractor`). The setups run one after another, never at once (on a small
machine two runs measure each other), each for --minutes:

- new: `bertkit pretrain --data DATA --out WORK/new --budget Mm --eval-every N --quiet`, no recipe flag: the
  budget's default preset (train/recipe.py: tiny up to 1 h) trained with that preset's recipe.
- new-tiny, new-mini, new-small, new-medium (the sweep, only when named in --only): the same with
  `--model-config PRESET`, so that preset trains with its own recipe for the same budget.
- old: the same command with the former defaults given explicitly: `--model-config mini --lr 1e-4 --warmup 0.01
  --betas 0.9 0.999 --eps 1e-6 --batch-size 32 --mask-rate 0.15 --dropout 0.1`. The dropout is the model
  config's 0.1, what pre-training used before `pretrain --budget` came in with dropout off (--old-dropout).
- transformers: `transformers.BertForMaskedLM` of the mini shape (L4/H256/A4, intermediate 1024, the data's
  vocabulary), its own initialisation and its config's dropout (0.1); AdamW lr 1e-3, weight decay 0.01 (not on
  biases and LayerNorm weights, as transformers' Trainer), betas 0.9/0.999, eps 1e-6; gradients clipped at 1.0
  (the Trainer's default); 100 warmup steps, then linear decay to 0 at the step planned for the budget (the
  first 2 + 10 training steps are timed, and the rest of the budget divided by the step time, as bertkit plans
  it); batch 32 x 128 tokens; bf16 autocast where bertkit's `auto` picks bf16 on the CPU, else fp32. It trains on
  bertkit's own sample stream: the same [CLS] A [SEP] B [SEP] pairs with segment ids as the held-out samples, 15%
  masked, 80/10/10; BertForMaskedLM has no NSP head, so the pairs' NSP labels are not used (MLM loss only).

Held-out MLM accuracy is measured on the same samples and masks for all three: the first --eval-samples samples of
the validation split as `bertkit pretrain` builds them for its default run (NSP pairs, seq 128, seed 0, token
masking at 15%, epoch 0): bertkit's own evaluation for new and old, `held_out_batches` + `evaluate_mlm` here for
transformers. The script checks that the two evaluations agree: it scores each finished bertkit model, loaded
into transformers.BertForMaskedLM, with `evaluate_mlm` and prints that next to bertkit's own final number.

The clocks: bertkit's time_s counts from the start of the command (building the run, the budget's timed steps,
held-out evaluations and checkpoints are all inside the budget); the transformers run's counts training steps
only (model and data setup and its held-out evaluations are not on its clock). Its loss panel is MLM only;
bertkit's is MLM + NSP. Without --eval-every, each bertkit setup's is chosen from a few
timed steps and held-out batches of its model before it starts, for about 12 held-out points over its budget.

Writes WORK/<setup>/metrics.jsonl (bertkit's format; WORK/transformers/ in the same format), WORK/budget_curves.png
(`bertkit.plot.plot_runs`, minutes on the x axis, held-out points as markers) and WORK/budget_curves.md (the
machine, the budget, the data, and per setup: preset, steps, tokens/s and held-out MLM accuracy at each --marks
minute, i.e. the last held-out point at or before it, and the final one). A finished setup (WORK/<setup>/model
with matching settings) is reused; an unfinished bertkit run is continued with `--resume`; an unfinished
transformers run starts over. A 30-minute budget takes about 1 h 35 min in all (3 x 30 min, the transformers
run's evaluations, which are off its clock, a few timed steps before each bertkit run, and the cross-checks).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

NEW, OLD, HF = "new", "old", "transformers"
# The sweep: the new recipe with the preset forced (new-mini: `--model-config mini`, that preset's recipe)
SWEEP = tuple(f"{NEW}-{name}" for name in ("tiny", "mini", "small", "medium"))
SETUPS = (NEW, *SWEEP, OLD, HF)
LABELS = {NEW: "bertkit, new recipe", OLD: "bertkit, old defaults", HF: "transformers",
          **{name: f"bertkit, new recipe, {name[len(NEW) + 1:]}" for name in SWEEP}}
# `bertkit pretrain`'s defaults before the per-preset recipe (commit 6ad2d98), and the dropout before 84f017d
OLD_DEFAULTS = {"model_config": "mini", "lr": 1e-4, "warmup": 0.01, "betas": (0.9, 0.999), "eps": 1e-6,
                "batch_size": 32, "mask_rate": 0.15, "dropout": 0.1}
POINTS = 12  # held-out evaluations over a budget, when --eval-every is not given
# bertkit's validation samples for its default run (pretrain.build): the defaults of PretrainConfig
SEQ_LEN, SEED, OBJECTIVE, MASKING = 128, 0, "nsp", "token"
# the transformers run
HF_PRESET, HF_LR, HF_WEIGHT_DECAY, HF_BETAS, HF_EPS = "mini", 1e-3, 0.01, (0.9, 0.999), 1e-6
HF_WARMUP_STEPS, HF_BATCH, HF_MAX_GRAD_NORM, HF_OBJECTIVE, HF_MASK_RATE = 100, 32, 1.0, "nsp", 0.15
MEASURE_WARMUP, MEASURE_STEPS = 5, 100  # untimed, then timed steps before the plan (median), as bertkit's measure_budget
LOG_EVERY = 10  # training lines, as bertkit's default --log-every


class Failure(Exception):
    """Something the user can fix: printed as one line, exit status 2."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a `bertkit prepare` directory (with a validation split)")
    p.add_argument("--minutes", type=float, default=30.0, help="the wall-clock budget of each setup (default: 30)")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "budget-curves"),
                   help="the runs, the plot and the table (default: %(default)s)")
    p.add_argument("--only", default=",".join((NEW, OLD, HF)),
                   help=f"comma-separated subset of {','.join(SETUPS)} (default: {NEW},{OLD},{HF}; "
                   "new-PRESET is the sweep: the new recipe with --model-config PRESET)")
    p.add_argument("--eval-samples", type=int, default=1024,
                   help="held-out samples (default: 1024, bertkit pretrain's)")
    p.add_argument("--eval-every", type=int, default=None,
                   help=f"steps between held-out evaluations, the same for every setup (default: about {POINTS} "
                        "evaluations over each setup's budget, from a few timed steps of it)")
    p.add_argument("--marks", default=None, help="minutes to read the curves at, e.g. 5,15,30 (default: a sixth, "
                                                 "half and all of --minutes)")
    p.add_argument("--old-dropout", type=float, default=OLD_DEFAULTS["dropout"],
                   help="the old defaults' dropout while pre-training (default: 0.1; 0 is today's default)")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SETUPS]
    if unknown or not args.only:
        p.error(f"--only {','.join(args.only)}: choose from {', '.join(SETUPS)}")
    args.only = [s for s in SETUPS if s in args.only]  # always in the same order
    if not args.minutes > 0 or args.eval_samples < 1 or (args.eval_every is not None and args.eval_every < 1):
        p.error("--minutes, --eval-samples and --eval-every must be positive")
    try:
        args.marks = ([float(m) for m in args.marks.split(",")] if args.marks else
                      sorted({round(args.minutes / 6, 2), round(args.minutes / 2, 2), args.minutes}))
    except ValueError:
        p.error(f"--marks {args.marks}: comma-separated minutes, e.g. 5,15,30")
    args.data = os.path.abspath(args.data)
    args.work = os.path.abspath(args.work)
    return args


def budget_text(minutes: float) -> str:
    return f"{minutes:g}m"


def setup_overrides(name: str, old_dropout: float = OLD_DEFAULTS["dropout"]) -> dict:
    """PretrainConfig fields a bertkit setup sets (new: none, so the recipe fills them in; new-PRESET: the preset)."""
    if name in SWEEP:
        return {"model_config": name[len(NEW) + 1:]}
    return {} if name == NEW else {**OLD_DEFAULTS, "dropout": old_dropout}


def as_flags(overrides: dict) -> list[str]:
    flags = []
    for field, value in overrides.items():
        flags.append("--" + field.replace("_", "-"))
        flags += [f"{v:g}" for v in value] if isinstance(value, tuple) else [f"{value:g}" if isinstance(value, float)
                                                                             else str(value)]
    return flags


def pretrain_command(data: str, out: str, minutes: float, overrides: dict, eval_every: int, eval_samples: int,
                     resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "bertkit", "pretrain", "--data", data, "--out", out, "--budget", budget_text(minutes),
           *as_flags(overrides), "--eval-every", str(eval_every), "--quiet"]
    if eval_samples != 1024:  # bertkit's default
        cmd += ["--eval-samples", str(eval_samples)]
    return cmd + (["--resume"] if resume else [])


# ---- the held-out evaluation (the same samples, masks and measure as bertkit pretrain's) ----

def held_out_batches(data_dirs: list[str], eval_samples: int = 1024, batch_size: int = 32, seq_len: int = SEQ_LEN,
                     seed: int = SEED, objective: str = OBJECTIVE, masking: str = MASKING) -> list[dict]:
    """The batches `bertkit pretrain` evaluates on (pretrain.build's validation set, pretrain.evaluate's loop):
    the validation split's PretrainingDataset with the run's seq_len, objective, masking and seed, the paper's 15%
    mask rate whatever the run trains with, the first eval_samples samples of epoch 0, collated batch by batch."""
    from bertkit.data.pretraining import MASK_PROB, PreparedCorpus, PretrainingDataset, collate
    from bertkit.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(os.path.join(data_dirs[0], "tokenizer"))
    corpus = PreparedCorpus(data_dirs, "validation")
    if corpus.num_documents < (2 if objective == "nsp" else 1):
        raise Failure(f"{', '.join(data_dirs)}: {corpus.num_documents} validation documents, too few for held-out "
                      "samples (bertkit pretrain would not evaluate either); prepare with a larger "
                      "--validation-fraction")
    dataset = PretrainingDataset.from_tokenizer(corpus, tokenizer, seq_len=seq_len, objective=objective,
                                                masking=masking, mask_rate=MASK_PROB, max_predictions=None, seed=seed)
    dataset.set_epoch(0)
    n = min(len(dataset), eval_samples)
    return [collate([dataset[i] for i in range(start, min(n, start + batch_size))], dataset.pad_id)
            for start in range(0, n, batch_size)]


def evaluate_mlm(model, batches: list[dict], autocast=None) -> dict:
    """MLM loss and accuracy of a transformers masked-LM model (anything whose output has .logits (B, T, V)) over
    the masked positions (labels != -100) of all batches, pooled over positions as bertkit's evaluate pools
    them. The model sees input_ids, token_type_ids and attention_mask only; its train/eval mode is restored."""
    import torch
    import torch.nn.functional as F

    from bertkit.model import IGNORE_INDEX

    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    try:
        with torch.no_grad():
            for batch in batches:
                with autocast if autocast is not None else contextlib.nullcontext():
                    logits = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                   attention_mask=batch["attention_mask"]).logits
                chosen = batch["labels"] != IGNORE_INDEX
                picked, targets = logits[chosen].float(), batch["labels"][chosen]
                loss_sum += F.cross_entropy(picked, targets, reduction="sum").item()
                correct += (picked.argmax(-1) == targets).sum().item()
                count += targets.numel()
    finally:
        model.train(was_training)
    return {"mlm_loss": loss_sum / max(1, count), "mlm_accuracy": correct / max(1, count)}


# ---- the bertkit setups ----

def estimate_steps(data: str, minutes: float, overrides: dict, batches: list[dict], steps: int = 5) -> dict:
    """How many steps a bertkit setup's --budget run will plan here, roughly: the model, batch and precision its run
    will have, timed over a few steps (after two untimed ones) and a few held-out batches, with what the run spends
    besides (building it, its 2 + 10 timed steps, about POINTS evaluations). Only to choose --eval-every."""
    import torch

    from bertkit.data.pretraining import collate
    from bertkit.device import resolve_precision
    from bertkit.train.optim import build_optimizer
    from bertkit.train.pretrain import PretrainConfig, build
    from bertkit.train.recipe import apply_recipe

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as unused:
        cfg, _ = apply_recipe(PretrainConfig(data=[data], out=unused, budget=budget_text(minutes), **overrides))
        model, _, train, _ = build(cfg)
    build_s = time.perf_counter() - started
    device = torch.device("cpu")
    autocast = resolve_precision(cfg.precision, device, announce=False).autocast(device)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, eps=cfg.eps, betas=tuple(cfg.betas))
    model.train()
    times = []
    for k in range(2 + steps):
        tick = time.perf_counter()
        indices = [(k * cfg.batch_size + i) % len(train) for i in range(cfg.batch_size)]
        batch = collate([train[i] for i in indices], train.pad_id)
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tick)
    step_s = sum(times[2:]) / steps
    model.eval()
    tick = time.perf_counter()
    with torch.no_grad(), autocast:
        for batch in batches[:3]:
            model(**batch)
    eval_s = (time.perf_counter() - tick) / min(3, len(batches)) * len(batches)
    left = 60 * minutes - build_s - (2 + 10) * step_s - POINTS * eval_s
    return {"preset": cfg.model_config, "step_s": step_s, "eval_s": eval_s, "steps": max(1, math.floor(left / step_s))}


def check_reuse(run_json: dict, expected: dict, where: str) -> None:
    """A run found in WORK must have been made with this command's settings."""
    from bertkit.train.budget import parse_duration

    changed = []
    for key, want in expected.items():
        have = run_json.get(key)
        same = (parse_duration(have) == parse_duration(want) if key == "budget" and have else
                list(have) == list(want) if isinstance(want, (list, tuple)) and have is not None else have == want)
        if not same:
            changed.append(f"{key} {have!r} (now {want!r})")
    if changed:
        raise Failure(f"{where} was made with other settings: {'; '.join(changed)}; choose another --work or delete it")


def run_bertkit(name: str, args: argparse.Namespace, batches: list[dict]) -> None:
    out = os.path.join(args.work, name)
    overrides = setup_overrides(name, args.old_dropout)
    run_json = os.path.join(out, "run.json")
    expected = {"budget": budget_text(args.minutes), "data": [args.data], "eval_samples": args.eval_samples,
                **overrides}
    if os.path.isfile(run_json):
        check_reuse(json.load(open(run_json)), expected, out)
    if os.path.isdir(os.path.join(out, "model")):
        print(f"[{name}] {out}/model exists: reusing the finished run", flush=True)
        return
    resume = os.path.isdir(out) and bool(os.listdir(out))
    if resume and os.path.isfile(run_json):
        eval_every = json.load(open(run_json))["eval_every"]
    elif args.eval_every:
        eval_every = args.eval_every
    else:
        guess = estimate_steps(args.data, args.minutes, overrides, batches)
        eval_every = max(1, round(guess["steps"] / POINTS))
        print(f"[{name}] {guess['preset']}: ~{guess['step_s']:.3g} s/step and ~{guess['eval_s']:.3g} s per held-out "
              f"evaluation here -> about {guess['steps']:,} steps in {args.minutes:g} min; held-out evaluation every "
              f"{eval_every} steps", flush=True)
    cmd = pretrain_command(args.data, out, args.minutes, overrides, eval_every, args.eval_samples, resume)
    if resume:
        print(f"[{name}] {out} holds an unfinished run: continuing it (--resume)", flush=True)
    print(f"[{name}] $ {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    with open(os.path.join(args.work, f"{name}.log"), "a", encoding="utf-8") as log:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            for line in process.stdout:
                print(f"[{name}] {line}", end="", flush=True)
                log.write(line)
        except KeyboardInterrupt:  # Ctrl-C reached bertkit too: it saves a checkpoint to resume from
            log.write(process.stdout.read())
            process.wait()
            raise
        status = process.wait()
    if status != 0:
        raise Failure(f"[{name}] bertkit pretrain exited with status {status} (log: {args.work}/{name}.log); "
                      "rerun the same command to continue it")
    print(f"[{name}] done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)


# ---- the transformers setup ----

def hf_settings(args: argparse.Namespace) -> dict:
    return {"budget": budget_text(args.minutes), "data": [args.data], "eval_samples": args.eval_samples,
            "preset": HF_PRESET, "lr": HF_LR, "weight_decay": HF_WEIGHT_DECAY, "betas": list(HF_BETAS), "eps": HF_EPS,
            "warmup_steps": HF_WARMUP_STEPS, "batch_size": HF_BATCH, "seq_len": SEQ_LEN, "objective": HF_OBJECTIVE,
            "mask_rate": HF_MASK_RATE, "max_grad_norm": HF_MAX_GRAD_NORM, "seed": SEED}


def run_transformers(args: argparse.Namespace, batches: list[dict]) -> None:
    """BertForMaskedLM on bertkit's sample stream for the budget; WORK/transformers/metrics.jsonl in bertkit's
    format, run.json (the settings, the plan and the final evaluation) and model/ at the end."""
    import torch
    import transformers

    from bertkit.config import preset
    from bertkit.data.pretraining import PreparedCorpus, PretrainingDataset, collate
    from bertkit.device import resolve_precision
    from bertkit.model import IGNORE_INDEX
    from bertkit.tokenizer import Tokenizer
    from bertkit.train.optim import build_optimizer, set_lr, warmup_linear
    from bertkit.train.pretrain import epoch_order

    out = os.path.join(args.work, HF)
    settings = hf_settings(args)
    run_json = os.path.join(out, "run.json")
    if os.path.isfile(run_json):
        done = json.load(open(run_json))
        check_reuse(done, settings, out)
        if done.get("final") is not None and os.path.isdir(os.path.join(out, "model")):
            print(f"[{HF}] {out} holds a finished run: reusing it", flush=True)
            return
    if os.path.isdir(out):
        print(f"[{HF}] {out} holds an unfinished run: starting it over", flush=True)
        shutil.rmtree(out)
    os.makedirs(out)

    device = torch.device("cpu")
    precision = resolve_precision("auto", device, announce=False)
    tokenizer = Tokenizer.from_pretrained(os.path.join(args.data, "tokenizer"))
    shape = preset(HF_PRESET)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads, intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings, type_vocab_size=shape.type_vocab_size,
        pad_token_id=tokenizer.pad_token_id)  # dropout, activation, LayerNorm epsilon: the transformers defaults
    torch.manual_seed(SEED)
    model = transformers.BertForMaskedLM(config)
    model.train()
    optimizer = build_optimizer(model, HF_LR, HF_WEIGHT_DECAY, eps=HF_EPS, betas=HF_BETAS)
    train = PretrainingDataset.from_tokenizer(PreparedCorpus([args.data], "train"), tokenizer, seq_len=SEQ_LEN,
                                              objective=HF_OBJECTIVE, mask_rate=HF_MASK_RATE, seed=SEED)
    if len(train) < HF_BATCH:
        raise Failure(f"{args.data}: {len(train)} training samples, fewer than one batch ({HF_BATCH})")
    budget_s = 60 * args.minutes
    print(f"[{HF}] BertForMaskedLM {HF_PRESET} shape, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{precision.describe()}; {len(train):,} training pairs", flush=True)

    metrics = open(os.path.join(out, "metrics.jsonl"), "w", encoding="utf-8")

    def write(line: dict) -> None:
        metrics.write(json.dumps(line) + "\n")
        metrics.flush()

    step, epoch, offset = 0, 0, 0
    train.set_epoch(epoch)
    order = epoch_order(len(train), SEED, epoch)
    planned, warmup, eval_every = None, HF_WARMUP_STEPS, args.eval_every
    step_times, last_eval, out_of_time = [], None, False
    window = dict(loss=0.0, correct=0, count=0, tokens=0)
    paused = 0.0  # held-out evaluation: off the training clock
    t0 = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - t0 - paused

    window_start = clock()
    try:
        while planned is None or step < planned:
            tick = time.perf_counter()
            batch = collate([train[int(i)] for i in order[offset:offset + HF_BATCH]], train.pad_id)
            lr = HF_LR * warmup_linear(step, warmup, planned or sys.maxsize)  # warmup does not depend on the total
            set_lr(optimizer, lr)
            torch.manual_seed(SEED * 1_000_003 + step * 1009)  # dropout, as bertkit seeds it
            with precision.autocast(device):
                result = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                               attention_mask=batch["attention_mask"], labels=batch["labels"])
            result.loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), HF_MAX_GRAD_NORM)
            if torch.isfinite(norm):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                chosen = batch["labels"] != IGNORE_INDEX
                count = int(chosen.sum())
                window["loss"] += result.loss.item() * count
                window["correct"] += int((result.logits[chosen].argmax(-1) == batch["labels"][chosen]).sum())
                window["count"] += count
                window["tokens"] += int(batch["attention_mask"].sum())
            step += 1
            offset += HF_BATCH
            if offset + HF_BATCH > len(train):  # next epoch: new masks, new order
                epoch, offset = epoch + 1, 0
                train.set_epoch(epoch)
                order = epoch_order(len(train), SEED, epoch)
            step_times.append(time.perf_counter() - tick)
            if planned is None and len(step_times) == MEASURE_WARMUP + MEASURE_STEPS:
                step_s = statistics.median(step_times[MEASURE_WARMUP:])
                planned = max(step, step + math.floor((budget_s - clock()) / step_s))
                if planned < 2 * HF_WARMUP_STEPS:  # a budget of a few hundred steps: a tenth of them
                    warmup = max(1, planned // 10)
                eval_every = eval_every or max(1, round(planned / POINTS))
                print(f"[{HF}] {step_s:.3g} s/step measured over {MEASURE_STEPS} steps -> {planned:,} steps, lr "
                      f"decays to 0 at step {planned:,} (warmup {warmup}); held-out evaluation every {eval_every} "
                      "steps", flush=True)
            if clock() > budget_s and (planned is None or step < planned):
                out_of_time = True
                print(f"[{HF}] time is up after step {step:,} of the planned {planned or 0:,}", flush=True)
            last = out_of_time or step == planned
            if step % LOG_EVERY == 0 or last:
                now = clock()
                write({"step": step, "loss": window["loss"] / max(1, window["count"]),
                       "mlm_loss": window["loss"] / max(1, window["count"]),
                       "mlm_accuracy": window["correct"] / max(1, window["count"]), "lr": lr,
                       "tokens_per_s": window["tokens"] / max(1e-9, now - window_start), "epoch": epoch,
                       "precision": precision.name, "time_s": now})
                window = dict.fromkeys(window, 0)
                window_start = now
            if (eval_every and step % eval_every == 0) or last:
                stamp, eval_started = clock(), time.perf_counter()  # stamped with the training time so far
                held = evaluate_mlm(model, batches, precision.autocast(device))
                last_eval = {"step": step, "split": "validation", **held, "loss": held["mlm_loss"],
                             "time_s": stamp}
                write(last_eval)
                print(f"[{HF}] step {step}: held-out mlm_accuracy {last_eval['mlm_accuracy']:.4f}, mlm_loss "
                      f"{last_eval['mlm_loss']:.4f} ({last_eval['time_s'] / 60:.1f} min)", flush=True)
                paused += time.perf_counter() - eval_started
            if last:
                break
    finally:
        metrics.close()
    model.save_pretrained(os.path.join(out, "model"))
    with open(run_json, "w", encoding="utf-8") as f:
        json.dump({**settings, "planned_steps": planned, "steps": step, "warmup_steps_used": warmup,
                   "eval_every": eval_every, "precision_used": precision.name, "final": last_eval,
                   "transformers": transformers.__version__}, f, indent=2)


# ---- the table ----

def summarize(run_dir: str) -> dict:
    from bertkit.plot import read_metrics

    rows = read_metrics(run_dir)
    train = [r for r in rows if r.get("split") is None]
    held = [(r["time_s"] / 60, r["mlm_accuracy"]) for r in rows if r.get("split") == "validation"]
    rates = [r["tokens_per_s"] for r in train if r.get("tokens_per_s")]
    run = json.load(open(os.path.join(run_dir, "run.json")))
    return {"steps": train[-1]["step"] if train else 0, "planned": run.get("planned_steps"),
            "tokens_per_s": sum(rates) / len(rates) if rates else float("nan"), "held": held,
            "preset": run.get("model_config") or run.get("preset")}


def accuracy_at(held: list[tuple[float, float]], minute: float) -> tuple[float, float] | None:
    """The last held-out point (minutes, accuracy) at or before `minute`."""
    before = [point for point in held if point[0] <= minute + 1e-9]
    return before[-1] if before else None


def table(summaries: dict, marks: list[float]) -> str:
    lines = ["| setup | preset | steps | tokens/s | " + " | ".join(f"{m:g} min" for m in marks) + " | final |",
             "|---|---|---:|---:|" + "---:|" * (len(marks) + 1)]
    for name, s in summaries.items():
        cells = []
        for m in marks:
            point = accuracy_at(s["held"], m)
            cells.append(f"{point[1]:.2%}" if point else "—")
        final = s["held"][-1] if s["held"] else None
        cells.append(f"{final[1]:.2%} ({final[0]:.1f} min)" if final else "—")
        steps = f"{s['steps']:,}" + (f" of {s['planned']:,}" if s["planned"] and s["planned"] != s["steps"] else "")
        lines.append(f"| {LABELS[name]} | {s['preset']} | {steps} | {s['tokens_per_s']:,.0f} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def cross_check(run_dir: str, batches: list[dict]) -> str | None:
    """bertkit's own final held-out MLM accuracy of a finished run next to evaluate_mlm's on the same model."""
    import torch
    import transformers

    from bertkit.device import resolve_precision
    from bertkit.plot import read_metrics

    held = [r for r in read_metrics(run_dir) if r.get("split") == "validation"]
    if not held or not os.path.isdir(os.path.join(run_dir, "model")):
        return None
    model = transformers.BertForMaskedLM.from_pretrained(os.path.join(run_dir, "model"))
    device = torch.device("cpu")
    ours = evaluate_mlm(model, batches, resolve_precision("auto", device, announce=False).autocast(device))
    return (f"{os.path.basename(run_dir)}: bertkit's final held-out MLM accuracy {held[-1]['mlm_accuracy']:.2%} "
            f"(loss {held[-1]['mlm_loss']:.4f}); this script's evaluation of its model in transformers "
            f"{ours['mlm_accuracy']:.2%} (loss {ours['mlm_loss']:.4f})")


def report(args: argparse.Namespace, batches: list[dict]) -> str:
    from bertkit.device import machine_summary
    from bertkit.plot import plot_runs

    dirs = [os.path.join(args.work, name) for name in args.only]
    png = plot_runs(dirs, os.path.join(args.work, "budget_curves.png"), x="minutes",
                    labels=[LABELS[name] for name in args.only])
    summaries = {name: summarize(d) for name, d in zip(args.only, dirs)}
    manifest = json.load(open(os.path.join(args.data, "manifest.json")))
    splits = "; ".join(f"{split}: {s['documents']:,} documents, {s['tokens']:,} tokens"
                       for split, s in manifest["splits"].items())
    n_held = sum(len(b["input_ids"]) for b in batches)
    commands = []
    for name in args.only:
        if name == HF:
            commands.append(f"- {LABELS[HF]}: BertForMaskedLM ({HF_PRESET} shape), AdamW lr {HF_LR:g}, betas "
                            f"{HF_BETAS[0]:g}/{HF_BETAS[1]:g}, eps {HF_EPS:g}, weight decay {HF_WEIGHT_DECAY:g}, "
                            f"{HF_WARMUP_STEPS} warmup steps then linear decay to 0 at the planned step, batch "
                            f"{HF_BATCH} x {SEQ_LEN}, dropout 0.1, MLM only on bertkit's {HF_OBJECTIVE} pairs, this script")
        else:
            run = json.load(open(os.path.join(args.work, name, "run.json")))
            cmd = pretrain_command(args.data, os.path.join(args.work, name), args.minutes, setup_overrides(
                name, args.old_dropout), run["eval_every"], args.eval_samples)
            commands.append(f"- {LABELS[name]}: `bertkit {' '.join(cmd[3:])}` (trained: {run['model_config']}, lr "
                            f"{run['lr']:g}, warmup {run['warmup']:g}, betas "
                            f"{' '.join(f'{b:g}' for b in run['betas'])}, "
                            f"eps {run['eps']:g}, batch {run['batch_size']}, mask rate {run['mask_rate']:g}, dropout "
                            f"{run['dropout']:g}, {run['precision_used']})")
    checks = [c for name in args.only if name != HF
              for c in [cross_check(os.path.join(args.work, name), batches)] if c]
    text = "\n".join([
        f"# Held-out MLM accuracy against wall-clock minutes, {args.minutes:g} minutes each", "",
        machine_summary(), "",
        f"Budget: {args.minutes:g} min per setup, one setup at a time. Data: {args.data} ({splits}). Held-out: the "
        f"first {n_held:,} validation samples as bertkit pretrain evaluates them (NSP pairs, seq {SEQ_LEN}, 15% "
        "masked, seed 0, epoch 0), the same samples and masks for every setup.", "",
        *commands, "",
        table(summaries, args.marks), "",
        "Held-out MLM accuracy at each mark: the last held-out point at or before it. bertkit's minutes count "
        "everything since the command started (building the run, the budget's timed steps, held-out evaluations "
        "and checkpoints); transformers' count training steps only. tokens/s: the mean of the logged windows "
        "(training only). The loss panel is MLM + NSP for bertkit, MLM alone for transformers. The transformers model "
        "trains on the same kind of NSP pairs (segment ids 0/1) as it is scored on, with the MLM loss only.", "",
        *(["Evaluation cross-check (the same model, both evaluations):", "", *[f"- {c}" for c in checks], ""]
          if checks else []),
        f"![curves]({os.path.basename(png)})", ""])
    with open(os.path.join(args.work, "budget_curves.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()  # the load report of a bertkit model's unused NSP head and pooler
    transformers.utils.logging.disable_progress_bar()
    try:
        from bertkit.data.prepare import load_manifest
        from bertkit.errors import BertkitError

        try:
            load_manifest(args.data)
        except BertkitError as e:
            raise Failure(f"--data {args.data}: {e}") from None
        os.makedirs(args.work, exist_ok=True)
        batches = held_out_batches([args.data], args.eval_samples)
        started = time.perf_counter()
        for name in args.only:
            if name == HF:
                run_transformers(args, batches)
            else:
                run_bertkit(name, args, batches)
        print(f"\nthe runs took {(time.perf_counter() - started) / 60:.1f} min\n")
        print(report(args, batches))
        print(f"plot: {os.path.join(args.work, 'budget_curves.png')}\n"
              f"table: {os.path.join(args.work, 'budget_curves.md')}")
    except Failure as e:
        print(f"budget_curves: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("budget_curves: interrupted; the same command continues (finished setups are reused, an unfinished "
              "bertkit run resumes from its last checkpoint, an unfinished transformers run starts over)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
