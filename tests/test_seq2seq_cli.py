"""`bertkit finetune --task seq2seq` then `bertkit generate`, through the CLI on a tiny made-up pair file; and
bad input: one clear line, exit status 2, nothing written."""

import json
import random

import pytest
import torch

from conftest import NEGATIVE, POSITIVE, assert_one_line_error, run_cli


def pair_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(POSITIVE), rng.choice(NEGATIVE)
        rows.append({"source": f"the film was {a} but the cast was {b}", "target": f"{b} cast"})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    return write_jsonl(d / "train.jsonl", pair_rows(16, 0)), write_jsonl(d / "dev.jsonl", pair_rows(6, 1))


@pytest.fixture(scope="module")
def encoder_only(tmp_path_factory, tiny_model):
    """The tiny model saved as a plain BertModel: no MLM head."""
    from bertkit.checkpoint import load_model
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer

    d = tmp_path_factory.mktemp("encoder")
    BertModel.from_pretrained(tiny_model).save_pretrained(d)
    Tokenizer.from_pretrained(tiny_model).save_pretrained(d, model_max_length=128)
    assert not hasattr(load_model(str(d)), "mlm")
    return d


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory, encoder_only, pairs):
    out = tmp_path_factory.mktemp("s2s") / "run"
    train, dev = pairs
    proc = run_cli("finetune", "--task", "seq2seq", "--train", train, "--dev", dev, "--model", encoder_only,
                   "--out", out, "--epochs", 2, "--batch-size", 8, "--lr", 1e-3, "--max-seq-len", 48,
                   "--max-target-len", 8, "--label-smoothing", 0.1, "--quiet")
    return out / "seed-1", proc


def test_finetune_saves_a_masked_lm_with_generation_settings(seq2seq_run):
    transformers = pytest.importorskip("transformers")
    out, proc = seq2seq_run
    result = json.loads((out / "eval_results.json").read_text())
    assert 0 <= result["token_accuracy"] <= 1 and result["perplexity"] > 1
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == 8 and generation["eos_token_id"] == 102
    # transformers loads it as BertForMaskedLM, with the head tied to the word embeddings, and agrees
    from bertkit.checkpoint import load_model

    ours = load_model(str(out)).eval()
    theirs = transformers.BertForMaskedLM.from_pretrained(out).eval()
    assert theirs.cls.predictions.decoder.weight.data_ptr() == theirs.bert.embeddings.word_embeddings.weight.data_ptr()
    ids = torch.tensor([[101, 1996, 2143, 102, 2204, 102]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).mlm_logits, theirs(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", [["--method", "greedy"], ["--method", "beam", "--beams", "2", "--num-return", "2"],
                                    ["--method", "sample", "--seed", "3", "--top-k", "5", "--top-p", "0.9"],
                                    ["--method", "gibbs", "--seed", "3", "--sweeps", "2"]])
def test_generate_each_method(seq2seq_run, tmp_path, method):
    out, _ = seq2seq_run
    sources = tmp_path / "sources.txt"
    sources.write_text("the film was good but the cast was bad\nthe film was fine but the cast was dull\n")
    output = tmp_path / "out.jsonl"
    run_cli("generate", "--model", out, "--input", sources, "--output", output, "--max-new-tokens", 6, *method)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["source"] for line in lines] == sources.read_text().splitlines()
    for line in lines:
        assert isinstance(line["generated"], str) and isinstance(line["score"], float)
        if "beam" in method:
            assert len(line["n_best"]) == 2 and line["n_best"][0]["text"] == line["generated"]


@pytest.mark.parametrize("start", ["seq2seq", "pre-trained"])
def test_gibbs_from_a_prompt(seq2seq_run, tiny_model, tmp_path, start):
    """--prompt starts every target; a JSON line's "prompt" overrides it; the text returned starts with it.
    Gibbs runs on any MLM head: the seq2seq model, and a BertForPreTraining never fine-tuned."""
    out = seq2seq_run[0] if start == "seq2seq" else tiny_model
    sources = write_jsonl(tmp_path / "sources.jsonl", [{"source": "the film was good but the cast was bad"},
                                                       {"source": "the film was fine", "prompt": "the film"}])
    output = tmp_path / "out.jsonl"
    run_cli("generate", "--model", out, "--input", sources, "--output", output, "--method", "gibbs", "--seed", 1,
            "--max-new-tokens", 3, "--prompt", "The cast", "--precision", "fp32")
    first, second = [json.loads(line) for line in output.read_text().splitlines()]
    # held as tokenized (uncased: lowercased)
    assert first["generated"].startswith("the cast") and len(first["generated"]) > len("the cast")
    assert second["generated"].startswith("the film") and second["prompt"] == "the film"
    proc = run_cli("generate", "--model", out, "--input", sources, "--output", tmp_path / "o.jsonl", "--method",
                   "greedy", check=False)  # the second line's prompt
    assert_one_line_error(proc, "prompt", "--method gibbs")
    assert not (tmp_path / "o.jsonl").exists()


