"""`bertkit demo`: the whole of BERT pre-training in a few minutes on a laptop CPU.

It takes a corpus that ships with Python itself (the language reference of `pydoc_data` and the
standard library's docstrings: about 1.5 MB of English prose in ~500 documents), or the user's own text
files, and runs the real pipeline end to end:
learn a WordPiece vocabulary, prepare the data, pre-train a small BERT with MLM + NSP, then report
held-out MLM and NSP accuracy against chance and show fill-mask predictions before and after training.
Last, it fine-tunes on a small labeled task made from docstrings the pre-training never read (which
module a sentence comes from), once from the pre-trained weights and once from a random initialisation
(the paper's, the same seed), and prints both dev accuracies: what pre-training is for.
It leaves a HuggingFace model directory (`OUT/run/model`), the training curves (`OUT/run/curves.png`),
the task's files (`OUT/task`) and the two fine-tuned models (`OUT/finetune`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import time
from collections import Counter

import torch

from bertkit.errors import BertkitError
from bertkit.files import atomic_write_json, atomic_write_text, check_output_dir, read_text

# Sentences in the corpus' style, written for the demo (none is in the corpus as it stands), each with one
# word hidden, and the words that fill it rightly.
PROBES = [
    ("The [MASK] statement is used for conditional execution.", {"if"}),
    ("If the argument is omitted, [MASK] is returned.", {"none"}),
    ("Return [MASK] if the path is an existing directory.", {"true"}),
    ("Each argument is evaluated from left to [MASK].", {"right"}),
    ("The default value is [MASK].", {"none"}),
    ("A ValueError is [MASK] if the value is out of range.", {"raised"}),
    ("The size argument must be an [MASK].", {"integer", "int"}),
    ("Return the name of the current working [MASK].", {"directory"}),
]

# The task: which of these modules' docstrings a sentence comes from. Subjects far apart (threads,
# archives, statistics, text diffs, mail, web cookies), 100-200 prose sentences each, one source file each
# from Python 3.10 on. The built-in pre-training corpus leaves their documents out (TASK_MODULES is
# passed to python_docs_corpus), so a gap measures transfer from other text, not memorised sentences.
TASK_MODULES = ("threading", "tarfile", "statistics", "difflib", "smtplib", "http.cookiejar")
# Few labels, where a pre-trained start matters: with a hundred sentences a module a random start learns the
# modules' keywords (tar, thread, mean) nearly as well. Measured with the demo's model (pre-trained without
# these modules), 3 seeds: 16 a module, +4 to +5 points over the random start (within the noise); 8, +9 to +10.
TASK_TRAIN_PER_MODULE = 8  # the rest of each module is dev
# One recipe for both starts, about a minute per start for the tiny model on 2 CPU cores; both starts' dev
# accuracy has levelled off by epoch 25. keep="last": the reported dev accuracy is the last epoch's, not the
# best epoch picked on dev itself, so dev is read once, after the last epoch (eval_at="end": reading the 880
# dev sentences after each of the 30 epochs took most of this step's time).
FINETUNE_EPOCHS = 30  # (demo --finetune-epochs; 0 skips the step)
FINETUNE_RECIPE = dict(lr=1e-3, batch_size=16, max_seq_len=128, warmup=0.1, keep="last", eval_at="end")
FINETUNE_SEEDS = 3  # the mean over seeds: with 8 examples a class, one seed's number swings by points
# Pre-training starts from the local start (train/local_start.py) and holds its positions and query/key weights
# for this share of the steps (the tiny recipe's). Measured on the demo (BENCHMARKS.md, "The demo's hold"): a
# shorter hold (0.1) raises held-out MLM (34.9% against 33.0%) but NSP falls to 55% and the fine-tuning of step 5
# from the pre-trained model falls below the random start (38.3% against 50.8%; with 0.5: 68.0% against 51.3%).
HOLD_LOCAL = 0.5
# The share of positions chosen for the MLM. The demo's corpus is small (1.5 MB: 3,200 steps go over it ~30
# times), and choosing more positions per pass trains more of them on each repeat: held-out MLM (always scored
# at the paper's 15%) 35.0% at 0.25 against 33.7% at 0.15, same steps (BENCHMARKS.md, "The demo's steps and
# masking rate").
MASK_RATE = 0.25
# AdamW's decoupled weight decay: the paper's 0.01. The corpus is read ~30 times and overfits (44% MLM accuracy
# on training batches, 34% held out); 0.1 lifts held-out MLM past 35% (35.5% and 35.8% in two whole demos) but
# both runs lost NSP (56-58% against 76-80%) and most of step 5's transfer (+7.5 and +8.1 points against +17
# to +18), which is what the demo is for (BENCHMARKS.md, "The demo's weight decay").
WEIGHT_DECAY = 0.01
# Pre-training is planned for MAX_MINUTES and capped at STEPS (`bertkit pretrain --budget 7m --max-steps 3200`):
# ~5 minutes of 3,200 steps where bf16 is native; a slower CPU gets the steps that fit, with the learning rate
# still decayed to 0 at the end. (Before, a 7-minute cap cut a 3,200-step schedule: on an AVX2-only CPU at step
# 2,537, the learning rate not decayed, 33.7% held-out MLM; BENCHMARKS.md, "The demo".)
STEPS, MAX_MINUTES = 3200, 7.0


def prose_sentences(text: str) -> list[str]:
    """Sentences of the prose paragraphs of a docstring or doc page; code, grammar and underlines dropped."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [line for line in paragraph.split("\n") if line.strip()]
        if not lines or any(line.startswith(("   ", ">>>", "\t")) for line in lines) \
                or re.fullmatch(r"[*=\-~^ ]+", lines[-1].strip()):
            continue
        prose = " ".join(line.strip() for line in lines)
        sentences += [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", prose) if len(s.split()) >= 3]
    return sentences


@functools.cache  # a few seconds of parsing; the corpus and step 5's task both read it
def python_docs_documents() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(name, sentences) of each document of text every Python installation has: the language reference
    topics of pydoc_data (named `topic:NAME`), and the docstrings of the standard library's modules (named
    as imported, `logging.handlers`; read with `ast` from the source files, never imported)."""
    import ast
    import sysconfig
    from pathlib import Path

    from pydoc_data.topics import topics

    documents = [(f"topic:{name}", tuple(prose_sentences(topics[name]))) for name in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parts[-2:][0] or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        module = ".".join(part for part in path.relative_to(stdlib).with_suffix("").parts if part != "__init__")
        documents.append((module, tuple(s for n in nodes for s in prose_sentences(ast.get_docstring(n) or ""))))
    return tuple(documents)


def python_docs_corpus(max_bytes: int = 3_000_000, exclude: tuple[str, ...] = ()) -> str:
    """The documents of `python_docs_documents` but those named in `exclude` (blank-line separated, one
    sentence per line), up to about `max_bytes`."""
    text, size = [], 0
    for name, sentences in python_docs_documents():
        if len(sentences) >= 2 and size < max_bytes and name not in exclude:
            text.append("\n".join(sentences))
            size += len(text[-1])
    return "\n\n".join(text) + "\n"


def show_fill_mask(model, tokenizer, title: str) -> int:
    """Print the top 3 guesses for each probe, marked where a right word is among them; returns how many are."""
    from bertkit.inference import fill_mask

    print(f"\n{title}")
    right = 0
    for probe, answers in PROBES:
        guesses = fill_mask(model, tokenizer, probe, top_k=3)[0]
        hit = any(token in answers for token, _ in guesses)
        right += hit
        shown = ", ".join(f"{token} ({p:.0%})" for token, p in guesses)
        print(f"  {'+' if hit else ' '} {probe:<58} -> {shown}")
    print(f"  the right word is in the top 3 for {right} of {len(PROBES)} ('+')")
    return right


SETTINGS_FILE = "demo.json"  # the options a demo directory was made with: --resume must repeat them


def run_demo(out: str, corpus_files: list[str] | None = None, steps: int = STEPS, vocab_size: int = 4000,
             model_config: str = "tiny", seq_len: int = 128, batch_size: int = 32, lr: float = 3e-3,
             precision: str = "auto", seed: int = 0, corpus_bytes: int = 3_000_000,
             show_progress: bool = True, resume: bool = False, max_minutes: float | None = MAX_MINUTES,
             finetune_epochs: int = FINETUNE_EPOCHS, hold_local: float = HOLD_LOCAL,
             mask_rate: float = MASK_RATE, weight_decay: float = WEIGHT_DECAY) -> dict:
    """Run the demo into `out`; with `resume`, continue an interrupted one there (its vocabulary and data
    reused when complete, the pre-training from its newest checkpoint)."""
    # the numbers pre-training would refuse, refused before minutes of vocabulary and data preparation
    from bertkit.train.pretrain import check_settings
    from bertkit.train.recipe import apply_recipe

    by_budget = max_minutes is not None
    check_settings(apply_recipe(pretrain_config(out, steps, model_config, seq_len, batch_size, lr, precision, seed,
                                                show_progress, resume, max_minutes, hold_local, mask_rate,
                                                weight_decay, by_budget))[0])
    settings = dict(corpus=[os.path.abspath(f) for f in corpus_files] if corpus_files else None, steps=steps,
                    vocab_size=vocab_size, model_config=model_config, seq_len=seq_len, batch_size=batch_size, lr=lr,
                    precision=precision, seed=seed, corpus_bytes=corpus_bytes, max_minutes=max_minutes,
                    finetune_epochs=finetune_epochs, hold_local=hold_local, mask_rate=mask_rate,
                    weight_decay=weight_decay)
    if resume and os.path.isfile(os.path.join(out, SETTINGS_FILE)):
        # demos made before pre-training was planned for --max-minutes ran a fixed number of steps: keep to it
        by_budget = _check_same_settings(out, settings).get("pretrain_schedule") == "budget"
    else:
        check_output_dir(out, hint="continue the demo in it with --resume, choose a new --out, or delete it",
                         reuse=resume)
        resume = False  # nothing to continue: a fresh start
        os.makedirs(out, exist_ok=True)
        atomic_write_json(os.path.join(out, SETTINGS_FILE),
                          {**settings, "pretrain_schedule": "budget" if by_budget else "steps"})
    return _run_demo(out, corpus_files, steps, vocab_size, model_config, seq_len, batch_size, lr, precision, seed,
                     corpus_bytes, show_progress, resume, max_minutes, finetune_epochs, hold_local, mask_rate,
                     weight_decay, by_budget)


def _check_same_settings(out: str, settings: dict) -> dict:
    """The saved settings, if `settings` repeats them; else an error naming what changed."""
    path = os.path.join(out, SETTINGS_FILE)
    try:
        saved = json.loads(read_text(path))
    except ValueError:
        raise BertkitError(f"{path}: not valid JSON", hint="the demo's settings file is damaged; start a new --out")
    saved.setdefault("weight_decay", 0.01)  # demos made before --weight-decay trained with 0.01
    changed = [f"{k} {saved.get(k)!r} (now {v!r})" for k, v in settings.items() if saved.get(k) != v]
    if changed:
        raise BertkitError(f"--resume: {out} was started with other settings: {', '.join(changed)}",
                           hint="resume with the original options, or choose a new --out")
    return saved


def pretrain_config(out, steps, model_config, seq_len, batch_size, lr, precision, seed, show_progress, resume,
                    max_minutes, hold_local, mask_rate, weight_decay, by_budget):
    """Step 3's run: OUT/run, from the data step 2 prepares in OUT/data. by_budget: planned for max_minutes (as
    `--budget`, the time counted from the start of step 3) with at most `steps`; else `steps`, cut short when
    max_minutes is spent."""
    from bertkit.train.pretrain import PretrainConfig

    length = (dict(budget=f"{max(0.001, round(60 * max_minutes, 3)):g}s", max_steps=steps) if by_budget else
              dict(steps=steps))
    return PretrainConfig(data=[os.path.join(out, "data")], out=os.path.join(out, "run"), model_config=model_config,
                          **length, batch_size=batch_size, lr=lr, warmup=0.06, weight_decay=weight_decay,
                          seq_len=seq_len, precision=precision, seed=seed, log_every=25,
                          eval_every=max(1, steps // 4), save_every=max(1, steps), eval_samples=512,
                          show_progress=show_progress, resume=resume, max_minutes=max_minutes, init_scheme="local",
                          hold_local=hold_local, mask_rate=mask_rate,
                          model_overrides=dict(max_position_embeddings=seq_len))


def _run_demo(out, corpus_files, steps, vocab_size, model_config, seq_len, batch_size, lr, precision, seed,
              corpus_bytes, show_progress, resume, max_minutes=None, finetune_epochs=FINETUNE_EPOCHS,
              hold_local=HOLD_LOCAL, mask_rate=MASK_RATE, weight_decay=WEIGHT_DECAY, by_budget=False) -> dict:
    from bertkit.data.corpus import expand_inputs, train_tokenizer
    from bertkit.data.prepare import prepare
    from bertkit.model import BertForPreTraining
    from bertkit.tokenizer import Tokenizer
    from bertkit.train.pretrain import build, evaluate, pretrain

    started = time.perf_counter()
    tokenizer_dir, data_dir = os.path.join(out, "tokenizer"), os.path.join(out, "data")
    # the prepared data is renamed into place complete, after the vocabulary: with it, steps 1 and 2 are done
    prepared = resume and os.path.isfile(os.path.join(data_dir, "manifest.json"))
    if corpus_files:
        files, fmt = expand_inputs(corpus_files), "text"
        print(f"corpus: {', '.join(corpus_files)}")
    else:
        files, fmt = [os.path.join(out, "corpus.txt")], "text"
        if not (resume and os.path.isfile(files[0])):  # written atomically: if it is there, it is whole
            atomic_write_text(files[0], python_docs_corpus(corpus_bytes, exclude=TASK_MODULES))
        print(f"corpus: the Python documentation shipped with Python, {os.path.getsize(files[0]) / 1e6:.1f} MB "
              f"-> {files[0]} (less the {len(TASK_MODULES)} modules of step 5's task)")

    if prepared:
        tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
        print(f"\n[1/5] reusing the {tokenizer.vocab_size}-token vocabulary in {tokenizer_dir}")
    else:
        shutil.rmtree(tokenizer_dir, ignore_errors=True)  # debris of an interrupted first try
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"\n[1/5] learning a {vocab_size}-token WordPiece vocabulary")
        tokenizer = train_tokenizer(files, vocab_size, fmt)
        tokenizer.save_pretrained(tokenizer_dir)
        print(f"      {tokenizer.vocab_size} tokens; e.g. {tokenizer.tokenize('Exceptions are raised by statements.')}")

    if prepared:
        print(f"\n[2/5] reusing the pre-training data in {data_dir}")
        from bertkit.data.prepare import load_manifest

        manifest = load_manifest(data_dir)
    else:
        print("\n[2/5] preparing pre-training data")
        manifest = prepare(files, tokenizer_dir, data_dir, fmt=fmt, workers=1, validation_fraction=0.1, seed=seed,
                           show_progress=False)
    for split, counts in manifest["splits"].items():
        print(f"      {split}: {counts['documents']} documents, {counts['sentences']} sentences, {counts['tokens']} tokens")

    cfg = pretrain_config(out, steps, model_config, seq_len, batch_size, lr, precision, seed, show_progress, resume,
                          max_minutes, hold_local, mask_rate, weight_decay, by_budget)
    untrained, _, _, validation = build(cfg)
    if validation is None:
        raise BertkitError("the corpus is too small to hold out validation documents", hint="pass more --corpus text")
    show_fill_mask(untrained, tokenizer, "fill-mask before pre-training (random weights):")

    from bertkit.device import default_device, resolve_precision

    requested_precision = precision  # fine-tuning resolves it again, as `bertkit finetune --precision` does
    precision = resolve_precision(precision, default_device()).name
    c = untrained.config
    print(f"\n[3/5] pre-training a BERT (L{c.num_hidden_layers}/H{c.hidden_size}/A{c.num_attention_heads}, "
          f"{sum(p.numel() for p in untrained.parameters()) / 1e6:.1f}M parameters) for "
          f"{f'up to {steps} steps (as many as fit in {max_minutes:g} minutes here)' if by_budget else f'{steps} steps'}"
          f" of {batch_size} x {seq_len} tokens, MLM + NSP, {precision}")
    torch.manual_seed(seed)
    held_out = pretrain(cfg)  # SIGINT/SIGTERM: a checkpoint, then Interrupted (the CLI says how to --resume)
    model = BertForPreTraining.from_pretrained(os.path.join(cfg.out, "model"))
    planned = json.loads(read_text(os.path.join(cfg.out, "run.json")))["planned_steps"]
    if not held_out:  # resumed after the last step: this call trained and evaluated nothing
        held_out = {"step": planned, **evaluate(model, validation, cfg, torch.device("cpu"))}
    if planned < steps:  # a slower machine: the schedule was planned for the steps that fit
        print(f"\n(this machine fits {planned} of the {steps} steps in --max-minutes {max_minutes:g}: the learning "
              f"rate was planned to decay to 0 at step {planned})")
    if held_out["step"] < planned:  # slower than measured: the time cap ended the pre-training early
        print(f"\n(pre-training ended at step {held_out['step']} of {planned}: --max-minutes {max_minutes:g} was spent)")

    print("\n[4/5] held-out evaluation")
    mlm_floor, nsp_floor = baselines(validation, cfg.eval_samples)
    print(f"      MLM accuracy {held_out['mlm_accuracy']:.1%}  (chance 1/{tokenizer.vocab_size} = "
          f"{1 / tokenizer.vocab_size:.2%}; always guessing the most frequent token: {mlm_floor:.1%})")
    print(f"      NSP accuracy {held_out['nsp_accuracy']:.1%}  (chance 50%; always guessing the majority class: "
          f"{nsp_floor:.1%})")
    show_fill_mask(model, tokenizer, "fill-mask after pre-training:")
    finetuned = {}
    if finetune_epochs:
        # the random start: the paper's initialisation, N(0, 0.02), with the same seed. Not the weights step 3
        # started from: the tiny recipe starts pre-training from the local start (train/local_start.py), a
        # hand-set start that fine-tunes worse than the paper's on its own, which would flatter the gap
        torch.manual_seed(seed)
        random_start = BertForPreTraining(untrained.config)
        finetuned = finetune_twice(out, os.path.join(cfg.out, "model"), random_start, tokenizer, requested_precision,
                                   seed, finetune_epochs, show_progress, resume, own_corpus=bool(corpus_files))
    else:
        print("\n[5/5] fine-tuning skipped (--finetune-epochs 0)")
    print(f"\nmodel directory (HuggingFace format): {os.path.join(cfg.out, 'model')}")
    print(f"training curves: {os.path.join(cfg.out, 'curves.png')}")
    if finetuned:
        print(f"fine-tuned models: {finetuned['finetune_pretrained']['dir']}, {finetuned['finetune_random']['dir']}")
    print(f"total time {time.perf_counter() - started:.0f} s")
    return {**held_out, **finetuned}


def baselines(dataset, n: int) -> tuple[float, float]:
    """Accuracy of answering without looking at the input, on the samples the evaluation scores:
    the most frequent masked token (MLM) and the majority NSP label. The floors a model must beat."""
    dataset.set_epoch(0)
    tokens: Counter = Counter()
    is_next: Counter = Counter()
    for i in range(min(len(dataset), n)):
        sample = dataset[i]
        tokens.update(sample["labels"][sample["labels"] >= 0].tolist())
        is_next[int(sample["next_sentence_label"])] += 1
    return (tokens.most_common(1)[0][1] / max(1, sum(tokens.values())),
            is_next.most_common(1)[0][1] / max(1, sum(is_next.values())))


# ----------------------------------------------------------------------------------------------
# Step 5: what pre-training is for. A small labeled task made of text the pre-training never read,
# fine-tuned twice with one recipe: from the pre-trained weights, and from the same network's weights
# before pre-training (the model step 3 started from). Only the starting weights differ.


def module_task(task_dir: str, seed: int) -> dict:
    """Write TASK_DIR/train.jsonl and dev.jsonl (`{"text": sentence, "label": module}` per line, the
    format `bertkit finetune --task classify` reads) from the docstrings of TASK_MODULES; deterministic
    given `seed`. A sentence that occurs in any other document of the Python docs ("Return the value.") is
    dropped: then no task sentence is in the pre-training corpus, and none has two right answers.
    Returns the counts, the labels and the accuracy of always answering dev's most frequent module."""
    import random

    documents = python_docs_documents()
    found_in: dict[str, set[str]] = {}
    for name, sentences in documents:
        for sentence in sentences:
            found_in.setdefault(sentence, set()).add(name)
    by_name = dict(documents)
    rng = random.Random(seed)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "dev": []}
    for module in TASK_MODULES:
        own = sorted({s for s in by_name.get(module, []) if found_in[s] == {module}})
        rng.shuffle(own)
        splits["train"] += [(s, module) for s in own[:TASK_TRAIN_PER_MODULE]]
        splits["dev"] += [(s, module) for s in own[TASK_TRAIN_PER_MODULE:]]
    labels = sorted({label for _, label in splits["dev"]})
    if len(labels) < 2:
        raise BertkitError(f"this Python's standard library has docstrings for {len(labels)} of the demo's task "
                           f"modules ({', '.join(TASK_MODULES)})", hint="run the demo on CPython 3.10 or later")
    os.makedirs(task_dir, exist_ok=True)
    for split, rows in splits.items():
        rng.shuffle(rows)  # files in random order: a `--max-train-examples N` run still sees every module
        atomic_write_text(os.path.join(task_dir, f"{split}.jsonl"),
                          "".join(json.dumps({"text": s, "label": m}, ensure_ascii=False) + "\n" for s, m in rows))
    # the training labels are balanced: the floor to beat is always answering dev's most frequent module
    majority, count = Counter(label for _, label in splits["dev"]).most_common(1)[0]
    return {"labels": labels, "train": len(splits["train"]), "dev": len(splits["dev"]), "majority_class": majority,
            "majority_accuracy": count / len(splits["dev"])}


