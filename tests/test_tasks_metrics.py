"""Fine-tuning data and metrics: metrics against scikit-learn / scipy / seqeval, the SQuAD metric on
hand-made cases, sub-token label alignment, doc-stride windows, answer extraction, and the readers
on the shared GLUE / CoNLL / SQuAD files and on broken inputs."""

import json
import logging
import math
import random

import numpy as np
import pytest
import scipy.stats
import seqeval.metrics
import sklearn.metrics
import torch

from bertkit.data.features import (collate, encode_choices, encode_sentence_tasks, encode_squad, encode_tagging,
                                   word_tags)
from bertkit.data.tasks import (TASKS, ChoiceExample, Example, QAExample, check_labels, find_task_files,
                                make_label_list, read_choices, read_conll, read_glue, read_squad, read_table)
from bertkit.errors import BertkitError
from bertkit.eval import squad
from bertkit.eval.metrics import (accuracy, entities, entity_f1, f1_binary, glue_metrics, matthews_corrcoef,
                                  pearson, spearman)
from bertkit.model import IGNORE_INDEX
from bertkit.tokenizer import SPECIAL_TOKENS, Tokenizer
from conftest import shared_data

X = IGNORE_INDEX

# ----------------------------------------------------------------------------------------------
# 1. Metrics against the references


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn's, on the all-zero case
def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    cases = [([1, 1, 1, 1], [0, 1, 0, 1]),  # constant prediction: MCC is 0
             ([0, 0, 0], [0, 0, 0]),  # no positives at all: F1 is 0
             ([1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0])]
    for size in (5, 50, 1000):
        cases.append((rng.integers(0, 2, size), rng.integers(0, 2, size)))
    for preds, labels in cases:
        assert accuracy(preds, labels) == pytest.approx(sklearn.metrics.accuracy_score(labels, preds), abs=1e-12)
        assert f1_binary(preds, labels) == pytest.approx(
            sklearn.metrics.f1_score(labels, preds, zero_division=0), abs=1e-12)
        assert matthews_corrcoef(preds, labels) == pytest.approx(
            sklearn.metrics.matthews_corrcoef(labels, preds), abs=1e-12)
    # hand-made: tp=2 fp=1 fn=1 -> F1 = 4/6; MCC = (tp*tn - fp*fn) / sqrt(3*3*3*3) = (4-1)/9
    assert f1_binary([1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0]) == pytest.approx(2 / 3)
    assert matthews_corrcoef([1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0]) == pytest.approx(1 / 3)
    for classes in (3, 5):  # MCC's multi-class form
        preds, labels = rng.integers(0, classes, 300), rng.integers(0, classes, 300)
        labels[:100] = preds[:100]
        assert matthews_corrcoef(preds, labels) == pytest.approx(
            sklearn.metrics.matthews_corrcoef(labels, preds), abs=1e-12)


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    cases = [([1, 2, 2, 3, 3, 3], [1, 3, 2, 4, 4, 0]),
             (rng.normal(size=100), rng.normal(size=100)),
             (rng.integers(0, 5, 200).astype(float), rng.integers(0, 3, 200).astype(float))]  # many ties
    x = rng.normal(size=100)
    cases.append((x, 2 * x + rng.normal(scale=0.1, size=100)))
    for x, y in cases:
        assert pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
        assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_glue_metrics_by_task():
    preds, labels = [1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0]
    assert glue_metrics("mrpc", preds, labels) == pytest.approx({"accuracy": 4 / 6, "f1": 2 / 3})
    assert glue_metrics("cola", preds, labels) == pytest.approx({"matthews_corr": 1 / 3})
    assert glue_metrics("sst2", preds, labels) == pytest.approx({"accuracy": 4 / 6})
    scores = glue_metrics("stsb", [0.5, 2.0, 4.5, 3.0], [1.0, 2.5, 5.0, 2.0])
    assert set(scores) == {"pearson", "spearmanr"} and scores["spearmanr"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="entity_f1"):
        glue_metrics("ner", preds, labels)


def _seqeval(true, pred):
    return {"precision": seqeval.metrics.precision_score(true, pred, zero_division=0),
            "recall": seqeval.metrics.recall_score(true, pred, zero_division=0),
            "f1": seqeval.metrics.f1_score(true, pred, zero_division=0)}


