"""The pre-training loop: an objective (MLM + NSP by default) on prepared data, resumable, single process or torchrun DDP.

One optimizer step: for each micro-batch, forward under autocast and backward (gradients summed locally
and, under DDP, averaged over ranks on the last one); clip; skip the step if the gradient is not finite;
AdamW step with the warmup/decay learning rate; log; maybe evaluate; maybe save.

What is trained is the objective's (bertkit/objectives.py): its samples, its model, its step's loss and named
statistics {name: (sum, count)}. The loop sums whatever statistics a step returns and logs them by name.

Determinism, which makes resume exact and the rank layout irrelevant: the sample order of an epoch is a
permutation seeded by (seed, epoch); micro-batch j of step s takes the j-th slice of the step's samples,
rank r takes micro-batches j = a * world + r; dropout is seeded by (seed, step, j). One process with
accumulation 2 and two processes with accumulation 1 therefore see the same samples and the same dropout.

The learning-rate schedule is planned once: for --steps, or for a --budget from a few timed steps whose
effect on the weights is undone (measure_budget); checkpoints record the plan and a resumed run follows it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from bertkit.config import BertConfig, preset
from bertkit.data.pretraining import MASK_PROB as MASK_RATE
from bertkit.device import PRECISIONS, Precision, oversubscription_note, resolve_precision, to_device
from bertkit.electra import GENERATOR_DIR
from bertkit.errors import BertkitError, Interrupted
from bertkit.files import atomic_write_json, check_output_dir
from bertkit.model import set_dropout
from bertkit.objectives import Objective, get_objective
from bertkit.train import distributed
from bertkit.train.metrics_log import MetricsLog, require_tensorboard, truncate_metrics
from bertkit.train.budget import (SECONDS_PER_STEP_ENV, Measurement, format_duration, measurement_override,
                                  parse_duration, plan_steps)
from bertkit.train.optim import build_optimizer, set_lr, warmup_linear
from bertkit.train.local_start import HeldWeights, local_attention_init
from bertkit.train.recipe import INIT_SCHEMES, apply_recipe
from bertkit.train.state import StopRequest, complete_checkpoints, load_checkpoint, save_checkpoint


DEFAULT_STEPS = 1000  # without --steps or --budget


@dataclass
class PretrainConfig:
    data: list[str]
    out: str
    # None: from the recipe (train/recipe.py): the preset for the --budget (else mini), and that preset's lr,
    # warmup, batch size, masking rate and AdamW betas/eps, each chosen by measurement
    model_config: str | None = None  # a preset name or a config.json path
    init: str | None = None  # a model directory to continue from (phase 2 at a longer --seq-len)
    steps: int | None = None  # DEFAULT_STEPS, unless a --budget plans them
    budget: str | None = None  # a wall-clock budget such as "30m": the steps are planned for it (budget.py)
    max_steps: int | None = None  # with --budget: plan no more steps than this (a fast machine ends early)
    batch_size: int | None = None  # per process and micro-batch
    grad_accum: int = 1
    lr: float | None = None  # peak; the paper's 1e-4 for base and large
    warmup: float | None = None  # fraction of the steps (the paper: 10k of 1M)
    weight_decay: float = 0.01
    betas: tuple[float, float] | None = None  # AdamW's; the paper's (0.9, 0.999)
    eps: float | None = None  # AdamW's; the paper's 1e-6
    max_grad_norm: float = 1.0
    seq_len: int = 128
    objective: str = "nsp"
    masking: str = "token"
    mask_rate: float | None = None  # share of tokens predicted: 0.15 the paper; 0.3 Wettig et al. (2023), MosaicBERT
    max_predictions: int | None = None  # default round(mask_rate * seq_len)
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
    # Dropout while pre-training: off, as in Cramming (Geiping and Goldstein, 2022): a run that sees its data
    # about once has little to overfit. None keeps the model config's probabilities. The saved config.json
    # keeps the config's own values (0.1 for the presets) either way, for fine-tuning.
    dropout: float | None = 0.0
    # None: from the recipe. "normal": every weight N(0, initializer_range), as the paper; "local": heads start
    # aimed at neighbouring positions (train/local_start.py), with positions and query/key held for the first
    # hold_local of the steps
    init_scheme: str | None = None
    hold_local: float | None = None
    show_progress: bool = True
    model_overrides: dict = field(default_factory=dict)


def load_model_config(spec: str) -> BertConfig:
    if os.path.isfile(spec):
        return BertConfig.load(spec)
    if spec.endswith(".json"):
        raise BertkitError(f"--model-config {spec}: file not found", hint="pass a config.json or a preset name")
    return preset(spec)


def check_settings(cfg: PretrainConfig) -> None:
    """Refuse, one clear line each, the numbers a run cannot train with (cfg after apply_recipe). Reads and
    writes nothing: `bertkit demo` asks before its minutes of vocabulary and data preparation."""
    if cfg.precision not in PRECISIONS:
        raise BertkitError(f"{cfg.precision!r} is not one of {', '.join(PRECISIONS)}", hint="see bertkit pretrain --help")
    for name in ("steps", "max_steps", "batch_size", "grad_accum", "seq_len", "log_every", "eval_every", "save_every"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise BertkitError(f"--{name.replace('_', '-')} must be at least 1", hint="pass a positive number")
    if cfg.budget is not None:
        parse_duration(cfg.budget)
        if cfg.steps is not None:
            raise BertkitError(f"--budget {cfg.budget} and --steps {cfg.steps} both set the length of the run",
                               hint="pass one of them: --budget plans the steps from this machine's measured speed")
    elif cfg.max_steps is not None:
        raise BertkitError(f"--max-steps {cfg.max_steps} caps the steps a --budget plans, and no --budget is given",
                           hint=f"add --budget (e.g. --budget 30m --max-steps {cfg.max_steps}), or pass --steps "
                                f"{cfg.max_steps} for a run of exactly that length")
    if not 0.0 < cfg.mask_rate < 1.0:
        raise BertkitError(f"--mask-rate {cfg.mask_rate}: must be between 0 and 1 (exclusive)",
                           hint="e.g. 0.15 (the BERT paper) or 0.3 (Wettig et al., 2023)")
    if not cfg.lr > 0 or not 0.0 <= cfg.warmup <= 1.0:
        raise BertkitError(f"--lr {cfg.lr} --warmup {cfg.warmup}: the learning rate must be positive and the warmup "
                           "a fraction of the steps in [0, 1]", hint="e.g. --lr 1e-3 --warmup 0.06")
    if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas) or not cfg.eps > 0:
        raise BertkitError(f"--betas {' '.join(map(str, cfg.betas))} --eps {cfg.eps}: each beta must be in [0, 1) "
                           "and epsilon positive", hint="e.g. --betas 0.9 0.98 --eps 1e-6")
    if cfg.init_scheme not in INIT_SCHEMES or not 0.0 <= cfg.hold_local <= 1.0:
        raise BertkitError(f"--init-scheme {cfg.init_scheme} --hold-local {cfg.hold_local}: the scheme is one of "
                           f"{', '.join(INIT_SCHEMES)} and the held share of the steps in [0, 1]",
                           hint="e.g. --init-scheme local --hold-local 0.5")
    if cfg.init_scheme != "local" and cfg.hold_local > 0:
        raise BertkitError(f"--hold-local {cfg.hold_local}: it holds the local start's weights, and this run starts "
                           f"with --init-scheme {cfg.init_scheme}",
                           hint="add --init-scheme local, or drop --hold-local")
    if cfg.init_scheme == "local" and (cfg.init or cfg.objective == "electra"):
        raise BertkitError(f"--init-scheme local sets the starting weights of a new BERT; it cannot apply to "
                           f"{'--init ' + cfg.init if cfg.init else '--objective electra'}",
                           hint="drop --init-scheme local (or pass --init-scheme normal)")
    if not 0.0 <= cfg.weight_decay < 1.0:
        raise BertkitError(f"--weight-decay {cfg.weight_decay}: must be in [0, 1)", hint="e.g. --weight-decay 0.01")
    if cfg.dropout is not None and not 0.0 <= cfg.dropout < 1.0:
        raise BertkitError(f"--dropout {cfg.dropout}: must be in [0, 1)", hint="e.g. --dropout 0.1, or 0 for none")
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise BertkitError(f"--max-minutes {cfg.max_minutes}: must be positive", hint="e.g. --max-minutes 30")


def build(cfg: PretrainConfig, world_size: int = 1):
    """Everything the loop needs, validated before anything is written."""
    cfg, _ = apply_recipe(cfg)
    from bertkit.data.pretraining import PreparedCorpus, PretrainingDataset
    from bertkit.data.prepare import load_manifest
    from bertkit.tokenizer import Tokenizer

    objective = get_objective(cfg.objective)  # the masking is looked up by the dataset, below
    check_settings(cfg)
    check_output_dir(cfg.out, hint="pass --resume to continue that run, or choose a new --out", reuse=cfg.resume)
    for d in cfg.data:
        load_manifest(d)
    tokenizer = Tokenizer.from_pretrained(os.path.join(cfg.data[0], "tokenizer"))
    torch.manual_seed(cfg.seed)  # the initial weights (a new generator under --init too) are part of what --seed fixes
    if cfg.init:
        model = objective.build_model(None, cfg.init)
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
        model = objective.build_model(config)
        if cfg.init_scheme == "local":
            local_attention_init(model.bert, cfg.seed)  # says which shapes it cannot start
    if cfg.dropout is not None:  # every module (both of ELECTRA's encoders): model.config, which is saved, keeps its own
        set_dropout(model, cfg.dropout)
    if cfg.seq_len > model.config.max_position_embeddings:
        raise BertkitError(f"--seq-len {cfg.seq_len} is longer than the model's {model.config.max_position_embeddings} "
                           "positions", hint="lower --seq-len, or use a config with more max_position_embeddings")
    common = dict(seq_len=cfg.seq_len, objective=cfg.objective, masking=cfg.masking, mask_rate=cfg.mask_rate,
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
        if val_corpus.num_documents >= objective.min_documents:
            # held out at the paper's 15% whatever --mask-rate trains with, so runs compare on one measure
            validation = PretrainingDataset.from_tokenizer(
                val_corpus, tokenizer, **{**common, "mask_rate": MASK_RATE, "max_predictions": None})
    except BertkitError:
        validation = None
    return model, tokenizer, train, validation


def no_validation_note(cfg: PretrainConfig) -> str:
    """Why a run has no held-out evaluation, in one line (said at the start, never left silent)."""
    from bertkit.data.prepare import load_manifest

    documents = sum(load_manifest(d)["splits"].get("validation", {}).get("documents", 0) for d in cfg.data)
    needed = get_objective(cfg.objective).min_documents
    return (f"note: no held-out evaluation: the prepared data ({', '.join(cfg.data)}) holds {documents} validation "
            f"document{'s' if documents != 1 else ''}, and --objective {cfg.objective} needs {needed}"
            "; prepare the data again with a larger --validation-fraction to see held-out accuracy")


def micro_batches(order: np.ndarray, offset: int, cfg: PretrainConfig, world: distributed.World):
    """This rank's micro-batches of one step: (is_last, j, sample indices)."""
    for a in range(cfg.grad_accum):
        j = a * world.world_size + world.rank
        start = offset + j * cfg.batch_size
        yield a == cfg.grad_accum - 1, j, order[start:start + cfg.batch_size]


