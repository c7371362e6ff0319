"""Mask-predict (Ghazvininejad et al. 2019): the conditional-MLM mask and target masking it trains with, the
decoder (one pass equals an independent argmax, the re-masking schedule n (T - t) / T), the objective check,
and a CLI round trip: finetune --target-masking uniform, then generate --method mask-predict."""

import json

import numpy as np
import pytest
import torch

from bertkit.errors import BertkitError
from bertkit.generate import GenerateConfig, check_objective, generate_ids
from bertkit.model import IGNORE_INDEX, cmlm_mask

import test_seq2seq_cli
from test_generate import encoder_moves, tiny_lm

CLS, SEP, PAD, MASK = 2, 3, 0, 4
encoder_only, pairs = test_seq2seq_cli.encoder_only, test_seq2seq_cli.pairs  # its fixtures, used here too
SOURCES = [[CLS, 5, 6, 7, 8, 9, SEP], [CLS, 11, SEP], [CLS, 12, 13, 14, SEP]]


def test_cmlm_mask_exact():
    types = torch.tensor([[0, 0, 0, 1, 1, 1, 0]])  # [CLS] a [SEP] y1 y2 [SEP] pad
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    expected = [[1, 1, 1, 0, 0, 0, 0],  # the source sees the source only
                [1, 1, 1, 0, 0, 0, 0],
                [1, 1, 1, 0, 0, 0, 0],
                [1, 1, 1, 1, 1, 1, 0],  # a target token sees the source and the whole target, later ones too
                [1, 1, 1, 1, 1, 1, 0],
                [1, 1, 1, 1, 1, 1, 0],
                [1, 1, 1, 0, 0, 0, 0]]  # padding attends (nobody reads it) but is never seen
    assert cmlm_mask(types, attention)[0].int().tolist() == expected


def test_cmlm_mask_target_sees_later_target_and_source_never_sees_target():
    moves = encoder_moves(cmlm_mask, 8, 30)  # the last target token
    assert moves[:5].max() <= 1e-6  # the source does not move
    assert moves[5:].min() > 1e-4  # every target position does, earlier ones too


def test_uniform_target_masking_collate(tiny_model):
    from bertkit.data.features import collate_cmlm, encode_seq2seq
    from bertkit.data.tasks import PairExample
    from bertkit.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(tiny_model)
    examples = [PairExample("the cat sat on the mat", "a dog ran away"), PairExample("hello", "good film indeed")]
    features, _ = encode_seq2seq(examples, tokenizer, 32, 8)
    rng = np.random.default_rng(0)
    counts = [[], []]
    for _ in range(200):
        batch = collate_cmlm(features, tokenizer.pad_token_id, tokenizer.mask_token_id, rng)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            original = torch.tensor(feature["input_ids"])
            types = torch.tensor(feature["token_type_ids"])
            labels, ids = batch["labels"][row, :length], batch["input_ids"][row, :length]
            masked = ids == tokenizer.mask_token_id
            assert torch.equal(masked, labels != IGNORE_INDEX)  # labeled exactly where masked
            assert not (masked & (types == 0)).any()  # only in the target (its final [SEP] included)
            assert torch.equal(labels[masked], original[masked]) and torch.equal(ids[~masked], original[~masked])
            assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
            counts[row].append(int(masked.sum()))
        torch.testing.assert_close(batch["attention_mask"], cmlm_mask(batch["token_type_ids"],
                                                                     (batch["input_ids"] != 0).long()))
    for row, feature in enumerate(features):
        m = sum(feature["token_type_ids"])  # target tokens + [SEP]
        assert min(counts[row]) >= 1 and max(counts[row]) <= m
        assert set(counts[row]) == set(range(1, m + 1))  # uniform over 1..m: 200 draws hit every value
    # a fresh draw each batch, the same draws from the same seed
    first = collate_cmlm(features, 0, tokenizer.mask_token_id, np.random.default_rng(5))["labels"]
    again = collate_cmlm(features, 0, tokenizer.mask_token_id, np.random.default_rng(5))["labels"]
    assert torch.equal(first, again)


def one_pass_argmax(model, source, length):
    """The reference for T = 1: one forward over `[CLS] source [SEP] [MASK] x L [SEP]` under the CMLM mask,
    argmax at each target position over the non-special tokens, and the mean of their log-probabilities."""
    ids = torch.tensor([source + [MASK] * length + [SEP]])
    types = torch.tensor([[0] * len(source) + [1] * (length + 1)])
    with torch.no_grad():
        hidden = model.bert(ids, types, cmlm_mask(types)).last_hidden_state[0, len(source):len(source) + length]
        logprobs = model.mlm(hidden).log_softmax(-1)
    logprobs[:, [PAD, CLS, SEP, MASK]] = -float("inf")
    best, tokens = logprobs.max(-1)
    return tokens.tolist(), float(best.mean())