def test_entities_follow_conlleval_rules():
    assert entities(["I-ORG", "I-ORG", "B-ORG", "O"]) == [("ORG", 0, 1), ("ORG", 2, 2)]  # IOB1
    assert entities(["O", "I-PER", "I-PER"]) == [("PER", 1, 2)]  # I- without B- starts an entity
    assert entities(["B-PER", "B-PER"]) == [("PER", 0, 0), ("PER", 1, 1)]  # adjacent, same type
    assert entities(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]  # type change
    assert entities(["S-PER", "B-LOC", "E-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 3)]
    assert entities(["O", "O"]) == []


def test_entity_f1_matches_seqeval():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "B-PER", "O"], ["I-ORG", "I-ORG", "B-ORG", "O"],
            ["B-MISC", "I-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O"], ["B-ORG", "I-ORG", "I-ORG", "O"],
            ["B-MISC", "I-MISC", "O"]]
    # Hand count: true entities 2 + 2 + 2 + 1 = 7; predicted 2 + 1 + 1 + 1 = 5; correct 2 (PER, LOC).
    ours = entity_f1(true, pred)
    assert ours == pytest.approx({"precision": 2 / 5, "recall": 2 / 7, "f1": 2 * (2 / 5) * (2 / 7) / (2 / 5 + 2 / 7)})
    assert ours == pytest.approx(_seqeval(true, pred))

    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "E-ORG", "S-MISC", "B-MISC"]
    for _ in range(5):
        true = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(100)]
        pred = [[t if rng.random() < 0.6 else rng.choice(tags) for t in sentence] for sentence in true]
        assert entity_f1(true, pred) == pytest.approx(_seqeval(true, pred), abs=1e-12)
    assert entity_f1([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="sequence 0"):
        entity_f1([["O", "O"]], [["O"]])


# ----------------------------------------------------------------------------------------------
# 2. The SQuAD metric


def test_squad_normalization_and_scores():
    assert squad.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert squad.normalize_answer("An apple, a day; THE end") == "apple day end"
    assert squad.normalize_answer("theory anthem") == "theory anthem"  # articles only as whole words
    assert squad.exact_match("The Cat.", "cat") == 1.0
    assert squad.exact_match("cats", "cat") == 0.0
    # pred tokens cat sat on mat, reference cat on mat: precision 3/4, recall 1 -> F1 6/7
    assert squad.f1("the cat sat on the mat", "cat on mat") == pytest.approx(6 / 7)
    assert squad.f1("a", "the") == 0.0  # v1.1: nothing left on either side scores 0 ...
    assert squad.f1("a", "the", version_2=True) == 1.0  # ... v2.0: both empty is a match


def test_squad_evaluate_v1_takes_the_best_reference():
    dataset = {"data": [{"title": "t", "paragraphs": [{"context": "...", "qas": [
        {"id": "q1", "question": "?", "answers": [{"text": "Denver Broncos", "answer_start": 0},
                                                  {"text": "The Denver Broncos", "answer_start": 0}]},
        {"id": "q2", "question": "?", "answers": [{"text": "in 1990", "answer_start": 0},
                                                  {"text": "1990s", "answer_start": 0}]},
        {"id": "q3", "question": "?", "answers": [{"text": "x", "answer_start": 0}]}]}]}]}
    predictions = {"q1": "denver broncos!", "q2": "1990"}  # q3 unanswered: scores 0
    result = squad.evaluate(dataset, predictions)
    # q1: exact 1, F1 1. q2: exact 0, F1 max(2/3 against "in 1990", 0 against "1990s"). q3: 0.
    assert result == pytest.approx({"exact_match": 100 / 3, "f1": 100 * (1 + 2 / 3) / 3})
    examples = [QAExample("q1", "?", "...", [("Denver Broncos", 0)]), QAExample("q2", "?", "...", [("1990s", 0)])]
    assert squad.evaluate(examples, {"q1": "The Denver Broncos", "q2": "1990"}) == pytest.approx(
        {"exact_match": 50.0, "f1": 50.0})


def test_squad_evaluate_v2_scores_unanswerable_questions():
    examples = [QAExample("a", "?", "...", [("Paris", 0)]), QAExample("b", "?", "...", [], is_impossible=True),
                QAExample("c", "?", "...", [], is_impossible=True), QAExample("d", "?", "...", [("red car", 0)])]
    result = squad.evaluate(examples, {"a": "paris", "b": "", "c": "London", "d": "car"})
    # a: 1/1, b: 1/1 ("" on unanswerable), c: 0/0, d: exact 0, F1 2/3
    assert result == pytest.approx({
        "exact_match": 50.0, "f1": 100 * (2 + 2 / 3) / 4, "total": 4,
        "HasAns_exact": 50.0, "HasAns_f1": 100 * (1 + 2 / 3) / 2, "HasAns_total": 2,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2})
    # A reference that normalises to nothing: v2.0 drops it, v1.1 lets "" match it.
    odd = [QAExample("e", "?", "...", [("The", 0), ("Paris", 0)])]
    assert squad.evaluate(odd, {"e": ""}, version_2=True)["exact_match"] == 0.0
    assert squad.evaluate(odd, {"e": ""}, version_2=False)["exact_match"] == 100.0


# ----------------------------------------------------------------------------------------------
# A hand-written vocabulary: every expected token below is known exactly.

_WORDS = ["johan", "##son", "lives", "in", "wolfe", "##sch", "##leg", "##els", "##tein", ".", "what", "is",
          "it", "?", "'", "s", "the", "eiffel", "tower", "paris", ",", "france", "where", "good", "bad",
          "movie", "fun", "a", "b", "c", *[f"w{i}" for i in range(60)]]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("".join(token + "\n" for token in [*SPECIAL_TOKENS, *_WORDS]), encoding="utf-8")
    return Tokenizer.from_vocab(path, lowercase=True)


def _ids(tokenizer, tokens):
    return tokenizer.convert_tokens_to_ids(tokens)


# ----------------------------------------------------------------------------------------------
# 3. Word tags onto word pieces


def test_tag_alignment_first_piece_and_all_pieces(tokenizer):
    label_list = ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    example = Example(text_a="", words=["Johanson", "lives", "in", "Wolfeschlegelstein", "."],
                      label=["B-PER", "O", "O", "B-LOC", "O"])
    (feature,), n_truncated = encode_tagging([example], tokenizer, 64, label_list)
    assert n_truncated == 0
    assert tokenizer.convert_ids_to_tokens(feature["input_ids"]) == [
        "[CLS]", "johan", "##son", "lives", "in", "wolfe", "##sch", "##leg", "##els", "##tein", ".", "[SEP]"]
    assert feature["word_ids"] == [-1, 0, 0, 1, 2, 3, 3, 3, 3, 3, 4, -1]
    assert feature["labels"] == [X, 2, X, 0, 0, 1, X, X, X, X, 0, X]
    assert feature["token_type_ids"] == [0] * 12

    (feature,), _ = encode_tagging([example], tokenizer, 64, label_list, label_all_subtokens=True)
    assert feature["labels"] == [X, 2, 4, 0, 0, 1, 3, 3, 3, 3, 0, X]  # B- continues as I-

    predicted = [0, 2, 1, 0, 0, 1, 4, 4, 4, 4, 0, 0]  # only each word's first piece counts
    assert word_tags(feature, predicted, label_list) == ["B-PER", "O", "O", "B-LOC", "O"]


def test_tagging_truncation_predicts_o_for_cut_words(tokenizer):
    label_list = ["O", "B-PER", "I-PER"]
    example = Example(text_a="", words=["Johanson", "lives", "in", "Paris"], label=["B-PER", "O", "O", "O"])
    (feature,), n_truncated = encode_tagging([example], tokenizer, 5, label_list)
    assert n_truncated == 1
    assert tokenizer.convert_ids_to_tokens(feature["input_ids"]) == ["[CLS]", "johan", "##son", "lives", "[SEP]"]
    assert feature["labels"] == [X, 1, X, 0, X]
    assert word_tags(feature, [0, 1, 1, 1, 0], label_list) == ["B-PER", "B-PER", "O", "O"]
    with pytest.raises(BertkitError, match=r"ner\.txt: line 9: label 'B-LOC'"):
        encode_tagging([Example("", words=["a", "b"], label=["O", "B-LOC"], guid="ner.txt:8")],
                       tokenizer, 16, label_list)


def test_sentence_and_choice_features(tokenizer):
    examples = [Example("good movie", None, "pos"), Example("bad", "w1 w2 w3 w4 w5", "neg"),
                Example("w1 w2 w3 w4 w5 w6", None, "pos")]
    features, n_truncated = encode_sentence_tasks(examples, tokenizer, 6, ["neg", "pos"])
    assert n_truncated == 2
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert features[0] == {"input_ids": [cls, *_ids(tokenizer, ["good", "movie"]), sep],
                           "token_type_ids": [0, 0, 0, 0], "label": 1}
    assert features[1]["input_ids"] == [cls, *_ids(tokenizer, ["bad"]), sep, *_ids(tokenizer, ["w1", "w2"]), sep]
    assert features[1]["token_type_ids"] == [0, 0, 0, 1, 1, 1] and features[1]["label"] == 0
    assert features[2]["input_ids"] == [cls, *_ids(tokenizer, ["w1", "w2", "w3", "w4"]), sep]
    features, _ = encode_sentence_tasks([Example("a", "b", 2.5)], tokenizer, 8, None)
    assert features[0]["label"] == 2.5

    choices = [ChoiceExample("a", ["b", "b c"], label=1), ChoiceExample("a b c", ["a", "w1"], label=0)]
    features, n_truncated = encode_choices(choices, tokenizer, 16)
    assert n_truncated == 0
    assert features[0]["input_ids"][1] == [cls, *_ids(tokenizer, ["a"]), sep, *_ids(tokenizer, ["b", "c"]), sep]
    batch = collate(features, tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, 2, 7) and batch["labels"].tolist() == [1, 0]
    assert batch["attention_mask"][0].tolist() == [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0]]