def sample_seed(seed: int, step: int, j: int, evaluation: bool = False) -> int:
    """The batch's "sample_seed" (an objective that samples, as ELECTRA's generator, seeds its rng with it): fixed by
    (seed, step, micro-batch) as dropout is, so a resumed run samples what the uninterrupted one did; a stream of
    its own, apart from dropout's. Held-out batches: (seed, first sample index), the same at every evaluation."""
    return int(np.random.SeedSequence([seed, step, j, 0xE1EC7, int(evaluation)]).generate_state(1, np.uint64)[0] >> 1)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


@torch.no_grad()
def evaluate(model, dataset, cfg: PretrainConfig, device, precision: Precision | None = None) -> dict:
    """The objective's held-out statistics and loss on the first eval_samples samples (fixed masks)."""
    from bertkit.data.pretraining import collate

    objective = get_objective(cfg.objective)
    model.eval()
    dataset.set_epoch(0)
    n = min(len(dataset), cfg.eval_samples)
    totals: dict = {}
    for start in range(0, n, cfg.batch_size):
        batch = to_device(collate([dataset[i] for i in range(start, min(n, start + cfg.batch_size))],
                                  dataset.pad_id), device)
        batch["sample_seed"] = sample_seed(cfg.seed, 0, start, evaluation=True)
        with (precision or resolve_precision(cfg.precision, device, announce=False)).autocast(device):
            _, statistics = objective.step(model, batch)
        add_statistics(totals, statistics)
    model.train()
    return summarize(totals, objective)


