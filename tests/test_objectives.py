"""Pre-training objectives (bertkit/objectives.py) and maskers (data/masking.py): the table, SOP pairs, span
masking, and each objective through the CLI (a few steps, exact resume, bad input).

Statistical bounds on large random samples (SOP's 50% in order, SpanBERT's span-length law, the masking rate
and 80/10/10), exact structure checks (adjacent segments of one document; spans of whole words); nothing is
downloaded.
"""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertkit.data.masking import MASKERS, SPAN_LENGTH_PROBS, choose_spans, replace_chosen
from bertkit.data.pretraining import PreparedCorpus, PretrainingDataset, collate, make_sop_instances, mask_tokens
from bertkit.errors import BertkitError
from bertkit.model import IGNORE_INDEX
from bertkit.objectives import OBJECTIVES, get_objective
from bertkit.tokenizer import Tokenizer
from conftest import assert_one_line_error, pretrain_args, run_cli


def document_of(corpus, token_offsets):
    """(N,) document index of each global token offset."""
    document_first_tokens = corpus.sentence_starts[corpus.document_starts[:-1]]
    return np.searchsorted(document_first_tokens, token_offsets, side="right") - 1


# ---- the table ----

def test_every_objective_steps_and_names_its_statistics(prepared):
    """Each entry builds samples, a model and a step whose statistics include the ones its logged loss weighs;
    the loss it backpropagates is that weighted sum (on one batch). none trains a model without NSP head or pooler."""
    from bertkit.config import preset

    tokenizer = Tokenizer.from_pretrained(prepared / "tok")
    corpus = PreparedCorpus(str(prepared / "data"))
    for name, objective in OBJECTIVES.items():
        dataset = PretrainingDataset.from_tokenizer(corpus, tokenizer, seq_len=32, objective=name)
        batch = collate([dataset[i] for i in range(8)], dataset.pad_id)
        torch.manual_seed(0)
        model = objective.build_model(preset("tiny", vocab_size=tokenizer.vocab_size, max_position_embeddings=32))
        loss, statistics = objective.step(model, batch)
        assert set(objective.loss_weights) <= set(statistics), name
        assert all(k.endswith(("_loss", "_accuracy")) for k in statistics if k != "replaced_fraction"), name
        means = {k: float(total) / count for k, (total, count) in statistics.items()}
        assert loss.item() == pytest.approx(sum(w * means[k] for k, w in objective.loss_weights.items()), rel=1e-5)
        if objective.pair_label:
            assert batch[objective.pair_label].shape == (8,) and f"{name}_accuracy" in statistics
    assert not any("nsp" in k or "pooler" in k for k in OBJECTIVES["none"].model()(preset("tiny")).state_dict())
    with pytest.raises(BertkitError, match="unknown objective 'mlm'.*nsp, sop, none, electra"):
        get_objective("mlm")
    with pytest.raises(BertkitError, match="unknown masking 'spans'.*token, whole-word, span"):
        PretrainingDataset.from_tokenizer(corpus, tokenizer, seq_len=32, masking="spans")


