"""The task kinds: one entry per kind of fine-tuning, and everything that differs between kinds.

A task (data/tasks.py's TASKS: sst2, ner, squad, ...) names its kind; the kind says which head it trains,
how its files are read and encoded, how outputs are scored and written, which config.json fields the head
is saved with, and which Pipeline method serves it. finetune.py, pipelines.py and the CLI only look up
KINDS[kind]; a new kind is one entry here plus its functions.

    read(cfg, spec, path, labeled, training) -> examples
    encode(examples, tokenizer, cfg, max_len, label_list, training) -> (features, number truncated)
    score(task, examples, features, outputs, label_list, cfg) -> (metrics, predictions); no metrics unlabeled
    write(task, examples, predictions) -> the lines of `bertkit predict --task`'s output file (None: a kind
        that `predict --task` does not serve, refused before any input is read)
    config(label_list) -> config.json fields of the head (id2label, problem_type)
    run(model, features, tokenizer, cfg, progress) -> the outputs `score` reads, per feature
    collate(features, tokenizer, cfg, rng) -> a training batch, named as the model's forward() arguments;
        rng: a numpy Generator of (seed, step), for what a kind draws afresh each step (seq2seq's masking)
    setup(model, cfg) -> None: training settings of the loaded model
    save(out, model, tokenizer, cfg, train_features): extra files beside the model
    pipeline(pipe, records, options) -> one result dict per record, for `bertkit predict` without --task

The functions import what they use when called, so this table imports nothing heavy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bertkit.errors import BertkitError


def _run_logits(model, features, tokenizer, cfg, progress):
    from bertkit.inference import run_features

    return run_features(model, features, tokenizer.pad_token_id, cfg.eval_batch_size, cfg.precision,
                        progress=progress)


def _collate(features, tokenizer, cfg, rng):
    from bertkit.data.features import collate

    return collate(features, tokenizer.pad_token_id)


# seq2seq --target-masking -> the objective generation_config.json names, so `bertkit generate` knows the model:
#   shifted  UniLM's left-to-right loss: each position predicts the next target token (greedy, beam, sample)
#   uniform  a conditional masked LM: 1..m random target tokens masked and predicted (mask-predict)
#   unilm    UniLM's own: 70% of the target masked under the left-to-right mask; decoding reads each next token
#            off a [MASK] put after the tokens so far (greedy, beam, sample)
TARGET_MASKINGS = {"shifted": "unilm-shifted", "uniform": "cmlm", "unilm": "unilm-masked"}


def _collate_seq2seq(features, tokenizer, cfg, rng):
    from bertkit.data.features import collate_cmlm, collate_seq2seq, collate_unilm

    if cfg.target_masking == "uniform":
        return collate_cmlm(features, tokenizer.pad_token_id, tokenizer.mask_token_id, rng)
    if cfg.target_masking == "unilm":
        return collate_unilm(features, tokenizer.pad_token_id, tokenizer.mask_token_id, tokenizer.vocab_size, rng)
    return collate_seq2seq(features, tokenizer.pad_token_id)


def _nothing(*args) -> None:
    return None


@dataclass(frozen=True)
class Kind:
    head: str  # the model class (model.MODEL_CLASSES) fine-tuned and loaded for this kind
    read: Callable
    encode: Callable
    score: Callable
    write: Callable | None  # None: `bertkit predict --task` refuses this kind at once (seq2seq: `bertkit generate`)
    config: Callable[[list | None], dict]
    pipeline: str  # the Pipeline method that serves this head
    pipeline_fields: tuple[str, ...]  # what each JSON line of `bertkit predict` input must hold
    pipeline_call: Callable
    run: Callable = _run_logits
    collate: Callable = _collate
    setup: Callable = _nothing
    save: Callable = _nothing
    text_lines: bool = False  # `bertkit predict` also takes plain text, one input per line
    named_labels: bool = False  # labels are names: evaluation labels are checked against the model's
    max_seq_len: int = 128  # default --max-seq-len
    unit: str = "examples"  # what a feature is, in messages
    length_limits: str = "--max-seq-len"  # the options an encoder cuts an example to (the truncation note)


# ----------------------------------------------------------------------------------------------
# Readers


def _read_table(cfg, spec, path, labeled, training):
    return spec.read(path, text_column=cfg.text_column, text_pair_column=cfg.text_pair_column,
                     label_column=cfg.label_column, labeled=labeled, label_separator=cfg.label_separator)


def _read_sentences(cfg, spec, path, labeled, training):
    """GLUE tasks read their own file layout; classify/regress read a table with the column options."""
    if cfg.task in ("classify", "regress"):
        return _read_table(cfg, spec, path, labeled, training)
    return spec.read(path)


def _read_squad(cfg, spec, path, labeled, training):
    """Evaluation reads SQuAD as the official script does: every question kept."""
    from bertkit.data.tasks import read_squad

    return read_squad(path, version_2=cfg.task == "squad2", training=training, labeled=labeled)[0]


def _read_choices(cfg, spec, path, labeled, training):
    from bertkit.data.tasks import read_choices

    return read_choices(path, labeled=labeled)


def _read_conll(cfg, spec, path, labeled, training):
    from bertkit.data.tasks import read_conll

    return read_conll(path, labeled=labeled)


def _read_pairs(cfg, spec, path, labeled, training):
    from bertkit.data.tasks import read_pairs

    return read_pairs(path, labeled=labeled)


# ----------------------------------------------------------------------------------------------
# Encoders


def _encode_sentences(examples, tokenizer, cfg, max_len, label_list, training):
    from bertkit.data.features import encode_sentence_tasks

    return encode_sentence_tasks(examples, tokenizer, max_len, label_list)


def _encode_tagging(examples, tokenizer, cfg, max_len, label_list, training):
    from bertkit.data.features import encode_tagging

    return encode_tagging(examples, tokenizer, max_len, label_list, cfg.label_all_subtokens)


def _encode_squad(examples, tokenizer, cfg, max_len, label_list, training):
    from bertkit.data.features import encode_squad

    return encode_squad(examples, tokenizer, max_len, cfg.doc_stride, cfg.max_query_len, training=training), 0


def _encode_choices(examples, tokenizer, cfg, max_len, label_list, training):
    from bertkit.data.features import encode_choices

    return encode_choices(examples, tokenizer, max_len)


def _encode_seq2seq(examples, tokenizer, cfg, max_len, label_list, training):
    from bertkit.data.features import encode_seq2seq

    if max_len < cfg.max_target_len + 4:
        raise BertkitError(f"--max-seq-len {max_len} leaves no room for a source beside --max-target-len "
                           f"{cfg.max_target_len}", hint="raise --max-seq-len or lower --max-target-len")
    return encode_seq2seq(examples, tokenizer, max_len, cfg.max_target_len)


# ----------------------------------------------------------------------------------------------
# Scorers


def _score_classification(task, examples, features, outputs, label_list, cfg):
    from bertkit.eval import metrics

    preds = [int(np.argmax(o)) for o in outputs]
    if examples[0].label is None:
        return {}, [label_list[p] for p in preds]
    labels = [label_list.index(e.label) for e in examples]
    return metrics.glue_metrics(task, preds, labels), [label_list[p] for p in preds]


def _score_multi_label(task, examples, features, outputs, label_list, cfg):
    from bertkit.eval import metrics
    from bertkit.inference import labels_above

    predicted = [labels_above(o, label_list, cfg.threshold)[0] for o in outputs]
    if examples[0].label is None:
        return {}, predicted
    return metrics.multi_label_metrics([e.label for e in examples], predicted, label_list), predicted


def _score_regression(task, examples, features, outputs, label_list, cfg):
    from bertkit.eval import metrics

    preds = [float(o[0]) for o in outputs]
    labels = [e.label for e in examples]
    return (metrics.glue_metrics(task, preds, labels) if labels[0] is not None else {}), preds


def _score_tagging(task, examples, features, outputs, label_list, cfg):
    from bertkit.data.features import word_tags
    from bertkit.eval import metrics

    predicted = [word_tags(f, np.argmax(o[:len(f["input_ids"])], -1), label_list) for f, o in zip(features, outputs)]
    if examples[0].label is None:
        return {}, predicted
    return metrics.entity_f1([e.label for e in examples], predicted), predicted


def _score_span(task, examples, features, outputs, label_list, cfg):
    from bertkit.eval import squad

    starts = [o[0][:len(f["input_ids"])] for o, f in zip(outputs, features)]
    ends = [o[1][:len(f["input_ids"])] for o, f in zip(outputs, features)]
    spans, diffs = squad.postprocess(examples, features, starts, ends)  # the best non-null span of each
    if not any(e.answers or e.is_impossible for e in examples):  # unlabeled input: predictions only
        return {}, squad.apply_null_threshold(spans, diffs, cfg.null_threshold) if task == "squad2" else spans
    if task != "squad2":
        return squad.evaluate(examples, spans, version_2=False), spans
    answers = squad.apply_null_threshold(spans, diffs, cfg.null_threshold)
    result = squad.evaluate(examples, answers, version_2=True)
    if all(e.answers or e.is_impossible for e in examples):  # labeled: tune the threshold on these answers
        threshold, best = squad.best_null_threshold(diffs, spans, examples)
        result.update(best_null_threshold=threshold, best_f1=best)
    return result, answers


def _score_choice(task, examples, features, outputs, label_list, cfg):
    from bertkit.eval import metrics

    preds = [int(np.argmax(o)) for o in outputs]
    labels = [e.label for e in examples]
    return ({"accuracy": metrics.accuracy(preds, labels)} if labels[0] is not None else {}), preds


def _run_seq2seq(model, features, tokenizer, cfg, progress):
    """Per feature (tokens right, tokens, summed negative log-likelihood) of its target, teacher-forced; with
    --target-masking uniform or unilm, of its masked target tokens, masked with a fixed seed so epochs compare."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from bertkit.device import resolve_precision, to_device
    from bertkit.inference import feature_length, length_grouped_batches
    from bertkit.model import IGNORE_INDEX

    model.eval()
    device = next(model.parameters()).device
    autocast = resolve_precision(cfg.precision, device).autocast(device)
    out: list = [None] * len(features)
    batches = list(length_grouped_batches([feature_length(f) for f in features], cfg.eval_batch_size))
    rng = np.random.default_rng(0)
    for indices in tqdm(batches, desc=progress, unit="batch", disable=progress is None, dynamic_ncols=True):
        batch = to_device(_collate_seq2seq([features[i] for i in indices], tokenizer, cfg, rng), device)
        with torch.no_grad(), autocast:
            result = model(**batch)
        logits, targets = result.mlm_logits.float(), result.mlm_targets  # (N, V), (N,) in row order
        nll = F.cross_entropy(logits, targets, reduction="none")
        right = logits.argmax(-1) == targets
        counts = (batch["labels"] != IGNORE_INDEX).sum(1).tolist()
        for i, r, n, c in zip(indices, right.split(counts), nll.split(counts), counts):
            out[i] = (int(r.sum()), c, float(n.sum()))
    return out