def test_one_iteration_is_one_pass_argmax():
    model = tiny_lm()
    lengths = (2, 5, 3)
    cfg = GenerateConfig(method="mask-predict", iterations=1, lengths=lengths, num_return=3)
    results = generate_ids(model, SOURCES, cfg, SEP, PAD, MASK)
    for source, hypotheses in zip(SOURCES, results):
        expected = {n: one_pass_argmax(model, source, n) for n in lengths}
        assert len(hypotheses) == 3
        for h in hypotheses:
            tokens, score = expected[len(h["ids"])]
            assert h["ids"] == tokens
            assert h["score"] == pytest.approx(score, abs=1e-5)
        assert [h["score"] for h in hypotheses] == sorted((h["score"] for h in hypotheses), reverse=True)
    best = generate_ids(model, SOURCES, GenerateConfig(method="mask-predict", iterations=1, lengths=lengths),
                        SEP, PAD, MASK)
    assert [len(r) for r in best] == [1, 1, 1] and [r[0] for r in best] == [r[0] for r in results]


def test_remasking_schedule(monkeypatch):
    """Pass t re-masks floor(L (T - t) / T) tokens of a length-L row (the first pass masks all L); counted in
    the [MASK]s the encoder is given, per row (rows: source-major, lengths ascending)."""
    model = tiny_lm()
    seen = []
    run = model.bert.forward

    def counting(input_ids, *args, **kwargs):
        seen.append((input_ids == MASK).sum(1).tolist())
        return run(input_ids, *args, **kwargs)

    monkeypatch.setattr(model.bert, "forward", counting)
    T, lengths = 4, (3, 9)
    generate_ids(model, SOURCES[:2], GenerateConfig(method="mask-predict", iterations=T, lengths=lengths),
                 SEP, PAD, MASK)
    expected = [[n for _ in SOURCES[:2] for n in lengths]]
    for t in range(1, T):
        counts = [n * (T - t) // T for _ in SOURCES[:2] for n in lengths]
        if any(counts):
            expected.append(counts)
    assert expected == [[3, 9, 3, 9], [2, 6, 2, 6], [1, 4, 1, 4], [0, 2, 0, 2]]
    assert seen == expected


def test_more_iterations_never_lower_the_score_much_and_fill_every_position():
    model = tiny_lm(seed=1)
    cfg = GenerateConfig(method="mask-predict", iterations=6, lengths=(4,))
    (hypothesis,), = generate_ids(model, SOURCES[:1], cfg, SEP, PAD, MASK)
    assert len(hypothesis["ids"]) == 4 and not {PAD, CLS, SEP, MASK} & set(hypothesis["ids"])
    assert hypothesis["finished"] and hypothesis["score"] <= 0


def test_objective_check():
    check_objective("mask-predict", "cmlm", "m")
    check_objective("gibbs", "cmlm", "m")
    check_objective("beam", "unilm-shifted", "m")
    check_objective("greedy", None, "m")
    with pytest.raises(BertkitError, match="mask-predict.*trained left to right") as e:
        check_objective("mask-predict", "unilm-shifted", "m")
    assert "--target-masking uniform" in e.value.hint
    with pytest.raises(BertkitError, match="names no seq2seq objective"):
        check_objective("mask-predict", None, "m")
    with pytest.raises(BertkitError, match="--method beam.*conditional masked LM"):
        check_objective("beam", "cmlm", "m")
    with pytest.raises(BertkitError, match="--iterations 0"):
        GenerateConfig(method="mask-predict", iterations=0).check()
    with pytest.raises(BertkitError, match="--num-return 3"):
        GenerateConfig(method="mask-predict", lengths=(4, 5), num_return=3).check()
    with pytest.raises(BertkitError, match="length candidates|lengths"):
        generate_ids(tiny_lm(), SOURCES[:1], GenerateConfig(method="mask-predict"), SEP, PAD, MASK)


# ----------------------------------------------------------------------------------------------
# Through the CLI, in process (the tiny encoder and pair files of test_seq2seq_cli)


def cli(capsys, *args) -> tuple[int, str]:
    """`bertkit ARGS` run in this process: (exit status, stderr)."""
    from bertkit.cli import main

    capsys.readouterr()
    try:
        status = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        status = e.code
    return status, capsys.readouterr().err


def assert_one_line(result, *fragments) -> None:
    status, err = result
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def finetune_uniform(encoder, pairs, out):
    from bertkit.cli import main

    train, dev = pairs
    assert main([str(a) for a in ("finetune", "--task", "seq2seq", "--target-masking", "uniform", "--train", train,
                                  "--dev", dev, "--model", encoder, "--out", out, "--epochs", 2, "--batch-size", 8,
                                  "--lr", 1e-3, "--max-seq-len", 48, "--max-target-len", 8, "--quiet")]) == 0
    return out / "seed-1"


@pytest.fixture(scope="module")
def cmlm_run(tmp_path_factory, encoder_only, pairs):
    return finetune_uniform(encoder_only, pairs, tmp_path_factory.mktemp("cmlm") / "run")


def test_finetune_uniform_saves_a_cmlm(cmlm_run):
    result = json.loads((cmlm_run / "eval_results.json").read_text())
    assert 0 <= result["token_accuracy"] <= 1 and result["perplexity"] > 1
    saved = json.loads((cmlm_run / "generation_config.json").read_text())["bertkit"]
    assert saved["objective"] == "cmlm"
    assert saved["length_candidates"] == [2]  # every target is "<word> cast": 2 tokens
    assert json.loads((cmlm_run / "bertkit_task.json").read_text())["target_masking"] == "uniform"


def test_finetune_uniform_is_reproducible(encoder_only, pairs, cmlm_run, tmp_path):
    """The same seed masks the same targets at each step: the same dev scores (which a fixed seed masks)."""
    again = json.loads((finetune_uniform(encoder_only, pairs, tmp_path / "again") / "eval_results.json").read_text())
    first = json.loads((cmlm_run / "eval_results.json").read_text())
    assert (again["token_accuracy"], again["perplexity"]) == (first["token_accuracy"], first["perplexity"])


def test_generate_mask_predict(cmlm_run, tmp_path, capsys):
    sources = tmp_path / "sources.txt"
    sources.write_text("the film was good but the cast was bad\nthe film was fine but the cast was dull\n")
    output = tmp_path / "out.jsonl"
    assert cli(capsys, "generate", "--model", cmlm_run, "--input", sources, "--output", output,
               "--method", "mask-predict", "--iterations", 3)[0] == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["source"] for line in lines] == sources.read_text().splitlines()
    for line in lines:
        assert isinstance(line["generated"], str) and line["generated"] and isinstance(line["score"], float)
    assert cli(capsys, "generate", "--model", cmlm_run, "--input", sources, "--output", output,
               "--method", "mask-predict", "--length-candidates", "1,2,3", "--num-return", "3")[0] == 0
    for line in (json.loads(line) for line in output.read_text().splitlines()):
        assert len(line["n_best"]) == 3 and line["n_best"][0]["text"] == line["generated"]