def test_finetune_from_tsv_and_a_model_with_an_mlm_head(tiny_model, pairs, tmp_path):
    """A TSV with source / target columns reads as the JSON Lines do; a start that has an MLM head keeps it (at
    a negligible learning rate the saved head is the start's, not a fresh one tied to the embeddings); label
    smoothing changes the loss; a smoothing of 1 or more is refused."""
    from safetensors.torch import load_file

    train, dev = pairs
    tsv = tmp_path / "train.tsv"
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    tsv.write_text("source\ttarget\n" + "".join(f"{r['source']}\t{r['target']}\n" for r in rows))
    losses = {}
    for smoothing in ("0", "0.3"):
        run_cli("finetune", "--task", "seq2seq", "--train", tsv, "--dev", dev, "--model", tiny_model, "--out",
                tmp_path / smoothing, "--epochs", 1, "--batch-size", 8, "--lr", 1e-12, "--max-seq-len", 48,
                "--max-target-len", 8, "--label-smoothing", smoothing, "--log-every", 1, "--quiet")
        lines = [json.loads(line) for line in (tmp_path / smoothing / "seed-1" / "metrics.jsonl").read_text().splitlines()]
        losses[smoothing] = [line["loss"] for line in lines if "split" not in line]
        assert len(losses[smoothing]) == 2  # 16 pairs, batch 8: the TSV's rows were all read
    # the first step sees the same weights and batch: only the loss differs (the untrained model's
    # distribution is near uniform, so smoothing moves it by hundredths)
    assert abs(losses["0.3"][0] - losses["0"][0]) > 1e-3
    start, tuned = load_file(tiny_model / "model.safetensors"), load_file(tmp_path / "0" / "seed-1" / "model.safetensors")
    heads = [k for k in start if k.startswith("cls.predictions.") and "decoder.weight" not in k]
    assert heads, sorted(start)
    for key in heads:
        torch.testing.assert_close(tuned[key], start[key], atol=1e-6, rtol=0)
    proc = run_cli("finetune", "--task", "seq2seq", "--train", tsv, "--dev", dev, "--model", tiny_model, "--out",
                   tmp_path / "bad", "--label-smoothing", "1.5", check=False)
    assert_one_line_error(proc, "--label-smoothing 1.5")
    assert not (tmp_path / "bad").exists()


def test_generate_jsonl_keeps_the_records(seq2seq_run, tmp_path):
    out, _ = seq2seq_run
    sources = write_jsonl(tmp_path / "sources.jsonl", [{"id": 7, "source": "the film was good"}])
    output = tmp_path / "out.jsonl"
    run_cli("generate", "--model", out, "--input", sources, "--output", output, "--max-new-tokens", 4)
    (line,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert line["id"] == 7 and "generated" in line


def test_overlong_targets_are_cut_and_counted(encoder_only, pairs, tmp_path):
    train, dev = pairs
    long_rows = pair_rows(8, 2)
    long_rows[0]["target"] = " ".join(["good"] * 40)
    long_rows[3]["target"] = " ".join(["bad"] * 20)
    proc = run_cli("finetune", "--task", "seq2seq", "--train", write_jsonl(tmp_path / "t.jsonl", long_rows),
                   "--dev", dev, "--model", encoder_only, "--out", tmp_path / "run", "--epochs", 1,
                   "--batch-size", 8, "--max-seq-len", 48, "--max-target-len", 8, "--quiet")
    assert "note: 2 of 8 train examples were longer than" in proc.stderr


@pytest.mark.parametrize("rows, fragments", [
    ([{"source": "a film"}], ["line 1", "'target'"]),
    ([{"source": "a film", "target": "x"}, {"target": "x"}], ["line 2", "'source'"]),
    ([{"source": "  ", "target": "x"}], ["line 1", "source is empty"]),
])
def test_finetune_bad_pairs(encoder_only, pairs, tmp_path, rows, fragments):
    _, dev = pairs
    proc = run_cli("finetune", "--task", "seq2seq", "--train", write_jsonl(tmp_path / "bad.jsonl", rows), "--dev",
                   dev, "--model", encoder_only, "--out", tmp_path / "run", "--batch-size", 1, "--quiet", check=False)
    assert_one_line_error(proc, "bad.jsonl", *fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, fragments", [
    (["--beams", "0"], ["--beams 0"]),
    (["--method", "sample", "--top-p", "1.5"], ["--top-p 1.5"]),
])
def test_generate_bad_options(seq2seq_run, tmp_path, args, fragments):
    out, _ = seq2seq_run
    sources = tmp_path / "s.txt"
    sources.write_text("the film was good\n")
    proc = run_cli("generate", "--model", out, "--input", sources, "--output", tmp_path / "o.jsonl", *args,
                   check=False)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "o.jsonl").exists()


def test_generate_bad_input(seq2seq_run, encoder_only, tmp_path):
    out, _ = seq2seq_run
    empty = tmp_path / "s.txt"
    empty.write_text("the film was good\n\n")
    proc = run_cli("generate", "--model", out, "--input", empty, "--output", tmp_path / "o.jsonl", check=False)
    assert_one_line_error(proc, "line 2", "source is empty")
    no_source = write_jsonl(tmp_path / "s.jsonl", [{"text": "the film"}])
    proc = run_cli("generate", "--model", out, "--input", no_source, "--output", tmp_path / "o.jsonl", check=False)
    assert_one_line_error(proc, "line 1", "source")
    good = tmp_path / "good.txt"
    good.write_text("the film was good\n")
    proc = run_cli("generate", "--model", encoder_only, "--input", good, "--output", tmp_path / "o.jsonl",
                   check=False)
    assert_one_line_error(proc, "BertModel", "MLM head")
    assert not (tmp_path / "o.jsonl").exists()


def test_predict_task_seq2seq_points_to_generate_before_reading(seq2seq_run, tmp_path):
    """A generating model is refused by `predict --task` at once: the input (not even JSON here) is never read."""
    out, _ = seq2seq_run
    garbage = tmp_path / "in.jsonl"
    garbage.write_text("{not json\n")
    proc = run_cli("predict", "--task", "seq2seq", "--model", out, "--input", garbage, "--output",
                   tmp_path / "o.jsonl", check=False)
    assert_one_line_error(proc, "generates text", "bertkit generate")
    assert not (tmp_path / "o.jsonl").exists()