# ----------------------------------------------------------------------------------------------
# 4. SQuAD windows


def test_doc_stride_windows_and_answer_positions(tokenizer):
    words = [f"w{i}" for i in range(60)]
    words[30] = "Johanson's"  # 4 tokens: johan ##son ' s
    context = " ".join(words)
    answer = "Johanson's w31"
    example = QAExample("q", "What is it?", context, [(answer, context.index(answer))])
    features = encode_squad([example], tokenizer, max_seq_len=32, doc_stride=8, max_query_len=64)

    # 63 context tokens; [CLS] + 4 question tokens + [SEP] + window + [SEP] = 32 -> windows of 25,
    # starting 8 apart: 0, 8, 16, 24, 32, 40 (the last, 40..62, reaches the end).
    assert len(features) == 6
    assert [f["example_index"] for f in features] == [0] * 6
    assert [len(f["input_ids"]) for f in features] == [32, 32, 32, 32, 32, 30]
    question = [tokenizer.cls_token_id, *_ids(tokenizer, ["what", "is", "it", "?"]), tokenizer.sep_token_id]
    assert features[1]["input_ids"] == [*question, *_ids(tokenizer, words[8:30]),
                                        *_ids(tokenizer, ["johan", "##son", "'"]), tokenizer.sep_token_id]
    assert features[1]["token_type_ids"] == [0] * 6 + [1] * 26
    assert features[0]["offsets"][:6] == [None] * 6 and features[0]["offsets"][-1] is None
    assert features[0]["offsets"][6] == (0, 2)  # "w0"

    # The answer is tokens 30..34 of the context: whole only in the windows starting at 16 and 24
    # (the one at 8 ends at token 32, cutting it). Positions count the 6 tokens before the context.
    assert [(f["start_position"], f["end_position"]) for f in features] == [
        (0, 0), (0, 0), (30 - 16 + 6, 34 - 16 + 6), (30 - 24 + 6, 34 - 24 + 6), (0, 0), (0, 0)]
    for feature in features[2:4]:
        offsets = feature["offsets"]
        assert context[offsets[feature["start_position"]][0]:offsets[feature["end_position"]][1]] == answer

    truncated_question = QAExample("q", "what is it ? what is it ?", context, [(answer, context.index(answer))])
    (first, *_) = encode_squad([truncated_question], tokenizer, max_seq_len=32, doc_stride=8, max_query_len=4)
    assert first["input_ids"][:6] == question  # cut to 4 tokens

    impossible = QAExample("q", "What is it?", "w1 w2", [], is_impossible=True)
    (feature,) = encode_squad([impossible], tokenizer, max_seq_len=32)
    assert (feature["start_position"], feature["end_position"]) == (0, 0)
    (feature,) = encode_squad([impossible], tokenizer, max_seq_len=32, training=False)
    assert "start_position" not in feature