def _score_seq2seq(task, examples, features, outputs, label_list, cfg):
    import math

    if examples[0].target is None:
        return {}, [None] * len(examples)
    right, tokens, nll = (sum(o[k] for o in outputs) for k in range(3))
    return {"token_accuracy": right / tokens, "perplexity": math.exp(nll / tokens)}, [None] * len(examples)


def _seq2seq_setup(model, cfg):
    model.label_smoothing = cfg.label_smoothing


LENGTH_CANDIDATES = 5  # mask-predict's default target lengths: this many of the most frequent in training


def _seq2seq_save(out, model, tokenizer, cfg, train_features):
    """generation_config.json, as transformers reads it, plus the settings `bertkit generate` needs: the
    objective, and the target lengths mask-predict tries by default (the most frequent of the training
    targets, in tokens without the final [SEP], most frequent first)."""
    import os
    from collections import Counter

    from bertkit.files import atomic_write_json

    lengths = Counter(sum(f["token_type_ids"]) - 1 for f in train_features)
    candidates = sorted(lengths, key=lambda n: (-lengths[n], n))[:LENGTH_CANDIDATES]

    atomic_write_json(os.path.join(out, "generation_config.json"), {
        "max_new_tokens": cfg.max_target_len, "num_beams": 1, "do_sample": False,
        "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id,
        "bertkit": {"objective": TARGET_MASKINGS[cfg.target_masking],
                    "max_seq_len": cfg.max_seq_len or KINDS["seq2seq"].max_seq_len,
                    "max_target_len": cfg.max_target_len, "length_candidates": candidates}})