def add_statistics(totals: dict[str, list], statistics: dict) -> None:
    """Sum a step's {name: (sum, count)} into totals {name: [sum, count]}, whatever the names (a sum may be a
    0-d tensor: read here, after the backward pass)."""
    for name, (value, count) in statistics.items():
        total = totals.setdefault(name, [0, 0])
        total[0] += value.item() if isinstance(value, torch.Tensor) else value
        total[1] += count


def summarize(totals: dict[str, list], objective: Objective) -> dict:
    """Each statistic's mean (sum / count), and "loss": the means weighted as the objective's step weighs them."""
    means = {name: value / max(1, count) for name, (value, count) in totals.items()}
    means["loss"] = sum(weight * means[name] for name, weight in objective.loss_weights.items())
    return means


# What fixes the sample stream: a resumed run must agree on these, or it would silently see other samples.
# (dropout draws from a stream of its own, seeded per step, and a changed probability changes the run as much;
# the starting weights and how long the local start's are held change it as much again.)
STREAM_FIELDS = ("seed", "batch_size", "grad_accum", "seq_len", "objective", "masking", "mask_rate", "max_predictions",
                 "dropout", "init_scheme", "hold_local")
# What a checkpoint written before a field existed was trained with; None: unknown, not compared.
STREAM_BEFORE = {"mask_rate": MASK_RATE, "dropout": None, "init_scheme": None, "hold_local": None}


