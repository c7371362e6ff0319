"""The `bertkit` command: parses arguments and calls the library.

Every user error is a `BertkitError`, printed as one line on stderr with exit status 2; outputs are
written atomically, so a failed run leaves what was on disk untouched.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from bertkit.errors import BertkitError, Interrupted
from bertkit.files import check_output_file


def cmd_embed(args: argparse.Namespace) -> None:
    import json

    import numpy as np

    from bertkit.checkpoint import load_model
    from bertkit.files import atomic_write, atomic_write_text, read_lines
    from bertkit.inference import embed, parse_layers, token_vectors
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer

    jsonl = args.output.endswith(".jsonl")
    if not (jsonl or args.output.endswith(".npy")):
        raise BertkitError(f"--output {args.output}: must end in .npy or .jsonl",
                           hint="e.g. --output embeddings.npy (pooled vectors) or tokens.jsonl")
    check_output_file(args.output)
    if args.pooling == "none" and not jsonl:
        raise BertkitError("--pooling none gives a different number of vectors per text, which .npy cannot hold",
                           hint="write them as JSON Lines: --output tokens.jsonl")
    texts = read_lines(args.input, skip_empty=False)  # row i of the output is line i of the input
    model = load_model(args.model)
    encoder = model if isinstance(model, BertModel) else model.bert
    tokenizer = Tokenizer.from_pretrained(args.model)
    options = dict(batch_size=args.batch_size, normalize=args.normalize, max_length=args.max_seq_len,
                   precision=args.precision, show_progress=not args.quiet,
                   layers=parse_layers(args.layers, encoder.config.num_hidden_layers), layer_merge=args.layer_merge)
    if args.pooling == "none":
        rows = token_vectors(encoder, tokenizer, texts, **options)
        atomic_write_text(args.output, "".join(json.dumps(
            {"text": text, "tokens": r["tokens"], "offsets": r["offsets"], "vectors": r["vectors"].tolist()},
            ensure_ascii=False) + "\n" for text, r in zip(texts, rows)))
        width = rows[0]["vectors"].shape[1]
    else:
        vectors = embed(encoder, tokenizer, texts, pooling=args.pooling, **options)
        width = vectors.shape[1]
        if jsonl:
            atomic_write_text(args.output, "".join(json.dumps({"text": text, "embedding": v.tolist()},
                                                              ensure_ascii=False) + "\n"
                                                   for text, v in zip(texts, vectors)))
        else:
            def write(tmp):
                with open(tmp, "wb") as f:
                    np.save(f, vectors)

            atomic_write(args.output, write)
    print(f"wrote {args.output}: {len(texts)} texts x {width} dims ({args.pooling} pooling, layers {args.layers}"
          f"{', ' + args.layer_merge if ',' in args.layers else ''})", file=sys.stderr)


def cmd_vocab(args: argparse.Namespace) -> None:
    from bertkit.data.corpus import expand_inputs, train_tokenizer
    from bertkit.files import check_output_dir

    files = expand_inputs(args.input)
    check_output_dir(args.out, hint="choose a new --out or pass --force", reuse=args.force)
    tokenizer = train_tokenizer(files, args.vocab_size, args.format, lowercase=not args.cased,
                                skip_bad_lines=args.skip_bad_lines, show_progress=not args.quiet)
    tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}: {tokenizer.vocab_size} WordPiece tokens ({'cased' if args.cased else 'uncased'})",
          file=sys.stderr)


def cmd_prepare(args: argparse.Namespace) -> None:
    from bertkit.data.corpus import expand_inputs
    from bertkit.data.prepare import prepare

    manifest = prepare(expand_inputs(args.input), args.tokenizer, args.out, fmt=args.format, workers=args.workers,
                       validation_fraction=args.validation_fraction, seed=args.seed,
                       skip_bad_lines=args.skip_bad_lines, show_progress=not args.quiet)
    for split, counts in manifest["splits"].items():
        print(f"{split}: {counts['documents']} documents, {counts['sentences']} sentences, {counts['tokens']} tokens",
              file=sys.stderr)
    if manifest.get("bad_lines"):
        print(f"skipped {manifest['bad_lines']} lines that were not valid UTF-8", file=sys.stderr)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from bertkit.train.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(
        data=args.data, out=args.out, model_config=args.model_config, init=args.init, steps=args.steps,
        budget=args.budget, max_steps=args.max_steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, warmup=args.warmup,
        weight_decay=args.weight_decay, betas=tuple(args.betas) if args.betas else None, eps=args.eps, seq_len=args.seq_len, objective=args.objective, masking=args.masking,
        mask_rate=args.mask_rate, max_predictions=args.max_predictions, precision=args.precision, seed=args.seed, log_every=args.log_every,
        eval_every=args.eval_every, eval_samples=args.eval_samples, save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints, resume=args.resume, compile=args.compile, device=args.device,
        tensorboard=args.tensorboard,
        dropout=args.dropout, init_scheme=args.init_scheme, hold_local=args.hold_local, stop_at=args.stop_at, max_minutes=args.max_minutes,
        show_progress=not args.quiet)
    pretrain(cfg)


def cmd_demo(args: argparse.Namespace) -> None:
    from bertkit.demo import run_demo

    defaults_in_demo = {name: getattr(args, name) for name in ("steps", "mask_rate", "max_minutes", "weight_decay")
                        if getattr(args, name) is not None}  # unset: demo.py's STEPS, MASK_RATE, MAX_MINUTES, ...
    run_demo(args.out, corpus_files=args.corpus, precision=args.precision, seed=args.seed,
             corpus_bytes=args.corpus_bytes, model_config=args.model_config, lr=args.lr, seq_len=args.seq_len,
             batch_size=args.batch_size, vocab_size=args.vocab_size, show_progress=not args.quiet, resume=args.resume,
             finetune_epochs=args.finetune_epochs, hold_local=args.hold_local, **defaults_in_demo)


def cmd_fill_mask(args: argparse.Namespace) -> None:
    import json

    from bertkit.inference import fill_mask, mask_words
    from bertkit.model import BertForMaskedLM
    from bertkit.tokenizer import Tokenizer

    model = BertForMaskedLM.from_pretrained(args.model)
    if model.load_report.missing:
        raise BertkitError(f"{args.model}: the model has no MLM head ({', '.join(model.load_report.missing[:2])} "
                           "missing)", hint="use a pre-trained (BertForPreTraining / BertForMaskedLM) directory")
    tokenizer = Tokenizer.from_pretrained(args.model)
    for text in args.text:
        predictions = fill_mask(model, tokenizer, text, args.top_k, precision=args.precision)
        print(json.dumps({"text": text, "predictions": [
            [{"token": token, "probability": round(p, 6)} for token, p in masks] for masks in predictions],
            "words": mask_words(tokenizer, text, predictions)}, ensure_ascii=False))


def cmd_attention(args: argparse.Namespace) -> None:
    from bertkit.attention import attention_maps, draw_png, pick_head, write_html
    from bertkit.checkpoint import load_model
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer

    if not args.out.endswith((".png", ".html")):
        raise BertkitError(f"--out {args.out}: must end in .png or .html", hint="e.g. --out attention.png")
    check_output_file(args.out, "--out")
    model = load_model(args.model)
    encoder = model if isinstance(model, BertModel) else model.bert
    pick_head(encoder.config.num_hidden_layers, encoder.config.num_attention_heads, args.layer, args.head)
    tokens, probs = attention_maps(encoder, Tokenizer.from_pretrained(args.model), args.text, args.pair,
                                   precision=args.precision)
    draw = draw_png if args.out.endswith(".png") else write_html
    drawn = draw(tokens, probs, args.out, layer=args.layer, head=args.head)
    print(f"wrote {args.out}: {drawn['layers']} layers x {drawn['heads']} heads over {drawn['tokens']} tokens",
          file=sys.stderr)


def cmd_convert(args: argparse.Namespace) -> None:
    from bertkit.checkpoint import load_model
    from bertkit.files import check_output_dir
    from bertkit.tokenizer import Tokenizer

    check_output_dir(args.out, option="OUT", hint="choose a new output directory")
    model = load_model(args.model, allow_pickle=args.allow_pickle)
    model.save_pretrained(args.out)
    try:
        Tokenizer.from_pretrained(args.model).save_pretrained(args.out,
                                                              model_max_length=model.config.max_position_embeddings)
    except BertkitError:
        print(f"note: no tokenizer in {args.model}; wrote the model only", file=sys.stderr)
    print(f"wrote {args.out}: {type(model).__name__} as safetensors", file=sys.stderr)


def cmd_plot(args: argparse.Namespace) -> None:
    from bertkit.plot import plot_runs

    out = args.out or os.path.join(args.run_dir[0], "curves.png")
    check_output_file(out, "--out")
    plot_runs(args.run_dir, out, x=args.x, labels=args.labels)
    print(f"wrote {out}", file=sys.stderr)


def _finetune_config(args: argparse.Namespace):
    from bertkit.train.finetune import FinetuneConfig

    names = {f for f in FinetuneConfig.__dataclass_fields__}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.setdefault("out", getattr(args, "model", ""))
    if isinstance(values.get("seeds"), str):
        try:
            values["seeds"] = [int(s) for s in values["seeds"].split(",") if s.strip()]
        except ValueError:
            values["seeds"] = None
        seeds = values["seeds"]
        if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
            raise BertkitError(f"--seeds {args.seeds!r}: expected distinct non-negative integers, comma-separated",
                               hint="e.g. --seeds 1,2,3")
    values["show_progress"] = not getattr(args, "quiet", False)
    return FinetuneConfig(**values)


def cmd_finetune(args: argparse.Namespace) -> None:
    from bertkit.train.finetune import finetune

    summary = finetune(_finetune_config(args))
    shown = {k: v for k, v in summary.items() if isinstance(v, dict) and "mean" in v}
    if len(summary["seeds"]) == 1:  # one number, not "± 0.0000": one seed has no spread to report
        print(", ".join(f"{k} {v['mean']:.4f}" for k, v in shown.items()))
    else:
        print(", ".join(f"{k} {v['mean']:.4f} ± {v['std']:.4f}" for k, v in shown.items())
              + f" (mean ± std over {len(summary['seeds'])} seeds)")


def cmd_evaluate(args: argparse.Namespace) -> None:
    import json

    from bertkit.train.finetune import evaluate_dir

    if args.output:
        check_output_file(args.output)
    result = evaluate_dir(_finetune_config(args), args.output)
    print(json.dumps(result, indent=2))


def cmd_predict(args: argparse.Namespace) -> None:
    from bertkit.files import read_text

    check_output_file(args.output)
    if not read_text(args.input).strip():
        raise BertkitError(f"{args.input}: file is empty", hint="give the examples to predict")
    if args.task:  # the task's own file format in, the benchmark's submission format out
        from bertkit.train.finetune import predict_file

        n = predict_file(_finetune_config(args), args.input, args.output)
    else:
        n = predict_with_pipeline(args)
    print(f"wrote {args.output}: {n} predictions", file=sys.stderr)


def predict_with_pipeline(args: argparse.Namespace) -> int:
    """JSONL (or, to classify and tag, one text per line) in; the input records with their predictions out."""
    import json

    from bertkit.files import atomic_write_text, json_object, read_lines
    from bertkit.kinds import PIPELINES
    from bertkit.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(args.model, precision=args.precision, batch_size=args.eval_batch_size,
                                    show_progress=not args.quiet)
    task, kind = pipe.task, PIPELINES[pipe.task]
    needed = kind.pipeline_fields
    lines = read_lines(args.input, skip_empty=False)
    if args.input.endswith((".jsonl", ".json")):
        records = [json_object(args.input, n, line) for n, line in enumerate(lines, 1) if line.strip()]
        for n, record in enumerate(records, 1):
            for name in needed:
                if name not in record:
                    raise BertkitError(f"{args.input}: record {n} has no {name!r} field",
                                       hint=f"{task} reads {', '.join(needed)} from each JSON line")
    elif kind.text_lines:
        records = [{"text": line} for line in lines]
    else:
        raise BertkitError(f"{args.input}: {task} needs JSON Lines input ({', '.join(needed)} on each line)",
                           hint="name the file .jsonl")
    results = kind.pipeline_call(pipe, records, {"input": args.input, "model": args.model,
                                                 "threshold": args.threshold})
    atomic_write_text(args.output, "".join(json.dumps({**r, **result}, ensure_ascii=False) + "\n"
                                           for r, result in zip(records, results)))
    return len(records)


def cmd_generate(args: argparse.Namespace) -> None:
    """Sources (JSON Lines with "source", or one per line of text) in; each with its generated text out."""
    import json

    from bertkit.files import atomic_write_text, json_object, read_lines
    from bertkit.generate import GenerateConfig
    from bertkit.pipelines import Pipeline

    check_output_file(args.output)
    options = dict(method=args.method, beams=args.beams, length_penalty=args.length_penalty,
                   max_new_tokens=args.max_new_tokens, top_k=args.top_k, top_p=args.top_p,
                   temperature=args.temperature, num_return=args.num_return, seed=args.seed,
                   sweeps=args.sweeps, iterations=args.iterations, lengths=args.length_candidates,
                   no_repeat_ngram=args.no_repeat_ngram)
    GenerateConfig(**{k: v for k, v in options.items() if v is not None}).check()  # before the model loads
    lines = read_lines(args.input, skip_empty=False)
    if args.input.endswith((".jsonl", ".json")):
        records = [(n, json_object(args.input, n, line)) for n, line in enumerate(lines, 1) if line.strip()]
        for n, record in records:
            if not isinstance(record.get("source"), str):
                raise BertkitError(f"{args.input}: line {n}: no \"source\" text field",
                                   hint="write one {\"source\": \"...\"} object per line")
    else:
        records = [(n, {"source": line}) for n, line in enumerate(lines, 1)]
    if not records:
        raise BertkitError(f"{args.input}: no sources", hint="give one source per line")
    for n, record in records:
        if not record["source"].strip():
            raise BertkitError(f"{args.input}: line {n}: the source is empty",
                               hint="every line needs some text to generate from; remove the line")
        if not isinstance(record.get("prompt", ""), str):
            raise BertkitError(f"{args.input}: line {n}: \"prompt\" is not text",
                               hint="write the prompt as a string, or leave the field out")
    prompts = None
    if args.prompt is not None or any("prompt" in r for _, r in records):
        if args.method != "gibbs":
            raise BertkitError(f"a prompt (--prompt, or a \"prompt\" field in {args.input}) is for --method gibbs, "
                               f"not {args.method}", hint="use --method gibbs, or leave the prompt out")
        prompts = [r.get("prompt", args.prompt or "") for _, r in records]
    pipe = Pipeline.from_pretrained(args.model, precision=args.precision, batch_size=args.batch_size,
                                    generation=True)
    results = pipe.generate([r["source"] for _, r in records], prompts=prompts, **options)
    atomic_write_text(args.output, "".join(json.dumps({**r, **result}, ensure_ascii=False) + "\n"
                                           for (_, r), result in zip(records, results)))
    print(f"wrote {args.output}: {len(records)} sources", file=sys.stderr)


def length_list(text: str) -> tuple[int, ...]:
    try:
        lengths = tuple(int(part) for part in text.split(","))
    except ValueError:
        lengths = ()
    if not lengths or min(lengths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, comma-separated (e.g. 4,6,8), got {text!r}")
    return lengths


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


seed_int = non_negative_int  # a seed: 0 or more


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error: what is wrong and where to look, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_compute_options(p: argparse.ArgumentParser) -> None:
    """--precision and --threads, on every command that runs a model."""
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto (default): bf16 where the hardware runs it natively (a GPU with bf16, a CPU with "
                        "AVX-512 BF16 or AMX), else fp32; the choice and its reason are printed at start")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU compute threads (default: the CPUs this process may run on; under torchrun, "
                        "shared out between the processes of this machine)")


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """--help shows each option's default, where it has one worth showing and the help does not say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text or "default" in text
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            action.help = "default: %(default)s"  # argparse prints nothing for an option without help
        return super()._format_action(action)


