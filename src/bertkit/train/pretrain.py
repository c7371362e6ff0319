"""The pre-training loop: MLM + NSP on prepared data, resumable, single process or torchrun DDP.

One optimizer step: for each micro-batch, forward under autocast and backward (gradients summed locally
and, under DDP, averaged over ranks on the last one); clip; skip the step if the gradient is not finite;
AdamW step with the warmup/decay learning rate; log; maybe evaluate; maybe save.

Determinism, which makes resume exact and the rank layout irrelevant: the sample order of an epoch is a
permutation seeded by (seed, epoch); micro-batch j of step s takes the j-th slice of the step's samples,
rank r takes micro-batches j = a * world + r; dropout is seeded by (seed, step, j). One process with
accumulation 2 and two processes with accumulation 1 therefore see the same samples and the same dropout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from bertkit.config import BertConfig, preset
from bertkit.device import PRECISIONS, Precision, oversubscription_note, resolve_precision, to_device
from bertkit.errors import BertkitError, Interrupted
from bertkit.files import atomic_write_json, check_output_dir
from bertkit.model import BertForPreTraining
from bertkit.train import distributed
from bertkit.train.metrics_log import MetricsLog, require_tensorboard, truncate_metrics
from bertkit.train.optim import build_optimizer, set_lr, warmup_linear
from bertkit.train.state import StopRequest, complete_checkpoints, load_checkpoint, save_checkpoint


@dataclass
class PretrainConfig:
    data: list[str]
    out: str
    model_config: str = "mini"  # a preset name or a config.json path
    init: str | None = None  # a model directory to continue from (phase 2 at a longer --seq-len)
    steps: int = 1000
    batch_size: int = 32  # per process and micro-batch
    grad_accum: int = 1
    lr: float = 1e-4  # the paper's peak learning rate for BERT-base
    warmup: float = 0.01  # fraction of the steps (the paper: 10k of 1M)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seq_len: int = 128
    objective: str = "nsp"
    masking: str = "token"
    max_predictions: int | None = None  # default round(0.15 * seq_len)
    precision: str = "auto"  # bf16 where the hardware runs it natively, else fp32 (device.py)
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200
    eval_samples: int = 1024
    save_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = False
    compile: bool = False
    tensorboard: bool = False
    device: str | None = None
    max_minutes: float | None = None  # a wall-clock budget: finish (evaluate, save) when it is spent
    stop_at: int | None = None  # save and stop after this step, as if interrupted (resume with --resume)
    max_bad_steps: int = 10  # stop after this many consecutive non-finite steps
    dropout: float | None = None  # override the config's dropout probabilities
    show_progress: bool = True
    model_overrides: dict = field(default_factory=dict)


def load_model_config(spec: str) -> BertConfig:
    if os.path.isfile(spec):
        return BertConfig.load(spec)
    if spec.endswith(".json"):
        raise BertkitError(f"--model-config {spec}: file not found", hint="pass a config.json or a preset name")
    return preset(spec)


def build(cfg: PretrainConfig, world_size: int = 1):
    """Everything the loop needs, validated before anything is written."""
    from bertkit.data.pretraining import PreparedCorpus, PretrainingDataset
    from bertkit.data.prepare import load_manifest
    from bertkit.tokenizer import Tokenizer

    for choice, allowed in ((cfg.objective, ("nsp", "none")), (cfg.masking, ("token", "whole-word")),
                            (cfg.precision, PRECISIONS)):
        if choice not in allowed:
            raise BertkitError(f"{choice!r} is not one of {', '.join(allowed)}", hint="see bertkit pretrain --help")
    for name in ("steps", "batch_size", "grad_accum", "seq_len", "log_every", "eval_every", "save_every"):
        if getattr(cfg, name) < 1:
            raise BertkitError(f"--{name.replace('_', '-')} must be at least 1", hint="pass a positive number")
    check_output_dir(cfg.out, hint="pass --resume to continue that run, or choose a new --out", reuse=cfg.resume)
    for d in cfg.data:
        load_manifest(d)
    tokenizer = Tokenizer.from_pretrained(os.path.join(cfg.data[0], "tokenizer"))
    if cfg.init:
        model = BertForPreTraining.from_pretrained(cfg.init)
        if model.config.vocab_size != tokenizer.vocab_size:
            raise BertkitError(
                f"--init {cfg.init}: the model's vocabulary has {model.config.vocab_size} entries but the prepared "
                f"data's tokenizer ({cfg.data[0]}/tokenizer) has {tokenizer.vocab_size}",
                hint="prepare the data with the tokenizer saved in the --init directory")
        init_tok = os.path.join(cfg.init, "vocab.txt")
        if os.path.exists(init_tok) and Tokenizer.from_pretrained(cfg.init).fingerprint != tokenizer.fingerprint:
            raise BertkitError(f"--init {cfg.init}: its tokenizer differs from the one the data was prepared with",
                               hint=f"prepare the data with --tokenizer {cfg.init}")
    else:
        config = load_model_config(cfg.model_config)
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                                     **cfg.model_overrides)
        torch.manual_seed(cfg.seed)  # the initial weights are part of what --seed fixes
        model = BertForPreTraining(config)
    if cfg.dropout is not None:
        if not 0.0 <= cfg.dropout < 1.0:
            raise BertkitError(f"--dropout {cfg.dropout}: must be in [0, 1)", hint="e.g. --dropout 0.1, or 0 for none")
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = cfg.dropout
        for layer in model.bert.layers:
            layer.attention.dropout_p = cfg.dropout
    if cfg.seq_len > model.config.max_position_embeddings:
        raise BertkitError(f"--seq-len {cfg.seq_len} is longer than the model's {model.config.max_position_embeddings} "
                           "positions", hint="lower --seq-len, or use a config with more max_position_embeddings")
    common = dict(seq_len=cfg.seq_len, objective=cfg.objective, masking=cfg.masking,
                  max_predictions=cfg.max_predictions, seed=cfg.seed)
    train = PretrainingDataset.from_tokenizer(PreparedCorpus(cfg.data, "train"), tokenizer, **common)
    train.set_epoch(0)
    samples_per_step = cfg.batch_size * cfg.grad_accum * world_size
    if len(train) < samples_per_step:
        raise BertkitError(f"the training data has {len(train)} samples, fewer than one step needs "
                           f"({samples_per_step})", hint="prepare more text or lower --batch-size")
    validation = None
    try:
        val_corpus = PreparedCorpus(cfg.data, "validation")
        if val_corpus.num_documents >= (2 if cfg.objective == "nsp" else 1):
            validation = PretrainingDataset.from_tokenizer(val_corpus, tokenizer, **common)
    except BertkitError:
        validation = None
    return model, tokenizer, train, validation


def no_validation_note(cfg: PretrainConfig) -> str:
    """Why a run has no held-out evaluation, in one line (said at the start, never left silent)."""
    from bertkit.data.prepare import load_manifest

    documents = sum(load_manifest(d)["splits"].get("validation", {}).get("documents", 0) for d in cfg.data)
    needed = 2 if cfg.objective == "nsp" else 1
    return (f"note: no held-out evaluation: the prepared data ({', '.join(cfg.data)}) holds {documents} validation "
            f"document{'s' if documents != 1 else ''}, and it needs {needed}"
            f"{' (NSP pairs two documents)' if needed == 2 else ''}; prepare the data again with a larger "
            "--validation-fraction to see held-out MLM/NSP accuracy")


def micro_batches(order: np.ndarray, offset: int, cfg: PretrainConfig, world: distributed.World):
    """This rank's micro-batches of one step: (is_last, j, sample indices)."""
    for a in range(cfg.grad_accum):
        j = a * world.world_size + world.rank
        start = offset + j * cfg.batch_size
        yield a == cfg.grad_accum - 1, j, order[start:start + cfg.batch_size]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


