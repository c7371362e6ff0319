"""`bertkit demo`: the whole of BERT pre-training in a few minutes on a laptop CPU.

It takes a corpus that ships with Python itself (the language reference of `pydoc_data` and the
standard library's docstrings: about 1.5 MB of English prose in ~500 documents), or the user's own text
files, and runs the real pipeline end to end:
learn a WordPiece vocabulary, prepare the data, pre-train a small BERT with MLM + NSP, then report
held-out MLM and NSP accuracy against chance and show fill-mask predictions before and after training.
It leaves a HuggingFace model directory (`OUT/run/model`) and the training curves (`OUT/run/curves.png`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter

import torch

from bertkit.errors import BertkitError
from bertkit.files import atomic_write_json, atomic_write_text, check_output_dir, read_text

# Sentences about the corpus' subject, each with one word hidden; the expected word is in brackets.
PROBES = [
    "The [MASK] statement is used for conditional execution.",
    "If the argument is omitted, [MASK] is returned.",
    "Raise a [MASK] if the key is not found.",
    "Each argument is evaluated from left to [MASK].",
]


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


def python_docs_documents() -> list[tuple[str, list[str]]]:
    """(name, sentences) of each document of text every Python installation has: the language reference
    topics of pydoc_data (named `topic:NAME`), and the docstrings of the standard library's modules (named
    as imported, `logging.handlers`; read with `ast` from the source files, never imported)."""
    import ast
    import sysconfig
    from pathlib import Path

    from pydoc_data.topics import topics

    documents = [(f"topic:{name}", prose_sentences(topics[name])) for name in sorted(topics)]
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
        documents.append((module, [s for n in nodes for s in prose_sentences(ast.get_docstring(n) or "")]))
    return documents


def python_docs_corpus(max_bytes: int = 3_000_000, exclude: tuple[str, ...] = ()) -> str:
    """The documents of `python_docs_documents` but those named in `exclude` (blank-line separated, one
    sentence per line), up to about `max_bytes`."""
    text, size = [], 0
    for name, sentences in python_docs_documents():
        if len(sentences) >= 2 and size < max_bytes and name not in exclude:
            text.append("\n".join(sentences))
            size += len(text[-1])
    return "\n\n".join(text) + "\n"


def show_fill_mask(model, tokenizer, title: str) -> None:
    from bertkit.inference import fill_mask

    print(f"\n{title}")
    for probe in PROBES:
        guesses = fill_mask(model, tokenizer, probe, top_k=3)[0]
        shown = ", ".join(f"{token} ({p:.0%})" for token, p in guesses)
        print(f"  {probe:<72} -> {shown}")


SETTINGS_FILE = "demo.json"  # the options a demo directory was made with: --resume must repeat them


def run_demo(out: str, corpus_files: list[str] | None = None, steps: int = 2500, vocab_size: int = 4000,
             model_config: str = "tiny", seq_len: int = 128, batch_size: int = 32, lr: float = 2e-3,
             precision: str = "auto", seed: int = 0, corpus_bytes: int = 3_000_000,
             show_progress: bool = True, resume: bool = False, max_minutes: float | None = 8.0) -> dict:
    """Run the demo into `out`; with `resume`, continue an interrupted one there (its vocabulary and data
    reused when complete, the pre-training from its newest checkpoint)."""
    settings = dict(corpus=[os.path.abspath(f) for f in corpus_files] if corpus_files else None, steps=steps,
                    vocab_size=vocab_size, model_config=model_config, seq_len=seq_len, batch_size=batch_size, lr=lr,
                    precision=precision, seed=seed, corpus_bytes=corpus_bytes, max_minutes=max_minutes)
    if resume and os.path.isfile(os.path.join(out, SETTINGS_FILE)):
        _check_same_settings(out, settings)
    else:
        check_output_dir(out, hint="continue the demo in it with --resume, choose a new --out, or delete it",
                         reuse=resume)
        resume = False  # nothing to continue: a fresh start
        os.makedirs(out, exist_ok=True)
        atomic_write_json(os.path.join(out, SETTINGS_FILE), settings)
    return _run_demo(out, corpus_files, steps, vocab_size, model_config, seq_len, batch_size, lr, precision, seed,
                     corpus_bytes, show_progress, resume, max_minutes)


def _check_same_settings(out: str, settings: dict) -> None:
    path = os.path.join(out, SETTINGS_FILE)
    try:
        saved = json.loads(read_text(path))
    except ValueError:
        raise BertkitError(f"{path}: not valid JSON", hint="the demo's settings file is damaged; start a new --out")
    changed = [f"{k} {saved.get(k)!r} (now {v!r})" for k, v in settings.items() if saved.get(k) != v]
    if changed:
        raise BertkitError(f"--resume: {out} was started with other settings: {', '.join(changed)}",
                           hint="resume with the original options, or choose a new --out")


def _run_demo(out, corpus_files, steps, vocab_size, model_config, seq_len, batch_size, lr, precision, seed,
              corpus_bytes, show_progress, resume, max_minutes=None) -> dict:
    from bertkit.data.corpus import expand_inputs, train_tokenizer
    from bertkit.data.prepare import prepare
    from bertkit.model import BertForPreTraining
    from bertkit.tokenizer import Tokenizer
    from bertkit.train.pretrain import PretrainConfig, build, evaluate, pretrain

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
            atomic_write_text(files[0], python_docs_corpus(corpus_bytes))
        print(f"corpus: the Python documentation shipped with Python, {os.path.getsize(files[0]) / 1e6:.1f} MB "
              f"-> {files[0]}")

    if prepared:
        tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
        print(f"\n[1/4] reusing the {tokenizer.vocab_size}-token vocabulary in {tokenizer_dir}")
    else:
        shutil.rmtree(tokenizer_dir, ignore_errors=True)  # debris of an interrupted first try
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"\n[1/4] learning a {vocab_size}-token WordPiece vocabulary")
        tokenizer = train_tokenizer(files, vocab_size, fmt)
        tokenizer.save_pretrained(tokenizer_dir)
        print(f"      {tokenizer.vocab_size} tokens; e.g. {tokenizer.tokenize('Exceptions are raised by statements.')}")

    if prepared:
        print(f"\n[2/4] reusing the pre-training data in {data_dir}")
        from bertkit.data.prepare import load_manifest

        manifest = load_manifest(data_dir)
    else:
        print("\n[2/4] preparing pre-training data")
        manifest = prepare(files, tokenizer_dir, data_dir, fmt=fmt, workers=1, validation_fraction=0.1, seed=seed,
                           show_progress=False)
    for split, counts in manifest["splits"].items():
        print(f"      {split}: {counts['documents']} documents, {counts['sentences']} sentences, {counts['tokens']} tokens")

    cfg = PretrainConfig(data=[data_dir], out=os.path.join(out, "run"), model_config=model_config, steps=steps,
                         batch_size=batch_size, lr=lr, warmup=0.06, seq_len=seq_len, precision=precision, seed=seed,
                         log_every=25, eval_every=max(1, steps // 4), save_every=steps, eval_samples=512,
                         show_progress=show_progress, resume=resume, max_minutes=max_minutes,
                         dropout=None,  # the config's 0.1, as the demo's numbers in README.md were measured
                         model_overrides=dict(max_position_embeddings=seq_len))
    untrained, _, _, validation = build(cfg)
    if validation is None:
        raise BertkitError("the corpus is too small to hold out validation documents", hint="pass more --corpus text")
    show_fill_mask(untrained, tokenizer, "fill-mask before pre-training (random weights):")

    from bertkit.device import default_device, resolve_precision

    precision = resolve_precision(precision, default_device()).name
    c = untrained.config
    print(f"\n[3/4] pre-training a BERT (L{c.num_hidden_layers}/H{c.hidden_size}/A{c.num_attention_heads}, "
          f"{sum(p.numel() for p in untrained.parameters()) / 1e6:.1f}M parameters) for {steps} steps of "
          f"{batch_size} x {seq_len} tokens, MLM + NSP, {precision}")
    torch.manual_seed(seed)
    held_out = pretrain(cfg)  # SIGINT/SIGTERM: a checkpoint, then Interrupted (the CLI says how to --resume)
    model = BertForPreTraining.from_pretrained(os.path.join(cfg.out, "model"))
    if not held_out:  # resumed after the last step: this call trained and evaluated nothing
        held_out = {"step": steps, **evaluate(model, validation, cfg, torch.device("cpu"))}
    if held_out["step"] < steps:  # a slow machine: the time cap ended the pre-training early
        print(f"\n(pre-training ended at step {held_out['step']} of {steps}: --max-minutes {max_minutes} was spent)")

    print("\n[4/4] held-out evaluation")
    mlm_floor, nsp_floor = baselines(validation, cfg.eval_samples)
    print(f"      MLM accuracy {held_out['mlm_accuracy']:.1%}  (chance 1/{tokenizer.vocab_size} = "
          f"{1 / tokenizer.vocab_size:.2%}; always guessing the most frequent token: {mlm_floor:.1%})")
    print(f"      NSP accuracy {held_out['nsp_accuracy']:.1%}  (chance 50%; always guessing the majority class: "
          f"{nsp_floor:.1%})")
    show_fill_mask(model, tokenizer, "fill-mask after pre-training:")
    print(f"\nmodel directory (HuggingFace format): {os.path.join(cfg.out, 'model')}")
    print(f"training curves: {os.path.join(cfg.out, 'curves.png')}")
    print(f"total time {time.perf_counter() - started:.0f} s")
    return held_out


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