def stream_signature(cfg: PretrainConfig, world: distributed.World) -> dict:
    return {**{k: getattr(cfg, k) for k in STREAM_FIELDS}, "world_size": world.world_size,
            "data": [os.path.abspath(d) for d in cfg.data]}


def check_resume(state: dict, cfg: PretrainConfig, world: distributed.World, path: str) -> None:
    saved = state.get("stream")
    if saved is None:
        return
    now = stream_signature(cfg, world)
    changed = [f"{k} {saved.get(k, STREAM_BEFORE.get(k))!r} -> {now[k]!r}" for k in now
               if (k in saved or STREAM_BEFORE.get(k) is not None) and saved.get(k, STREAM_BEFORE.get(k)) != now[k]]
    if changed:
        raise BertkitError(f"--resume {path}: the run was started with other settings ({'; '.join(changed)})",
                           hint="resume with the original settings, or start a new --out")


# What fixes the learning-rate schedule (warmup, then linear decay to 0 at the planned last step): a resumed run
# keeps it. The plan a checkpoint records: {"steps", "lr", "warmup", "budget", "measured"}; under --budget,
# "steps" was planned from "measured" (budget.Measurement) and a resumed run takes it from there; with
# --max-steps, also "max_steps" and "fitting_steps" (what the budget alone would have planned).
PLAN_FIELDS = ("lr", "warmup")


def _length_option(steps, budget, max_steps=None) -> str:
    if budget is None:
        return f"--steps {steps}"
    return f"--budget {budget}" + (f" --max-steps {max_steps}" if max_steps is not None else "")


def check_plan(state: dict, cfg: PretrainConfig, path: str) -> dict | None:
    """The plan a checkpoint records, if the command asks for the same one; else an error naming what changed.

    A resumed run must keep the schedule it started with: a changed --steps would jump the learning rate
    (a run that had decayed to ~0 would restart near its peak). Training on past the end is a new run from
    the model (--init), with a schedule of its own. A run planned for a --budget resumes with the same
    --budget and follows the recorded number of steps, whatever the machine's speed now."""
    saved = state.get("plan")
    if saved is None:
        if cfg.budget is not None:
            raise BertkitError(f"--resume {path}: the checkpoint records no plan to follow for --budget {cfg.budget}",
                               hint="resume with the run's original --steps")
        return None
    changed, original = [], []
    saved_budget = saved.get("budget")
    same_length = (saved_budget is None and cfg.budget is None and saved["steps"] == cfg.steps) or (
        saved_budget is not None and cfg.budget is not None and parse_duration(saved_budget) == parse_duration(cfg.budget)
        and saved.get("max_steps") == cfg.max_steps)  # plans recorded before --max-steps existed have none
    if not same_length:
        was = _length_option(saved["steps"], saved_budget, saved.get("max_steps"))
        now = _length_option(cfg.steps, cfg.budget, cfg.max_steps)
        same_option = was.split()[0] == now.split()[0] and len(was.split()) == len(now.split()) == 2
        changed.append(f"{was} (now {now.split()[1] if same_option else now})")
        original.append(was)
    for k in PLAN_FIELDS:
        if saved.get(k) != getattr(cfg, k):
            changed.append(f"--{k} {saved[k]} (now {getattr(cfg, k)})")
            original.append(f"--{k} {saved[k]}")
    if changed:
        raise BertkitError(f"--resume {path}: the run's learning-rate schedule was planned with {', '.join(changed)}",
                           hint=f"resume with {' '.join(original)}; to train on past the planned end, start a new --out "
                                f"with --init {os.path.join(cfg.out, 'model')} once this run has finished")
    return saved