def finetune_twice(out: str, model_dir: str, random_start, tokenizer, precision: str, seed: int, epochs: int,
                   show_progress: bool, resume: bool, own_corpus: bool = False) -> dict:
    """Build the task, fine-tune the pre-trained `model_dir` and the `random_start` twin on it with
    FINETUNE_RECIPE, print the dev accuracies side by side. With `resume`, runs finished before are reused
    and an interrupted one continues from its checkpoint (as `bertkit finetune --resume`). `own_corpus`: the
    model was pre-trained on the user's text, which may hold these docstrings."""
    import contextlib
    import io
    import math

    from bertkit.train.finetune import FinetuneConfig, finetune

    task_dir, runs_dir = os.path.join(out, "task"), os.path.join(out, "finetune")
    task = module_task(task_dir, seed)
    seeds = [seed + i for i in range(FINETUNE_SEEDS)]
    print(f"\n[5/5] fine-tuning on a small labeled task: which of {len(task['labels'])} standard-library "
          f"modules a docstring sentence comes from")
    unseen = "" if own_corpus else " (these modules are not in the pre-training corpus)"
    print(f"      {task['train']} train / {task['dev']} dev sentences in {task_dir}{unseen}; {epochs} epochs, "
          f"lr {FINETUNE_RECIPE['lr']:g}, {len(seeds)} seeds, from each start")
    random_dir = os.path.join(runs_dir, "random-init")  # the paper's random initialisation, the same --seed
    random_start.save_pretrained(random_dir)
    tokenizer.save_pretrained(random_dir, model_max_length=random_start.config.max_position_embeddings)
    max_seq_len = min(FINETUNE_RECIPE["max_seq_len"], random_start.config.max_position_embeddings)  # a --seq-len 64 demo
    results = {}
    for name, start, title in (("pretrained", model_dir, "pre-trained"), ("random", random_dir, "random init")):
        cfg = FinetuneConfig(task="classify", model=start, out=os.path.join(runs_dir, name), data=task_dir,
                             epochs=float(epochs), precision=precision, seeds=seeds, show_progress=show_progress,
                             resume=resume, **{**FINETUNE_RECIPE, "max_seq_len": max_seq_len})
        began = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # its line per epoch and seed; metrics.jsonl keeps them
            summary = finetune(cfg)
        seconds = time.perf_counter() - began
        per_seed = [summary["per_seed"][str(s)]["accuracy"] for s in seeds]
        results[name] = {"accuracy": summary["accuracy"]["mean"], "accuracy_std": summary["accuracy"]["std"],
                         "per_seed": per_seed, "seconds": seconds, "dir": cfg.out}
        print(f"      {title:<12} dev accuracy {summary['accuracy']['mean']:.1%} (seeds: "
              f"{', '.join(f'{a:.1%}' for a in per_seed)}), {seconds:.0f} s -> {cfg.out}")
    pretrained, random_init = (results[k]["accuracy"] for k in ("pretrained", "random"))
    print(f"      dev accuracy: pre-trained {pretrained:.1%} | random initialisation {random_init:.1%} | "
          f"always the most frequent module ({task['majority_class']}) {task['majority_accuracy']:.1%}")
    # two standard errors of the difference: the dev set's sampling noise and the spread over seeds
    noise = 2 * math.sqrt(sum(p * (1 - p) / task["dev"] + results[k]["accuracy_std"] ** 2 / len(seeds)
                              for k, p in (("pretrained", pretrained), ("random", random_init))))
    gap = pretrained - random_init
    if abs(gap) <= noise:
        print(f"      the {gap * 100:+.1f}-point gap is within the noise (±{noise * 100:.0f}): this pre-training "
              f"has given the task nothing a random start does not learn from its {task['train']} examples")
    else:
        print(f"      the {gap * 100:+.1f}-point gap (noise about ±{noise * 100:.0f}) is what pre-training on other "
              f"text {'transferred' if gap > 0 else 'cost'}: same network, recipe and examples, other start")
    return {"task": {**task, "dir": task_dir}, "finetune_pretrained": results["pretrained"],
            "finetune_random": results["random"]}