@torch.no_grad()
def evaluate(model, dataset, cfg: PretrainConfig, device, precision: Precision | None = None) -> dict:
    """Held-out MLM and NSP loss and accuracy on the first eval_samples samples (fixed masks)."""
    from bertkit.data.pretraining import collate

    model.eval()
    dataset.set_epoch(0)
    n = min(len(dataset), cfg.eval_samples)
    totals = dict(mlm_loss=0.0, mlm_correct=0, mlm_count=0, nsp_loss=0.0, nsp_correct=0, nsp_count=0)
    for start in range(0, n, cfg.batch_size):
        batch = to_device(collate([dataset[i] for i in range(start, min(n, start + cfg.batch_size))],
                                  dataset.pad_id), device)
        with (precision or resolve_precision(cfg.precision, device, announce=False)).autocast(device):
            out = model(**batch)
        _accumulate(totals, out, batch)
    model.train()
    return _summarize(totals)


def _accumulate(totals: dict, out, batch: dict) -> None:
    count = out.mlm_targets.numel()
    totals["mlm_loss"] += out.mlm_loss.item() * count
    totals["mlm_correct"] += (out.mlm_logits.argmax(-1) == out.mlm_targets).sum().item()
    totals["mlm_count"] += count
    if out.nsp_loss is not None:
        labels = batch["next_sentence_label"]
        totals["nsp_loss"] += out.nsp_loss.item() * labels.numel()
        totals["nsp_correct"] += (out.nsp_logits.argmax(-1) == labels).sum().item()
        totals["nsp_count"] += labels.numel()