# ----------------------------------------------------------------------------------------------
# 5. Logits -> answer texts


def test_postprocess_picks_the_exact_span(tokenizer):
    context = "The Eiffel Tower is in Paris, France."
    example = QAExample("q", "Where is it?", context)
    (feature,) = encode_squad([example], tokenizer, max_seq_len=32, training=False)
    tokens = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert tokens == ["[CLS]", "where", "is", "it", "?", "[SEP]", "the", "eiffel", "tower", "is", "in", "paris",
                      ",", "france", ".", "[SEP]"]
    start, end = [0.0] * 20, [0.0] * 20  # padded past the feature's 16 tokens
    start[0] = end[0] = 1.0  # null score 2
    start[2] = 9.0  # in the question: never an answer
    start[11] = 5.0  # "paris"
    end[13] = 4.0  # "france": "Paris, France" scores 9
    end[7] = 8.0  # "eiffel": before paris (invalid from there), "The Eiffel" from start 6 scores 8
    end[15] = 20.0  # the final [SEP]: never an answer's end
    start[18] = end[18] = 50.0  # padding
    predictions, null_diffs = squad.postprocess([example], [feature], [start], [end])
    assert predictions == {"q": "Paris, France"} and null_diffs == {"q": 2.0 - 9.0}
    predictions, _ = squad.postprocess([example], [feature], [start], [end], max_answer_len=2)
    assert predictions == {"q": "The Eiffel"}
    # Version 2: "" once the null score beats the best span by more than the threshold.
    assert squad.postprocess([example], [feature], [start], [end], version_2=True)[0] == {"q": "Paris, France"}
    assert squad.postprocess([example], [feature], [start], [end], version_2=True,
                             null_threshold=-7.5)[0] == {"q": ""}
    assert squad.postprocess([example], [feature], [start], [end], version_2=False,
                             null_threshold=-7.5)[0] == {"q": "Paris, France"}


