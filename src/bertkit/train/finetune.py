"""Fine-tuning all parameters on a labeled task, evaluation, and prediction.

Sentence-level tasks (GLUE, your own classify/regress files) read the pooled [CLS] output; tagging
(NER) reads every token's output; span QA (SQuAD) predicts start and end tokens; multiple choice
scores each choice's [CLS]. The task table (data/tasks.py) says which head and metric a task uses.
classify with --label-separator is multi-label: a sigmoid per label, every label above --threshold
predicted, saved with problem_type multi_label_classification so transformers trains it the same way.

The loop: length-grouped batches (texts of similar length batched together, so little compute goes to
padding), AdamW with warmup and linear decay, gradient clipping, optional bf16 autocast; evaluation on
dev after each epoch, keeping the best epoch by the task's main metric (or the last, --keep last; with
--eval-at end, dev is read once, after the last epoch, and the last epoch's model is kept).
Each seed runs into OUT/seed-N (one seed too: one layout), and OUT/eval_results.json reports the mean and
std of every metric over the seeds. A finished seed's intermediate checkpoints are deleted (a run that has
finished has nothing to resume) unless keep_checkpoints_at_end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import reprlib
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from bertkit.device import default_device, oversubscription_note, resolve_precision, to_device
from bertkit.errors import BertkitError, Interrupted
from bertkit.files import atomic_write_json, atomic_write_text, check_output_dir
from bertkit.inference import feature_length
from bertkit.kinds import KINDS, PROBLEM_TYPES, TARGET_MASKINGS
from bertkit.train.metrics_log import MetricsLog, require_tensorboard, truncate_metrics

TASK_FILE = "bertkit_task.json"  # the task settings a fine-tuned directory was trained with
MASKING_STREAM = 0x6D61736B  # "mask": the masking rng of (seed, step) draws apart from the batch order's (seed, epoch)


@dataclass
class FinetuneConfig:
    task: str
    model: str
    out: str
    data: str | None = None
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    epochs: float = 3.0
    lr: float = 2e-5  # the paper's range: 5e-5, 3e-5, 2e-5
    batch_size: int = 32
    eval_batch_size: int = 128
    max_seq_len: int | None = None  # default 128, SQuAD 384
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    precision: str = "auto"  # bf16 where the hardware runs it natively, else fp32 (device.py)
    seeds: list[int] = field(default_factory=lambda: [1])
    keep: str = "best"
    eval_at: str = "epoch"  # epoch: evaluate on dev after each epoch; end: after the last one only (--keep last)
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_separator: str | None = None  # classify: multi-label, several labels per field split on this
    threshold: float = 0.5  # multi-label: every label whose probability is above it is predicted
    label_all_subtokens: bool = False
    doc_stride: int = 128
    max_query_len: int = 64
    max_target_len: int = 48  # seq2seq: target tokens kept (a longer target is cut, and counted)
    label_smoothing: float = 0.0  # seq2seq: of the token cross-entropy (UniLM used 0.1)
    target_masking: str = "shifted"  # seq2seq: shifted (left to right), uniform (a conditional MLM: mask-predict)
    # or unilm (UniLM's masked target, left to right)
    null_threshold: float = 0.0
    max_train_examples: int | None = None  # a quick run on the first N training examples
    group_by_length: bool = True
    log_every: int | None = None  # None: about 50 points over the run (every step of a short one), at most every 50
    save_every: int = 500  # steps between checkpoints (and one at each epoch end); 0: epoch ends only
    keep_checkpoints: int = 1  # during the run; at its end all are deleted, unless keep_checkpoints_at_end
    keep_checkpoints_at_end: bool = False
    max_bad_steps: int = 10  # stop after this many consecutive non-finite steps
    resume: bool = False
    tensorboard: bool = False
    force: bool = False
    show_progress: bool = True


# ----------------------------------------------------------------------------------------------
# Data


def _read(cfg: FinetuneConfig, path: str | None, labeled: bool = True, training: bool = False):
    """Examples of a file, read as the task's kind reads it."""
    from bertkit.data.tasks import TASKS

    if not path:
        raise BertkitError("no evaluation data", hint="pass --data DIR or --dev FILE")
    spec = TASKS[cfg.task]
    examples = KINDS[spec.kind].read(cfg, spec, path, labeled, training)
    if not examples:
        raise BertkitError(f"{path}: no examples", hint="the file holds no data rows")
    return examples


