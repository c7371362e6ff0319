"""Tests for bertkit.data: reading corpora, `prepare`'s files, NSP pairs, 80/10/10 masking, the dataset.

Exact expectations on small hand-made inputs; statistical bounds (the paper's 15%, 80/10/10 and
50% IsNext) on large random samples; determinism from (seed, epoch, index). Everything is built
in tmp dirs from generated text and a tokenizer trained on it: nothing is downloaded.
"""

import filecmp
import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bertkit.data.corpus import expand_inputs, iter_documents
from bertkit.data.prepare import load_manifest, prepare
from bertkit.data.pretraining import (
    PreparedCorpus, PretrainingDataset, collate, make_nsp_instances, make_packed_instances, mask_tokens)
from bertkit.errors import BertkitError
from bertkit.model import IGNORE_INDEX
from bertkit.tokenizer import Tokenizer

SYLLABLES = ["ka", "lo", "mi", "ten", "ra", "su", "ve", "do", "pin", "gar", "ol", "ex"]


def make_words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(n)]


def write_text_corpus(path, n_docs: int, seed: int = 0, sentences=(20, 40), words=(3, 10)) -> None:
    """Documents of generated one-sentence lines, separated by blank lines."""
    rng = random.Random(seed)
    vocabulary = make_words(rng, 300)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n_docs):
            for _ in range(rng.randint(*sentences)):
                f.write(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(*words))) + ".\n")
            f.write("\n")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A WordPiece vocabulary small enough that many generated words split into `##` pieces."""
    rng = random.Random(1)
    vocabulary = make_words(rng, 300)
    texts = [" ".join(rng.choice(vocabulary) for _ in range(12)) + "." for _ in range(2000)]
    directory = tmp_path_factory.mktemp("tokenizer")
    Tokenizer.train_from_iterator(texts, vocab_size=150, min_frequency=1).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def big_prepared(tmp_path_factory, tokenizer_dir):
    """200 long documents of short sentences (~300k tokens), prepared once for the NSP and dataset tests.

    A chunk of one sentence must take a random B, and such chunks gather at document ends; long
    documents of short sentences make them rare, so that IsNext stays near the paper's 50%.
    """
    root = tmp_path_factory.mktemp("big")
    write_text_corpus(root / "corpus.txt", n_docs=200, sentences=(200, 400), words=(1, 4))
    prepare([str(root / "corpus.txt")], tokenizer_dir, str(root / "prepared"), show_progress=False)
    return str(root / "prepared")


def tokenizer_ids(tokenizer_dir):
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    return tokenizer, dict(cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                           pad_id=tokenizer.pad_token_id, mask_id=tokenizer.mask_token_id)


# ---- masking ----

def test_mask_tokens_exact_small_case():
    # [CLS] 10 words [SEP]: 10 candidates, round(0.15 * 10) = 2 predictions (round(1.5) = 2).
    input_ids = np.array([2, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 3])
    special = np.array([True] + [False] * 10 + [True])
    kw = dict(mask_id=4, vocab_size=30, random_token_ids=np.arange(5, 30), max_predictions=20)

    masked, labels = mask_tokens(input_ids, special, np.random.default_rng(1234), **kw)
    chosen = np.flatnonzero(labels != IGNORE_INDEX)
    assert len(chosen) == 2
    assert not special[chosen].any()
    assert (labels[chosen] == input_ids[chosen]).all()
    assert (masked[labels == IGNORE_INDEX] == input_ids[labels == IGNORE_INDEX]).all()
    assert chosen.tolist() == [9, 10]
    assert masked.tolist() == [2, 10, 11, 12, 13, 14, 15, 16, 17, 4, 4, 3]
    assert labels.tolist() == [-100] * 9 + [18, 19, -100]

    # mask_prob 0.5: 5 predictions, showing all three outcomes.
    masked, labels = mask_tokens(input_ids, special, np.random.default_rng(4), mask_prob=0.5, **kw)
    chosen = np.flatnonzero(labels != IGNORE_INDEX)
    assert len(chosen) == 5 and not special[chosen].any()
    assert (labels[chosen] == input_ids[chosen]).all()
    assert chosen.tolist() == [1, 2, 3, 8, 10]
    # position 1 kept as itself, 3 replaced by the random id 9, 2, 8 and 10 [MASK]ed
    assert masked.tolist() == [2, 10, 4, 9, 13, 14, 15, 16, 4, 18, 4, 3]


@pytest.mark.parametrize("n_candidates, max_predictions, expected", [
    (10, 20, 2), (10, 1, 1), (3, 20, 1), (1, 20, 1), (100, 20, 15), (200, 20, 20), (0, 20, 0)])
def test_mask_tokens_count_as_the_original(n_candidates, max_predictions, expected):
    # num_to_predict = min(max_predictions, max(1, round(candidates * 0.15))), as create_masked_lm_predictions
    input_ids = np.concatenate([[2], np.full(n_candidates, 9), [3]])
    special = np.concatenate([[True], np.zeros(n_candidates, bool), [True]])
    _, labels = mask_tokens(input_ids, special, np.random.default_rng(0), mask_id=4, vocab_size=10,
                            random_token_ids=np.arange(5, 10), max_predictions=max_predictions)
    assert (labels != IGNORE_INDEX).sum() == expected


@pytest.mark.parametrize("mask_rate, n_sequences", [(0.15, 20_000), (0.3, 10_000)])
def test_mask_tokens_statistics(mask_rate, n_sequences):
    """15% of candidates chosen (or --mask-rate's share: 0.3 as Wettig et al., 2023), split 80/10/10 (BERT
    paper, section 3.1) at either rate, over thousands of sequences of 128."""
    rng = np.random.default_rng(0)
    vocab_size, mask_id, cls_id, sep_id, pad_id = 1000, 4, 2, 3, 0
    is_special = np.zeros(vocab_size, bool)
    is_special[:5] = True
    random_ids = np.flatnonzero(~is_special)
    n_candidates = n_chosen = n_masked = n_random = n_kept = 0
    for _ in range(n_sequences):
        length = rng.integers(20, 129)
        ids = np.full(128, pad_id)
        ids[:length] = rng.integers(5, vocab_size, length)
        ids[0], ids[length // 2], ids[length - 1] = cls_id, sep_id, sep_id
        masked, labels = mask_tokens(ids, is_special[ids], rng, mask_id=mask_id, vocab_size=vocab_size,
                                     random_token_ids=random_ids, max_predictions=128, mask_prob=mask_rate)
        chosen = labels != IGNORE_INDEX
        assert not is_special[ids[chosen]].any()  # [CLS], [SEP] and padding never chosen
        assert not is_special[masked[chosen & (masked != mask_id)]].any()  # random ids are never special
        n_candidates += (~is_special[ids]).sum()
        n_chosen += chosen.sum()
        n_masked += (masked[chosen] == mask_id).sum()
        n_kept += (masked[chosen] == ids[chosen]).sum()
        n_random += ((masked[chosen] != mask_id) & (masked[chosen] != ids[chosen])).sum()
    assert abs(n_chosen / n_candidates - mask_rate) < 0.005
    assert abs(n_masked / n_chosen - 0.8) < 0.01
    assert abs(n_random / n_chosen - 0.1) < 0.01
    assert abs(n_kept / n_chosen - 0.1) < 0.01


def test_whole_word_masking_exact_and_complete_words():
    # words: [5 ##6 ##7] [8] [9 ##10] [11] [12 ##13 ##14 ##15]; 12 candidates -> 2 tokens to predict.
    input_ids = np.array([2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 3])
    special = np.array([True] + [False] * 12 + [True])
    word_starts = np.array([1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 1], bool)
    for seed in range(200):
        masked, labels = mask_tokens(input_ids, special, np.random.default_rng(seed), mask_id=4, vocab_size=30,
                                     random_token_ids=np.arange(5, 30), max_predictions=20, word_starts=word_starts,
                                     masking="whole-word")
        chosen = set(np.flatnonzero(labels != IGNORE_INDEX).tolist())
        assert 1 <= len(chosen) <= 2
        words = [{1, 2, 3}, {4}, {5, 6}, {7}, {8, 9, 10, 11}, {12}]
        assert all(word <= chosen or not word & chosen for word in words)  # a word is all in or all out
        for word in (w for w in words if w <= chosen):
            assert len({masked[p] == 4 for p in word}) == 1  # one 80/10/10 decision per word
    masked, labels = mask_tokens(input_ids, special, np.random.default_rng(3), mask_id=4, vocab_size=30,
                                 random_token_ids=np.arange(5, 30), max_predictions=20, word_starts=word_starts,
                                 masking="whole-word")
    assert np.flatnonzero(labels != IGNORE_INDEX).tolist() == [5, 6]
    assert masked.tolist() == [2, 5, 6, 7, 8, 4, 4, 11, 12, 13, 14, 15, 16, 3]


# ---- corpus reading ----

def test_text_format_exact(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("The first sentence.\nThe second sentence.\n\n   \n\n"
                    "A paragraph with two sentences. Mr. Smith went to Washington.\n  Another line  \n\n\nlast doc.")
    assert list(iter_documents(str(path), "text")) == [
        ["The first sentence.", "The second sentence."],
        ["A paragraph with two sentences.", "Mr. Smith went to Washington.", "Another line"],
        ["last doc."]]


def test_wikiextractor_drops_titles_and_empty_documents(tmp_path):
    path = tmp_path / "wiki_00"
    path.write_text('<doc id="1" url="u1" title="Alpha">\nAlpha\n\nAlpha is a letter. It comes first.\n'
                    'It is Greek.\n</doc>\n<doc id="2" url="u2" title="Empty">\nEmpty\n\n</doc>\n'
                    '<doc id="3" url="u3" title="Gamma">\nGamma\nGamma is third.\n</doc>\n')
    assert list(iter_documents(str(path), "wikiextractor")) == [
        ["Alpha is a letter.", "It comes first.", "It is Greek."], ["Gamma is third."]]
    (tmp_path / "plain.txt").write_text("just text\n")
    with pytest.raises(BertkitError, match=r"plain.txt: line 1: text outside a <doc"):
        list(iter_documents(str(tmp_path / "plain.txt"), "wikiextractor"))


def test_jsonl_format_and_errors(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"text": "Para one. Para two.\n\nPara three", "id": 1}) + "\n\n"
                    + json.dumps({"text": "  \n"}) + "\n" + json.dumps({"text": "Only one."}) + "\n")
    assert list(iter_documents(str(path), "jsonl")) == [["Para one.", "Para two.", "Para three"], ["Only one."]]
    path.write_text('{"text": "fine"}\n{"text": broken}\n')
    with pytest.raises(BertkitError, match=r"a.jsonl: line 2, column \d+: invalid JSON"):
        list(iter_documents(str(path), "jsonl"))
    path.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(BertkitError, match=r"a.jsonl: line 2: no string field \"text\""):
        list(iter_documents(str(path), "jsonl"))


def test_invalid_utf8_names_file_line_and_byte_offset(tmp_path, tokenizer_dir):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good line\nsecond line\nbad \xff byte\nfine\n\nnext doc\n")
    with pytest.raises(BertkitError, match=r"bad.txt: line 3: invalid UTF-8 at byte offset 26.*--skip-bad-lines"):
        list(iter_documents(str(path), "text"))
    stats = {}
    assert list(iter_documents(str(path), "text", skip_bad_lines=True, stats=stats)) == [
        ["good line", "second line", "fine"], ["next doc"]]
    assert stats["bad_lines"] == 1
    with pytest.raises(BertkitError, match="byte offset 26"):
        prepare([str(path)], tokenizer_dir, str(tmp_path / "out"), show_progress=False)
    assert not os.path.exists(tmp_path / "out")
    manifest = prepare([str(path)], tokenizer_dir, str(tmp_path / "out"), skip_bad_lines=True, show_progress=False)
    assert manifest["bad_lines"] == 1
    assert sum(s["documents"] for s in manifest["splits"].values()) == 2


def test_expand_inputs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.txt", "d/a.txt", "d/sub/c.txt", "d/.hidden", "x.txt"):
        (tmp_path / name).write_text("x\n")
    files = expand_inputs([str(tmp_path / "d"), str(tmp_path / "*.txt"), str(tmp_path / "d" / "a.txt")])
    assert [os.path.relpath(f, tmp_path) for f in files] == ["d/a.txt", "d/b.txt", "d/sub/c.txt", "x.txt"]
    with pytest.raises(BertkitError, match="nothing-here"):
        expand_inputs([str(tmp_path / "nothing-here*")])


# ---- prepare ----

def read_split(directory, split, dtype):
    return [np.fromfile(os.path.join(directory, split, name), dtype=t)
            for name, t in (("tokens.bin", dtype), ("sentence_starts.bin", np.int64),
                            ("document_starts.bin", np.int64))]


def test_prepare_formats_exact_counts(tmp_path, tokenizer_dir):
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    (tmp_path / "wiki").write_text('<doc id="1" url="u" title="T">\nT\n\nKa lo mi. Ten ra su.\nVe do.\n</doc>\n'
                                   '<doc id="2" url="u" title="E">\nE\n</doc>\n'
                                   '<doc id="3" url="u" title="G">\nG\nPin gar ol.\n</doc>\n')
    manifest = prepare([str(tmp_path / "wiki")], tokenizer_dir, str(tmp_path / "out"), fmt="wikiextractor",
                       validation_fraction=0.0, show_progress=False)
    assert manifest["kind"] == "bertkit-prepared-data" and manifest["version"] == 1
    assert manifest["dtype"] == "uint16"  # a 150-token vocabulary fits
    assert manifest["splits"]["train"]["documents"] == 2 and manifest["splits"]["train"]["sentences"] == 4
    assert manifest["splits"]["validation"] == {"documents": 0, "sentences": 0, "tokens": 0}
    assert manifest["tokenizer_fingerprint"] == tokenizer.fingerprint
    assert manifest["sources"] == [{"path": str(tmp_path / "wiki"), "bytes": os.path.getsize(tmp_path / "wiki")}]
    tokens, sentence_starts, document_starts = read_split(tmp_path / "out", "train", np.uint16)
    sentences = ["Ka lo mi.", "Ten ra su.", "Ve do.", "Pin gar ol."]
    assert tokens.tolist() == [i for s in sentences for i in tokenizer.encode(s)]
    assert sentence_starts.tolist() == np.cumsum([0] + [len(tokenizer.encode(s)) for s in sentences]).tolist()
    assert document_starts.tolist() == [0, 3, 4]
    assert load_manifest(str(tmp_path / "out")) == manifest
    assert Tokenizer.from_pretrained(tmp_path / "out" / "tokenizer").fingerprint == tokenizer.fingerprint

    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in ["Ka lo. Mi ten.", "Ra su", "Ve."]))
    manifest = prepare([str(tmp_path / "a.jsonl")], tokenizer_dir, str(tmp_path / "out2"), fmt="jsonl",
                       validation_fraction=0.01, show_progress=False)
    # 3 documents: the last goes to validation, so that a fraction > 0 always gives a validation set.
    assert manifest["splits"]["train"]["documents"] == 2 and manifest["splits"]["train"]["sentences"] == 3
    assert manifest["splits"]["validation"]["documents"] == 1 and manifest["splits"]["validation"]["sentences"] == 1


def test_prepare_identical_for_any_workers_and_counts_match(tmp_path, tokenizer_dir):
    write_text_corpus(tmp_path / "c1.txt", n_docs=400, sentences=(1, 8), seed=1)
    write_text_corpus(tmp_path / "c2.txt", n_docs=300, sentences=(1, 8), seed=2)
    inputs = [str(tmp_path / "c*.txt")]
    one = prepare(inputs, tokenizer_dir, str(tmp_path / "w1"), workers=1, validation_fraction=0.1, show_progress=False)
    two = prepare(inputs, tokenizer_dir, str(tmp_path / "w2"), workers=2, validation_fraction=0.1, show_progress=False)
    assert one == two
    for split in ("train", "validation"):
        for name in ("tokens.bin", "sentence_starts.bin", "document_starts.bin"):
            assert filecmp.cmp(tmp_path / "w1" / split / name, tmp_path / "w2" / split / name, shallow=False)
        tokens, sentence_starts, document_starts = read_split(tmp_path / "w1", split, np.uint16)
        counts = one["splits"][split]
        assert len(tokens) == counts["tokens"] == sentence_starts[-1]
        assert len(sentence_starts) == counts["sentences"] + 1 == document_starts[-1] + 1
        assert len(document_starts) == counts["documents"] + 1
        assert (np.diff(sentence_starts) > 0).all() and (np.diff(document_starts) > 0).all()
    assert one["splits"]["train"]["documents"] + one["splits"]["validation"]["documents"] == 700
    assert 40 <= one["splits"]["validation"]["documents"] <= 100  # 10% of 700, loosely


POOL_UNDER_A_SIGNAL_HANDLER = """
import multiprocessing.connection, os, signal, sys, time
from bertkit.data import prepare
started = prepare._init_worker
def slow_start(tokenizer_dir):  # a worker slow to reach its initializer (a loaded machine): the signal comes first
    time.sleep(1)
    started(tokenizer_dir)