def test_postprocess_over_windows_and_null_threshold_search():
    example = QAExample("q", "?", "abc def ghi")
    features = [{"offsets": [None, (0, 3), (4, 7), None], "example_index": 0},
                {"offsets": [None, (4, 7), (8, 11), None], "example_index": 0}]
    starts = torch.tensor([[1.0, 2.0, 1.0, 0.0], [3.0, 1.5, 6.0, 0.0]])
    ends = torch.tensor([[0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    predictions, null_diffs = squad.postprocess([example], features, starts, ends)
    assert predictions == {"q": "ghi"}  # 6 + 2 in the second window
    assert null_diffs == {"q": (1.0 + 0.0) - 8.0}  # the lower null score of the two windows (the first)

    dataset = [QAExample("a", "?", "", [("Paris", 0)]), QAExample("b", "?", "", [], is_impossible=True),
               QAExample("c", "?", "", [("Rome", 0)])]
    answers = {"a": "paris", "b": "London", "c": "Milan"}
    diffs = {"a": -2.0, "b": 1.0, "c": 3.0}
    # All null: 1/3 (b). Answer a (diff -2): 2/3. Also b: 1/3. Also c (wrong): 1/3. Best: -2.
    threshold, score = squad.best_null_threshold(diffs, answers, dataset)
    assert threshold == -2.0 and score == pytest.approx(200 / 3)
    final = squad.apply_null_threshold(answers, diffs, threshold)
    assert final == {"a": "paris", "b": "", "c": ""}
    assert squad.evaluate(dataset, final)["f1"] == pytest.approx(score)


# ----------------------------------------------------------------------------------------------
# 6. Readers: the shared files


def _label_counts(examples):
    counts = {}
    for example in examples:
        counts[example.label] = counts.get(example.label, 0) + 1
    return counts


def test_glue_readers_on_shared_files():
    sst2 = read_glue("sst2", str(shared_data("glue", "SST-2", "train.tsv")))
    assert len(sst2) == 67349 and _label_counts(sst2) == {"0": 29780, "1": 37569}
    sst2_dev = TASKS["sst2"].read(str(shared_data("glue", "SST-2", "dev.tsv")))
    assert _label_counts(sst2_dev) == {"0": 428, "1": 444}
    cola = read_glue("cola", str(shared_data("glue", "CoLA", "dev.tsv")))  # no header, no final newline
    assert len(cola) == 1043 and _label_counts(cola) == {"1": 721, "0": 322}
    assert cola[-1].text_a.endswith("himself.")
    mrpc_path = str(shared_data("glue", "MRPC", "dev.tsv"))
    mrpc = read_glue("mrpc", mrpc_path)  # the BOM would otherwise hide the "Quality" column
    assert len(mrpc) == 408 and _label_counts(mrpc) == {"1": 279, "0": 129}
    assert mrpc[0].guid == f"{mrpc_path}:2" and mrpc[0].text_b.startswith('"The foodservice')  # no quoting
    stsb = read_glue("stsb", str(shared_data("glue", "STS-B", "dev.tsv")))
    assert len(stsb) == 1500 and stsb[0].label == 5.0 and all(0.0 <= e.label <= 5.0 for e in stsb)
    rte = read_glue("rte", str(shared_data("glue", "RTE", "dev.tsv")))
    assert len(rte) == 277 and _label_counts(rte) == {"entailment": 146, "not_entailment": 131}
    wnli = read_glue("wnli", str(shared_data("glue", "WNLI", "dev.tsv")))
    assert _label_counts(wnli) == {"1": 31, "0": 40}
    files = find_task_files("rte", str(shared_data("glue", "RTE")))
    assert files == {"train": str(shared_data("glue", "RTE", "train.tsv")),
                     "dev": str(shared_data("glue", "RTE", "dev.tsv")), "test": None}


def test_conll_and_squad_readers_on_shared_files():
    directory = str(shared_data("conll2003"))
    files = find_task_files("ner", directory)
    dev = read_conll(files["dev"])
    assert len(dev) == 3250 and sum(len(e.words) for e in dev) == 51362
    assert all(len(e.words) == len(e.label) for e in dev)
    assert make_label_list("ner", dev) == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC",
                                           "I-ORG", "I-PER"]
    examples, skipped = read_squad(str(shared_data("squad", "dev-v1.1.part-a.json")))
    assert len(examples) == 4961 and skipped == 0
    assert 1 <= min(len(e.answers) for e in examples) and max(len(e.answers) for e in examples) == 6


# ----------------------------------------------------------------------------------------------
# 6. Readers: broken inputs


def test_tsv_row_with_wrong_field_count(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('sentence\tlabel\na "quoted" text\t1\nno tab here\n', encoding="utf-8")
    with pytest.raises(BertkitError) as error:
        read_glue("sst2", str(path))
    assert error.value.message == f"{path}: line 3: expected 2 tab-separated fields, found 1"
    path.write_text("sentence\tlabel\nfine\t1\nfine\t7\n", encoding="utf-8")
    with pytest.raises(BertkitError) as error:
        read_glue("sst2", str(path))
    assert error.value.message == f"{path}: line 3: label '7' does not occur in the sst2 label set"


def test_unseen_dev_label_names_file_and_line(tmp_path):
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    train.write_text('text,label\n"good, really",pos\nbad,neg\n', encoding="utf-8")
    dev.write_text('text,label\n"a quoted\ntwo-line text",pos\nmeh,neutral\n', encoding="utf-8")
    train_examples = read_table(str(train))
    assert [(e.text_a, e.label) for e in train_examples] == [("good, really", "pos"), ("bad", "neg")]
    label_list = make_label_list("classify", train_examples)
    assert label_list == ["neg", "pos"]
    dev_examples = read_table(str(dev))
    assert [e.guid for e in dev_examples] == [f"{dev}:2", f"{dev}:4"]  # the quoted text spans lines 2-3
    with pytest.raises(BertkitError) as error:
        check_labels(dev_examples, label_list, str(dev))
    assert error.value.message == f"{dev}: line 4: label 'neutral' does not occur in the training data"

    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text('{"text": "x", "label": 1}\n\n{"text": "y"}\n', encoding="utf-8")
    with pytest.raises(BertkitError, match=r"dev\.jsonl: line 3: no 'label' field"):
        read_table(str(jsonl))
    assert [e.label for e in read_table(str(jsonl), labeled=False)] == [None, None]


def test_csv_missing_label_column_names_the_header_and_its_columns(tmp_path):
    """The header is line 1: a missing column is the header's fault, not "line 2: no 'stars' field"."""
    path = tmp_path / "reviews.csv"
    path.write_text("review,rating\ngood film,5\n", encoding="utf-8")
    with pytest.raises(BertkitError) as error:
        read_table(str(path), text_column="review", label_column="stars")
    assert error.value.message == f"{path}: the header has no 'stars' column; its columns are ['review', 'rating']"
    assert "--label-column" in error.value.hint
    assert [e.label for e in read_table(str(path), text_column="review", labeled=False)] == [None]


def test_conll_tag_scheme_and_unseen_tag(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                    "Peter NNP B-NP PER\n", encoding="utf-8")
    with pytest.raises(BertkitError) as error:
        read_conll(str(path))
    assert error.value.message == f"{path}: line 6: tag 'PER' is not in the IOB or IOBES scheme"
    path.write_text("EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n", encoding="utf-8")
    train = read_conll(str(path))
    assert [(e.words, e.label, e.guid) for e in train] == [
        (["EU", "rejects"], ["B-ORG", "O"], f"{path}:1"), (["Peter", "Blackburn"], ["B-PER", "I-PER"], f"{path}:4")]
    dev = tmp_path / "dev.txt"
    dev.write_text("-DOCSTART- O\n\nin O\nBonn B-LOC\n", encoding="utf-8")
    with pytest.raises(BertkitError) as error:
        check_labels(read_conll(str(dev)), make_label_list("ner", train), str(dev))
    assert error.value.message == f"{dev}: line 4: label 'B-LOC' does not occur in the training data"


def test_squad_answer_mismatch_is_counted_and_skipped(tmp_path, caplog):
    context = "Denver won the game."
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "good", "question": "Who won?", "answers": [{"text": "Denver", "answer_start": 0}]},
        {"id": "bad", "question": "What?", "answers": [{"text": "game", "answer_start": 3}]}]}]}]}
    path = tmp_path / "train-v1.1.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        examples, skipped = read_squad(str(path))
    assert [e.id for e in examples] == ["good"] and skipped == 1
    assert examples[0].answers == [("Denver", 0)]
    assert any("question bad" in record.getMessage() for record in caplog.records)
    examples, skipped = read_squad(str(path), training=False)  # evaluation keeps every question
    assert [e.id for e in examples] == ["good", "bad"] and skipped == 0
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(data), encoding="utf-8")
    del data["data"][0]["paragraphs"][0]["qas"][0]["question"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BertkitError, match=r"train-v1\.1\.json: not in the SQuAD format: KeyError: 'question'"):
        read_squad(str(path))
    assert find_task_files("squad", str(tmp_path)) == {
        "train": str(path), "dev": str(tmp_path / "dev-v1.1.json"), "test": None}


