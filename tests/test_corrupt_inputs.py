"""Corrupt inputs, through the CLI: truncated or bit-flipped safetensors, config.json with missing or
wrong-typed fields, tokenizer files with duplicate or bad entries, a fine-tuned directory's task
settings damaged, and prepared-data directories whose manifest disagrees with their arrays or tokenizer.

Each is detected when it is loaded: exit status 2, one line on stderr naming the damaged file (or the
directory holding it), nothing written. A bit flip inside tensor data is not tested: without a checksum
it cannot be told from a trained weight. (tests/test_checkpoint_errors.py covers the library-level
basics: a safetensors file cut at 1000 bytes, config.json not JSON / without vocab_size / with a string
vocab_size; test_tokenizer.py a duplicate vocab.txt token; test_pretraining_data.py a truncated tokens.bin.)

Rows that expose a bug are marked xfail(strict=True) with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli, small_project

SENTINEL = b"sentinel: an existing output that a failed run must leave alone\n"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    """Good directories to copy and damage (conftest.small_project)."""
    return small_project(tmp_path_factory.mktemp("corrupt-fixtures"))


# ----------------------------------------------------------------------------------------------
# Ways to damage a file


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Rewrite the JSON file `name` after change(obj) has edited it in place (its return value is ignored)."""

    def corrupt(directory: Path) -> None:
        path = directory / name
        obj = json.loads(path.read_text())
        change(obj)
        path.write_text(json.dumps(obj))

    return corrupt


def without(field: str) -> Callable[[Path], None]:
    """manifest.json with `field` deleted."""
    return edit_json("manifest.json", lambda manifest: manifest.__delitem__(field))


def write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda directory: (directory / name).write_bytes(content)


def truncate(name: str, keep: Callable[[bytes], int]) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[:keep(data)])

    return corrupt


def header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def flip_in_header(find: str, offset: int, bit: int = 0x01) -> Callable[[Path], None]:
    """Flip one bit of model.safetensors' JSON header: in the byte `offset` past the first `find`."""

    def corrupt(directory: Path) -> None:
        path = directory / "model.safetensors"
        data = bytearray(path.read_bytes())
        header = data[8:8 + header_length(data)].decode()
        data[8 + header.index(find) + offset] ^= bit
        path.write_bytes(bytes(data))

    return corrupt


def flip_byte(name: str, position: int, bit: int) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        data = bytearray((directory / name).read_bytes())
        data[position] ^= bit
        (directory / name).write_bytes(bytes(data))

    return corrupt


def offsets_beyond_file(directory: Path) -> None:
    """A well-formed header whose last tensor ends 4 kB after the end of the file."""
    path = directory / "model.safetensors"
    data = path.read_bytes()
    n = header_length(data)
    header = json.loads(data[8:8 + n])
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    header[last]["data_offsets"][1] += 4096
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + n:])


def last_offset_digit_flipped(directory: Path) -> None:
    """A bit flip that keeps the header valid JSON: one tensor's end offset moves by one byte."""
    path = directory / "model.safetensors"
    data = bytearray(path.read_bytes())
    header = data[8:8 + header_length(data)].decode()
    match = re.search(r'"data_offsets":\[\d+,(\d+)\]', header)
    data[8 + match.end(1) - 1] ^= 0x01  # e.g. ...128] -> ...129]
    path.write_bytes(bytes(data))


def duplicate_vocab_line(directory: Path) -> None:
    """vocab.txt's line 30 made a copy of line 20 (tokenizer.json, which would be read first, removed)."""
    (directory / "tokenizer.json").unlink()
    lines = (directory / "vocab.txt").read_text().split("\n")
    lines[29] = lines[19]
    (directory / "vocab.txt").write_text("\n".join(lines))


def rename_vocab_token(directory: Path) -> None:
    """A prepared directory's tokenizer/ no longer the one its manifest fingerprints."""
    tok = directory / "tokenizer"
    (tok / "tokenizer.json").unlink()
    lines = (tok / "vocab.txt").read_text().split("\n")
    lines[40] = lines[40] + "x"
    (tok / "vocab.txt").write_text("\n".join(lines))