def test_the_tables_load_without_torch():
    """The bertkit command takes --objective's and --masking's choices from the tables before torch loads."""
    code = ("import sys, bertkit.objectives, bertkit.data.masking, bertkit.cli; bertkit.cli.build_parser(); "
            "assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---- SOP pairs ----

def test_sop_pairs_in_order_half_the_time_adjacent_in_one_document(prepared):
    corpus = PreparedCorpus(str(prepared / "data"))
    seq_len = 32
    epochs = [make_sop_instances(corpus, seq_len, seed=0, epoch=e) for e in range(100)]
    rows = np.concatenate(epochs)
    assert len(rows) > 10_000
    f0, f1, s0, s1, swapped = rows.T
    assert set(swapped.tolist()) == {0, 1}
    assert abs((swapped == 0).mean() - 0.5) < 0.02
    # A is the segment that comes first in the text: the second one shown when swapped
    a0, a1 = np.where(swapped == 1, s0, f0), np.where(swapped == 1, s1, f1)
    b0, b1 = np.where(swapped == 1, f0, s0), np.where(swapped == 1, f1, s1)
    assert (a1 == b0).all()  # B is A's true next segment, to the token
    assert (a1 > a0).all() and (b1 > b0).all() and ((b1 - a0) <= seq_len - 3).all()
    documents = document_of(corpus, a0)
    assert (documents == document_of(corpus, b1 - 1)).all()  # never from two documents
    # untrimmed pairs are whole sentences
    sentence_starts = set(corpus.sentence_starts.tolist())
    untrimmed = (b1 - a0) < seq_len - 3
    assert untrimmed.sum() > 1000
    assert all(int(x) in sentence_starts for x in np.concatenate([a0[untrimmed], b0[untrimmed], b1[untrimmed]]))
    # deterministic in (seed, epoch)
    assert np.array_equal(make_sop_instances(corpus, seq_len, seed=0, epoch=3), epochs[3])
    assert not np.array_equal(epochs[0], epochs[1])


def test_sop_samples_show_the_pair_in_the_order_labelled(prepared):
    tokenizer = Tokenizer.from_pretrained(prepared / "tok")
    corpus = PreparedCorpus(str(prepared / "data"))
    dataset = PretrainingDataset.from_tokenizer(corpus, tokenizer, seq_len=32, objective="sop", seed=1)
    for i in range(50):
        sample, (f0, f1, s0, s1, swapped) = dataset[i], dataset.instances[i]
        assert sample["sentence_order_label"] == swapped and "next_sentence_label" not in sample
        original = np.where(sample["labels"] != IGNORE_INDEX, sample["labels"], sample["input_ids"])
        assert original.tolist() == ([tokenizer.cls_token_id] + corpus.tokens(f0, f1).tolist() + [tokenizer.sep_token_id]
                                     + corpus.tokens(s0, s1).tolist() + [tokenizer.sep_token_id])
        assert sample["token_type_ids"].tolist() == [0] * (f1 - f0 + 2) + [1] * (s1 - s0 + 1)


def test_sop_needs_documents_of_several_sentences(tmp_path, prepared):
    from bertkit.data.prepare import prepare

    (tmp_path / "one.txt").write_text("The model learns.\n\nThe head predicts.\n\nA word is masked.\n")
    prepare([str(tmp_path / "one.txt")], str(prepared / "tok"), str(tmp_path / "out"), validation_fraction=0,
            show_progress=False)
    with pytest.raises(BertkitError, match="no document has two or more sentences.*--objective none"):
        make_sop_instances(PreparedCorpus(str(tmp_path / "out")), 32, seed=0, epoch=0)


# ---- span masking ----

def span_words(chosen, unit, n_units, is_word_start):
    """(n_units,) words in each span."""
    return np.bincount(unit, weights=is_word_start[chosen], minlength=n_units).astype(int)


def test_span_lengths_follow_the_geometric_law_and_cover_whole_words():
    """SpanBERT: lengths in words ~ Geo(0.2) on 1..10, mean 3.8. Long sequences with a small budget, so that few
    spans are cut short by the budget's end, a taken word or a special token (which shortens them a little)."""
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(30):
        T = 20_000
        word_starts = rng.random(T) >= 0.3  # 30% `##` pieces
        special = np.zeros(T, bool)
        special[rng.choice(T, 40, replace=False)] = True
        is_word_start = word_starts | np.r_[True, special[:-1]]  # a word also starts right after a special token
        candidates = np.flatnonzero(~special)
        chosen, unit, n_units = choose_spans(candidates, word_starts, round(0.05 * len(candidates)), rng)
        assert not special[chosen].any() and np.all(np.diff(chosen) > 0)
        for u in range(n_units):
            span = chosen[unit == u]
            assert len(span) and np.all(np.diff(span) == 1)  # contiguous, so no special token inside
            assert is_word_start[span[0]]  # starts at a word's first piece
            assert span[-1] + 1 == T or is_word_start[span[-1] + 1] or special[span[-1] + 1]  # ends at a word's end
        lengths += span_words(chosen, unit, n_units, is_word_start).tolist()
    lengths = np.array(lengths)
    assert len(lengths) > 4000 and lengths.min() == 1 and lengths.max() == 10  # clipped at 10
    law_mean = (np.arange(1, 11) * SPAN_LENGTH_PROBS).sum()
    assert law_mean == pytest.approx(3.8, abs=0.01)  # the paper's mean
    assert law_mean - 0.2 < lengths.mean() < law_mean + 0.1, lengths.mean()
    shares = np.bincount(lengths, minlength=11)[1:] / len(lengths)
    assert abs(shares[0] - SPAN_LENGTH_PROBS[0]) < 0.03 and abs(shares[-1] - SPAN_LENGTH_PROBS[-1]) < 0.01, shares
    assert np.all(np.abs(shares - SPAN_LENGTH_PROBS) < 0.03), shares


def test_span_masking_rate_and_one_80_10_10_choice_per_span():
    rng = np.random.default_rng(1)
    mask_id, vocab_size = 4, 2000
    random_ids = np.arange(5, 1000)  # disjoint from the input ids: a random replacement is always a change
    n_candidates = n_chosen = 0
    outcomes = np.zeros(3)  # [MASK], random, kept: per token
    for _ in range(6000):
        length = rng.integers(20, 129)
        ids = rng.integers(1000, vocab_size, length)
        ids[0], ids[length // 2], ids[-1] = 2, 3, 3  # [CLS] A [SEP] B [SEP]
        special = np.isin(ids, [2, 3])
        word_starts = rng.random(length) >= 0.3
        masked, labels = mask_tokens(ids, special, rng, mask_id=mask_id, vocab_size=vocab_size,
                                     random_token_ids=random_ids, max_predictions=128, mask_prob=0.15,
                                     word_starts=word_starts, masking="span")
        chosen = labels != IGNORE_INDEX
        assert not special[chosen].any() and (labels[chosen] == ids[chosen]).all()
        n_candidates += (~special).sum()
        n_chosen += chosen.sum()
        is_mask = masked[chosen] == mask_id
        is_kept = masked[chosen] == ids[chosen]
        outcomes += [is_mask.sum(), (~is_mask & ~is_kept).sum(), is_kept.sum()]
    # whole words only: a sequence may end a little short of round(0.15 x candidates) when no word left fits
    assert 0.14 < n_chosen / n_candidates < 0.155, n_chosen / n_candidates
    shares = outcomes / outcomes.sum()
    assert abs(shares[0] - 0.8) < 0.015 and abs(shares[1] - 0.1) < 0.015 and abs(shares[2] - 0.1) < 0.015, shares

    # each span as a whole: all [MASK], all random, or all kept
    ids = rng.integers(1000, vocab_size, 2000)
    word_starts = rng.random(2000) >= 0.3
    chosen, unit, n_units = choose_spans(np.arange(2000), word_starts, 300, rng)
    masked = replace_chosen(ids, chosen, unit, n_units, rng, mask_id, random_ids)
    kinds = np.where(masked[chosen] == mask_id, 0, np.where(masked[chosen] == ids[chosen], 2, 1))
    assert all(len(set(kinds[unit == u].tolist())) == 1 for u in range(n_units))
    assert len(set(kinds.tolist())) == 3 and n_units > 40


@pytest.fixture(scope="module")
def split_words(tmp_path_factory):
    """Prepared data whose vocabulary is small enough that most words split into `##` pieces."""
    from bertkit.data.prepare import prepare

    root = tmp_path_factory.mktemp("split")
    rng = random.Random(2)
    syllables = ["ka", "lo", "mi", "ten", "ra", "su", "ve", "do", "pin", "gar", "ol", "ex"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(200)]
    docs = ["\n".join(" ".join(rng.choices(words, k=rng.randint(4, 12))) + "." for _ in range(rng.randint(3, 10)))
            for _ in range(60)]
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    Tokenizer.train_from_iterator(docs, vocab_size=80, min_frequency=1).save_pretrained(root / "tok")
    prepare([str(root / "corpus.txt")], str(root / "tok"), str(root / "data"), validation_fraction=0,
            show_progress=False)
    return root


def test_dataset_span_masking_never_cuts_a_word(split_words):
    tokenizer = Tokenizer.from_pretrained(split_words / "tok")
    dataset = PretrainingDataset.from_tokenizer(PreparedCorpus(str(split_words / "data")), tokenizer, seq_len=64,
                                                objective="sop", masking="span", mask_rate=0.3)
    continuation = ~dataset.word_start
    n_inside = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        original = np.where(sample["labels"] != IGNORE_INDEX, sample["labels"], sample["input_ids"])
        chosen = sample["labels"] != IGNORE_INDEX
        inner = continuation[original] & ~dataset.is_special[np.roll(original, 1)]  # continues the previous token
        assert (chosen[1:][inner[1:]] == chosen[:-1][inner[1:]]).all()  # a span neither starts nor ends mid-word
        n_inside += (chosen & inner).sum()
    assert n_inside > 100  # the check above did see split words


# ---- through the CLI ----

def training_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") != "validation"], [r for r in rows if r.get("split") == "validation"]


@pytest.mark.parametrize("options, statistics, architecture", [
    (["--objective", "nsp"], ["mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"], "BertForPreTraining"),
    (["--objective", "sop"], ["mlm_loss", "mlm_accuracy", "sop_loss", "sop_accuracy"], "BertForPreTraining"),
    (["--objective", "none"], ["mlm_loss", "mlm_accuracy"], "BertForMaskedLM"),
    (["--masking", "span"], ["mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"], "BertForPreTraining"),
], ids=["nsp", "sop", "none", "span"])
def test_pretrain_each_objective_through_the_cli(prepared, tmp_path, options, statistics, architecture):
    run = tmp_path / "run"
    run_cli(*pretrain_args(prepared, run, "--steps", 3, "--eval-every", 3, *options))
    train, held_out = training_rows(run)
    assert [r["step"] for r in train] == [1, 2, 3] and len(held_out) == 1
    for r in train + held_out:
        assert [k for k in r if k.endswith(("_loss", "_accuracy"))] == statistics
        assert r["loss"] == pytest.approx(sum(r[k] for k in statistics if k.endswith("_loss")))
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["architectures"] == [architecture]
    recorded, asked = json.loads((run / "run.json").read_text()), dict(zip(options[::2], options[1::2]))
    assert (recorded["objective"], recorded["masking"]) == (asked.get("--objective", "nsp"), asked.get("--masking", "token"))


def test_objective_none_saves_a_masked_lm_that_transformers_loads(prepared, tmp_path):
    transformers = pytest.importorskip("transformers")
    run_cli(*pretrain_args(prepared, tmp_path / "run", "--steps", 2, "--objective", "none"))
    weights = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert not [k for k in weights if "seq_relationship" in k or "pooler" in k]  # no NSP head, no pooler
    assert "cls.predictions.bias" in weights
    model, info = transformers.BertForMaskedLM.from_pretrained(tmp_path / "run" / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ours = {k: v for k, v in model.state_dict().items() if k in weights}
    assert len(ours) == len(weights) and all(torch.equal(ours[k], weights[k]) for k in ours)


@pytest.mark.parametrize("options", [["--objective", "sop"], ["--objective", "none"], ["--masking", "span"]],
                         ids=["sop", "none", "span"])
def test_resume_is_bit_identical(prepared, tmp_path, options):
    """As tests/test_pretrain.py's, for each objective and span masking: stopped at step 5 and resumed, the run
    ends with the weights and per-step statistics of the run that never stopped."""
    run_cli(*pretrain_args(prepared, tmp_path / "straight", *options))
    run_cli(*pretrain_args(prepared, tmp_path / "resumed", "--stop-at", 5, *options))
    assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["step-00000003", "step-00000005"]
    run_cli(*pretrain_args(prepared, tmp_path / "resumed", "--resume", *options))
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = ("tokens_per_s", "time_s")
    straight, resumed = training_rows(tmp_path / "straight")[0], training_rows(tmp_path / "resumed")[0]
    assert [r["step"] for r in resumed] == list(range(1, 9))
    assert [{k: v for k, v in r.items() if k not in timing} for r in straight] == \
           [{k: v for k, v in r.items() if k not in timing} for r in resumed]


def test_sop_on_one_sentence_documents_is_one_line_exit_2(prepared, tmp_path):
    rng = random.Random(3)
    from conftest import WORDS

    sentences = [" ".join(rng.choices(WORDS, k=8)).capitalize() + "." for _ in range(80)]
    (tmp_path / "lines.txt").write_text("\n\n".join(sentences) + "\n")  # every document one sentence
    run_cli("prepare", "--input", tmp_path / "lines.txt", "--tokenizer", prepared / "tok", "--out", tmp_path / "data",
            "--quiet", "--workers", 1)
    args = [a if a != prepared / "data" else tmp_path / "data" for a in pretrain_args(prepared, tmp_path / "run")]
    proc = run_cli(*args, "--objective", "sop", check=False)
    assert_one_line_error(proc, "sentence-order prediction", "no document has two or more sentences",
                          "--objective none")
    assert not (tmp_path / "run").exists()
    run_cli(*args, "--objective", "none", "--steps", 1)  # what the message suggests works


def test_help_lists_the_objectives_and_maskings():
    text = " ".join(run_cli("pretrain", "--help").stdout.split())
    for name in (*OBJECTIVES, *MASKERS):
        assert name in text
    assert "sentence-order prediction" in text and "SpanBERT" in text and "BertForMaskedLM" in text