@pytest.mark.parametrize("args, fragments", [
    (["--method", "mask-predict", "--iterations", "0"], ["--iterations 0"]),
    (["--method", "mask-predict", "--length-candidates", "3,x"], ["--length-candidates", "3,x"]),
    (["--method", "beam"], ["--method beam", "conditional masked LM", "--method mask-predict"]),
])
def test_generate_mask_predict_bad_options(cmlm_run, tmp_path, capsys, args, fragments):
    sources = tmp_path / "s.txt"
    sources.write_text("the film was good\n")
    assert_one_line(cli(capsys, "generate", "--model", cmlm_run, "--input", sources, "--output",
                        tmp_path / "o.jsonl", *args), *fragments)
    assert not (tmp_path / "o.jsonl").exists()


def test_mask_predict_refused_on_a_shifted_model(cmlm_run, tmp_path, capsys):
    import shutil

    shifted = tmp_path / "shifted"
    shutil.copytree(cmlm_run, shifted)
    generation = json.loads((shifted / "generation_config.json").read_text())
    generation["bertkit"]["objective"] = "unilm-shifted"  # as finetune --task seq2seq (shifted) saves it
    (shifted / "generation_config.json").write_text(json.dumps(generation))
    sources = tmp_path / "s.txt"
    sources.write_text("the film was good\n")
    assert_one_line(cli(capsys, "generate", "--model", shifted, "--input", sources, "--output", tmp_path / "o.jsonl",
                        "--method", "mask-predict"),
                    "--method mask-predict", "trained left to right", "--target-masking uniform")
    assert not (tmp_path / "o.jsonl").exists()


def test_bad_target_masking(encoder_only, pairs, tmp_path, capsys):
    train, dev = pairs
    assert_one_line(cli(capsys, "finetune", "--task", "seq2seq", "--target-masking", "random", "--train", train,
                        "--dev", dev, "--model", encoder_only, "--out", tmp_path / "run", "--quiet"),
                    "--target-masking 'random'", "shifted, uniform")
    assert not (tmp_path / "run").exists()