def check_same_model(path: str, config: BertConfig, cfg: PretrainConfig) -> None:
    """The checkpoint's config.json against the model this command builds: name each setting that differs.
    BertConfig's fields only: ELECTRA's embedding_size and its generator's size are not compared here (a
    generator of another size fails to load its weights instead)."""
    saved = BertConfig.load(os.path.join(path, "model", "config.json"))
    changed = [f"{f.name} {getattr(saved, f.name)!r} (now {getattr(config, f.name)!r})"
               for f in dataclasses.fields(BertConfig) if f.name != "extra"
               and getattr(saved, f.name) != getattr(config, f.name)]
    if changed:
        given = f"--init {cfg.init}" if cfg.init else f"--model-config {cfg.model_config}"
        raise BertkitError(f"--resume {path}: the checkpoint's model differs from {given}: {', '.join(changed)}",
                           hint="resume with the original --model-config, or start a new --out")


# --budget: a few real steps are timed before the run starts (budget.py says why the plan is made once)
# The first steps are slower than the rest (they allocate the optimizer's state, compile with --compile, and
# meet each new batch shape for the first time) and a step's time varies. A plan from 2 untimed + 10 timed steps
# (their mean) read tiny at 0.098 s/step on Wikipedia on a machine started minutes before, where the run then went
# at 0.068 s/step: 60 minutes planned as 41. Timing 5 + 100 steps (their median; at most 2% of the budget) read
# 0.0655 s/step on the same machine next (BENCHMARKS.md, "The 60-minute run, undisturbed").
MEASURE_WARMUP_STEPS = 5  # not timed
MEASURE_STEPS = (3, 100)  # timed: at least 3, at most 100, and no more once 2% of the budget is gone


def measure_budget(cfg: PretrainConfig, world: distributed.World, model, tokenizer, optimizer, train_step, validation,
                   precision: Precision, n_train: int, started: float):
    """Time real training steps, one held-out evaluation and one checkpoint save; then put the weights back
    and return a fresh optimizer with the measurement. The measurement leaves no trace: the run that follows
    is the one `--steps N` would give for the planned N. Every rank takes part (a DDP step is collective)."""
    override = measurement_override()  # a bad value fails before any step
    budget = parse_duration(cfg.budget)
    samples_per_step = cfg.batch_size * cfg.grad_accum * world.world_size
    initial = {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
    model.train()
    set_lr(optimizer, cfg.lr)
    scratch: dict = {}
    times, offset = [], 0
    while True:
        tick = time.perf_counter()
        grad_norm, _ = train_step(len(times), offset, scratch)
        if torch.isfinite(grad_norm):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if world.device.type == "cuda":
            torch.cuda.synchronize(world.device)
        times.append(time.perf_counter() - tick)
        offset = offset + samples_per_step if offset + 2 * samples_per_step <= n_train else 0
        timed, spent = len(times) - MEASURE_WARMUP_STEPS, time.perf_counter() - started
        enough = timed >= MEASURE_STEPS[1] or (timed >= MEASURE_STEPS[0] and spent > 0.02 * budget) or spent > budget
        if distributed.all_reduce_sum([float(enough)], world)[0] > 0:
            break
    timed_times = times[MEASURE_WARMUP_STEPS:] or times[-1:]  # the budget ran out while warming up: the last one
    evaluation = checkpoint = 0.0
    if world.is_main:
        if validation is not None:
            tick = time.perf_counter()
            evaluate(model, validation, cfg, world.device, precision)
            evaluation = time.perf_counter() - tick
        scratch_dir = os.path.join(cfg.out, ".budget-measurement")
        os.makedirs(cfg.out, exist_ok=True)
        try:
            tick = time.perf_counter()
            save_checkpoint(scratch_dir, 0, model, tokenizer, optimizer, {}, keep=1)  # the optimizer's full state
            checkpoint = time.perf_counter() - tick
        finally:
            shutil.rmtree(scratch_dir, ignore_errors=True)
    model.load_state_dict(initial)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, eps=cfg.eps, betas=tuple(cfg.betas))
    step_s, spent, evaluation, checkpoint = distributed.all_reduce_sum(
        [statistics.median(timed_times), time.perf_counter() - started, evaluation, checkpoint], world)
    measured = Measurement(step=step_s / world.world_size, evaluation=evaluation, checkpoint=checkpoint,
                           spent=spent / world.world_size, timed_steps=len(timed_times))
    if override is not None:
        measured = Measurement(step=override, evaluation=0.0, checkpoint=0.0, spent=0.0, timed_steps=len(timed_times),
                               overridden=True)
    return measured, optimizer