def task_files(cfg: FinetuneConfig) -> dict[str, str | None]:
    from bertkit.data.tasks import TASKS, find_task_files

    if cfg.task not in TASKS:
        raise BertkitError(f"unknown --task {cfg.task!r}", hint=f"choose one of: {', '.join(TASKS)}")
    if cfg.data:
        if cfg.train or cfg.dev:
            raise BertkitError("--data and --train/--dev both given", hint="use one or the other")
        return find_task_files(cfg.task, cfg.data)
    if not cfg.dev:
        raise BertkitError("no evaluation data", hint="pass --data DIR, or --dev FILE (and --train FILE to train)")
    return {"train": cfg.train, "dev": cfg.dev, "test": cfg.test}


def label_spec(cfg: FinetuneConfig):
    """The task's spec (multi-label for classify with --label-separator), with --threshold checked."""
    from bertkit.data.tasks import task_spec

    if not 0 < cfg.threshold < 1:
        raise BertkitError(f"--threshold {cfg.threshold}: must be between 0 and 1 (exclusive)",
                           hint="a probability: every label more probable than it is predicted, e.g. 0.5")
    return task_spec(cfg.task, cfg.label_separator)


def max_seq_len(cfg: FinetuneConfig, kind: str) -> int:
    return cfg.max_seq_len or KINDS[kind].max_seq_len


def encode(kind: str, examples, tokenizer, cfg: FinetuneConfig, label_list, training: bool):
    """Examples -> (features, number truncated)."""
    return KINDS[kind].encode(examples, tokenizer, cfg, max_seq_len(cfg, kind), label_list, training)


def check_length(cfg: FinetuneConfig, kind: str, positions: int) -> None:
    max_len = max_seq_len(cfg, kind)
    if max_len > positions:
        raise BertkitError(f"--max-seq-len {max_len} is longer than the model's {positions} positions",
                           hint=f"pass --max-seq-len {positions} or less")


def batches(features: list[dict], batch_size: int, rng: np.random.Generator | None, group_by_length: bool):
    """Index batches. Training (rng given): shuffled; with grouping, each run of 50 batches' worth of
    shuffled examples is sorted by length before being cut, so a batch pads to similar lengths while
    the order stays random. Evaluation: sorted by length."""
    n = len(features)
    lengths = np.array([feature_length(f) for f in features])
    if rng is None:
        order = np.argsort(-lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(n)
    if group_by_length:
        mega = batch_size * 50
        order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, math.ceil(n / mega)))])
    cut = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return [cut[i] for i in rng.permutation(len(cut))]


# ----------------------------------------------------------------------------------------------
# Evaluation


def predict_logits(model, features, cfg: FinetuneConfig, tokenizer, progress: str | None = None,
                   kind: str = "classification") -> list:
    """Per-feature outputs in feature order (the kind's `run`); the model goes back to training mode."""
    outputs = KINDS[kind].run(model, features, tokenizer, cfg, progress if cfg.show_progress else None)
    model.train()
    return outputs


def score(kind: str, task: str, examples, features, outputs, label_list, cfg: FinetuneConfig):
    """(metrics dict, predictions per example)."""
    return KINDS[kind].score(task, examples, features, outputs, label_list, cfg)


# ----------------------------------------------------------------------------------------------
# Training


def _load_model(kind: str, model_dir: str, label_list):
    from bertkit.model import MODEL_CLASSES

    return MODEL_CLASSES[KINDS[kind].head].from_pretrained(model_dir, **KINDS[kind].config(label_list))


