"""A bad-input matrix across the commands that read user files: vocab, prepare, pretrain, finetune,
evaluate, predict, embed and fill-mask, each fed empty files, binary files, invalid UTF-8, a 10 MB
single line, missing columns, unknown labels, wrong paths and conflicting flags.

`CASES` is the table: one row per case, each run as a user runs the CLI (a subprocess). Every row must
end in exit status 2 with exactly one line on stderr, `bertkit CMD: error: ...`, that names the
offending input (file path or flag) and stays readable (at most MAX_ERROR_CHARS characters). Outputs
the row names are created beforehand (a sentinel file, a directory holding a sentinel, or an empty
directory) and must be byte-for-byte untouched afterwards; outputs that did not exist must still not
exist. Beyond the named outputs, nothing anywhere under the test's directory or the shared fixtures may
be created, changed or removed by a failed run.

Rows that expose a bug in bertkit are marked xfail(strict=True) with the reason, so they start failing
(and are noticed) once the bug is fixed. Rows marked `extended` repeat an input kind other rows cover and
run only with BERTKIT_SLOW=1, which keeps the default run near 90 s (every row is a ~2 s subprocess).
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import os
import shlex
import shutil
from pathlib import Path
from typing import Callable

import pytest

from conftest import assert_one_line_error, run_cli, slow, small_project

COMMANDS = ("vocab", "prepare", "pretrain", "finetune", "evaluate", "predict", "embed", "fill-mask")
MAX_ERROR_CHARS = 2000  # one line a person can read; an error must not echo a 10 MB input back

SENTINEL = b"sentinel: an existing output that a failed run must leave alone\n"
BINARY = gzip.compress(b"\x00\x01binary\xff" * 64, mtime=0)  # starts 1f 8b: invalid UTF-8 at byte 1
LATIN1 = "first line\nsecond caf\u00e9 line\n".encode("latin-1")  # the \xe9 is byte 21, on line 2
BIG_LINE = (b"lorem ipsum dolor sit amet " * 370371)[:10_000_000] + b"\n"  # 10 MB, one line, no tab or comma



# ----------------------------------------------------------------------------------------------
# Shared fixtures, built once in-process (no CLI calls): a tokenizer, a tiny pre-trained model, a tiny
# "fine-tuned" classifier, prepared pre-training data and a small SST-2 directory.


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("matrix-env")
    project = small_project(root)
    sst2 = root / "sst2"
    sst2.mkdir()
    for split in ("train", "dev"):
        (sst2 / f"{split}.tsv").write_text("sentence\tlabel\na fine film\t1\na dull film\t0\n")
    return {"env": root, **project, "sst2": sst2}


# ----------------------------------------------------------------------------------------------
# The table


FILE, DIR, EMPTY_DIR, ABSENT = "file", "dir", "empty dir", "absent"  # what an output is before the run


def copy_of(name: str, drop: tuple[str, ...] = (), add: dict[str, bytes] | None = None) -> Callable:
    """An input builder: a copy of a shared fixture directory, some files dropped or (re)written."""

    def build(paths: dict, target: Path) -> None:
        shutil.copytree(paths[name], target)
        for file in drop:
            (target / file).unlink()
        for file, content in (add or {}).items():
            (target / file).write_bytes(content)

    return build


@dataclasses.dataclass
class Case:
    argv: str  # shell-quoted command line after `bertkit`, with {tmp}, {model}, {clf}, ... placeholders
    expect: tuple[str, ...]  # fragments the one error line must contain (the input's path or flag first)
    inputs: dict = dataclasses.field(default_factory=dict)  # {tmp}-relative name -> bytes | str | DIR | builder
    outputs: dict = dataclasses.field(default_factory=dict)  # {tmp}-relative name -> FILE | DIR | EMPTY_DIR | ABSENT
    extended: bool = False  # runs with BERTKIT_SLOW=1 only

    @property
    def command(self) -> str:
        return shlex.split(self.argv)[0]


def row(id: str, argv: str, expect, inputs=None, outputs=None, bug: str | None = None, extended: bool = False):
    """One row; `bug` marks it xfail(strict=True), `extended` runs it with BERTKIT_SLOW=1 only."""
    marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {bug}")] if bug else []
    if extended:
        marks.append(slow)
    return pytest.param(Case(argv, tuple(expect), inputs or {}, outputs or {}, extended), id=id, marks=marks)


MODEL_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")

VOCAB = "vocab --out {tmp}/out --vocab-size 100 --quiet --input"
PREPARE = "prepare --tokenizer {tok} --out {tmp}/out --workers 1 --quiet --input"
PRETRAIN = "pretrain --out {tmp}/run --model-config tiny --steps 1 --batch-size 2 --seq-len 32 --quiet"
FINETUNE = "finetune --model {model} --out {tmp}/out --epochs 1 --quiet"
EVALUATE = "evaluate --model {clf} --output {tmp}/eval.json"
PREDICT = "predict --model {clf} --output {tmp}/pred.jsonl"
EMBED = "embed --model {model} --quiet"

CASES = [
    # ---- vocab: learns a vocabulary into --out (a directory)
    row("vocab-empty-file", VOCAB + " {tmp}/in.txt", ["{tmp}/in.txt", "no text to learn a vocabulary"],
        {"in.txt": b""}, {"out": EMPTY_DIR}),
    row("vocab-binary-file", VOCAB + " {tmp}/in.bin", ["{tmp}/in.bin", "line 1", "invalid UTF-8"],
        {"in.bin": BINARY}, {"out": EMPTY_DIR}),
    row("vocab-invalid-utf8", VOCAB + " {tmp}/latin.txt",
        ["{tmp}/latin.txt", "line 2", "invalid UTF-8 at byte offset 21"], {"latin.txt": LATIN1}, {"out": ABSENT},
        extended=True),
    row("vocab-10mb-line-jsonl", VOCAB + " {tmp}/big.jsonl --format jsonl",
        ["{tmp}/big.jsonl", "line 1", "invalid JSON"], {"big.jsonl": BIG_LINE}, {"out": EMPTY_DIR}),
    row("vocab-jsonl-missing-text-field", VOCAB + " {tmp}/docs.jsonl --format jsonl",
        ["{tmp}/docs.jsonl", "line 1", 'no string field "text"'], {"docs.jsonl": '{"title": "no text here"}\n'},
        {"out": ABSENT}, extended=True),
    row("vocab-wrong-path", VOCAB + " {tmp}/missing.txt", ["{tmp}/missing.txt", "matches no files"],
        outputs={"out": ABSENT}),
    row("vocab-out-not-empty", VOCAB + " {corpus}", ["--out {tmp}/out", "not empty"], outputs={"out": DIR}),
    row("vocab-out-is-a-file", VOCAB + " {corpus}", ["--out {tmp}/out", "not a directory"], outputs={"out": FILE}),

    # ---- prepare: tokenizes a corpus into --out (a directory, renamed into place at the end)
    row("prepare-empty-file", PREPARE + " {tmp}/in.txt", ["no documents found in {tmp}/in.txt"],
        {"in.txt": b"\n\n"}, {"out": EMPTY_DIR}),
    row("prepare-binary-file", PREPARE + " {tmp}/in.bin", ["{tmp}/in.bin", "line 1", "invalid UTF-8"],
        {"in.bin": BINARY}, {"out": ABSENT}),
    row("prepare-10mb-line-jsonl", PREPARE + " {tmp}/big.jsonl --format jsonl",
        ["{tmp}/big.jsonl", "line 1", "invalid JSON"], {"big.jsonl": BIG_LINE}, {"out": EMPTY_DIR}),
    row("prepare-wrong-tokenizer-path",
        "prepare --tokenizer {tmp}/no-tokenizer --out {tmp}/out --workers 1 --input {corpus}",
        ["{tmp}/no-tokenizer", "does not exist"], outputs={"out": ABSENT}),
    row("prepare-tokenizer-dir-without-vocab",
        "prepare --tokenizer {tmp}/tokdir --out {tmp}/out --workers 1 --input {corpus}",
        ["{tmp}/tokdir", "neither tokenizer.json nor vocab.txt"], {"tokdir": DIR}, {"out": EMPTY_DIR}, extended=True),
    row("prepare-validation-fraction-out-of-range", PREPARE + " {corpus} --validation-fraction 1.5",
        ["--validation-fraction 1.5", "outside [0, 1)"], outputs={"out": ABSENT}),
    row("prepare-out-not-empty", PREPARE + " {corpus}", ["--out {tmp}/out", "not empty"], outputs={"out": DIR}),

    # ---- pretrain: --out is the run directory
    row("pretrain-data-wrong-path", PRETRAIN + " --data {tmp}/no-data",
        ["{tmp}/no-data", "not a bertkit prepared-data directory"], outputs={"run": ABSENT}),
    row("pretrain-data-is-a-text-file", PRETRAIN + " --data {tmp}/corpus.txt",
        ["{tmp}/corpus.txt", "not a bertkit prepared-data directory"], {"corpus.txt": "some text\n"},
        {"run": EMPTY_DIR}, extended=True),
    row("pretrain-model-config-empty-file", PRETRAIN + " --data {data} --model-config {tmp}/config.json",
        ["{tmp}/config.json", "not valid JSON"], {"config.json": b""}, {"run": ABSENT}, extended=True),
    row("pretrain-model-config-binary", PRETRAIN + " --data {data} --model-config {tmp}/config.json",
        ["{tmp}/config.json", "not valid JSON"], {"config.json": BINARY}, {"run": EMPTY_DIR}),
    row("pretrain-model-config-10mb-line", PRETRAIN + " --data {data} --model-config {tmp}/config.json",
        ["{tmp}/config.json", "not valid JSON"], {"config.json": BIG_LINE}, {"run": ABSENT}),
    row("pretrain-model-config-missing-field", PRETRAIN + " --data {data} --model-config {tmp}/config.json",
        ["{tmp}/config.json", "'num_hidden_layers'", "missing"],
        {"config.json": '{"vocab_size": 100, "hidden_size": 32, "num_attention_heads": 2}'}, {"run": ABSENT}),
    row("pretrain-out-not-empty-without-resume", PRETRAIN + " --data {data}",
        ["--out {tmp}/run", "not empty", "--resume"], outputs={"run": DIR}),
    row("pretrain-resume-with-wrong-data-path", PRETRAIN + " --data {tmp}/no-data --resume",
        ["{tmp}/no-data", "not a bertkit prepared-data directory"], outputs={"run": DIR}),
    row("pretrain-dropout-out-of-range", PRETRAIN + " --data {data} --dropout 1.5", ["--dropout 1.5", "[0, 1)"],
        outputs={"run": ABSENT}, extended=True),

    # ---- finetune: --out is the fine-tuned model directory
    row("finetune-train-empty-file", FINETUNE + " --task sst2 --train {tmp}/train.tsv --dev {sst2}/dev.tsv",
        ["{tmp}/train.tsv", "file is empty"], {"train.tsv": b""}, {"out": EMPTY_DIR}),
    row("finetune-train-binary", FINETUNE + " --task sst2 --train {tmp}/train.tsv --dev {sst2}/dev.tsv",
        ["{tmp}/train.tsv", "invalid UTF-8"], {"train.tsv": BINARY}, {"out": ABSENT}),
    row("finetune-train-10mb-line", FINETUNE + " --task sst2 --train {tmp}/train.tsv --dev {sst2}/dev.tsv",
        ["{tmp}/train.tsv", "no column 'sentence'"], {"train.tsv": BIG_LINE}, {"out": EMPTY_DIR}),
    row("finetune-missing-column", FINETUNE + " --task sst2 --train {tmp}/train.tsv --dev {sst2}/dev.tsv",
        ["{tmp}/train.tsv", "no column 'sentence'"], {"train.tsv": "text\tlabel\ngood\t1\n"}, {"out": ABSENT}),
    row("finetune-unknown-label-keeps-forced-out", FINETUNE + " --task classify --train {tmp}/train.csv "
        "--dev {tmp}/dev.csv --force", ["{tmp}/dev.csv", "line 2", "'z'"],
        {"train.csv": "text,label\na,x\nb,y\n", "dev.csv": "text,label\nc,z\n"}, {"out": DIR}),
    row("finetune-ner-tag-outside-iob", FINETUNE + " --task ner --train {tmp}/train.txt --dev {tmp}/train.txt",
        ["{tmp}/train.txt", "line 2", "'X-ORG'"], {"train.txt": "EU B-ORG\nrejects X-ORG\n"}, {"out": EMPTY_DIR}),
    row("finetune-data-and-train-conflict", FINETUNE + " --task sst2 --data {sst2} --train {sst2}/train.tsv",
        ["--data", "--train"], outputs={"out": ABSENT}),
    row("finetune-wrong-model-path",
        "finetune --model {tmp}/no-model --out {tmp}/out --task sst2 --data {sst2} --quiet",
        ["{tmp}/no-model", "does not exist"], outputs={"out": EMPTY_DIR}, extended=True),

    # ---- evaluate: --output (default MODEL/evaluate_results.json) is one file
    row("evaluate-dev-empty-file", EVALUATE + " --task classify --dev {tmp}/dev.csv",
        ["{tmp}/dev.csv", "file is empty"], {"dev.csv": b""}, {"eval.json": FILE}),
    row("evaluate-dev-10mb-line", EVALUATE + " --task classify --dev {tmp}/dev.csv", ["{tmp}/dev.csv", "line 1"],
        {"dev.csv": BIG_LINE}, {"eval.json": FILE}),
    row("evaluate-unknown-label", EVALUATE + " --task classify --dev {tmp}/dev.csv",
        ["{tmp}/dev.csv", "line 3", "'neutral'"], {"dev.csv": "text,label\ngreat,pos\nmeh,neutral\n"},
        {"eval.json": FILE}),
    row("evaluate-missing-column", EVALUATE + " --task classify --dev {tmp}/dev.csv",
        ["{tmp}/dev.csv", "the header has no 'text' column", "['sentence', 'label']", "--text-column"], {"dev.csv": "sentence,label\ngreat,pos\n"},
        {"eval.json": ABSENT}),
    row("evaluate-data-and-dev-conflict", EVALUATE + " --task classify --data {sst2} --dev {tmp}/dev.csv",
        ["--data", "--dev"], {"dev.csv": "text,label\ngreat,pos\n"}, {"eval.json": FILE}),
    row("evaluate-keeps-default-output-in-model-dir", "evaluate --model {tmp}/clf --task classify --dev {tmp}/dev.csv",
        ["{tmp}/dev.csv", "invalid UTF-8"], {"clf": copy_of("clf"), "dev.csv": BINARY},
        {"clf/evaluate_results.json": FILE}),

    # ---- predict: --output is one file
    row("predict-empty-file", PREDICT + " --input {tmp}/in.jsonl", ["{tmp}/in.jsonl", "file is empty"],
        {"in.jsonl": b"\n"}, {"pred.jsonl": FILE}),
    row("predict-binary-file", PREDICT + " --input {tmp}/in.jsonl", ["{tmp}/in.jsonl", "line 1", "invalid UTF-8"],
        {"in.jsonl": BINARY}, {"pred.jsonl": FILE}),
    row("predict-invalid-utf8", PREDICT + " --input {tmp}/in.txt", ["{tmp}/in.txt", "line 2", "byte offset 21"],
        {"in.txt": LATIN1}, {"pred.jsonl": ABSENT}),
    row("predict-wrong-input-path", PREDICT + " --input {tmp}/missing.jsonl", ["{tmp}/missing.jsonl", "not found"],
        outputs={"pred.jsonl": FILE}),
    row("predict-input-is-a-directory", PREDICT + " --input {tmp}/indir", ["{tmp}/indir", "is a directory"],
        {"indir": DIR}, {"pred.jsonl": FILE}),
    row("predict-10mb-line-jsonl", PREDICT + " --input {tmp}/in.jsonl", ["{tmp}/in.jsonl", "line 1", "invalid JSON"],
        {"in.jsonl": BIG_LINE}, {"pred.jsonl": FILE}),
    row("predict-jsonl-missing-field", PREDICT + " --input {tmp}/in.jsonl", ["{tmp}/in.jsonl", "record 1", "'text'"],
        {"in.jsonl": '{"sentence": "no text field"}\n'}, {"pred.jsonl": FILE}),
    row("predict-jsonl-some-records-paired", PREDICT + " --input {tmp}/in.jsonl", ["{tmp}/in.jsonl", "text_pair"],
        {"in.jsonl": '{"text": "a", "text_pair": "b"}\n{"text": "c"}\n'}, {"pred.jsonl": ABSENT}, extended=True),
    row("predict-model-without-task-head", "predict --model {model} --input {tmp}/in.txt --output {tmp}/pred.jsonl",
        ["{model}", "no task head"], {"in.txt": "a fine film\n"}, {"pred.jsonl": FILE}, extended=True),
    row("predict-task-conflicts-with-model", PREDICT + " --task sst2 --input {tmp}/in.tsv",
        ["--model {clf}", "classify", "sst2"], {"in.tsv": "index\tsentence\n0\ta fine film\n"}, {"pred.jsonl": FILE}),

    # ---- embed: --output is one .npy or .jsonl file
    row("embed-empty-file", EMBED + " --input {tmp}/in.txt --output {tmp}/out.npy", ["{tmp}/in.txt", "file is empty"],
        {"in.txt": b"\n \n"}, {"out.npy": FILE}),
    row("embed-invalid-utf8", EMBED + " --input {tmp}/in.txt --output {tmp}/out.npy",
        ["{tmp}/in.txt", "line 2", "byte offset 21"], {"in.txt": LATIN1}, {"out.npy": FILE}, extended=True),
    row("embed-wrong-input-path", EMBED + " --input {tmp}/missing.txt --output {tmp}/out.npy",
        ["{tmp}/missing.txt", "not found"], outputs={"out.npy": ABSENT}, extended=True),
    row("embed-output-extension", EMBED + " --input {tmp}/in.txt --output {tmp}/out.txt",
        ["--output {tmp}/out.txt", ".npy or .jsonl"], {"in.txt": "hello\n"}, {"out.txt": FILE}),
    row("embed-pooling-none-with-npy", EMBED + " --input {tmp}/in.txt --output {tmp}/out.npy --pooling none",
        ["--pooling none", ".jsonl"], {"in.txt": "hello\n"}, {"out.npy": FILE}),
    row("embed-layer-out-of-range", EMBED + " --input {tmp}/in.txt --output {tmp}/out.npy --layers=-1,5",
        ["--layers '-1,5'", "layer 5 does not exist"], {"in.txt": "hello\n"}, {"out.npy": FILE}),
    row("embed-model-without-tokenizer", "embed --model {tmp}/model --input {tmp}/in.txt --output {tmp}/out.npy",
        ["{tmp}/model", "neither tokenizer.json nor vocab.txt"],
        {"model": copy_of("model", drop=TOKENIZER_FILES), "in.txt": "hello\n"}, {"out.npy": FILE}),
    row("embed-output-is-a-directory", EMBED + " --input {tmp}/in.txt --output {tmp}/out.npy", ["{tmp}/out.npy"],
        {"in.txt": "hello\n"}, {"out.npy": DIR}),
    row("embed-batch-size-zero", EMBED + " --input {tmp}/in.txt --output {tmp}/out.npy --batch-size 0",
        ["--batch-size", "positive integer"], {"in.txt": "hello\n"}, {"out.npy": FILE}),

    # ---- fill-mask: prints to stdout, writes nothing
    row("fill-mask-no-mask", "fill-mask --model {model} 'hello world'", ["no [MASK]", "'hello world'"]),
    row("fill-mask-empty-text", "fill-mask --model {model} ''", ["no [MASK]", "''"], extended=True),
    row("fill-mask-model-without-mlm-head", "fill-mask --model {clf} 'a [MASK] film'", ["{clf}", "no MLM head"]),
    row("fill-mask-wrong-model-path", "fill-mask --model {tmp}/no-model 'a [MASK] film'",
        ["{tmp}/no-model", "not found"]),
    row("fill-mask-text-longer-than-model", "fill-mask --model {model} {longtext}",
        ["longer than the model's 128 positions"]),
    row("fill-mask-top-k-zero", "fill-mask --model {model} --top-k 0 'a [MASK] film'", ["--top-k", "positive integer"]),
]

N_CASES = len(CASES)
CASES_PER_COMMAND = collections.Counter(p.values[0].command for p in CASES)
DEFAULT_CASES_PER_COMMAND = collections.Counter(p.values[0].command for p in CASES if not p.values[0].extended)


# ----------------------------------------------------------------------------------------------
# Running a row


def fill(template: str, paths: dict[str, str]) -> str:
    for key, value in paths.items():
        template = template.replace("{" + key + "}", value)
    return template


def snapshot(*roots: Path) -> dict[str, str | None]:
    """Every directory (None) and file (sha256 of its bytes) under the roots, by absolute path."""
    seen: dict[str, str | None] = {}
    for root in roots:
        for directory, dirs, files in os.walk(root):
            seen[directory] = None
            for name in files:
                path = os.path.join(directory, name)
                with open(path, "rb") as f:
                    seen[path] = hashlib.sha256(f.read()).hexdigest()
    return seen


def make_outputs(case: Case, tmp: Path) -> None:
    for name, kind in case.outputs.items():
        path = tmp / name
        if kind == FILE:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(SENTINEL)
        elif kind == DIR:
            path.mkdir(parents=True)
            (path / "keep.txt").write_bytes(SENTINEL)
        elif kind == EMPTY_DIR:
            path.mkdir(parents=True)
        else:
            assert kind == ABSENT and not path.exists(), (name, kind)


def make_inputs(case: Case, tmp: Path, paths: dict) -> None:
    for name, content in case.inputs.items():
        path = tmp / name
        if content == DIR:
            path.mkdir(parents=True)
        elif callable(content):
            content(paths, path)
        else:
            path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, env, tmp_path):
    paths = {**{k: str(v) for k, v in env.items()}, "tmp": str(tmp_path),
             "longtext": shlex.quote("word " * 20000 + "[MASK]")}  # ~100 kB: under the 128 kB argv limit
    make_inputs(case, tmp_path, env)
    make_outputs(case, tmp_path)
    before = snapshot(tmp_path, env["env"])

    proc = run_cli(*[fill(arg, paths) for arg in shlex.split(fill(case.argv, {"longtext": paths["longtext"]}))],
                   check=False)

    expect = [fill(fragment, paths) for fragment in case.expect]
    assert_one_line_error(proc, f"bertkit {case.command}: error: ", *expect)
    line = proc.stderr.strip()
    assert len(line) <= MAX_ERROR_CHARS, f"{len(line)}-character error line: {line[:300]}..."
    after = snapshot(tmp_path, env["env"])
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p, "gone") != after.get(p, "gone"))
    assert not changed, f"a failed run changed, created or removed: {changed}"
    for name, kind in case.outputs.items():
        path = tmp_path / name
        if kind == ABSENT:
            assert not path.exists(), name
        elif kind == FILE:
            assert path.read_bytes() == SENTINEL, name
        elif kind == DIR:
            assert os.listdir(path) == ["keep.txt"] and (path / "keep.txt").read_bytes() == SENTINEL, name
        else:
            assert os.listdir(path) == [], name


def test_matrix_covers_every_command():
    assert set(CASES_PER_COMMAND) >= set(COMMANDS), set(COMMANDS) - set(CASES_PER_COMMAND)
    assert set(CASES_PER_COMMAND) <= set(COMMANDS), set(CASES_PER_COMMAND) - set(COMMANDS)
    assert all(CASES_PER_COMMAND[c] >= 5 for c in COMMANDS), CASES_PER_COMMAND
    assert all(DEFAULT_CASES_PER_COMMAND[c] >= 4 for c in COMMANDS), DEFAULT_CASES_PER_COMMAND
    assert 40 <= sum(DEFAULT_CASES_PER_COMMAND.values()) <= 60 and N_CASES <= 70, N_CASES
    assert len({p.id for p in CASES}) == N_CASES, "row ids must be unique"
    # every kind of bad input the matrix is about appears in some row
    ids = " ".join(p.id for p in CASES)
    for kind in ("empty", "binary", "utf8", "10mb", "missing", "unknown-label", "wrong", "conflict"):
        assert kind in ids, kind


# ----------------------------------------------------------------------------------------------
# A 10 MB single line where it is legitimate input: no crash, the run finishes.


def test_vocab_from_a_10mb_single_line(tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(BIG_LINE)
    proc = run_cli("vocab", "--input", big, "--out", tmp_path / "tok", "--vocab-size", 100, "--quiet", check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lorem" in (tmp_path / "tok" / "vocab.txt").read_text().split("\n")


@slow  # tokenizing all 10 MB before truncating takes ~25 s on a laptop CPU
def test_embed_truncates_a_10mb_single_line(env, tmp_path):
    import numpy as np

    big = tmp_path / "big.txt"
    big.write_bytes(b"short line\n" + BIG_LINE)
    proc = run_cli("embed", "--model", env["model"], "--input", big, "--output", tmp_path / "out.npy", "--quiet",
                   check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 of 2 texts were longer than 128 tokens and were truncated" in proc.stderr
    assert np.load(tmp_path / "out.npy").shape == (2, 32)