def edit_array(relative: str, index: int, delta: int) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        path = directory / relative
        values = np.fromfile(path, dtype=np.int64)
        values[index] += delta
        values.tofile(path)

    return corrupt


def both(*corruptions: Callable[[Path], None]) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        for c in corruptions:
            c(directory)

    return corrupt


# ----------------------------------------------------------------------------------------------
# The table: which fixture is copied to {dir} and damaged, the command run on it, what the one error line says.

EMBED = "embed --model {dir} --input {tmp}/in.txt --output {tmp}/out.npy --quiet"
FILL = "fill-mask --model {dir} 'a [MASK] film'"
FINETUNE = "finetune --model {dir} --out {tmp}/out --task sst2 --train {tmp}/train.tsv --dev {tmp}/train.tsv --quiet"
EVALUATE = "evaluate --model {dir} --task classify --dev {tmp}/dev.csv --output {tmp}/eval.json"
PREDICT = "predict --model {dir} --input {tmp}/in.txt --output {tmp}/pred.jsonl"
PREPARE = "prepare --tokenizer {dir} --input {tmp}/in.txt --out {tmp}/out --workers 1 --quiet"
PRETRAIN = "pretrain --data {dir} --out {tmp}/run --model-config tiny --steps 1 --batch-size 2 --seq-len 32 --quiet"

NOT_READ = "cannot read safetensors file"


def case(id, source, corrupt, argv, expect, bug=None, regex=None):
    marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {bug}")] if bug else []
    return pytest.param(source, corrupt, argv, tuple(expect), regex, id=id, marks=marks)


def config_field(name, value):
    def change(config):
        if value is DELETE:
            del config[name]
        else:
            config[name] = value

    return edit_json("config.json", change)


DELETE = object()