def _summarize(t: dict) -> dict:
    m = {"mlm_loss": t["mlm_loss"] / max(1, t["mlm_count"]), "mlm_accuracy": t["mlm_correct"] / max(1, t["mlm_count"])}
    if t["nsp_count"]:
        m.update(nsp_loss=t["nsp_loss"] / t["nsp_count"], nsp_accuracy=t["nsp_correct"] / t["nsp_count"])
        m["loss"] = m["mlm_loss"] + m["nsp_loss"]
    else:
        m["loss"] = m["mlm_loss"]
    return m


# What fixes the sample stream: a resumed run must agree on these, or it would silently see other samples.
STREAM_FIELDS = ("seed", "batch_size", "grad_accum", "seq_len", "objective", "masking", "max_predictions")


def stream_signature(cfg: PretrainConfig, world: distributed.World) -> dict:
    return {**{k: getattr(cfg, k) for k in STREAM_FIELDS}, "world_size": world.world_size,
            "data": [os.path.abspath(d) for d in cfg.data]}


def check_resume(state: dict, cfg: PretrainConfig, world: distributed.World, path: str) -> None:
    saved = state.get("stream")
    if saved is None:
        return
    now = stream_signature(cfg, world)
    changed = [f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in now if saved.get(k) != now[k]]
    if changed:
        raise BertkitError(f"--resume {path}: the run was started with other settings ({'; '.join(changed)})",
                           hint="resume with the original settings, or start a new --out")


# What fixes the learning-rate schedule (warmup, then linear decay to 0 at --steps): a resumed run keeps it.
PLAN_FIELDS = ("steps", "lr", "warmup")


def check_plan(state: dict, cfg: PretrainConfig, path: str) -> None:
    """A resumed run must keep the schedule it started with: a changed --steps would jump the learning rate
    (a run that had decayed to ~0 would restart near its peak). Training on past the end is a new run from
    the model (--init), with a schedule of its own."""
    saved = state.get("plan")
    if saved is None:
        return
    changed = [f"--{k} {saved[k]} (now {getattr(cfg, k)})" for k in PLAN_FIELDS if saved.get(k) != getattr(cfg, k)]
    if changed:
        original = " ".join(f"--{k} {saved[k]}" for k in PLAN_FIELDS if saved.get(k) != getattr(cfg, k))
        raise BertkitError(f"--resume {path}: the run's learning-rate schedule was planned with {', '.join(changed)}",
                           hint=f"resume with {original}; to train on past the planned end, start a new --out with "
                                f"--init {os.path.join(cfg.out, 'model')} once this run has finished")