class Stopped(Exception):
    """SIGINT/SIGTERM during fine-tuning: a checkpoint was written; `path` names it."""

    def __init__(self, path: str, step: int):
        super().__init__(path)
        self.path, self.step = path, step


def train_one_seed(cfg: FinetuneConfig, seed: int, out: str, data: dict, tokenizer, device, stop) -> dict:
    """Train one seed into `out`; with cfg.resume, continue from its newest complete checkpoint.

    Everything random is a function of (seed, epoch, step): the classifier's initial weights of the
    seed, each epoch's batch order of (seed, epoch), dropout and seq2seq's target masking of (seed, step).
    So a checkpoint needs only the model, the optimizer, the step, the epoch and the position in it to resume
    exactly.
    """
    from tqdm.auto import tqdm

    from bertkit.train.optim import build_optimizer, set_lr, warmup_linear
    from bertkit.train.state import complete_checkpoints, load_checkpoint, save_checkpoint

    kind, train_feats, dev_examples, dev_feats, label_list = (data[k] for k in
                                                              ("kind", "train", "dev_examples", "dev", "labels"))
    torch.manual_seed(seed)
    model = _load_model(kind, cfg.model, label_list).to(device)
    KINDS[kind].setup(model, cfg)
    collate = KINDS[kind].collate
    check_length(cfg, kind, model.config.max_position_embeddings)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_feats) / cfg.batch_size)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    warmup = round(cfg.warmup * total)
    signature = {"seed": seed, "total_steps": total, "train_features": len(train_feats)}
    os.makedirs(out, exist_ok=True)
    metrics_path = os.path.join(out, "metrics.jsonl")
    step, epoch, offset, skipped, best = 0, 1, 0, 0, None
    evaluated_step = None  # the step after which dev was last read
    found = complete_checkpoints(out) if cfg.resume else []
    if found:
        state = load_checkpoint(found[-1], model, optimizer)
        if state.get("signature") != signature:
            raise BertkitError(f"{found[-1]}: written by a run with other settings ({state.get('signature')}, "
                               f"now {signature})", hint="resume with the original command, or start a new --out")
        step, epoch, offset, skipped, best = (state[k] for k in ("step", "epoch", "offset", "skipped_steps", "best"))
        # (a checkpoint from before this field: read as evaluated where it holds a result)
        evaluated_step = state.get("evaluated_step", step if best is not None else None)
        truncate_metrics(metrics_path, step)
        print(f"resuming seed {seed} from {found[-1]} (step {step})", file=sys.stderr)
    else:
        atomic_write_text(metrics_path, "")
    log = MetricsLog(out, cfg.tensorboard, step)

    def checkpoint() -> str:
        return save_checkpoint(out, step, model, tokenizer, optimizer,
                               {"signature": signature, "epoch": epoch, "offset": offset, "skipped_steps": skipped,
                                "best": best, "evaluated_step": evaluated_step}, keep=cfg.keep_checkpoints)

    precision = resolve_precision(cfg.precision, device)  # the request, as finetune() resolved (and said) it
    autocast = precision.autocast(device)
    log_every = cfg.log_every or max(1, min(50, total // 50))  # a readable curve whatever the run's length
    progress = tqdm(total=total, initial=step, desc=f"finetune {cfg.task} seed {seed}", unit="step",
                    disable=not cfg.show_progress, dynamic_ncols=True)
    window_loss, window_samples, window_steps, window_start = 0.0, 0, 0, time.perf_counter()
    train_seconds, consecutive_bad = 0.0, 0
    model.train()
    # a run stopped during its last step has trained every step but not yet read dev: the loop runs once more,
    # with no step to train, to evaluate and keep the final model
    while step < total or evaluated_step != step:
        epoch_batches = batches(train_feats, cfg.batch_size, np.random.default_rng([seed, epoch]), cfg.group_by_length)
        for indices in epoch_batches[offset:]:
            if step >= total:
                break
            rng = np.random.default_rng([seed, step, MASKING_STREAM])
            batch = to_device(collate([train_feats[i] for i in indices], tokenizer, cfg, rng), device)
            set_lr(optimizer, cfg.lr * warmup_linear(step, max(1, warmup), total))
            torch.manual_seed(seed * 1_000_003 + step)  # dropout: a function of the step, so a resume repeats it
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            if torch.isfinite(grad_norm) and torch.isfinite(loss):
                optimizer.step()
                consecutive_bad = 0
                window_loss += loss.item()
                window_steps += 1
            else:
                skipped += 1
                consecutive_bad += 1
                if consecutive_bad >= cfg.max_bad_steps:
                    last = complete_checkpoints(out)
                    raise BertkitError(
                        f"step {step + 1}: loss or gradient not finite for {consecutive_bad} consecutive steps; "
                        f"last good checkpoint: {last[-1] if last else 'none'}",
                        hint="likely causes: a learning rate too high, labels out of range (NaN or inf in a "
                             "regression column), or a damaged model; lower --lr and resume with --resume")
            optimizer.zero_grad(set_to_none=True)
            step += 1
            offset += 1
            window_samples += len(indices)
            progress.update(1)
            if step % log_every == 0 or step == total:
                elapsed = time.perf_counter() - window_start
                train_seconds += elapsed
                line = {"step": step, "epoch": epoch, "loss": window_loss / window_steps if window_steps else None,
                        "lr": optimizer.param_groups[0]["lr"], "samples_per_s": window_samples / elapsed,
                        "skipped_steps": skipped, "precision": precision.name}
                log.write(line)
                if line["loss"] is not None:
                    progress.set_postfix(loss=f"{line['loss']:.4f}", samples_s=f"{line['samples_per_s']:.0f}")
                window_loss, window_samples, window_steps, window_start = 0.0, 0, 0, time.perf_counter()
            if stop.requested or (cfg.save_every and step % cfg.save_every == 0 and step < total):
                path = checkpoint()
                if stop.requested:
                    progress.close()
                    log.close()
                    raise Stopped(path, step)
        train_seconds += time.perf_counter() - window_start
        if cfg.eval_at == "epoch" or step >= total:
            outputs = predict_logits(model, dev_feats, cfg, tokenizer, kind=kind)
            result, _ = score(kind, cfg.task, dev_examples, dev_feats, outputs, label_list, cfg)
            result = {k: float(v) for k, v in result.items()}
            evaluated_step = step
            log.write({"step": step, "epoch": epoch, "split": "dev", **result})
            progress.write(f"seed {seed} epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
            if cfg.keep == "last" or best is None or result[data["metric"]] > best[data["metric"]]:
                best = {**result, "epoch": epoch}
                # squad2: predict later with the threshold that was best on dev
                save_model_dir(model, tokenizer, out, cfg, data, result.get("best_null_threshold"))
        epoch, offset = epoch + 1, 0
        checkpoint()  # the epoch's evaluation and kept model are done: a resume starts the next epoch
        window_start = time.perf_counter()
    progress.close()
    log.close()
    try:
        from bertkit.plot import plot_runs

        plot_runs([out], os.path.join(out, "curves.png"))
    except Exception as e:  # a plot is a convenience; never lose a finished run over it
        print(f"note: could not draw curves.png ({e})", file=sys.stderr)
    if train_seconds:  # (a run resumed after its last step trained for no time here)
        best["train_samples_per_s"] = len(train_feats) * cfg.epochs / train_seconds
    atomic_write_json(os.path.join(out, "eval_results.json"), best)
    if not cfg.keep_checkpoints_at_end:  # finished: nothing left to resume (a MiniLM checkpoint is ~130 MB)
        remove_checkpoints(out)
    return best


def remove_checkpoints(out: str) -> None:
    """Delete OUT/checkpoints: renamed first, so an interruption never leaves a half-deleted checkpoint that
    looks complete."""
    import shutil

    root, doomed = os.path.join(out, "checkpoints"), os.path.join(out, ".checkpoints.deleted")
    shutil.rmtree(doomed, ignore_errors=True)
    if os.path.isdir(root):
        os.replace(root, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def save_model_dir(model, tokenizer, out: str, cfg: FinetuneConfig, data: dict,
                   best_null_threshold: float | None = None) -> None:
    """The model, its tokenizer and the task settings, written beside each other (each file atomically)."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out, model_max_length=model.config.max_position_embeddings)
    atomic_write_json(os.path.join(out, TASK_FILE), {
        "task": cfg.task, "kind": data["kind"], "labels": data["labels"], "max_seq_len": cfg.max_seq_len,
        "doc_stride": cfg.doc_stride, "max_query_len": cfg.max_query_len,
        "null_threshold": cfg.null_threshold if best_null_threshold is None else best_null_threshold,
        "text_column": cfg.text_column, "text_pair_column": cfg.text_pair_column, "label_column": cfg.label_column,
        "problem_type": PROBLEM_TYPES.get(data["kind"]), "label_separator": cfg.label_separator,
        "threshold": cfg.threshold, "max_target_len": cfg.max_target_len, "target_masking": cfg.target_masking})
    KINDS[data["kind"]].save(out, model, tokenizer, cfg, data["train"])


def finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune for each seed; returns the summary written to OUT/eval_results.json."""
    from bertkit.data.tasks import check_labels, make_label_list
    from bertkit.tokenizer import Tokenizer

    files = task_files(cfg)
    if not files.get("train"):
        raise BertkitError("no training data", hint="pass --data DIR with a train file, or --train FILE")
    if cfg.keep not in ("best", "last"):
        raise BertkitError(f"--keep {cfg.keep!r}", hint="use best or last")
    if cfg.eval_at not in ("epoch", "end"):
        raise BertkitError(f"--eval-at {cfg.eval_at!r}", hint="use epoch or end")
    if cfg.eval_at == "end" and cfg.keep == "best":
        raise BertkitError("--eval-at end reads dev once, after the last epoch, so there is no best epoch to keep",
                           hint="add --keep last, or evaluate every epoch (--eval-at epoch)")
    if not 0 <= cfg.label_smoothing < 1:
        raise BertkitError(f"--label-smoothing {cfg.label_smoothing}: must be at least 0 and below 1", hint="e.g. 0.1")
    if cfg.target_masking not in TARGET_MASKINGS:
        raise BertkitError(f"--target-masking {cfg.target_masking!r}",
                           hint=f"choose one of: {', '.join(TARGET_MASKINGS)}")
    if cfg.save_every < 0:
        raise BertkitError(f"--save-every {cfg.save_every}: must be 0 (epoch ends only) or more", hint="e.g. 500")
    check_output_dir(cfg.out, hint="choose a new --out, pass --resume to continue the run in it, or --force to "
                                   "overwrite", reuse=cfg.force or cfg.resume)
    if cfg.tensorboard:
        require_tensorboard()
    check_resume(cfg)
    spec = label_spec(cfg)
    if cfg.target_masking != "shifted" and spec.kind != "seq2seq":
        raise BertkitError(f"--target-masking {cfg.target_masking} is for --task seq2seq, not {cfg.task}",
                           hint="drop --target-masking")
    tokenizer = Tokenizer.from_pretrained(cfg.model)
    train_examples = _read(cfg, files["train"], training=True)
    if cfg.max_train_examples:
        train_examples = train_examples[:cfg.max_train_examples]
    dev_examples = _read(cfg, files["dev"])
    label_list = make_label_list(cfg.task, train_examples)
    if spec.kind == "multi_label" and not label_list:
        raise BertkitError(f"{files['train']}: no example has a label", hint=f"is {cfg.label_column!r} the label "
                           f"column, and {cfg.label_separator!r} the separator between its labels?")
    if KINDS[spec.kind].named_labels:
        check_labels(dev_examples, label_list, files["dev"])
    train_feats, cut_train = encode(spec.kind, train_examples, tokenizer, cfg, label_list, training=True)
    dev_feats, cut_dev = encode(spec.kind, dev_examples, tokenizer, cfg, label_list, training=False)
    for name, count, total in (("train", cut_train, len(train_examples)), ("dev", cut_dev, len(dev_examples))):
        if count:
            print(f"note: {count} of {total} {name} examples were longer than {KINDS[spec.kind].length_limits} "
                  f"and were truncated", file=sys.stderr)
    if not train_feats:
        raise BertkitError(f"{files['train']}: no usable training examples", hint="check the file's contents")
    data = dict(kind=spec.kind, metric=spec.metric, labels=label_list, train=train_feats,
                dev_examples=dev_examples, dev=dev_feats)
    # the model loads (config and weights are sound) and takes --max-seq-len, before anything is written
    check_length(cfg, spec.kind, _load_model(spec.kind, cfg.model, label_list).config.max_position_embeddings)
    if len(train_feats) < cfg.batch_size:  # as pretrain: a "run" of one partial batch trains nothing of note
        raise BertkitError(f"the training data has {len(train_feats)} {KINDS[spec.kind].unit}, fewer than one batch "
                           f"needs (--batch-size {cfg.batch_size})",
                           hint=f"lower --batch-size to {len(train_feats)} or less, or train on more data")
    device = default_device()
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cpu" and (note := oversubscription_note()):
        print(note, file=sys.stderr)
    os.makedirs(cfg.out, exist_ok=True)  # everything is validated: now the run writes
    atomic_write_json(os.path.join(cfg.out, CONFIG_FILE), {
        **dataclasses.asdict(cfg), "precision_used": precision.name, "precision_reason": precision.reason,
        "threads": torch.get_num_threads(), "device_used": str(device)})
    results = {}
    from bertkit.train.state import StopRequest

    with StopRequest() as stop:
        for seed in cfg.seeds:
            out = os.path.join(cfg.out, f"seed-{seed}")
            done = os.path.join(out, "eval_results.json")
            if cfg.resume and os.path.isfile(done):  # this seed finished before the interruption
                with open(done, encoding="utf-8") as f:
                    results[seed] = json.load(f)
                continue
            try:
                results[seed] = train_one_seed(cfg, seed, out, data, tokenizer, device, stop)
            except Stopped as e:
                raise Interrupted(stop.signum, f"stopped at step {e.step} of seed {seed}; checkpoint {e.path}. "
                                               "Resume with the same command plus --resume") from None
    summary = summarize(results, spec.metrics)
    atomic_write_json(os.path.join(cfg.out, "eval_results.json"), summary)
    return summary


CONFIG_FILE = "finetune_config.json"
# Options that do not change what a run computes: a resumed run may change them.
RUN_ONLY = ("resume", "force", "show_progress", "log_every", "tensorboard", "save_every", "keep_checkpoints",
            "keep_checkpoints_at_end", "eval_batch_size", "max_bad_steps", "eval_at")


def check_resume(cfg: FinetuneConfig) -> None:
    """--resume must repeat the settings of the run it continues (those that change what it computes)."""
    path = os.path.join(cfg.out, CONFIG_FILE)
    if not cfg.resume or not os.path.isfile(path):
        return
    from bertkit.files import read_text

    try:
        saved = json.loads(read_text(path))
    except ValueError:
        raise BertkitError(f"{path}: not valid JSON", hint="the run's settings file is damaged; start a new --out")
    now = json.loads(json.dumps(dataclasses.asdict(cfg), default=os.fspath))
    changed = [k for k in now if k not in RUN_ONLY and k in saved and saved[k] != now[k]]
    if changed:
        raise BertkitError(f"--resume: {cfg.out} was run with other settings: " + ", ".join(
            f"{k} {saved[k]!r} (now {now[k]!r})" for k in changed), hint="resume with the original options")


def summarize(results: dict[int, dict], names) -> dict:
    """Mean and (sample) std of each metric over seeds; small GLUE sets swing by points between seeds."""
    keys = [k for k in results[next(iter(results))] if isinstance(results[next(iter(results))][k], float)]
    summary = {"seeds": list(results), "per_seed": {str(s): r for s, r in results.items()}}
    for key in keys:
        values = [r[key] for r in results.values()]
        summary[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return summary


# ----------------------------------------------------------------------------------------------
# evaluate / predict on a fine-tuned directory


def load_finetuned(model_dir: str, task: str):
    """A fine-tuned directory's model, tokenizer and task settings; the task must match its head."""
    from bertkit.checkpoint import load_model
    from bertkit.data.tasks import TASKS
    from bertkit.tokenizer import Tokenizer

    if task not in TASKS:
        raise BertkitError(f"unknown --task {task!r}", hint=f"choose one of: {', '.join(TASKS)}")
    settings = read_task_settings(model_dir)
    model = load_model(model_dir)
    kind = TASKS[task].kind
    if type(model).__name__ != KINDS[kind].head:
        raise BertkitError(f"--model {model_dir} has a {type(model).__name__} head, but --task {task} needs "
                           f"{KINDS[kind].head}", hint="pass the directory fine-tuned for this task, or the matching --task")
    if settings.get("task") and settings["task"] != task and TASKS[settings["task"]].labels != TASKS[task].labels:
        raise BertkitError(f"--model {model_dir} was fine-tuned for {settings['task']}, not {task}",
                           hint=f"use --task {settings['task']}")
    labels = settings.get("labels")
    if labels is None and model.config.id2label and KINDS[kind].named_labels:
        labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    if labels is None and kind == "classification" and TASKS[task].labels:
        labels = list(TASKS[task].labels)  # a classifier saved without label names: the task's own list
    return model, Tokenizer.from_pretrained(model_dir), settings, labels


def read_task_settings(model_dir: str) -> dict:
    """MODEL_DIR/bertkit_task.json (the settings a directory was fine-tuned with), checked; {} when absent."""
    from bertkit.files import read_text

    path = os.path.join(model_dir, TASK_FILE)
    if not os.path.isfile(path):
        return {}
    hint = "fix the file, or delete it to use the defaults"
    try:
        settings = json.loads(read_text(path))
    except ValueError as e:
        raise BertkitError(f"{path}: invalid JSON ({e})", hint=hint) from None
    if not isinstance(settings, dict):
        raise BertkitError(f"{path}: expected a JSON object", hint=hint)
    for name in ("max_seq_len", "doc_stride", "max_query_len", "max_target_len"):
        value = settings.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise BertkitError(f"{path}: {name} should be a positive integer or null, got {value!r}", hint=hint)
    threshold = settings.get("null_threshold")
    if threshold is not None and (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)):
        raise BertkitError(f"{path}: null_threshold should be a number, got {threshold!r}", hint=hint)
    labels = settings.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise BertkitError(f"{path}: labels should be a list of strings or null, got {reprlib.repr(labels)}",
                           hint=hint)
    separator = settings.get("label_separator")
    if separator is not None and not (isinstance(separator, str) and separator):
        raise BertkitError(f"{path}: label_separator should be a non-empty string or null, got {separator!r}",
                           hint=hint)
    threshold = settings.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise BertkitError(f"{path}: threshold should be a number between 0 and 1, got {threshold!r}", hint=hint)
    problem_type = settings.get("problem_type")
    if problem_type is not None and problem_type not in PROBLEM_TYPES.values():
        raise BertkitError(f"{path}: problem_type should be one of {', '.join(PROBLEM_TYPES.values())} or null, "
                           f"got {reprlib.repr(problem_type)}", hint=hint)
    return settings


def _finetuned_spec(cfg: FinetuneConfig, model, labeled: bool):
    """The task spec to evaluate or predict with: a multi-label model (config.json's problem_type) makes
    classify multi-label; reading its labels (evaluate) needs the separator, from --label-separator or
    the directory's bertkit_task.json."""
    from bertkit.data.tasks import MULTI_LABEL

    spec = label_spec(cfg)
    problem_type = model.config.problem_type
    if spec.kind == "multi_label" and problem_type not in (None, "multi_label_classification"):
        raise BertkitError(f"--label-separator: --model {cfg.model} is not a multi-label classifier "
                           f"(problem_type {problem_type} in its config.json)", hint="drop --label-separator")
    if problem_type == "multi_label_classification" and spec.kind != "multi_label":
        if cfg.task != "classify":
            raise BertkitError(f"--model {cfg.model} is a multi-label classifier, and --task {cfg.task} is not",
                               hint="use --task classify")
        if labeled:
            raise BertkitError(f"--model {cfg.model} is a multi-label classifier: say how its labels are "
                               "separated in the label column", hint="pass --label-separator, e.g. '|' for sports|politics")
        return MULTI_LABEL
    return spec


def evaluate_dir(cfg: FinetuneConfig, output: str | None = None) -> dict:
    from bertkit.data.tasks import check_labels

    model, tokenizer, settings, labels = load_finetuned(cfg.model, cfg.task)
    cfg = _with_settings(cfg, settings)
    kind = _finetuned_spec(cfg, model, labeled=True).kind
    check_length(cfg, kind, model.config.max_position_embeddings)
    files = task_files(cfg)
    examples = _read(cfg, files["dev"])
    if KINDS[kind].named_labels:
        check_labels(examples, labels, files["dev"], known_from="the model's labels")
    feats, _ = encode(kind, examples, tokenizer, cfg, labels, training=False)
    device = default_device()
    model.to(device)
    outputs = predict_logits(model, feats, cfg, tokenizer, progress="evaluate", kind=kind)
    result, _ = score(kind, cfg.task, examples, feats, outputs, labels, cfg)
    result = {k: float(v) for k, v in result.items()}
    # not eval_results.json: that is the fine-tune's own record of its dev score, kept as it was
    atomic_write_json(output or os.path.join(cfg.model, EVALUATE_FILE), result)
    return result


EVALUATE_FILE = "evaluate_results.json"  # where `bertkit evaluate` writes by default


def predict_file(cfg: FinetuneConfig, input_path: str, output: str) -> int:
    """Predictions for unlabeled input: GLUE tasks as the benchmark's submission TSV, others as JSONL."""
    model, tokenizer, settings, labels = load_finetuned(cfg.model, cfg.task)
    cfg = _with_settings(cfg, settings)
    spec = _finetuned_spec(cfg, model, labeled=False)
    if KINDS[spec.kind].write is None:  # before reading a line of the input
        raise BertkitError(f"predict --task {cfg.task}: a {spec.kind} model generates text, it does not label it",
                           hint=f"use bertkit generate --model {cfg.model} --input sources.jsonl --output out.jsonl")
    check_length(cfg, spec.kind, model.config.max_position_embeddings)
    examples = _read(cfg, input_path, labeled=False)
    feats, _ = encode(spec.kind, examples, tokenizer, cfg, labels, training=False)
    device = default_device()
    model.to(device)
    outputs = predict_logits(model, feats, cfg, tokenizer, progress="predict", kind=spec.kind)
    _, predictions = score(spec.kind, cfg.task, _unlabel(examples), feats, outputs, labels, cfg)
    lines = KINDS[spec.kind].write(cfg.task, examples, predictions)
    atomic_write_text(output, "\n".join(lines) + "\n")
    return len(examples)


def _unlabel(examples):
    """Copies without labels, so scoring returns predictions only."""
    if examples and hasattr(examples[0], "label") and not isinstance(examples[0].label, list):
        return [dataclasses.replace(e, label=None) for e in examples]
    return examples


def _with_settings(cfg: FinetuneConfig, settings: dict) -> FinetuneConfig:
    """The saved task settings, for every option the user left at its default."""
    defaults = FinetuneConfig(task="", model="", out="")
    keep = {k: v for k, v in settings.items()
            if k != "task" and hasattr(defaults, k) and getattr(cfg, k) == getattr(defaults, k)}
    return dataclasses.replace(cfg, **keep)