CORRUPTIONS = [
    # ---- model.safetensors, cut short or bit-flipped outside the tensor data
    case("safetensors-truncated-in-data", "model", truncate("model.safetensors", lambda d: len(d) // 2), EMBED,
         ["{dir}/model.safetensors", NOT_READ]),
    case("safetensors-truncated-in-header", "model", truncate("model.safetensors", lambda d: 8 + header_length(d) // 2),
         FILL, ["{dir}/model.safetensors", NOT_READ]),
    case("safetensors-empty", "model", write("model.safetensors", b""), FINETUNE,
         ["{dir}/model.safetensors", NOT_READ]),
    case("safetensors-bitflip-header-length", "model", flip_byte("model.safetensors", 6, 0x10), FILL,
         ["{dir}/model.safetensors", NOT_READ]),
    case("safetensors-bitflip-header-json-syntax", "model", flip_in_header("{", 0, 0x01), EMBED,
         ["{dir}/model.safetensors", NOT_READ]),
    case("safetensors-bitflip-header-offset", "model", last_offset_digit_flipped, EMBED,
         ["{dir}/model.safetensors", NOT_READ]),
    case("safetensors-bitflip-header-dtype", "model", flip_in_header('"F32"', 1, 0x01), FILL,  # F32 -> G32
         ["{dir}/model.safetensors", NOT_READ]),
    case("safetensors-bitflip-header-shape", "model", flip_in_header('"shape":[32]', 10, 0x01), EMBED,  # 32 -> 33
         ["{dir}/model.safetensors", NOT_READ]),
    case("safetensors-offsets-beyond-file", "model", offsets_beyond_file, EMBED, ["{dir}/model.safetensors", NOT_READ]),
    case("safetensors-bitflip-header-tensor-name", "model", flip_in_header("query.weight", 1, 0x01), EMBED,  # qtery
         ["{dir}/model.safetensors", "query"]),

    # ---- config.json: missing or wrong-typed fields
    case("config-hidden-size-a-string", "model", config_field("hidden_size", "big"), EMBED,
         ["{dir}/config.json", "'hidden_size'", "'big'"]),
    case("config-vocab-size-missing", "model", config_field("vocab_size", DELETE), FILL,
         ["{dir}/config.json", "'vocab_size'", "missing"]),
    case("config-truncated-json", "model", truncate("config.json", lambda d: len(d) // 2), FINETUNE,
         ["{dir}/config.json", "not valid JSON"]),
    case("config-vocab-size-null", "model", config_field("vocab_size", None), EMBED,
         ["{dir}/config.json", "vocab_size"]),
    case("config-num-attention-heads-zero", "model", config_field("num_attention_heads", 0), FILL,
         ["{dir}/config.json", "num_attention_heads"]),
    case("config-id2label-keys-not-integers", "clf", config_field("id2label", {"neg": "neg", "pos": "pos"}), EVALUATE,
         ["{dir}/config.json", "id2label"]),
    case("config-hidden-size-not-divisible-by-heads", "model", config_field("hidden_size", 33), FILL,
         ["{dir}/config.json", "hidden_size (33)"]),
    case("config-hidden-size-disagrees-with-weights", "model", config_field("hidden_size", 48), EMBED,
         ["{dir}/model.safetensors"], regex=r"\b32\b.*\b48\b|\b48\b.*\b32\b"),
    case("config-num-hidden-layers-negative", "model", config_field("num_hidden_layers", -1), FILL,
         ["{dir}/config.json", "num_hidden_layers"]),

    # ---- tokenizer files
    case("vocab-duplicate-line-in-model-dir", "model", duplicate_vocab_line, EMBED,
         ["{dir}/vocab.txt", "appears twice, on lines 20 and 30"]),
    case("vocab-duplicate-line-in-tokenizer-dir", "tok", duplicate_vocab_line, PREPARE,
         ["{dir}/vocab.txt", "appears twice, on lines 20 and 30"]),
    case("vocab-duplicate-line-in-prepared-data", "data",
         lambda d: duplicate_vocab_line(d / "tokenizer"), PRETRAIN,
         ["{dir}/tokenizer/vocab.txt", "appears twice, on lines 20 and 30"]),
    case("tokenizer-json-truncated", "model", truncate("tokenizer.json", lambda d: len(d) // 2), EMBED,
         ["{dir}/tokenizer.json", "invalid JSON"]),
    case("tokenizer-config-do-lower-case-a-string", "model",
         both(lambda d: (d / "tokenizer.json").unlink(), edit_json("tokenizer_config.json",
                                                                   lambda c: c.update(do_lower_case="yes"))),
         EMBED, ["{dir}/tokenizer_config.json", "do_lower_case"]),

    # ---- a fine-tuned directory's bertkit_task.json
    case("task-settings-not-json-predict", "clf", write("bertkit_task.json", b'{"task": "classify",'), PREDICT,
         ["{dir}/bertkit_task.json", "invalid JSON"]),
    case("task-settings-not-json-evaluate", "clf", write("bertkit_task.json", b'{"task": "classify",'), EVALUATE,
         ["{dir}/bertkit_task.json", "invalid JSON"]),
    case("task-settings-a-list-evaluate", "clf", write("bertkit_task.json", b'["classify"]'), EVALUATE,
         ["{dir}/bertkit_task.json", "object"]),
    case("task-settings-max-seq-len-a-string-evaluate", "clf",
         edit_json("bertkit_task.json", lambda s: s.update(max_seq_len="long")), EVALUATE,
         ["{dir}/bertkit_task.json", "max_seq_len"]),
    case("task-settings-max-seq-len-a-string-predict", "clf",
         edit_json("bertkit_task.json", lambda s: s.update(max_seq_len="long")), PREDICT,
         ["{dir}/bertkit_task.json", "max_seq_len"]),

    # ---- prepared data: the manifest against its arrays and its tokenizer
    case("manifest-token-count-disagrees-with-tokens-bin", "data",
         edit_json("manifest.json", lambda m: m["splits"]["train"].update(tokens=m["splits"]["train"]["tokens"] + 5)),
         PRETRAIN, ["{dir}/train/tokens.bin", "manifest.json promises"]),
    case("manifest-sentence-count-disagrees-with-array", "data",
         edit_json("manifest.json", lambda m: m["splits"]["validation"].update(
             sentences=m["splits"]["validation"]["sentences"] - 1)),
         PRETRAIN, ["{dir}/validation/sentence_starts.bin", "manifest.json promises"]),
    case("manifest-tokenizer-fingerprint-disagrees", "data",
         edit_json("manifest.json", lambda m: m.update(tokenizer_fingerprint="0" * 64)), PRETRAIN,
         ["{dir}", "tokenizer differs"]),
    case("tokenizer-files-disagree-with-manifest-fingerprint", "data", rename_vocab_token, PRETRAIN,
         ["{dir}", "tokenizer differs"]),
    case("manifest-vocab-size-disagrees", "data", edit_json("manifest.json", lambda m: m.update(vocab_size=99999)),
         PRETRAIN, ["{dir}", "99999"]),
    case("manifest-not-json", "data", truncate("manifest.json", lambda d: len(d) // 2), PRETRAIN,
         ["{dir}/manifest.json", "invalid JSON"]),
    case("manifest-newer-version", "data", edit_json("manifest.json", lambda m: m.update(version=2)), PRETRAIN,
         ["{dir}/manifest.json", "version 2"]),
    case("sentence-starts-does-not-end-at-token-count", "data", edit_array("train/sentence_starts.bin", -1, 3),
         PRETRAIN, ["{dir}", "sentence_starts.bin does not end at the token count"]),
    case("manifest-without-dtype", "data", without("dtype"), PRETRAIN,
         ["{dir}/manifest.json", "dtype"]),
    case("manifest-without-splits", "data", without("splits"), PRETRAIN,
         ["{dir}/manifest.json", "splits"]),
    case("manifest-without-tokenizer-fingerprint", "data",
         without("tokenizer_fingerprint"), PRETRAIN,
         ["{dir}/manifest.json", "tokenizer_fingerprint"]),
    case("manifest-dtype-unknown", "data", edit_json("manifest.json", lambda m: m.update(dtype="float99")), PRETRAIN,
         ["{dir}/manifest.json", "float99"]),
    case("document-starts-beyond-sentence-count", "data", edit_array("train/document_starts.bin", 3, 1 << 40),
         PRETRAIN, ["{dir}/train/document_starts.bin"]),
]


# ----------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str | None]:
    seen: dict[str, str | None] = {}
    for directory, _, files in os.walk(root):
        seen[directory] = None
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                seen[os.path.join(directory, name)] = hashlib.sha256(f.read()).hexdigest()
    return seen


@pytest.mark.parametrize("source, corrupt, argv, expect, regex", CORRUPTIONS)
def test_corrupt_input_is_reported(source, corrupt, argv, expect, regex, fixtures, tmp_path):
    directory = tmp_path / source
    shutil.copytree(fixtures[source], directory)
    corrupt(directory)
    (tmp_path / "in.txt").write_text("a fine film\nthe model learns\n")
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na fine film\t1\na dull film\t0\n")
    (tmp_path / "dev.csv").write_text("text,label\ngreat,pos\nmeh,neg\n")
    for output in ("out.npy", "eval.json", "pred.jsonl"):
        (tmp_path / output).write_bytes(SENTINEL)
    before = snapshot(tmp_path)

    paths = {"dir": str(directory), "tmp": str(tmp_path)}

    def fill(text: str) -> str:
        return text.replace("{dir}", paths["dir"]).replace("{tmp}", paths["tmp"])

    proc = run_cli(*[fill(arg) for arg in shlex.split(argv)], check=False)

    command = argv.split()[0]
    assert_one_line_error(proc, f"bertkit {command}: error: ", *[fill(e) for e in expect])
    if regex:
        message = proc.stderr.strip().replace(str(tmp_path), "")
        assert re.search(regex, message), message
    assert snapshot(tmp_path) == before, "a failed run wrote, changed or removed files"
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_every_fixture_kind_is_damaged():
    sources = {p.values[0] for p in CORRUPTIONS}
    assert sources == {"model", "clf", "tok", "data"}
    assert len({p.id for p in CORRUPTIONS}) == len(CORRUPTIONS)