def check_same_model(path: str, config: BertConfig, cfg: PretrainConfig) -> None:
    """The checkpoint's config.json against the model this command builds: name each setting that differs."""
    saved = BertConfig.load(os.path.join(path, "model", "config.json"))
    changed = [f"{f.name} {getattr(saved, f.name)!r} (now {getattr(config, f.name)!r})"
               for f in dataclasses.fields(BertConfig) if f.name != "extra"
               and getattr(saved, f.name) != getattr(config, f.name)]
    if changed:
        given = f"--init {cfg.init}" if cfg.init else f"--model-config {cfg.model_config}"
        raise BertkitError(f"--resume {path}: the checkpoint's model differs from {given}: {', '.join(changed)}",
                           hint="resume with the original --model-config, or start a new --out")


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) pre-training; returns the last evaluation metrics."""
    from tqdm.auto import tqdm

    from bertkit.data.pretraining import collate

    if cfg.tensorboard:
        require_tensorboard()
    world = distributed.setup(cfg.device)
    model, tokenizer, train_set, validation = build(cfg, world.world_size)
    precision = resolve_precision(cfg.precision, world.device, announce=False)  # said once the run starts
    distributed.barrier(world)  # every rank has validated --out before rank 0 writes into it
    if validation is None and world.is_main:
        print(no_validation_note(cfg), file=sys.stderr)
    model.to(world.device)
    wrapped = distributed.wrap(model, world)
    if cfg.compile:
        wrapped = torch.compile(wrapped, dynamic=True)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    step, epoch, offset, bad_steps_total = 0, 0, 0, 0
    metrics_path = os.path.join(cfg.out, "metrics.jsonl")
    checkpoints = complete_checkpoints(cfg.out) if cfg.resume else []
    if checkpoints:
        check_same_model(checkpoints[-1], model.config, cfg)
        state = load_checkpoint(checkpoints[-1], model, optimizer)
        check_resume(state, cfg, world, checkpoints[-1])
        check_plan(state, cfg, checkpoints[-1])
        step, epoch, offset = state["step"], state["epoch"], state["offset"]
        bad_steps_total = state.get("skipped_steps", 0)
        if world.is_main:
            print(f"resuming from {checkpoints[-1]} (step {step})", file=sys.stderr)
            truncate_metrics(metrics_path, step)
    elif cfg.resume and world.is_main:
        print(f"--resume: no complete checkpoint in {cfg.out}; starting from step 0", file=sys.stderr)
        truncate_metrics(metrics_path, 0)
    if world.is_main:
        os.makedirs(cfg.out, exist_ok=True)
        atomic_write_json(os.path.join(cfg.out, "run.json"), {
            **dataclasses.asdict(cfg), "precision_used": precision.name, "precision_reason": precision.reason,
            "threads": torch.get_num_threads(), "device_used": str(world.device)})
    log = MetricsLog(cfg.out, cfg.tensorboard, step) if world.is_main else None
    samples_per_step = cfg.batch_size * cfg.grad_accum * world.world_size
    train_set.set_epoch(epoch)
    order = epoch_order(len(train_set), cfg.seed, epoch)
    warmup_steps = max(1, round(cfg.warmup * cfg.steps))
    autocast = precision.autocast(world.device)
    window = dict(mlm_loss=0.0, mlm_correct=0, mlm_count=0, nsp_loss=0.0, nsp_correct=0, nsp_count=0)
    window_tokens, window_norm, window_good_steps, window_start = 0, 0.0, 0, time.perf_counter()
    paused_seconds = 0.0  # evaluation and checkpoint time in the logging window: not training
    consecutive_bad = 0
    last_eval: dict = {}
    progress = tqdm(total=cfg.steps, initial=step, desc="pretrain", unit="step",
                    disable=not (cfg.show_progress and world.is_main), dynamic_ncols=True)

    def checkpoint(at_step: int) -> str | None:
        path = None
        if world.is_main:
            path = save_checkpoint(cfg.out, at_step, model, tokenizer, optimizer,
                                   {"epoch": epoch, "offset": offset, "skipped_steps": bad_steps_total,
                                    "stream": stream_signature(cfg, world),
                                    "plan": {k: getattr(cfg, k) for k in PLAN_FIELDS}}, keep=cfg.keep_checkpoints)
        distributed.barrier(world)
        return path

    if world.is_main:  # everything is checked: say how this run computes
        resolve_precision(cfg.precision, world.device)
        if world.device.type == "cpu" and (note := oversubscription_note()):
            print(note, file=sys.stderr)
    model.train()
    started = time.perf_counter()
    last_step = cfg.steps
    with StopRequest() as stop:
        while step < last_step:
            lr = cfg.lr * warmup_linear(step, warmup_steps, cfg.steps)
            set_lr(optimizer, lr)
            for is_last, j, indices in micro_batches(order, offset, cfg, world):
                batch = to_device(collate([train_set[int(i)] for i in indices], train_set.pad_id), world.device)
                torch.manual_seed(cfg.seed * 1_000_003 + step * 1009 + j)  # dropout, independent of rank layout
                # DDP all-reduces gradients on the last micro-batch only
                skip_sync = world.distributed and not is_last and hasattr(wrapped, "no_sync")
                with wrapped.no_sync() if skip_sync else contextlib.nullcontext():
                    with autocast:
                        out = wrapped(**batch)
                    (out.loss / cfg.grad_accum).backward()
                _accumulate(window, out, batch)
                window_tokens += int(batch["attention_mask"].sum())
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            if torch.isfinite(grad_norm):
                optimizer.step()
                consecutive_bad = 0
                window_norm += float(grad_norm)
                window_good_steps += 1
            else:
                bad_steps_total += 1
                consecutive_bad += 1
                if consecutive_bad >= cfg.max_bad_steps:
                    last = complete_checkpoints(cfg.out)
                    raise BertkitError(
                        f"step {step + 1}: loss or gradient not finite for {consecutive_bad} consecutive steps; "
                        f"last good checkpoint: {last[-1] if last else 'none'}",
                        hint="likely causes: a learning rate too high, bf16 overflow, or damaged data; lower --lr or "
                             "use --precision fp32, and resume with --resume")
            optimizer.zero_grad(set_to_none=True)
            step += 1
            offset += samples_per_step
            if offset + samples_per_step > len(train_set):  # next epoch: new NSP pairs, new masks, new order
                epoch, offset = epoch + 1, 0
                train_set.set_epoch(epoch)
                order = epoch_order(len(train_set), cfg.seed, epoch)
            progress.update(1)
            if cfg.max_minutes is not None and step < last_step:
                out_of_time = time.perf_counter() - started > 60 * cfg.max_minutes
                if distributed.all_reduce_sum([float(out_of_time)], world)[0] > 0:
                    last_step = step  # the budget is spent: this step is the last one
                    progress.write(f"--max-minutes {cfg.max_minutes}: time is up after step {step}")

            if step % cfg.log_every == 0 or step == last_step:
                keys = list(window)
                sums = distributed.all_reduce_sum([window[k] for k in keys] + [window_tokens], world)
                elapsed = time.perf_counter() - window_start - paused_seconds
                line = {"step": step, **_summarize(dict(zip(keys, sums[:-1]))), "lr": lr,
                        "tokens_per_s": sums[-1] / elapsed, "grad_norm": window_norm / window_good_steps if window_good_steps else None,
                        "skipped_steps": bad_steps_total, "epoch": epoch, "precision": precision.name}
                if world.is_main:
                    log.write(line)
                    progress.set_postfix(loss=f"{line['loss']:.3f}", mlm_acc=f"{line['mlm_accuracy']:.3f}",
                                         tok_s=f"{line['tokens_per_s']:.0f}")
                window = dict.fromkeys(window, 0)
                window_tokens, window_norm, window_good_steps, window_start = 0, 0.0, 0, time.perf_counter()
                paused_seconds = 0.0

            if validation is not None and (step % cfg.eval_every == 0 or step == last_step):
                eval_started = time.perf_counter()
                if world.is_main:
                    last_eval = {"step": step, **evaluate(model, validation, cfg, world.device, precision),
                                 "split": "validation"}
                    log.write(last_eval)
                    progress.write(f"step {step}: held-out " + ", ".join(
                        f"{k} {v:.4f}" for k, v in last_eval.items() if k not in ("step", "split")))
                distributed.barrier(world)
                paused_seconds += time.perf_counter() - eval_started

            # a signal on any rank stops every rank; the signal's number (summed with the count) sets the exit status
            asked, signums = distributed.all_reduce_sum([float(stop.requested), float(stop.signum or 0)], world)
            stop_now = asked > 0 or step == cfg.stop_at
            if step % cfg.save_every == 0 or step == last_step or stop_now:
                save_started = time.perf_counter()
                path = checkpoint(step)
                paused_seconds += time.perf_counter() - save_started
                if stop_now and step < last_step:
                    progress.close()
                    message = f"stopped at step {step}; checkpoint {path}. Resume with the same command plus --resume"
                    if world.is_main:
                        log.close()
                    distributed.teardown()
                    if asked > 0:  # a signal: the run did not finish, and its exit status says so
                        raise Interrupted(round(signums / asked), message)
                    if world.is_main:  # --stop-at: a stop asked for by design, exit status 0
                        print(message, file=sys.stderr)
                    return last_eval
    progress.close()
    if world.is_main:
        log.close()
        final = os.path.join(cfg.out, "model")
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp, model_max_length=model.config.max_position_embeddings)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        try:
            from bertkit.plot import plot_runs

            plot_runs([cfg.out], os.path.join(cfg.out, "curves.png"))
        except Exception as e:  # a plot is a convenience; never lose a finished run over it
            print(f"note: could not draw curves.png ({e})", file=sys.stderr)
    distributed.teardown()
    return last_eval
