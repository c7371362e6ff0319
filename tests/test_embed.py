"""`bertkit embed` on the real all-MiniLM-L6-v2 weights against sentence-transformers."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import minilm_path


def real_sentences(n: int = 120) -> list[str]:
    """English sentences from the Python documentation that ships with every Python (pydoc_data)."""
    from pydoc_data.topics import topics

    text = " ".join(topics[k] for k in sorted(topics))
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text))]
    sentences = [s for s in sentences if 20 <= len(s) <= 400 and not s.startswith(("*", "="))]
    assert len(sentences) >= n
    return sentences[:: max(1, len(sentences) // n)][:n]


@pytest.fixture(scope="module")
def sentences():
    return real_sentences()


@pytest.fixture(scope="module")
def reference(sentences):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_path()), device="cpu")
    return model.encode(sentences, batch_size=32, convert_to_numpy=True)  # mean pooling, then L2-normalised


def run_embed(tmp_path, sentences, *flags):
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    proc = subprocess.run([sys.executable, "-m", "bertkit", "embed", "--model", str(minilm_path()), "--input", str(inp),
                           "--output", str(out), "--quiet", "--precision", "fp32", *flags], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return np.load(out)


def test_embed_cli_matches_sentence_transformers(tmp_path, sentences, reference):
    ours = run_embed(tmp_path, sentences, "--pooling", "mean", "--normalize", "--batch-size", "16")
    assert ours.shape == (len(sentences), 384) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-5


def test_unnormalized_mean_pooling_matches_transformers_encoder(tmp_path, sentences):
    transformers = pytest.importorskip("transformers")
    ours = run_embed(tmp_path, sentences[:40], "--pooling", "mean")
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    hf = transformers.BertModel.from_pretrained(minilm_path()).eval()
    batch = tok(sentences[:40], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = hf(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    assert np.abs(ours - expected).max() < 1e-5
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0)  # really unnormalised


def test_cls_pooling_is_the_first_token(tmp_path, sentences):
    transformers = pytest.importorskip("transformers")
    ours = run_embed(tmp_path, sentences[:5] + ["", "a last line"], "--pooling", "cls")
    assert ours.shape[0] == 7  # blank lines keep their row: row i is line i
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    hf = transformers.BertModel.from_pretrained(minilm_path()).eval()
    with torch.no_grad():
        expected = hf(**tok(sentences[:5] + ["", "a last line"], padding=True, return_tensors="pt"))
    assert np.abs(ours - expected.last_hidden_state[:, 0].numpy()).max() < 1e-5


@pytest.mark.parametrize("content, message", [
    (b"", "file is empty"),
    (b"fine line\n\xff\xfe broken\n", "line 2: invalid UTF-8 at byte offset 10"),
])
def test_embed_bad_input(tmp_path, content, message):
    inp = tmp_path / "in.txt"
    inp.write_bytes(content)
    out = tmp_path / "out.npy"
    out.write_bytes(b"keep me")
    proc = subprocess.run([sys.executable, "-m", "bertkit", "embed", "--model", str(minilm_path()), "--input", str(inp),
                           "--output", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and str(inp) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == b"keep me"


def test_layers_concatenated_and_averaged_equal_the_manual_computation(sentences):
    """--layers -1,-2,-3,-4 (the paper's feature-based setup): each chosen hidden state mean-pooled, in order."""
    transformers = pytest.importorskip("transformers")
    from bertkit.inference import embed, parse_layers
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer

    texts = sentences[:6]
    ours = BertModel.from_pretrained(minilm_path())
    tokenizer = Tokenizer.from_pretrained(minilm_path())
    layers = parse_layers("-1,-2,-3,-4", ours.config.num_hidden_layers)
    concat = embed(ours, tokenizer, texts, layers=layers, layer_merge="concat", batch_size=4, precision="fp32")
    mean = embed(ours, tokenizer, texts, layers=layers, layer_merge="mean", batch_size=4, precision="fp32")
    assert concat.shape == (6, 4 * 384) and mean.shape == (6, 384)

    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    hf = transformers.BertModel.from_pretrained(minilm_path()).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = hf(**batch, output_hidden_states=True).hidden_states  # embeddings, then each of the 6 layers
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = [((states[i] * mask).sum(1) / mask.sum(1)).numpy() for i in (-1, -2, -3, -4)]
    assert np.abs(concat - np.concatenate(pooled, axis=1)).max() < 1e-5
    assert np.abs(mean - np.mean(pooled, axis=0)).max() < 1e-5
    assert np.abs(concat[:, :384] - embed(ours, tokenizer, texts, precision="fp32")).max() < 1e-6  # -1 alone is the default


def test_pooling_none_gives_every_token_with_its_offsets(tmp_path):
    transformers = pytest.importorskip("transformers")
    import json

    texts = ["Paris is lovely in spring.", "Zürich's tramways run on time!"]
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "tokens.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bertkit", "embed", "--model", str(minilm_path()), "--input", str(inp),
                           "--output", str(out), "--pooling", "none", "--quiet", "--precision", "fp32"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    hf = transformers.BertModel.from_pretrained(minilm_path()).eval()
    for text, row in zip(texts, rows):
        assert row["text"] == text
        assert row["tokens"] == tok.convert_ids_to_tokens(tok(text)["input_ids"])
        assert row["tokens"][0] == "[CLS]" and row["offsets"][0] == [0, 0]
        for token, (start, end) in zip(row["tokens"][1:-1], row["offsets"][1:-1]):
            piece = token.removeprefix("##")
            assert text[start:end].lower().replace("ü", "u") == piece, (token, text[start:end])
        with torch.no_grad():
            expected = hf(**tok(text, return_tensors="pt")).last_hidden_state[0].numpy()
        assert np.abs(np.array(row["vectors"], dtype=np.float32) - expected).max() < 1e-5


@pytest.mark.parametrize("flags, message", [
    (["--pooling", "none"], "which .npy cannot hold"),
    (["--layers", "-1,9"], "layer 9 does not exist; the model has 6 layers"),
    (["--layers=last"], "expected comma-separated integers"),
])
def test_embed_bad_flags(tmp_path, flags, message):
    inp = tmp_path / "in.txt"
    inp.write_text("a line\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "bertkit", "embed", "--model", str(minilm_path()), "--input", str(inp),
                           "--output", str(tmp_path / "out.npy"), *flags], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("command", [
    "embed --model {tmp}/no-model --input {tmp}/in.txt --output {tmp}/vectors.npy",
    "predict --model {tmp}/no-model --input {tmp}/in.txt --output {tmp}/vectors.npy",
    "evaluate --task sst2 --dev {tmp}/in.txt --model {tmp}/no-model --output {tmp}/vectors.npy",
    "attention --model {tmp}/no-model hello --out {tmp}/vectors.npy.png",
    "plot {tmp}/no-run --out {tmp}/vectors.npy.png",
])
def test_output_path_is_checked_before_any_work(tmp_path, command):
    """An output path that is a directory is refused first, not after all the work is done (the model here
    does not even exist: the output check comes before loading it)."""
    (tmp_path / "in.txt").write_text("a line\n", encoding="utf-8")
    (tmp_path / "vectors.npy").mkdir()
    (tmp_path / "vectors.npy.png").mkdir()
    args = command.format(tmp=tmp_path).split()
    proc = subprocess.run([sys.executable, "-m", "bertkit", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "is a directory, expected a file name" in proc.stderr