def test_find_task_files_lists_what_it_looked_for(tmp_path):
    (tmp_path / "train.txt").write_text("EU B-ORG\n", encoding="utf-8")
    with pytest.raises(BertkitError) as error:
        find_task_files("ner", str(tmp_path))
    assert error.value.message == f"{tmp_path}: no dev file for task ner; looked for dev.txt, valid.txt"
    (tmp_path / "valid.txt").write_text("EU B-ORG\n", encoding="utf-8")
    assert find_task_files("ner", str(tmp_path)) == {
        "train": str(tmp_path / "train.txt"), "dev": str(tmp_path / "valid.txt"), "test": None}


def test_multiple_choice_readers(tmp_path):
    swag = tmp_path / "train.csv"
    swag.write_text("video-id,sent1,sent2,ending0,ending1,ending2,ending3,label\n"
                    "v1,He opens the door.,He,walks in.,flies.,sings.,sleeps.,0\n", encoding="utf-8")
    (example,) = read_choices(str(swag))
    assert example == ChoiceExample("He opens the door.", ["He walks in.", "He flies.", "He sings.", "He sleeps."],
                                    0, f"{swag}:2")
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text('{"context": "c", "endings": ["x", "y"], "label": 1}\n'
                     '{"context": "c", "endings": ["x", "y"], "label": 2}\n', encoding="utf-8")
    with pytest.raises(BertkitError, match=r"dev\.jsonl: line 2: label 2 is not an ending index 0\.\.1"):
        read_choices(str(jsonl))