def _call_generate(pipe, records, options):
    return pipe.generate([r["source"] for r in records])


# ----------------------------------------------------------------------------------------------
# Prediction writers (`bertkit predict --task`)

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def _write_sentences(task, examples, predictions):
    """GLUE tasks as the benchmark's submission TSV, others as JSONL."""
    if task in GLUE_TASKS:
        return ["index\tprediction"] + [f"{i}\t{p}" for i, p in enumerate(predictions)]
    return [json.dumps({"prediction": p}, ensure_ascii=False) for p in predictions]


def _write_tags(task, examples, predictions):
    return [json.dumps({"words": e.words, "tags": tags}, ensure_ascii=False) for e, tags in zip(examples, predictions)]


def _write_answers(task, examples, predictions):
    return [json.dumps({"id": e.id, "answer": predictions.get(e.id, "")}, ensure_ascii=False) for e in examples]


# ----------------------------------------------------------------------------------------------
# config.json fields of the head


def _named_labels(label_list):
    return {"id2label": dict(enumerate(label_list))}


# config.json's problem_type: the loss a sentence-level kind trains with, so transformers computes it too
PROBLEM_TYPES = {"classification": "single_label_classification", "multi_label": "multi_label_classification",
                 "regression": "regression"}


# ----------------------------------------------------------------------------------------------
# Pipeline calls (`bertkit predict` without --task): records of the input file -> results


