"""Which of BERT's successors fixed what: each pre-training objective on the same data and the same wall-clock
budget, then fine-tuned with one recipe on GLUE tasks (issue 14).

    python benchmarks/objectives.py --data DATA --budget 20m --out /tmp/objectives

DATA is a `bertkit prepare` directory of ../shared/data/corpus/enwiki-wikiextractor (see pretraining_pays_off.py).
The setups, each `bertkit pretrain --data DATA --out OUT/pretrain-NAME --budget B --model-config tiny OPTIONS`,
one after another (never two at once: on a small machine they would measure each other), then fine-tuned:

  random    no pre-training: the nsp model's config with freshly drawn weights (one draw per seed)
  nsp       BERT: masked LM + next-sentence prediction (--objective nsp)
  none      RoBERTa's change: no NSP, contiguous windows (--objective none)
  sop       ALBERT's change: sentence-order prediction instead of NSP (--objective sop)
  span      SpanBERT's change: masking spans of whole words, no NSP (--objective none --masking span); compare with
            `none` for the masking alone
  electra   ELECTRA: replaced-token detection with a small generator (--objective electra)

--setups picks a subset (default: all the objectives the installed bertkit offers). The fine-tuning recipe and
its bookkeeping are pretraining_pays_off.py's (same options, same resumable OUT/results.jsonl, the same capped
training sets); `init` in a result line is the setup's name. A rerun continues: finished pre-training runs and
fine-tunes are kept. OUT/table.md: per setup, held-out MLM accuracy at the end of pre-training (the generator's
for ELECTRA, whose discriminator predicts no tokens), pre-training tokens/s (a step of ELECTRA costs more: equal
wall clock is the fair comparison, as Clark et al. 2020, table 1), and each task's mean ± std over the seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import signal
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretraining_pays_off as payoff  # noqa: E402  (the fine-tuning recipe and its bookkeeping)
from pretraining_pays_off import GLUE_DIRS, Failure  # noqa: E402

from bertkit.errors import BertkitError, Interrupted  # noqa: E402

# setup -> `bertkit pretrain` options; "random" is not pre-trained
SETUPS = {
    "random": None,
    "nsp": ["--objective", "nsp"],
    "none": ["--objective", "none"],
    "sop": ["--objective", "sop"],
    "span": ["--objective", "none", "--masking", "span"],
    "electra": ["--objective", "electra"],
}
# what each setup changes, and the paper that made the change (docs/successors.md has the numbers)
WHAT = {
    "random": "no pre-training",
    "nsp": "BERT (Devlin et al. 2019)",
    "none": "no NSP, full windows (RoBERTa, Liu et al. 2019)",
    "sop": "sentence order instead of NSP (ALBERT, Lan et al. 2020)",
    "span": "span masking, no NSP (SpanBERT, Joshi et al. 2020)",
    "electra": "replaced-token detection (ELECTRA, Clark et al. 2020)",
}
DEFAULT_TASKS = ["sst2", "mrpc", "stsb", "rte"]


def available_setups() -> list[str]:
    """The setups this bertkit can run: random plus those whose --objective (and --masking) it knows."""
    from bertkit.data.masking import MASKERS
    from bertkit.objectives import OBJECTIVES

    def known(options):
        values = dict(zip(options[::2], options[1::2]))
        return values["--objective"] in OBJECTIVES and values.get("--masking", "token") in MASKERS

    return [name for name, options in SETUPS.items() if options is None or known(options)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="prepared-data directories (`bertkit prepare`)")
    p.add_argument("--budget", default="20m", help="each setup's pre-training wall-clock budget")
    p.add_argument("--out", required=True)
    p.add_argument("--setups", default=None, help=f"comma-separated subset of {','.join(SETUPS)} (default: all "
                                                  "that this bertkit offers)")
    p.add_argument("--model-config", default="tiny", help="the preset every setup pre-trains")
    p.add_argument("--pretrain-args", default="", help="more `bertkit pretrain` options for every setup")
    p.add_argument("--glue-dir", default=payoff.DEFAULT_GLUE)
    p.add_argument("--tasks", nargs="+", type=payoff.task_name, default=DEFAULT_TASKS, metavar="TASK")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--max-train-examples", type=int, default=8000)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps")
    p.add_argument("--keep", choices=["last", "best"], default="last")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--keep-models", action="store_true")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--overlap", action="store_true",
                   help="pre-train on half of the CPUs while fine-tuning the setups already pre-trained on the other "
                        "half (every pre-training then has fine-tuning beside it, alike for all; the random twins "
                        "take the preset's config, so they need no pre-training); saves about an hour")
    args = p.parse_args(argv)
    offered = available_setups()
    if args.setups is None:
        args.setups = offered
    else:
        args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
        unknown = [s for s in args.setups if s not in offered]
        if unknown:
            p.error(f"--setups {','.join(unknown)}: choose from {', '.join(offered)}")
    args.data = [os.path.abspath(d) for d in args.data]
    return args


def random_template(args) -> str:
    """OUT/random-template: what every setup's model starts as, the preset's config with the data's vocabulary and
    its tokenizer files, written as `bertkit pretrain` writes a model (random_twin copies its config and tokenizer
    and draws the weights per seed)."""
    from bertkit.model import BertForPreTraining
    from bertkit.tokenizer import Tokenizer
    from bertkit.train.pretrain import load_model_config

    template = os.path.join(args.out, "random-template")
    if not os.path.isfile(os.path.join(template, "config.json")):
        tokenizer = Tokenizer.from_pretrained(os.path.join(args.data[0], "tokenizer"))
        config = dataclasses.replace(load_model_config(args.model_config), vocab_size=tokenizer.vocab_size,
                                     pad_token_id=tokenizer.pad_token_id)
        tmp = template + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        BertForPreTraining(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp, model_max_length=config.max_position_embeddings)
        os.replace(tmp, template)
    return template


def pretrain_run(args, name: str) -> str:
    return os.path.join(args.out, f"pretrain-{name}")


def model_dir(args, name: str) -> str:
    """The model a finished pre-training run of setup `name` saved."""
    return os.path.abspath(os.path.join(pretrain_run(args, name), "model"))


def pretrain_summary(run: str) -> dict:
    """Held-out MLM accuracy (the last held-out point), steps, and mean training tokens/s of a finished run."""
    held_out, speeds, steps = None, [], 0
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            steps = max(steps, record.get("step", 0))
            if record.get("split") == "validation":
                held_out = record
            elif record.get("tokens_per_s"):
                speeds.append(record["tokens_per_s"])
    return {"mlm_accuracy": held_out.get("mlm_accuracy") if held_out else None, "steps": steps,
            "tokens_per_s": statistics.fmean(speeds) if speeds else None}


def render(args, argv: list[str], results: dict, data_notes: list[str]) -> str:
    from bertkit.data.tasks import TASKS
    from bertkit.device import machine_summary

    head = ["setup", "what it changes", "held-out MLM acc.", "tokens/s", "steps"]
    head += [f"{GLUE_DIRS[t]} ({TASKS[t].metric})" for t in args.tasks]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for name in args.setups:
        if SETUPS[name] is None:
            pre = ["—", "—", "—"]
        else:
            s = pretrain_summary(pretrain_run(args, name))
            pre = [f"{100 * s['mlm_accuracy']:.1f}%" if s["mlm_accuracy"] is not None else "—",
                   f"{s['tokens_per_s']:,.0f}" if s["tokens_per_s"] else "—", f"{s['steps']:,}"]
        cells = [payoff.cell([results[(t, name, seed)]["value"] for seed in args.seeds if (t, name, seed) in results],
                             len(args.seeds)) for t in args.tasks]
        rows.append("| " + " | ".join([name, WHAT[name], *pre, *cells]) + " |")
    command = shlex.join(["python", "benchmarks/objectives.py", *argv])
    recipe = (f"Pre-training: `bertkit pretrain --budget {args.budget} --model-config {args.model_config}` with the "
              f"setup's options and the preset's recipe, one setup at a time. Fine-tuning, the same for every setup: "
              f"epochs {args.epochs:g}, lr {args.lr:g}, batch {args.batch_size}, max seq len {args.max_seq_len}, "
              f"warmup {args.warmup:g}, the {args.keep} epoch's model, seeds {', '.join(map(str, args.seeds))}. "
              + " ".join(data_notes))
    if args.overlap:
        recipe += (" Run with --overlap: each pre-training ran on half of the CPUs while the setups already pre-trained "
                   "were fine-tuned on the other half (the same for every setup), so its tokens/s are those of half "
                   "the machine.")
    caption = ("Dev-set scores x 100, mean ± sample std over the seeds. Held-out MLM accuracy: 15% of 1,024 held-out "
               "samples' tokens, fixed masks (for electra: its generator's).")
    return "\n".join([f"# Pre-training objectives at an equal budget: `{command}`", "", machine_summary(), "",
                      recipe, "", *rows, "", caption, ""])


def pretrain_into(args, name: str, models: dict) -> None:
    payoff.pretrain_into(pretrain_run(args, name), args.data, args.budget, pretrain_options(args, name),
                         log_path(args, name))
    models[name] = model_dir(args, name)


def pretrain_options(args, name: str) -> list[str]:
    return ["--model-config", args.model_config, *SETUPS[name], *shlex.split(args.pretrain_args)]


def log_path(args, name: str) -> str:
    return os.path.join(args.out, f"{name}.log")


def finetune(args, entry, models: dict, files: dict, results: dict, results_path: str, progress: str) -> None:
    task, name, seed = entry
    model = payoff.random_twin(models["random"], args.out, seed) if name == "random" else models[name]
    payoff.finetune_and_record(args, entry, model, files[task], results, results_path, progress)


def overlapped(args, pretraining: list[str], models: dict, todo: list, files: dict, results: dict,
               results_path: str):
    """--overlap: the pre-training runs one after another on the first half of this process's CPUs while this
    process fine-tunes, on the other half, whatever is ready (the random twins at once, a setup's entries once its
    pre-training has finished); the rest runs on all the CPUs. Returns the entry last started (for the message
    when stopped)."""
    import torch

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise Failure(f"--overlap needs at least 2 CPUs; this process may use {len(cpus)}")
    pre_cpus, fine_cpus = set(cpus[:len(cpus) // 2]), set(cpus[len(cpus) // 2:])
    os.sched_setaffinity(0, fine_cpus)
    torch.set_num_threads(len(fine_cpus))
    waiting, process, current, entry = list(pretraining), None, None, None
    todo, done, widened = list(todo), 0, False
    previous = signal.signal(signal.SIGTERM, payoff.stop)
    try:
        while waiting or process or todo:
            if process is not None and (process.poll() is not None or not any(e[1] in models for e in todo)):
                payoff.finish_pretraining(process, pretrain_run(args, current), log_path(args, current))
                models[current] = model_dir(args, current)
                process = None
            if process is None and waiting:
                current = waiting.pop(0)
                process = payoff.start_pretraining(pretrain_run(args, current), args.data, args.budget,
                                                   pretrain_options(args, current), log_path(args, current),
                                                   cpus=pre_cpus)
                if process is None:  # finished before
                    models[current] = model_dir(args, current)
                continue
            if process is None and not widened:  # the pre-training is over: all the CPUs for the rest
                os.sched_setaffinity(0, set(cpus))
                torch.set_num_threads(len(cpus))
                widened = True
            ready = [e for e in todo if e[1] in models]
            if not ready:
                continue  # the loop's first test waits for the running pre-training
            entry = ready[0]
            todo.remove(entry)
            done += 1
            finetune(args, entry, models, files, results, results_path, f"{done}/{done + len(todo)}")
    except (KeyboardInterrupt, Interrupted):
        if process is not None:
            payoff.stop_pretraining(process)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return entry


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from bertkit.device import machine_summary
    from bertkit.machine import choose_wait_policy

    machine_summary()  # read (and cached) before --overlap narrows this process to part of the CPUs

    results_path = os.path.join(args.out, payoff.RESULTS)
    running = None
    try:
        files = payoff.task_files(args.glue_dir, args.tasks)
        choose_wait_policy()
        from bertkit.device import configure_threads

        configure_threads(args.threads)
        os.makedirs(args.out, exist_ok=True)
        payoff.check_recipe(args.out, {"budget": args.budget, "model_config": args.model_config,
                                       "pretrain_args": args.pretrain_args, "data": args.data,
                                       **{k: getattr(args, k) for k in payoff.RECIPE}})
        models = {"random": random_template(args)}
        pretraining = [name for name in args.setups if SETUPS[name] is not None]
        if not args.overlap:  # all the pre-training first: each alone on the machine
            for name in pretraining:
                pretrain_into(args, name, models)
        results = payoff.load_results(results_path, {n: m for n, m in models.items() if n != "random"})
        data_notes = []
        for task in args.tasks:
            train, used, available = payoff.capped_train_file(task, files[task]["train"], args.max_train_examples,
                                                              args.out)
            files[task]["train"] = train
            if used < available:
                data_notes.append(f"{GLUE_DIRS[task]} trains on {used:,} of its {available:,} examples (a fixed "
                                  f"random subset, seed {payoff.SUBSET_SEED}).")
        todo = payoff.pending(results, args.tasks, args.seeds, args.setups)
        if args.overlap:
            running = overlapped(args, pretraining, models, todo, files, results, results_path)
        else:
            for number, running in enumerate(todo, 1):
                finetune(args, running, models, files, results, results_path, f"{number}/{len(todo)}")
    except (Failure, BertkitError) as e:
        print(f"objectives.py: error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt):
        where = f" during {GLUE_DIRS[running[0]]} {running[1]} seed {running[2]}" if running else ""
        print(f"objectives.py: interrupted{where}; rerun the same command to continue", file=sys.stderr)
        return 130
    text = render(args, argv, results, data_notes)
    with open(os.path.join(args.out, payoff.TABLE), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