class CommandParser(OneLineParser):
    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(**kwargs)


# How a run that does not finish ends, for `pretrain --help` and `finetune --help` (and the README).
EXIT_STATUS = """exit status:
  0    finished (pretrain: also after --stop-at N, a stop asked for; --max-minutes ends the run early
       but finished: evaluated and saved)
  2    an error: one line on stderr; an output directory this command created is removed again
       (kept when it holds a checkpoint that --resume continues)
  130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM: a checkpoint was saved at the step boundary;
       the same command plus --resume continues it"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bertkit", description="BERT end to end: pre-train, fine-tune, use.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and skipped")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)

    p = sub.add_parser("embed", help="sentence embeddings of one text per line, as a .npy array")
    p.add_argument("--model", required=True, help="model directory (HuggingFace format, with tokenizer)")
    p.add_argument("--input", required=True, help="UTF-8 text file, one text per line")
    p.add_argument("--output", required=True,
                   help="output .npy (float32, n_texts x dims) or .jsonl (one object per text; needed for --pooling none)")
    p.add_argument("--pooling", choices=["mean", "cls", "max", "none"], default="mean",
                   help="mean over non-padding tokens (sentence-transformers' default), the [CLS] vector, max, "
                        "or none: every token's vector with its character offsets")
    p.add_argument("--layers", default="-1",
                   help="hidden states to use, comma-separated: -1 the last layer, -2 the one before, ..., 0 the "
                        "embeddings (e.g. -1,-2,-3,-4 as in the paper's feature-based NER)")
    p.add_argument("--layer-merge", choices=["concat", "mean"], default="concat",
                   help="how several --layers combine: concatenated (in the order given) or averaged")
    p.add_argument("--normalize", action="store_true", help="scale each vector to unit length")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--max-seq-len", type=positive_int, default=None,
                   help="truncate longer texts (default: the model's max_position_embeddings)")
    add_compute_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("vocab", help="learn a WordPiece vocabulary from text files")
    p.add_argument("--input", nargs="+", required=True, help="text files, globs or directories")
    p.add_argument("--vocab-size", type=positive_int, default=30522)
    p.add_argument("--out", required=True, help="tokenizer directory to write")
    p.add_argument("--cased", action="store_true", help="keep case and accents (default: lower-case, strip accents)")
    p.add_argument("--format", choices=["text", "wikiextractor", "jsonl"], default="text")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip lines that are not UTF-8")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_vocab)

    p = sub.add_parser("prepare", help="tokenize raw text into memory-mapped pre-training shards")
    p.add_argument("--input", nargs="+", required=True, help="files, globs or directories")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory (bertkit vocab, or a model directory)")
    p.add_argument("--out", required=True, help="prepared-data directory to create")
    p.add_argument("--format", choices=["text", "wikiextractor", "jsonl"], default="text")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1)
    p.add_argument("--validation-fraction", type=float, default=0.01)
    p.add_argument("--skip-bad-lines", action="store_true", help="skip lines that are not UTF-8 (counted)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", help="pre-train with MLM + NSP, SOP or MLM alone (resumable; torchrun for DDP)",
                       epilog=EXIT_STATUS)
    p.add_argument("--data", nargs="+", required=True, help="prepared-data directories (several combine)")
    p.add_argument("--out", required=True, help="run directory: metrics.jsonl, checkpoints/, model/")
    p.add_argument("--model-config", default=None,
                   help="preset (tiny mini small medium base large) or config.json (default: with --budget, the preset "
                        "measured best for it (tiny up to 2h); else mini)")
    p.add_argument("--init", help="start from this model directory (e.g. phase 2 at --seq-len 512)")
    p.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default: 1000)")
    p.add_argument("--budget", default=None,
                   help="wall-clock budget instead of --steps, e.g. 90s, 30m, 2h, 1h30m, 1d: a few timed steps plan "
                        "the number of steps so that the learning rate decays to 0 when the budget ends; the plan is "
                        "recorded (run.json, checkpoints) and --resume follows it")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="with --budget: plan at most this many steps (a machine fast enough for more ends early; a "
                        "slower one gets fewer, with the learning rate still decayed to 0 when the budget ends)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="per process and micro-batch (default: the preset's recipe)")
    p.add_argument("--grad-accum", type=positive_int, default=1)
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: the preset's recipe, chosen by measurement: see BENCHMARKS.md; "
                        "1e-4, the paper's, for base and large)")
    p.add_argument("--warmup", type=float, default=None, help="fraction of the steps (default: the preset's recipe)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--betas", type=float, nargs=2, default=None, metavar=("BETA1", "BETA2"),
                   help="AdamW's betas (default: the preset's recipe)")
    p.add_argument("--eps", type=float, default=None, help="AdamW's epsilon (default: the preset's recipe)")
    p.add_argument("--seq-len", type=positive_int, default=128)
    from bertkit.data.masking import MASKERS
    from bertkit.objectives import OBJECTIVES

    p.add_argument("--objective", choices=list(OBJECTIVES), default="nsp",
                   help="; ".join(f"{name}: {o.help}" for name, o in OBJECTIVES.items()) + " (default: nsp)")
    p.add_argument("--masking", choices=list(MASKERS), default="token",
                   help="which tokens are predicted: " + "; ".join(
                       f"{name}: {' '.join(choose.__doc__.split())}" for name, choose in MASKERS.items())
                   + " (default: token)")
    p.add_argument("--mask-rate", type=float, default=None,
                   help="share of the tokens to predict (each shown as [MASK] 80%% of the time, as a random token "
                        "10%%, unchanged 10%%): 0.15 as the BERT paper, 0.3 as Wettig et al. (2023) and MosaicBERT (default: the preset's recipe)")
    p.add_argument("--max-predictions", type=positive_int, default=None,
                   help="most predicted tokens per sequence (default: --mask-rate x --seq-len, rounded)")
    add_compute_options(p)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--log-every", type=positive_int, default=10)
    p.add_argument("--eval-every", type=positive_int, default=200)
    p.add_argument("--eval-samples", type=positive_int, default=1024)
    p.add_argument("--save-every", type=positive_int, default=500)
    p.add_argument("--keep-checkpoints", type=positive_int, default=2)
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in --out")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard scalars to OUT/tensorboard")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout probability while pre-training (default: 0, off, as Cramming; 0.1 is the paper's); "
                        "the saved config.json keeps the model config's own values for fine-tuning")
    p.add_argument("--init-scheme", choices=["normal", "local"], default=None,
                   help="starting weights of a new model: normal, N(0, 0.02) everywhere as the paper; local, every "
                        "attention head starts aimed at a neighbouring position, with the positions and the "
                        "query/key weights held for --hold-local of the steps (breaks the small models' MLM plateau: "
                        "BENCHMARKS.md) (default: the preset's recipe: local for tiny)")
    p.add_argument("--hold-local", type=float, default=None,
                   help="with --init-scheme local: the share of the steps during which the positions and the "
                        "query/key weights stay as they started, in [0, 1] (default: the preset's recipe)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="a time limit: evaluate and save the final model when it is spent (the schedule is not "
                        "re-planned; --budget plans it)")
    p.add_argument("--stop-at", type=positive_int, default=None,
                   help="save a checkpoint and stop after this step (continue later with --resume)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("demo", help="learn a vocabulary, prepare and pre-train a small BERT in minutes on a CPU",
                       epilog=EXIT_STATUS.replace("pretrain: also after --stop-at N, a stop asked for; --max-minutes "
                                                  "ends the run early\n       but finished: evaluated and saved",
                                                  "the held-out evaluation printed"))
    p.add_argument("--out", default="demo-out", help="directory to create (default: demo-out)")
    p.add_argument("--corpus", nargs="+", help="your own text files (default: the Python docs shipped with Python)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="pre-training steps, at most (default: 3200, demo.STEPS; fewer where they do not fit in "
                        "--max-minutes)")
    add_compute_options(p)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--model-config", default="tiny", help="preset or config.json")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (the tiny recipe's at batch 32: BENCHMARKS.md)")
    p.add_argument("--seq-len", type=positive_int, default=128)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--vocab-size", type=positive_int, default=4000)
    p.add_argument("--corpus-bytes", type=positive_int, default=3_000_000,
                   help="cap on the built-in corpus (a smaller one runs faster)")
    p.add_argument("--hold-local", type=float, default=0.5,
                   help="the share of the steps the local start's positions and query/key weights are held "
                        "(default: 0.5; 0.1 gives more MLM accuracy but less NSP and no transfer to step 5: "
                        "BENCHMARKS.md)")
    p.add_argument("--mask-rate", type=float, default=None,
                   help="the share of positions chosen for the MLM (default: 0.25; more than the paper's 0.15 "
                        "because the demo's small corpus is repeated ~30 times: BENCHMARKS.md)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="AdamW's weight decay while pre-training (default: 0.01, the paper's; 0.1 gives more MLM "
                        "accuracy but less NSP and less transfer to step 5: BENCHMARKS.md)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="the pre-training's wall-clock budget (default: 7), so the demo ends within 10 minutes on a "
                        "slow CPU: planned as `pretrain --budget 7m --max-steps STEPS`, a CPU too slow for --steps "
                        "in that time trains the steps that fit, the learning rate decayed to 0 at their end")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted demo in --out (same options): its vocabulary and data are reused, "
                        "pre-training continues from its newest checkpoint, fine-tuning from its finished runs")
    p.add_argument("--finetune-epochs", type=non_negative_int, default=30,
                   help="epochs of the last step, fine-tuning the pre-trained and a randomly initialised model on a "
                        "small task, 3 seeds each, about a minute each on 2 cores (default: 30; 0 skips the step)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("fill-mask", help="the MLM head's top-k guesses for each [MASK]")
    p.add_argument("--model", required=True)
    p.add_argument("text", nargs="+", help="text with one or more [MASK]")
    p.add_argument("--top-k", type=positive_int, default=5)
    add_compute_options(p)
    p.set_defaults(func=cmd_fill_mask)

    def task_data(p, train: bool, task_required: bool = True):
        p.add_argument("--task", required=task_required,
                       help="cola sst2 mrpc stsb qqp mnli qnli rte wnli classify regress ner squad squad2 multiple-choice "
                            "seq2seq")
        p.add_argument("--data", help="directory with the task's usual file names (train.tsv, dev.tsv, ...)")
        if train:
            p.add_argument("--train", help="training file")
        p.add_argument("--dev", help="evaluation file")
        p.add_argument("--text-column", help="classify/regress: the text column (default text)")
        p.add_argument("--text-pair-column", help="classify/regress: an optional second text column")
        p.add_argument("--label-column", help="classify/regress: the label column (default label)")
        p.add_argument("--label-separator",
                       help="classify: multi-label, several labels per field separated by this (e.g. '|' for "
                            "sports|politics; in JSON Lines the label may also be a list)")
        p.add_argument("--threshold", type=float,
                       help="multi-label: predict every label whose probability is above this (default 0.5)")
        p.add_argument("--max-seq-len", type=positive_int, help="default 128 (SQuAD 384)")
        add_compute_options(p)
        p.add_argument("--eval-batch-size", type=positive_int, default=128)
        p.add_argument("--null-threshold", type=float, help="squad2: predict no answer above this score gap")

    p = sub.add_parser("finetune", help="fine-tune all parameters on a labeled task", epilog=EXIT_STATUS)
    task_data(p, train=True)
    p.add_argument("--test", help="test file (unlabeled)")
    p.add_argument("--model", required=True, help="pre-trained model directory (HuggingFace format)")
    p.add_argument("--out", required=True, help="output directory: the fine-tuned model, metrics, results")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seeds", default="1", help="comma-separated; each seed runs into OUT/seed-N (one seed too), "
                                                "OUT/eval_results.json holds mean and std over the seeds")
    p.add_argument("--keep", choices=["best", "last"], default="best", help="which epoch's model to keep")
    p.add_argument("--eval-at", choices=["epoch", "end"], default="epoch",
                   help="evaluate on dev after every epoch (default) or only after the last (with --keep last: "
                        "faster where dev is large and the epochs short)")
    p.add_argument("--label-all-subtokens", action="store_true", help="ner: label every piece, not just the first")
    p.add_argument("--doc-stride", type=positive_int, default=128)
    p.add_argument("--max-query-len", type=positive_int, default=64)
    p.add_argument("--max-target-len", type=positive_int, default=48,
                   help="seq2seq: target tokens kept; longer targets are cut (and counted)")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="seq2seq: label smoothing of the token cross-entropy (e.g. 0.1)")
    p.add_argument("--target-masking", help="seq2seq: shifted (default; each position predicts the next target "
                                            "token: greedy, beam, sample) or uniform (1..all target tokens masked "
                                            "at random and predicted, a conditional MLM: generate --method "
                                            "mask-predict) or unilm (UniLM's own: 70%% of the target masked, "
                                            "left to right; greedy, beam, sample read each token off a [MASK])")
    p.add_argument("--max-train-examples", type=positive_int, help="train on the first N examples (a quick run)")
    p.add_argument("--log-every", type=positive_int, default=None,
                   help="steps between metrics.jsonl lines (default: about 50 over the run, at most every 50)")
    p.add_argument("--save-every", type=int, default=500,
                   help="steps between checkpoints in OUT/checkpoints (one is also written at each epoch end)")
    p.add_argument("--keep-checkpoints", type=positive_int, default=1,
                   help="checkpoints kept during the run; a finished seed's are all deleted at its end")
    p.add_argument("--keep-checkpoints-at-end", action="store_true",
                   help="keep the checkpoints of a finished run (by default deleted: nothing is left to resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its newest complete checkpoint")
    p.add_argument("--max-bad-steps", type=positive_int, default=10,
                   help="stop after this many consecutive steps with a non-finite loss or gradient")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard scalars to OUT/tensorboard")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="evaluate a fine-tuned model; writes MODEL/evaluate_results.json")
    task_data(p, train=False)
    p.add_argument("--model", required=True, help="fine-tuned model directory")
    p.add_argument("--output", help="results file (default: MODEL/evaluate_results.json; the fine-tune's own "
                                    "eval_results.json is left as it is)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predictions for unlabeled input: with --task, the task's file format in "
                                       "(GLUE: submission TSV out); without, JSONL in and out, by the model's head")
    task_data(p, train=False, task_required=False)
    p.add_argument("--model", required=True, help="fine-tuned model directory")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("generate", help="generate text from sources with a seq2seq model (finetune --task seq2seq)")
    p.add_argument("--model", required=True, help="a model with an MLM head, fine-tuned for seq2seq")
    p.add_argument("--input", required=True, help="sources: JSON Lines with a \"source\" field, or one per line")
    p.add_argument("--output", required=True, help="JSON Lines: each input record with \"generated\" and \"score\"")
    p.add_argument("--method", choices=["greedy", "beam", "sample", "gibbs", "mask-predict"], default="greedy",
                   help="gibbs: re-sample [MASK]ed positions with the MLM head (any MLM; not a proper sample); "
                        "mask-predict: a model fine-tuned with --target-masking uniform")
    p.add_argument("--beams", type=int, default=4, help="beam: hypotheses kept")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="beam: scores are log-probability / length ** this (above 1 favours longer)")
    p.add_argument("--max-new-tokens", type=int, help="default: the model's generation_config.json, else 48")
    p.add_argument("--top-k", type=int, default=0, help="sample: from the k most probable tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample: from the tokens making up this probability")
    p.add_argument("--temperature", type=float, default=1.0, help="sample: below 1 sharper, above 1 flatter")
    p.add_argument("--num-return", type=int, default=1, help="sequences per source (beam's n-best, or samples)")
    p.add_argument("--sweeps", type=int, default=4, help="gibbs: passes over the target positions")
    p.add_argument("--prompt", help="gibbs: the text every target starts with, held fixed (as tokenized), then "
                                    "--max-new-tokens sampled tokens (a JSON Lines input's \"prompt\" field "
                                    "overrides it per line; default: none, all [MASK])")
    p.add_argument("--no-repeat-ngram", type=int, default=0,
                   help="greedy, beam, sample: never repeat an n-gram of this size within a sequence (0: off)")
    p.add_argument("--iterations", type=int, default=10,
                   help="mask-predict: passes; each after the first re-masks and re-predicts the least confident")
    p.add_argument("--length-candidates", type=length_list,
                   help="mask-predict: target lengths to try, comma-separated (e.g. 4,6,8); the one with the best "
                        "mean log-probability wins (default: the model's most frequent training target lengths)")
    p.add_argument("--seed", type=seed_int, help="sample, gibbs: the same seed gives the same samples")
    p.add_argument("--batch-size", type=positive_int, default=32)
    add_compute_options(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("attention", help="attention weights of every layer and head as a PNG or HTML heatmap")
    p.add_argument("--model", required=True)
    p.add_argument("text")
    p.add_argument("--pair", help="a second text: [CLS] text [SEP] pair [SEP]")
    p.add_argument("--out", required=True, help="FILE.png (grid + one head enlarged) or FILE.html (pick layer/head)")
    p.add_argument("--layer", type=int, default=-1, help="the layer shown enlarged (default: the last)")
    p.add_argument("--head", type=int, default=0, help="the head shown enlarged")
    add_compute_options(p)
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("convert", help="re-save a model directory as safetensors (e.g. from pytorch_model.bin)")
    p.add_argument("model", help="HuggingFace BERT directory")
    p.add_argument("out", help="new directory")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read pytorch_model.bin with torch.load(weights_only=True); only for files you trust")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("plot", help="training curves from metrics.jsonl (several runs overlaid)")
    p.add_argument("run_dir", nargs="+")
    p.add_argument("--out", help="PNG file (default: RUN_DIR/curves.png)")
    p.add_argument("--x", choices=["step", "minutes"], default="step",
                   help="horizontal axis: optimizer steps, or wall-clock minutes since the run started (to compare "
                        "runs whose steps cost different times)")
    p.add_argument("--labels", nargs="+", help="one legend name per run (default: the directory names)")
    p.set_defaults(func=cmd_plot)
    return parser


def _negative_lists(argv: list[str]) -> list[str]:
    """`--layers -1,-2` as `--layers=-1,-2`: argparse takes a value that starts with "-" for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--layers" and arg.startswith("-") and arg[1:2].isdigit():
            out[-1] = f"--layers={arg}"
        else:
            out.append(arg)
    return out


