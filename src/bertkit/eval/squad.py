"""SQuAD: the official evaluation (v1.1 and v2.0), and turning start/end logits into answer texts.

`evaluate` reproduces the official scripts' numbers: answers are normalised (lowercased,
punctuation and the articles a/an/the removed, whitespace collapsed), a prediction scores its
best exact match and token-overlap F1 over the reference answers, and results are percentages.
Version 2.0 adds unanswerable questions: predicting "" scores 1 on them, anything else 0.

`postprocess` picks each question's best span over all its windows (features); for 2.0 it
compares that span's score with the "no answer" score at [CLS] (Devlin et al., 2018, section 4.3).
`best_null_threshold` tunes the margin between the two on a dev set, as the official 2.0 script does.

Left out on purpose: the official 2.0 script's precision-recall curves and its na_prob file format.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import string
from collections.abc import Sequence

from bertkit.data.tasks import QAExample

log = logging.getLogger(__name__)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1(prediction: str, reference: str, version_2: bool = False) -> float:
    """Token-overlap F1 of the normalised texts.

    When either side normalises to nothing, v1.1 scores 0 and v2.0 scores 1 if both are empty.
    """
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    if version_2 and (not pred_tokens or not ref_tokens):
        return float(pred_tokens == ref_tokens)
    common = sum((collections.Counter(pred_tokens) & collections.Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _references(dataset) -> tuple[list[tuple[str, list[str], bool]], bool]:
    """(id, reference texts, is_impossible) per question, and whether the data is SQuAD 2.0.

    `dataset` is the official JSON (a dict with "data", or its "data" list) or QAExamples.
    """
    if isinstance(dataset, dict):
        dataset = dataset["data"]
    questions, version_2 = [], False
    for item in dataset:
        if isinstance(item, QAExample):
            questions.append((item.id, [text for text, _ in item.answers], item.is_impossible))
            version_2 |= item.is_impossible
            continue
        for paragraph in item["paragraphs"]:
            for qa in paragraph["qas"]:
                version_2 |= "is_impossible" in qa
                questions.append((qa["id"], [a["text"] for a in qa["answers"]], bool(qa.get("is_impossible"))))
    return questions, version_2


def _scores(questions, predictions: dict[str, str], version_2: bool) -> tuple[dict, dict]:
    """Exact match and F1 (0..1) per question id; a question without a prediction scores 0."""
    exact, overlap = {}, {}
    missing = 0
    for qid, references, _ in questions:
        if qid not in predictions:
            missing += 1
            exact[qid] = overlap[qid] = 0.0
            continue
        if version_2:
            # The 2.0 script drops references that normalise to nothing; none left means "no answer".
            references = [r for r in references if normalize_answer(r)] or [""]
        prediction = predictions[qid]
        exact[qid] = max(exact_match(prediction, r) for r in references)
        overlap[qid] = max(f1(prediction, r, version_2) for r in references)
    if missing:
        log.warning("%d of %d questions have no prediction and score 0", missing, len(questions))
    return exact, overlap


def evaluate(dataset, predictions: dict[str, str], version_2: bool | None = None) -> dict[str, float]:
    """Exact match and F1 in percent, as the official script; for 2.0 also per HasAns / NoAns subset.

    version_2=None decides from the data: any question with an is_impossible field makes it 2.0.
    """
    questions, found_version_2 = _references(dataset)
    version_2 = found_version_2 if version_2 is None else version_2
    exact, overlap = _scores(questions, predictions, version_2)

    def mean(scores: dict, ids: list[str]) -> float:
        return 100.0 * sum(scores[qid] for qid in ids) / len(ids) if ids else 0.0

    all_ids = [qid for qid, _, _ in questions]
    result = {"exact_match": mean(exact, all_ids), "f1": mean(overlap, all_ids)}
    if version_2:
        result["total"] = len(all_ids)
        for name, impossible in (("HasAns", False), ("NoAns", True)):
            ids = [qid for qid, _, is_impossible in questions if is_impossible == impossible]
            result.update({f"{name}_exact": mean(exact, ids), f"{name}_f1": mean(overlap, ids),
                           f"{name}_total": len(ids)})
    return result


# ----------------------------------------------------------------------------------------------
# Logits -> answers


def _floats(row) -> list[float]:
    """A logit row (tensor, array or list) as Python floats, converted in one call where possible."""
    return row.tolist() if hasattr(row, "tolist") else [float(x) for x in row]


def _top(logits: Sequence[float], n: int) -> list[int]:
    return sorted(range(len(logits)), key=lambda i: logits[i], reverse=True)[:n]


def best_spans(examples: Sequence[QAExample], features: Sequence[dict],
               start_logits: Sequence[Sequence[float]], end_logits: Sequence[Sequence[float]],
               n_best: int = 20, max_answer_len: int = 30) -> list[dict]:
    """The best answer span of each example over all its features (features as made by encode_squad).

    For each feature, the n_best highest start and end positions are paired; pairs outside the
    context, ending before they start or longer than max_answer_len tokens are skipped; the best
    start + end logit wins. Returns per example: `text` = context[start:end], `start`/`end`
    (characters; None when no span was possible), `score` (start + end logit), `null_score`
    (start + end logit at [CLS], the lowest over the example's features), and `feature`,
    `start_token`, `end_token` of the winner. Logit rows may be padded past a feature's length:
    padding is never chosen.
    """
    features_of = collections.defaultdict(list)
    for feature_index, feature in enumerate(features):
        features_of[feature["example_index"]].append(feature_index)
    results = []
    for example_index, example in enumerate(examples):
        best = {"text": "", "start": None, "end": None, "score": -math.inf, "null_score": math.inf,
                "feature": None, "start_token": None, "end_token": None}
        for feature_index in features_of[example_index]:
            offsets = features[feature_index]["offsets"]
            starts = _floats(start_logits[feature_index])[:len(offsets)]
            ends = _floats(end_logits[feature_index])[:len(offsets)]
            best["null_score"] = min(best["null_score"], starts[0] + ends[0])
            for start in _top(starts, n_best):
                for end in _top(ends, n_best):
                    if offsets[start] is None or offsets[end] is None:
                        continue  # in the question, or a special token
                    if end < start or end - start + 1 > max_answer_len:
                        continue
                    if starts[start] + ends[end] > best["score"]:
                        first, last = offsets[start][0], offsets[end][1]
                        best.update(text=example.context[first:last], start=first, end=last,
                                    score=starts[start] + ends[end], feature=feature_index,
                                    start_token=start, end_token=end)
        results.append(best)
    return results


def postprocess(examples: Sequence[QAExample], features: Sequence[dict],
                start_logits: Sequence[Sequence[float]], end_logits: Sequence[Sequence[float]],
                n_best: int = 20, max_answer_len: int = 30, null_threshold: float = 0.0,
                version_2: bool = False) -> tuple[dict[str, str], dict[str, float]]:
    """Answer texts per question id, and per id the null score minus the best span's score (best_spans).

    With version_2 an answer becomes "" when that difference exceeds null_threshold.
    """
    predictions, null_score_diffs = {}, {}
    for example, best in zip(examples, best_spans(examples, features, start_logits, end_logits, n_best,
                                                  max_answer_len)):
        null_score_diffs[example.id] = best["null_score"] - best["score"]  # inf when no span was possible
        no_answer = version_2 and null_score_diffs[example.id] > null_threshold
        predictions[example.id] = "" if no_answer else best["text"]
    return predictions, null_score_diffs


def apply_null_threshold(answers: dict[str, str], null_score_diffs: dict[str, float],
                         threshold: float) -> dict[str, str]:
    """Answer "" where the null score beats the best span's by more than `threshold`."""
    return {qid: "" if null_score_diffs[qid] > threshold else text for qid, text in answers.items()}


def best_null_threshold(null_score_diffs: dict[str, float], answers: dict[str, str], dataset,
                        metric: str = "f1") -> tuple[float, float]:
    """The threshold that maximises `metric` ("exact_match" or "f1") on a SQuAD 2.0 dev set.

    `answers` are the best non-null spans: postprocess(..., version_2=False) gives them, with
    the same null_score_diffs. Returns (threshold, the score it reaches in percent); answer the
    test set with apply_null_threshold. As the official 2.0 script's find_best_thresh: start with
    every question answered "", then, in order of rising difference, answer each one with its span.
    """
    questions, _ = _references(dataset)
    questions = [q for q in questions if q[0] in null_score_diffs]
    exact, overlap = _scores(questions, answers, version_2=True)
    span_scores = exact if metric == "exact_match" else overlap
    has_answer = {qid: not is_impossible for qid, _, is_impossible in questions}

    score = best_score = sum(1 for answerable in has_answer.values() if not answerable)
    best_threshold = 0.0
    for qid in sorted(has_answer, key=lambda q: null_score_diffs[q]):
        if has_answer[qid]:
            score += span_scores[qid]
        elif answers[qid]:
            score -= 1  # an unanswerable question loses its point once given a span
        if score > best_score:
            best_score, best_threshold = score, null_score_diffs[qid]
    return best_threshold, 100.0 * best_score / max(len(questions), 1)
