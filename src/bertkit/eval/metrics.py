"""Evaluation metrics for fine-tuning, written out so that bertkit depends on no metrics library.

Sentence-level: accuracy, binary F1, Matthews correlation (multi-class), Pearson and Spearman
correlation, and `glue_metrics`, which reports each GLUE task's official metrics by name.
Multi-label: `multi_label_metrics`, micro- and macro-averaged F1 and subset accuracy.
Entity-level: `entity_f1`, which chunks tag sequences exactly as seqeval's default mode (the
conlleval rules) does. Tests hold each of these equal to scikit-learn, scipy and seqeval.

Values are fractions in [0, 1] (SQuAD's scores, in eval/squad.py, are percentages as in its
official script). Where a reference returns 0 for an undefined F1 or MCC, so do we; an
undefined correlation (a constant input) is nan, as in scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def accuracy(preds: Sequence, labels: Sequence) -> float:
    preds, labels = _same_length(preds, labels)
    return float(np.mean(preds == labels)) if len(labels) else 0.0


def f1_binary(preds: Sequence[int], labels: Sequence[int]) -> float:
    """F1 of the positive class 1 (MRPC: paraphrase, QQP: duplicate)."""
    preds, labels = _same_length(preds, labels)
    true_pos = int(np.sum((preds == 1) & (labels == 1)))
    false_pos = int(np.sum((preds == 1) & (labels != 1)))
    false_neg = int(np.sum((preds != 1) & (labels == 1)))
    if true_pos == 0:
        return 0.0
    return 2 * true_pos / (2 * true_pos + false_pos + false_neg)


def matthews_corrcoef(preds: Sequence, labels: Sequence) -> float:
    """Matthews correlation, in its multi-class form (Gorodkin, 2004): CoLA's metric."""
    preds, labels = _same_length(preds, labels)
    classes = {value: i for i, value in enumerate(sorted(set(labels.tolist()) | set(preds.tolist())))}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)  # (true class, predicted class)
    for label, pred in zip(labels.tolist(), preds.tolist()):
        confusion[classes[label], classes[pred]] += 1
    true_totals, pred_totals = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    covariance = correct * n - true_totals @ pred_totals
    pred_variance = n * n - pred_totals @ pred_totals
    true_variance = n * n - true_totals @ true_totals
    if pred_variance * true_variance == 0:
        return 0.0  # a constant prediction or label column: no correlation to speak of
    return float(covariance / math.sqrt(true_variance * pred_variance))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = _same_length(x, y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0:
        return math.nan
    return max(-1.0, min(1.0, float(dx @ dy) / denominator))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and values[order[end + 1]] == values[order[start]]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's on the ranks, ties given their average rank."""
    x, y = _same_length(x, y, dtype=np.float64)
    return pearson(_average_ranks(x), _average_ranks(y))


def _same_length(a: Sequence, b: Sequence, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-D sequences of the same length, got shapes {a.shape} and {b.shape}")
    return a, b


_SENTENCE_METRICS = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "matthews_corr": matthews_corrcoef,
    "pearson": pearson,
    "spearmanr": spearman,
}


def glue_metrics(task: str, preds: Sequence, labels: Sequence) -> dict[str, float]:
    """The metrics of a sentence-level task in TASKS (GLUE, classify, regress), by their GLUE names.

    preds and labels are class indices (f1 counts index 1 as positive) or, for regression, scores.
    """
    from bertkit.data.tasks import TASKS  # the task table names each task's metrics

    spec = TASKS.get(task)
    if spec is None or spec.kind not in ("classification", "regression"):
        raise ValueError(f"{task!r} is not a sentence classification or regression task; "
                         "use entity_f1 for tagging and eval.squad.evaluate for SQuAD")
    return {name: _SENTENCE_METRICS[name](preds, labels) for name in spec.metrics}


def multi_label_metrics(true_sets: Sequence[Sequence[str]], pred_sets: Sequence[Sequence[str]],
                        label_list: Sequence[str]) -> dict[str, float]:
    """Scores of predicted label sets against the true ones (each a list of names from label_list).

    micro_f1: F1 over every (example, label) yes/no decision pooled; macro_f1: the mean of each label's
    F1, a label never true nor predicted counting 0 (as scikit-learn's f1_score(average="macro"));
    subset_accuracy: the share of examples whose predicted set is exactly the true set.
    """
    if len(true_sets) != len(pred_sets):
        raise ValueError(f"{len(true_sets)} true label sets but {len(pred_sets)} predicted")
    index = {label: i for i, label in enumerate(label_list)}
    truth = np.zeros((len(true_sets), len(label_list)), dtype=bool)  # (examples, labels) multi-hot
    predicted = np.zeros_like(truth)
    for row, (true_labels, pred_labels) in enumerate(zip(true_sets, pred_sets)):
        truth[row, [index[label] for label in true_labels]] = True
        predicted[row, [index[label] for label in pred_labels]] = True
    true_pos = (truth & predicted).sum(0)  # (labels,)
    false_pos = (~truth & predicted).sum(0)
    false_neg = (truth & ~predicted).sum(0)

    def f1(tp, fp, fn):
        return np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(np.shape(tp)), where=(2 * tp + fp + fn) > 0)

    return {"micro_f1": float(f1(true_pos.sum(), false_pos.sum(), false_neg.sum())),
            "macro_f1": float(f1(true_pos, false_pos, false_neg).mean()) if len(label_list) else 0.0,
            "subset_accuracy": float((truth == predicted).all(1).mean()) if len(true_sets) else 0.0}


# ----------------------------------------------------------------------------------------------
# Entities


def _split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") from "B-PER"; ("O", "_") from "O" (seqeval's placeholder type)."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) of each entity in a tag sequence, under the conlleval rules.

    These accept IOB1, IOB2 and IOBES: an entity starts at B-/S-, at I-/E- after O or after the
    end of another entity, and wherever the type changes; it ends before O, B- or S-, after E-/S-,
    and wherever the type changes. So "I-PER" after "O" starts an entity, and "B-PER B-PER"
    are two entities.
    """
    found = []
    previous_tag, previous_type, begin = "O", "", 0
    for i, tag_text in enumerate([*tags, "O"]):  # the trailing "O" closes a final entity
        tag, type_ = _split_tag(tag_text)
        type_changed = previous_type != type_
        ends = (previous_tag in "ES"
                or (previous_tag in "BI" and tag in "BSO")
                or (previous_tag != "O" and type_changed))
        starts = (tag in "BS"
                  or (tag in "IE" and previous_tag in "ESO")
                  or (tag != "O" and type_changed))
        if ends:
            found.append((previous_type, begin, i - 1))
        if starts:
            begin = i
        previous_tag, previous_type = tag, type_
    return found


def entity_f1(true_tag_seqs: Sequence[Sequence[str]], pred_tag_seqs: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro precision, recall and F1: an entity counts when type and span both match."""
    if len(true_tag_seqs) != len(pred_tag_seqs):
        raise ValueError(f"{len(true_tag_seqs)} true sequences but {len(pred_tag_seqs)} predicted")
    n_true = n_pred = n_correct = 0
    for index, (true_tags, pred_tags) in enumerate(zip(true_tag_seqs, pred_tag_seqs)):
        if len(true_tags) != len(pred_tags):
            raise ValueError(f"sequence {index}: {len(true_tags)} true tags but {len(pred_tags)} predicted")
        true_entities, pred_entities = set(entities(true_tags)), set(entities(pred_tags))
        n_true += len(true_entities)
        n_pred += len(pred_entities)
        n_correct += len(true_entities & pred_entities)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