# The directory each command creates. When the command fails or is interrupted, a directory it created is
# removed again (one it found empty is emptied), so nothing half-written is left and a retry does not stop at
# "already exists"; unless the directory now holds work that --resume continues (RESUMABLE).
OUTPUT_DIRS = {"vocab": "out", "prepare": "out", "pretrain": "out", "demo": "out", "finetune": "out",
               "convert": "out"}


def _has_checkpoint(path: str) -> bool:
    import glob

    pattern = os.path.join(glob.escape(path), "**", "checkpoints", "step-*", "trainer_state.json")
    return bool(glob.glob(pattern, recursive=True))


RESUMABLE = {"pretrain": _has_checkpoint, "finetune": _has_checkpoint,
             "demo": lambda path: _has_checkpoint(path) or os.path.isfile(os.path.join(path, "data", "manifest.json"))}


def _output_dir_state(args: argparse.Namespace) -> tuple[str, bool, bool] | None:
    """(the command's output directory, whether it existed, whether it held anything) before the command ran."""
    name = OUTPUT_DIRS.get(args.command)
    path = getattr(args, name, None) if name else None
    if not path:
        return None
    path = os.path.abspath(path)
    existed = os.path.isdir(path)
    return path, existed, existed and bool(os.listdir(path))


def _undo_output_dir(command: str, before: tuple[str, bool, bool] | None) -> None:
    """After a failure: remove what this command wrote into an output directory that was absent or empty."""
    import shutil

    if before is None or before[2] or os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 alone
        return
    path, existed, _ = before
    if not os.path.isdir(path) or RESUMABLE.get(command, lambda _: False)(path):
        return
    if not existed:
        shutil.rmtree(path, ignore_errors=True)
        return
    for name in os.listdir(path):
        target = os.path.join(path, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(target)


# What to try when memory runs out, by command: the options that size what is held at once.
MEMORY_HINTS = {
    "pretrain": "use a smaller --batch-size (with --grad-accum N to keep the samples per step) or a shorter --seq-len",
    "demo": "use a smaller --batch-size or a shorter --seq-len",
    "finetune": "use a smaller --batch-size or --eval-batch-size, or a shorter --max-seq-len",
    "evaluate": "use a smaller --eval-batch-size or a shorter --max-seq-len",
    "predict": "use a smaller --eval-batch-size or a shorter --max-seq-len",
    "generate": "use a smaller --batch-size, fewer --beams or a lower --max-new-tokens",
    "embed": "use a smaller --batch-size or a shorter --max-seq-len",
    "prepare": "use fewer --workers, or split the corpus into several prepare runs (pretrain takes several --data)",
}


def out_of_memory(error: BaseException) -> str | None:
    """One line for an allocation failure (torch's CPU or CUDA allocator, numpy, Python), else None."""
    import re

    import torch

    text = str(error)
    cpu_failure = isinstance(error, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text
                                                        or "out of memory" in text.lower())
    if not isinstance(error, (MemoryError, torch.OutOfMemoryError)) and not cpu_failure:
        return None
    where = "GPU memory" if isinstance(error, torch.OutOfMemoryError) or "CUDA" in text else "memory"
    size = None
    if m := re.search(r"tried to allocate (\d+) bytes", text, re.IGNORECASE):
        size = f"{int(m.group(1)) / 2 ** 30:.2f} GiB"
    elif m := re.search(r"(?:tried to|unable to) allocate ([\d.]+ ?[KMGT]iB)", text, re.IGNORECASE):
        size = m.group(1)
    needed = f" (an allocation of {size} failed)" if size else ""
    return f"out of {where}{needed}"


def main(argv: list[str] | None = None) -> int:
    from bertkit.machine import choose_wait_policy

    choose_wait_policy()  # idle OpenMP threads sleep when other work runs on the CPUs: before torch loads

    import signal

    parser = build_parser()
    args = parser.parse_args(_negative_lists(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    before = _output_dir_state(args)

    def terminated(signum, frame):  # SIGTERM ends a command as Ctrl-C does: cleaned up, exit status 143
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    status = 0
    try:
        if hasattr(args, "threads"):  # a command that runs a model
            from bertkit.device import configure_threads

            configure_threads(args.threads)

        from bertkit.checkpoint import resolve_model_dir

        for name in ("model", "init"):  # a run directory names its model: RUN/model, OUT/seed-N
            if isinstance(getattr(args, name, None), str):
                setattr(args, name, resolve_model_dir(getattr(args, name)))
        args.func(args)
    except BertkitError as e:
        print(f"bertkit {args.command}: error: {e}", file=sys.stderr)
        status = 2
    except OSError as e:  # a disk full, a directory where a file was expected, no permission
        where = f"{e.filename}: " if e.filename else ""
        print(f"bertkit {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        status = 2
    except Interrupted as e:
        print(f"bertkit {args.command}: {e.message or 'interrupted'}", file=sys.stderr)
        status = 128 + e.signum
    except KeyboardInterrupt:
        print(f"bertkit {args.command}: interrupted", file=sys.stderr)
        status = 128 + signal.SIGINT
    except (MemoryError, RuntimeError) as e:
        message = out_of_memory(e)
        if message is None:
            _undo_output_dir(args.command, before)
            raise
        hint = MEMORY_HINTS.get(args.command, "work on less at once")
        print(f"bertkit {args.command}: error: {message}; {hint}", file=sys.stderr)
        status = 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    if status:
        _undo_output_dir(args.command, before)
    return status


if __name__ == "__main__":
    sys.exit(main())