def budget_plan(cfg: PretrainConfig, m: Measurement, has_validation: bool) -> dict:
    """The plan a --budget run follows and records: the number of steps that fit, with what it came from."""
    budget = parse_duration(cfg.budget)
    steps = plan_steps(budget, m, cfg.eval_every, cfg.save_every, has_validation)
    if steps < 1:
        took = (f"one step takes {m.step:.3g} s ({SECONDS_PER_STEP_ENV})" if m.overridden else
                f"one step took {m.step:.3g} s here, and building the run and measuring it {m.spent:.3g} s")
        needed = m.spent + m.step + (m.evaluation if has_validation else 0.0) + 2 * m.checkpoint
        raise BertkitError(f"--budget {cfg.budget} is too short for one step: {took}",
                           hint=f"give a --budget longer than {format_duration(needed)}, or use --steps")
    plan = {"steps": steps, "lr": cfg.lr, "warmup": cfg.warmup, "budget": cfg.budget, "measured": dataclasses.asdict(m)}
    if cfg.max_steps is not None:  # recorded with the number that fits, so the message can say which one held
        plan.update(steps=min(steps, cfg.max_steps), max_steps=cfg.max_steps, fitting_steps=steps)
    return plan


def plan_message(cfg: PretrainConfig, plan: dict) -> str:
    m, steps = plan["measured"], plan["steps"]
    source = (f"{m['step']:.3g} s/step ({SECONDS_PER_STEP_ENV})" if m["overridden"] else
              f"{m['step']:.3g} s/step measured over {m['timed_steps']} steps")
    if plan.get("max_steps") is not None:
        fits = plan["fitting_steps"]
        source += (f" -> {fits:,} steps would fit, --max-steps {plan['max_steps']:,} holds" if fits > steps else
                   f" (--max-steps {plan['max_steps']:,})")
    return (f"--budget {cfg.budget}: {source} -> {steps:,} steps, lr decays to 0 at step {steps:,} (held-out "
            f"evaluation {m['evaluation']:.3g} s every {cfg.eval_every} steps, checkpoint {m['checkpoint']:.3g} s every "
            f"{cfg.save_every}, {format_duration(m['spent'])} spent building the run and measuring it)")


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) pre-training; returns the last evaluation metrics."""
    from tqdm.auto import tqdm

    from bertkit.data.pretraining import collate

    started = time.perf_counter()  # a --budget counts from here: building the run is part of it
    if cfg.tensorboard:
        require_tensorboard()
    world = distributed.setup(cfg.device)
    cfg, recipe_note = apply_recipe(cfg)
    model, tokenizer, train_set, validation = build(cfg, world.world_size)
    objective = get_objective(cfg.objective)
    if cfg.steps is None and cfg.budget is None:
        cfg = dataclasses.replace(cfg, steps=DEFAULT_STEPS)
    precision = resolve_precision(cfg.precision, world.device, announce=False)  # said once the run starts
    distributed.barrier(world)  # every rank has validated --out before rank 0 writes into it
    if validation is None and world.is_main:
        print(no_validation_note(cfg), file=sys.stderr)
    model.to(world.device)
    wrapped = distributed.wrap(model, world)
    if cfg.compile:
        wrapped = torch.compile(wrapped, dynamic=True)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, eps=cfg.eps, betas=tuple(cfg.betas))
    step, epoch, offset, bad_steps_total, elapsed_before = 0, 0, 0, 0, 0.0
    plan = None
    metrics_path = os.path.join(cfg.out, "metrics.jsonl")
    checkpoints = complete_checkpoints(cfg.out) if cfg.resume else []
    if checkpoints:
        check_same_model(checkpoints[-1], model.config, cfg)
        state = load_checkpoint(checkpoints[-1], model, optimizer, restore=objective.restore)
        check_resume(state, cfg, world, checkpoints[-1])
        plan = check_plan(state, cfg, checkpoints[-1])
        step, epoch, offset = state["step"], state["epoch"], state["offset"]
        bad_steps_total = state.get("skipped_steps", 0)
        elapsed_before = state.get("elapsed_s", 0.0)  # a --budget spans every session of the run
        if world.is_main:
            print(f"resuming from {checkpoints[-1]} (step {step})", file=sys.stderr)
            truncate_metrics(metrics_path, step)
    elif cfg.resume and world.is_main:
        print(f"--resume: no complete checkpoint in {cfg.out}; starting from step 0", file=sys.stderr)
        truncate_metrics(metrics_path, 0)
    samples_per_step = cfg.batch_size * cfg.grad_accum * world.world_size
    train_set.set_epoch(epoch)
    order = epoch_order(len(train_set), cfg.seed, epoch)
    autocast = precision.autocast(world.device)
    held = None  # --init-scheme local's HeldWeights, once the number of steps is known

    def train_step(at_step: int, at_offset: int, window: dict) -> tuple[torch.Tensor, int]:
        """Forward and backward over this rank's micro-batches of one step, then clip; returns the gradient
        norm and the tokens seen. The caller steps the optimizer (or not, if the norm is not finite)."""
        tokens = 0
        for is_last, j, indices in micro_batches(order, at_offset, cfg, world):
            batch = to_device(collate([train_set[int(i)] for i in indices], train_set.pad_id), world.device)
            torch.manual_seed(cfg.seed * 1_000_003 + at_step * 1009 + j)  # dropout, independent of rank layout
            batch["sample_seed"] = sample_seed(cfg.seed, at_step, j)  # the objective's own sampling, likewise
            # DDP all-reduces gradients on the last micro-batch only
            skip_sync = world.distributed and not is_last and hasattr(wrapped, "no_sync")
            with wrapped.no_sync() if skip_sync else contextlib.nullcontext():
                with autocast:
                    loss, statistics = objective.step(wrapped, batch)
                (loss / cfg.grad_accum).backward()
            add_statistics(window, statistics)
            tokens += int(batch["attention_mask"].sum())
        if held is not None:
            held.zero_grads(at_step)
        return torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm), tokens

    if plan is None and cfg.budget is not None:  # a fresh run under --budget: measure, then plan
        measured, optimizer = measure_budget(cfg, world, model, tokenizer, optimizer, train_step, validation,
                                             precision, len(train_set), started)
        plan = budget_plan(cfg, measured, validation is not None)
        if world.is_main:
            print(plan_message(cfg, plan), file=sys.stderr)
    if plan is None:
        plan = {"steps": cfg.steps, "lr": cfg.lr, "warmup": cfg.warmup, "budget": None, "measured": None}
    total_steps = plan["steps"]
    if cfg.init_scheme == "local" and cfg.hold_local > 0:
        held = HeldWeights(model.bert, round(cfg.hold_local * total_steps))
    if world.is_main:
        os.makedirs(cfg.out, exist_ok=True)
        atomic_write_json(os.path.join(cfg.out, "run.json"), {
            **dataclasses.asdict(cfg), "planned_steps": total_steps, "plan": plan, "precision_used": precision.name,
            "precision_reason": precision.reason, "threads": torch.get_num_threads(), "device_used": str(world.device)})
    log = MetricsLog(cfg.out, cfg.tensorboard, step) if world.is_main else None
    warmup_steps = max(1, round(cfg.warmup * total_steps))
    # --budget's wall-clock guard: on a machine slower than measured, stop when the budget is spent, leaving
    # time for the last evaluation and saves (the schedule then ends before its decay reaches 0)
    budget_deadline = None
    if cfg.budget is not None:
        m = plan["measured"]
        budget_deadline = parse_duration(cfg.budget) - (0.0 if m["overridden"] else m["evaluation"] + 2 * m["checkpoint"])
    started -= elapsed_before
    window: dict = {}  # {statistic: [sum, count]} since the last log line
    window_tokens, window_norm, window_good_steps, window_start = 0, 0.0, 0, time.perf_counter()
    paused_seconds = 0.0  # evaluation and checkpoint time in the logging window: not training
    session_started = time.perf_counter()
    consecutive_bad = 0
    last_eval: dict = {}
    progress = tqdm(total=total_steps, initial=step, desc="pretrain", unit="step",
                    disable=not (cfg.show_progress and world.is_main), dynamic_ncols=True)

    def checkpoint(at_step: int) -> str | None:
        path = None
        if world.is_main:
            path = save_checkpoint(cfg.out, at_step, model, tokenizer, optimizer,
                                   {"epoch": epoch, "offset": offset, "skipped_steps": bad_steps_total,
                                    "stream": stream_signature(cfg, world), "plan": plan,
                                    "elapsed_s": time.perf_counter() - started}, keep=cfg.keep_checkpoints)
        distributed.barrier(world)
        return path

    if world.is_main:  # everything is checked: say how this run computes
        if recipe_note:
            print(recipe_note, file=sys.stderr)
        resolve_precision(cfg.precision, world.device)
        if world.device.type == "cpu" and (note := oversubscription_note()):
            print(note, file=sys.stderr)
    model.train()
    last_step = total_steps
    with StopRequest() as stop:
        while step < last_step:
            lr = cfg.lr * warmup_linear(step, warmup_steps, total_steps)
            set_lr(optimizer, lr)
            grad_norm, tokens = train_step(step, offset, window)
            window_tokens += tokens
            if torch.isfinite(grad_norm):
                optimizer.step()
                if held is not None:
                    held.restore(step)
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
            if (cfg.max_minutes is not None or budget_deadline is not None) and step < last_step:
                now = time.perf_counter()
                out_of_minutes = cfg.max_minutes is not None and now - session_started > 60 * cfg.max_minutes
                out_of_budget = budget_deadline is not None and now - started > budget_deadline
                minutes, budget = distributed.all_reduce_sum([float(out_of_minutes), float(out_of_budget)], world)
                if minutes > 0 or budget > 0:
                    last_step = step  # the time is spent: this step is the last one
                    progress.write(f"--max-minutes {cfg.max_minutes}: time is up after step {step}" if minutes > 0
                                   else f"--budget {cfg.budget}: time is up after step {step:,} of the planned "
                                        f"{total_steps:,} (this machine ran slower than measured); the learning rate "
                                        f"had decayed to {lr / cfg.lr:.0%} of its peak, not to 0")

            if step % cfg.log_every == 0 or step == last_step:
                keys = list(window)
                sums = distributed.all_reduce_sum([v for k in keys for v in window[k]] + [window_tokens], world)
                elapsed = time.perf_counter() - window_start - paused_seconds
                totals = {k: sums[2 * i:2 * i + 2] for i, k in enumerate(keys)}
                line = {"step": step, **summarize(totals, objective), "lr": lr,
                        "tokens_per_s": sums[-1] / elapsed, "grad_norm": window_norm / window_good_steps if window_good_steps else None,
                        "skipped_steps": bad_steps_total, "epoch": epoch, "precision": precision.name,
                        "time_s": time.perf_counter() - started}
                if world.is_main:
                    log.write(line)
                    accuracies = {k.replace("_accuracy", "_acc"): f"{line[k]:.3f}" for k in keys if k.endswith("_accuracy")}
                    progress.set_postfix(loss=f"{line['loss']:.3f}", **accuracies, tok_s=f"{line['tokens_per_s']:.0f}")
                window = {}
                window_tokens, window_norm, window_good_steps, window_start = 0, 0.0, 0, time.perf_counter()
                paused_seconds = 0.0

            if validation is not None and (step % cfg.eval_every == 0 or step == last_step):
                eval_started = time.perf_counter()
                if world.is_main:
                    last_eval = {"step": step, **evaluate(model, validation, cfg, world.device, precision),
                                 "split": "validation", "time_s": eval_started - started}
                    log.write(last_eval)
                    progress.write(f"step {step}: held-out " + ", ".join(
                        f"{k} {v:.4f}" for k, v in last_eval.items() if k not in ("step", "split", "time_s"))
                        + f" ({last_eval['time_s'] / 60:.1f} min)")
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
        objective.save(model, tmp)
        for directory in (tmp, os.path.join(tmp, GENERATOR_DIR)):  # ELECTRA's generator is a model of its own too
            if os.path.isdir(directory):
                tokenizer.save_pretrained(directory, model_max_length=model.config.max_position_embeddings)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        try:
            from bertkit.plot import plot_runs

            plot_runs([cfg.out], os.path.join(cfg.out, "curves.png"))
        except Exception as e:  # a plot is a convenience; never lose a finished run over it
            print(f"note: could not draw curves.png ({e})", file=sys.stderr)
    distributed.teardown()
    return last_eval