prepare._init_worker = slow_start
signal.signal(signal.SIGTERM, lambda signum, frame: None)  # records and carries on, as a pre-training run's does
pool = prepare._start_pool(2, sys.argv[1])
workers = list(pool._pool)
for worker in workers:  # while the workers are still starting
    os.kill(worker.pid, signal.SIGTERM)
# a worker's sentinel is ready once it has ended (not its exitcode: the pool's own thread may reap it first)
survivors = sum(not multiprocessing.connection.wait([worker.sentinel], timeout=10) for worker in workers)
print(f"{survivors} workers survived SIGTERM", flush=True)
# no terminate() (it would wait on a lock a killed worker may hold): the session, the pool's replacements too, ends
os.killpg(0, signal.SIGKILL)
"""


def test_prepare_workers_end_on_sigterm_whenever_it_comes(tokenizer_dir):
    # A worker inherits its parent's signal handlers at fork; one SIGTERM that came before it put the defaults back
    # was swallowed, and the pool's terminate() (prepare ending on a bad input) then waited for it for ever.
    for attempt in range(3):
        result = subprocess.run([sys.executable, "-c", POOL_UNDER_A_SIGNAL_HANDLER, str(tokenizer_dir)],
                                capture_output=True, text=True, timeout=120, start_new_session=True)
        assert "0 workers survived SIGTERM" in result.stdout, result.stdout + result.stderr


def test_prepare_refuses_existing_output_and_empty_corpus(tmp_path, tokenizer_dir):
    write_text_corpus(tmp_path / "c.txt", n_docs=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BertkitError, match="already exists and is not empty.*choose a new --out"):
        prepare([str(tmp_path / "c.txt")], tokenizer_dir, str(out), show_progress=False)
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"

    (tmp_path / "empty.txt").write_text("\n  \n\n")
    with pytest.raises(BertkitError, match="no documents found in .*empty.txt"):
        prepare([str(tmp_path / "empty.txt")], tokenizer_dir, str(tmp_path / "out2"), show_progress=False)
    assert sorted(os.listdir(tmp_path)) == ["c.txt", "empty.txt", "out"]  # no output, no temporary directory left
    with pytest.raises(BertkitError, match="matches no files"):
        prepare([str(tmp_path / "missing.txt")], tokenizer_dir, str(tmp_path / "out3"), show_progress=False)


def test_loading_something_that_is_not_prepared_data(tmp_path, big_prepared):
    with pytest.raises(BertkitError,
                       match=r"is not a bertkit prepared-data directory \(no manifest.json\).*bertkit prepare"):
        PreparedCorpus([str(tmp_path)])
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(BertkitError, match="is not a bertkit prepared-data directory"):
        load_manifest(str(tmp_path))
    # A truncated tokens.bin no longer matches the manifest's count.
    damaged = tmp_path / "damaged"
    os.makedirs(damaged)
    for entry in ("manifest.json", "tokenizer", "validation", "train/sentence_starts.bin", "train/document_starts.bin"):
        os.makedirs(os.path.dirname(damaged / entry), exist_ok=True)
        os.symlink(os.path.join(big_prepared, entry), damaged / entry)
    tokens = (Path(big_prepared) / "train" / "tokens.bin").read_bytes()
    (damaged / "train" / "tokens.bin").write_bytes(tokens[:-2])
    with pytest.raises(BertkitError, match=r"train/tokens.bin: .* bytes, but manifest.json promises"):
        PreparedCorpus([str(damaged)])


# ---- NSP pairs ----

def document_of(corpus, offsets):
    token_document_starts = corpus.sentence_starts[corpus.document_starts]
    return np.searchsorted(token_document_starts, offsets, side="right") - 1


def test_nsp_instances(big_prepared):
    corpus = PreparedCorpus(big_prepared)
    seq_len = 64
    rows = make_nsp_instances(corpus, seq_len, seed=0, epoch=0)
    a0, a1, b0, b1, is_random = rows.T
    assert len(rows) > 5000
    # 50% IsNext (paper, section 3.1), a little under: one-sentence chunks at document ends must go random.
    is_next_share = np.mean([(make_nsp_instances(corpus, seq_len, seed=0, epoch=e)[:, 4] == 0).mean()
                             for e in range(4)])  # ~28k pairs: standard error 0.3%
    assert abs(is_next_share - 0.5) < 0.02
    assert ((a1 > a0) & (b1 > b0)).all()
    assert ((a1 - a0) + (b1 - b0) <= seq_len - 3).all()
    doc_a, doc_b = document_of(corpus, a0), document_of(corpus, b0)
    assert (doc_a == document_of(corpus, a1 - 1)).all() and (doc_b == document_of(corpus, b1 - 1)).all()
    assert (doc_a[is_random == 1] != doc_b[is_random == 1]).all()  # NotNext: B from another document
    is_next = is_random == 0
    assert (doc_a[is_next] == doc_b[is_next]).all() and (b0[is_next] >= a1[is_next]).all()
    # An IsNext pair that needed no trimming is whole sentences, B starting exactly where A ends.
    untrimmed = is_next & ((a1 - a0) + (b1 - b0) < seq_len - 3)
    assert untrimmed.sum() > 100
    assert (b0[untrimmed] == a1[untrimmed]).all()
    sentence_starts = set(corpus.sentence_starts.tolist())
    assert all(int(x) in sentence_starts for x in np.concatenate([a0[untrimmed], a1[untrimmed], b1[untrimmed]]))
    # Sentences a random B displaced are put back for the next chunk, so every sentence is used:
    # A and IsNext B cover all tokens but those trimmed off.
    depth = np.zeros(corpus.num_tokens + 1, int)
    np.add.at(depth, np.concatenate([a0, b0[is_next]]), 1)
    np.add.at(depth, np.concatenate([a1, b1[is_next]]), -1)
    assert (np.cumsum(depth)[:-1] > 0).mean() > 0.9  # ~0.96; without the put-back ~0.72
    # An IsNext chunk that stopped before its document's end reached its target: seq_len - 3 tokens
    # after trimming, except for the ~10% of chunks given a shorter random target (short_seq_prob).
    document_ends = corpus.sentence_starts[corpus.document_starts[1:]]
    closed_early = is_next & (b1 < document_ends[doc_b])
    short = ((a1 - a0) + (b1 - b0))[closed_early] < seq_len - 3
    assert closed_early.sum() > 1000 and 0.06 < short.mean() < 0.14
    # deterministic in (seed, epoch)
    assert (make_nsp_instances(corpus, seq_len, seed=0, epoch=0) == rows).all()
    assert not np.array_equal(make_nsp_instances(corpus, seq_len, seed=0, epoch=1), rows)


def test_nsp_needs_two_documents(tmp_path, tokenizer_dir):
    (tmp_path / "one.txt").write_text("Ka lo mi.\nTen ra su.\n")
    prepare([str(tmp_path / "one.txt")], tokenizer_dir, str(tmp_path / "out"), show_progress=False)
    corpus = PreparedCorpus(str(tmp_path / "out"))
    with pytest.raises(BertkitError, match="at least 2.*--objective none"):
        make_nsp_instances(corpus, 64, seed=0, epoch=0)
    assert len(make_packed_instances(corpus, 64)) == 1


# ---- the dataset ----

def test_dataset_samples_deterministic_and_well_formed(big_prepared):
    tokenizer = Tokenizer.from_pretrained(os.path.join(big_prepared, "tokenizer"))
    corpus = PreparedCorpus(big_prepared)
    dataset = PretrainingDataset.from_tokenizer(corpus, tokenizer, seq_len=64, seed=3)
    again = PretrainingDataset.from_tokenizer(corpus, tokenizer, seq_len=64, seed=3)
    for i in (0, 1, len(dataset) - 1):
        sample, row = dataset[i], dataset.instances[i]
        assert all(np.array_equal(sample[k], again[i][k]) for k in sample)
        n_a, n_b = row[1] - row[0], row[3] - row[2]
        ids = sample["input_ids"]
        assert len(ids) == n_a + n_b + 3 <= 64
        assert ids[0] == tokenizer.cls_token_id and ids[n_a + 1] == ids[-1] == tokenizer.sep_token_id
        assert sample["token_type_ids"].tolist() == [0] * (n_a + 2) + [1] * (n_b + 1)
        assert sample["next_sentence_label"] == row[4]
        chosen = sample["labels"] != IGNORE_INDEX
        original = np.concatenate([[ids[0]], corpus.tokens(row[0], row[1]), [ids[n_a + 1]],
                                   corpus.tokens(row[2], row[3]), [ids[-1]]])
        assert (sample["labels"][chosen] == original[chosen]).all() and (ids[~chosen] == original[~chosen]).all()
        assert 1 <= chosen.sum() <= round(0.15 * 64)
    pickled = pickle.loads(pickle.dumps(dataset))  # as DataLoader workers get it
    assert np.array_equal(pickled[5]["input_ids"], dataset[5]["input_ids"])
    dataset.set_epoch(1)
    assert not np.array_equal(dataset.instances, again.instances)


def test_dataset_masks_change_with_epoch_and_packing(big_prepared):
    tokenizer = Tokenizer.from_pretrained(os.path.join(big_prepared, "tokenizer"))
    corpus = PreparedCorpus(big_prepared)
    dataset = PretrainingDataset.from_tokenizer(corpus, tokenizer, seq_len=128, objective="none")
    rows = dataset.instances
    assert (rows[:-1, 1] - rows[:-1, 0] == 126).all() and 0 < rows[-1, 1] - rows[-1, 0] <= 126
    assert rows[0, 0] == 0 and (rows[1:, 0] == rows[:-1, 1]).all() and rows[-1, 1] == corpus.num_tokens
    first = [dataset[i]["labels"] for i in range(20)]
    assert len(first[0]) == 128 and "next_sentence_label" not in dataset[0]
    assert not dataset[0]["token_type_ids"].any()
    dataset.set_epoch(1)
    assert np.array_equal(dataset.instances, rows)  # the same windows, new masks
    assert sum(np.array_equal(a, dataset[i]["labels"]) for i, a in enumerate(first)) < 3
    dataset.set_epoch(0)
    assert all(np.array_equal(a, dataset[i]["labels"]) for i, a in enumerate(first))


def test_dataset_whole_word_masking_covers_complete_words(big_prepared):
    tokenizer = Tokenizer.from_pretrained(os.path.join(big_prepared, "tokenizer"))
    dataset = PretrainingDataset.from_tokenizer(PreparedCorpus(big_prepared), tokenizer, seq_len=128,
                                                masking="whole-word")
    continuation = dataset.word_start == False  # noqa: E712 (numpy)
    n_continuations_chosen = 0
    for i in range(300):
        sample = dataset[i]
        original = np.where(sample["labels"] != IGNORE_INDEX, sample["labels"], sample["input_ids"])
        chosen = sample["labels"] != IGNORE_INDEX
        inner = continuation[original] & ~dataset.is_special[np.roll(original, 1)]  # continues the previous token
        assert (chosen[1:][inner[1:]] == chosen[:-1][inner[1:]]).all()
        n_continuations_chosen += (chosen & inner).sum()
    assert n_continuations_chosen > 50  # the check above did see split words


def test_combined_directories(tmp_path, tokenizer_dir, big_prepared):
    write_text_corpus(tmp_path / "c.txt", n_docs=50, seed=9)
    prepare([str(tmp_path / "c.txt")], tokenizer_dir, str(tmp_path / "second"), show_progress=False)
    first, second = PreparedCorpus(big_prepared), PreparedCorpus(str(tmp_path / "second"))
    both = PreparedCorpus([big_prepared, str(tmp_path / "second")])
    assert both.num_documents == first.num_documents + second.num_documents
    assert both.num_tokens == first.num_tokens + second.num_tokens
    d = first.num_documents + 3
    s0, s1 = both.document_sentences(d)
    t0, t1 = both.sentence_span(s0)[0], both.sentence_span(s1 - 1)[1]
    e0, e1 = second.document_sentences(3)
    assert np.array_equal(both.tokens(t0, t1),
                          second.tokens(second.sentence_span(e0)[0], second.sentence_span(e1 - 1)[1]))
    assert np.array_equal(both.tokens(first.num_tokens - 2, first.num_tokens + 2),  # across the join
                          np.concatenate([first.tokens(first.num_tokens - 2, first.num_tokens), second.tokens(0, 2)]))

    other_tokenizer = tmp_path / "other-tokenizer"
    other = Tokenizer.train_from_iterator(["ka lo mi ten"] * 10, vocab_size=60, min_frequency=1)
    other.save_pretrained(other_tokenizer)
    prepare([str(tmp_path / "c.txt")], str(other_tokenizer), str(tmp_path / "third"), show_progress=False)
    with pytest.raises(BertkitError, match=f"{big_prepared} and .*third were prepared with different tokenizers"):
        PreparedCorpus([big_prepared, str(tmp_path / "third")])


def test_collate_pads_to_the_longest():
    samples = [{"input_ids": np.array([2, 7, 3]), "token_type_ids": np.array([0, 0, 0]),
                "labels": np.array([-100, 7, -100]), "next_sentence_label": np.int64(1)},
               {"input_ids": np.array([2, 7, 8, 3, 9]), "token_type_ids": np.array([0, 0, 0, 1, 1]),
                "labels": np.array([-100, -100, 8, -100, -100]), "next_sentence_label": np.int64(0)}]
    batch = collate(samples, pad_id=0)
    assert batch["input_ids"].tolist() == [[2, 7, 3, 0, 0], [2, 7, 8, 3, 9]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 7, -100, -100, -100], [-100, -100, 8, -100, -100]]
    assert batch["next_sentence_label"].tolist() == [1, 0]
    assert all(t.dtype == torch.long for t in batch.values())


def test_whole_word_masking_chooses_at_least_one_word():
    rng = np.random.default_rng(0)
    ids = np.arange(10, 18)
    special = np.zeros(8, bool)
    word_starts = np.array([True, False, False, True, False, False, True, False])  # words of 3, 3, 2 pieces
    for _ in range(20):
        _, labels = mask_tokens(ids, special, rng, mask_id=4, vocab_size=100, random_token_ids=np.arange(5, 100),
                                max_predictions=1, word_starts=word_starts, masking="whole-word")
        assert (labels != -100).tolist() == [False] * 6 + [True, True]  # the shortest word, whole


@pytest.mark.parametrize("mask_rate", [0.15, 0.3])
def test_dataset_mask_rate_and_only_chosen_positions_in_the_loss(big_prepared, mask_rate):
    """--mask-rate through the dataset: about that share of the candidates chosen, at most round(rate x seq_len)
    per sequence (the default max_predictions), 80/10/10 among them; and the model's MLM loss is the
    cross-entropy over the chosen positions alone (computed here from the dense logits), not over the rest."""
    from bertkit.config import preset
    from bertkit.model import BertForPreTraining

    tokenizer = Tokenizer.from_pretrained(os.path.join(big_prepared, "tokenizer"))
    dataset = PretrainingDataset.from_tokenizer(PreparedCorpus(big_prepared), tokenizer, seq_len=64, seed=0,
                                                mask_rate=mask_rate)
    assert dataset.max_predictions == round(mask_rate * 64)
    special = dataset.is_special
    n_candidates = n_chosen = n_masked = n_random = n_kept = 0
    for i in range(3000):
        sample = dataset[i]
        masked = sample["input_ids"]
        chosen = sample["labels"] != IGNORE_INDEX
        original = np.where(chosen, sample["labels"], masked)
        assert 1 <= chosen.sum() <= round(mask_rate * 64) and not special[original[chosen]].any()
        n_candidates += (~special[original]).sum()
        n_chosen += chosen.sum()
        n_masked += (masked[chosen] == tokenizer.mask_token_id).sum()
        n_kept += (masked[chosen] == original[chosen]).sum()
        n_random += ((masked[chosen] != tokenizer.mask_token_id) & (masked[chosen] != original[chosen])).sum()
    # the chosen count is round(rate x candidates) per sequence: short sequences (10% of pairs) round it off
    assert abs(n_chosen / n_candidates - mask_rate) < 0.02, n_chosen / n_candidates
    assert abs(n_masked / n_chosen - 0.8) < 0.02
    assert abs(n_random / n_chosen - 0.1) < 0.015  # a random id may be the original one (1 in ~150): counted kept
    assert abs(n_kept / n_chosen - 0.1) < 0.015

    torch.manual_seed(0)
    model = BertForPreTraining(preset("tiny", vocab_size=tokenizer.vocab_size, max_position_embeddings=64)).eval()
    batch = collate([dataset[i] for i in range(16)], dataset.pad_id)
    with torch.no_grad():
        out = model(**batch)
        dense = model(**{k: v for k, v in batch.items() if k not in ("labels", "next_sentence_label")})
    labels = batch["labels"]
    chosen = labels != IGNORE_INDEX
    log_probs = torch.log_softmax(dense.mlm_logits.float(), dim=-1)  # (B, T, V)
    expected = -log_probs[chosen].gather(1, labels[chosen][:, None]).mean()
    assert out.mlm_targets.numel() == int(chosen.sum())
    torch.testing.assert_close(out.mlm_loss, expected, rtol=1e-5, atol=1e-6)