def _call_classify(pipe, records, options):
    import sys

    from bertkit.data.tasks import reads_pairs

    pairs = [r.get("text_pair") for r in records]
    has_pairs = any(p is not None for p in pairs)
    if has_pairs and not all(p is not None for p in pairs):
        raise BertkitError(f"{options['input']}: some records have a text_pair and some do not",
                           hint="predict single texts and pairs in separate files")
    trained = pipe.settings.get("task")
    if not has_pairs and reads_pairs(trained, pipe.settings.get("text_pair_column")):
        print(f"warning: {options['model']} was fine-tuned on text pairs ({trained}), but {options['input']} gives "
              "single texts: its predictions will be poor; give each record a \"text_pair\" (JSON Lines)",
              file=sys.stderr)
    return pipe.classify([r["text"] for r in records], pairs if has_pairs else None, options.get("threshold"))


def _call_tag(pipe, records, options):
    return pipe.tag([r["text"] for r in records])


def _call_answer(pipe, records, options):
    return pipe.answer([(r["question"], r["context"]) for r in records])


def _call_choose(pipe, records, options):
    return pipe.choose([(r["context"], r["endings"]) for r in records])


# ----------------------------------------------------------------------------------------------
# The table

_SENTENCE = dict(head="BertForSequenceClassification", read=_read_sentences, encode=_encode_sentences,
                 write=_write_sentences, pipeline="classify", pipeline_fields=("text",), pipeline_call=_call_classify,
                 text_lines=True)

KINDS: dict[str, Kind] = {
    "classification": Kind(**_SENTENCE, score=_score_classification, named_labels=True, config=lambda labels: {
        **_named_labels(labels), "problem_type": PROBLEM_TYPES["classification"]}),
    "multi_label": Kind(**_SENTENCE, score=_score_multi_label, named_labels=True,
                        config=lambda labels: {**_named_labels(labels), "problem_type": PROBLEM_TYPES["multi_label"]}),
    "regression": Kind(**_SENTENCE, score=_score_regression,
                       config=lambda labels: {"id2label": {0: "score"}, "problem_type": PROBLEM_TYPES["regression"]}),
    "tagging": Kind(head="BertForTokenClassification", read=_read_conll, encode=_encode_tagging, score=_score_tagging,
                    write=_write_tags, config=_named_labels, pipeline="tag", pipeline_fields=("text",),
                    pipeline_call=_call_tag, text_lines=True, named_labels=True),
    "span": Kind(head="BertForQuestionAnswering", read=_read_squad, encode=_encode_squad, score=_score_span,
                 write=_write_answers, config=lambda labels: {}, pipeline="answer",
                 pipeline_fields=("question", "context"), pipeline_call=_call_answer, max_seq_len=384,
                 unit="features (question windows)"),
    "choice": Kind(head="BertForMultipleChoice", read=_read_choices, encode=_encode_choices, score=_score_choice,
                   write=_write_sentences, config=lambda labels: {}, pipeline="choose",
                   pipeline_fields=("context", "endings"), pipeline_call=_call_choose),
    "seq2seq": Kind(head="BertForMaskedLM", read=_read_pairs, encode=_encode_seq2seq, score=_score_seq2seq,
                    write=None, config=lambda labels: {}, pipeline="generate", pipeline_fields=("source",),
                    pipeline_call=_call_generate, run=_run_seq2seq, setup=_seq2seq_setup, save=_seq2seq_save,
                    text_lines=True, collate=_collate_seq2seq,
                    length_limits="--max-target-len (the target) or --max-seq-len (source and target)"),
}

# The Pipeline method of each task head, and what its input records hold: read off KINDS.
PIPELINE_OF_HEAD = {kind.head: kind.pipeline for kind in KINDS.values()}
PIPELINES = {kind.pipeline: kind for kind in KINDS.values()}  # pipeline name -> a kind it serves
