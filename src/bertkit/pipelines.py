"""Task pipelines: a fine-tuned directory in, predictions for a list of inputs out, batched by length.

    from bertkit.pipelines import Pipeline
    pipe = Pipeline.from_pretrained("runs/sst2")                # the head comes from config.json
    pipe.classify(["a gripping film", "flat and dull"])         # label, score, probabilities
    pipe.classify(["tax cuts for football clubs"])              # a multi-label model: labels, probabilities
    pipe.classify(["A man plays."], pairs=["Someone plays."])   # sentence pairs
    pipe.tag(["Angela Merkel visited Paris."])                  # entities with character spans
    pipe.answer([("Where?", "She lives in Paris.")])            # answer text, character span, score
    pipe.choose([("She opened the door", ["and left.", "and ate the door."])])
    pipe.generate(["a paragraph to ask about"], method="beam", beams=4)  # a seq2seq model (finetune --task seq2seq)
    pipe(inputs)                                                # whichever the head does

Long inputs: `classify`, `tag` and `choose` truncate to the model's length (the fine-tuned max_seq_len
when the directory has one) and log a warning with the count; `answer` windows the context
(doc_stride apart), so no part of it is left out.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from bertkit.errors import BertkitError
from bertkit.kinds import PIPELINE_OF_HEAD

log = logging.getLogger("bertkit")



def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _warn_truncated(count: int, total: int, max_len: int) -> None:
    if count:
        log.warning(f"note: {count} of {total} inputs were longer than {max_len} tokens and were truncated")


class Pipeline:
    def __init__(self, model, tokenizer, settings: dict | None = None, precision: str = "auto",
                 batch_size: int = 64, show_progress: bool = False):
        from bertkit.device import resolve_precision

        # checked now; said at the first batch the model runs (after the inputs are checked)
        resolve_precision(precision, next(model.parameters()).device, announce=False)
        self.model, self.tokenizer, self.settings = model.eval(), tokenizer, settings or {}
        self.precision, self.batch_size, self.show_progress = precision, batch_size, show_progress
        self.name = "the model"  # in messages: from_pretrained names its directory
        self.task = PIPELINE_OF_HEAD.get(type(model).__name__)
        positions = model.config.max_position_embeddings
        self.max_len = min(self.settings.get("max_seq_len") or positions, positions)

    @classmethod
    def from_pretrained(cls, directory: str, device: str | torch.device | None = None, precision: str = "auto",
                        batch_size: int = 64, show_progress: bool = False, generation: bool = False) -> Pipeline:
        """A fine-tuned directory (any HuggingFace BERT with a task head, or one written by `bertkit finetune`);
        generation: any model with an MLM head (BertForPreTraining too), to `generate` with."""
        from bertkit.checkpoint import load_model
        from bertkit.tokenizer import Tokenizer
        from bertkit.device import default_device
        from bertkit.train.finetune import read_task_settings

        model = load_model(directory)
        if generation and not hasattr(model, "mlm"):
            raise BertkitError(f"{directory}: a {type(model).__name__} has no MLM head to generate with",
                               hint="pass a directory written by bertkit finetune --task seq2seq (a BertForMaskedLM)")
        if not generation and type(model).__name__ not in PIPELINE_OF_HEAD:
            raise BertkitError(f"{directory}: a {type(model).__name__} has no task head",
                               hint="pass a fine-tuned directory (bertkit finetune --out), e.g. one with "
                                    "BertForSequenceClassification in config.json's architectures")
        settings = read_task_settings(directory)
        generation = os.path.join(directory, "generation_config.json")
        if os.path.isfile(generation):
            from bertkit.files import read_text

            try:
                settings["generation"] = json.loads(read_text(generation))
            except ValueError as e:
                raise BertkitError(f"{generation}: invalid JSON ({e})", hint="fix the file, or delete it") from None
        model.to(device or default_device())
        pipe = cls(model, Tokenizer.from_pretrained(directory), settings, precision, batch_size, show_progress)
        pipe.name = str(directory)
        return pipe

    def __call__(self, inputs: Sequence, **kwargs) -> list[dict]:
        if self.task is None:
            raise BertkitError(f"a {type(self.model).__name__} has no task head", hint="use a fine-tuned model")
        return getattr(self, self.task)(inputs, **kwargs)

    def _run(self, features: list[dict]) -> list:
        from bertkit.inference import run_features

        return run_features(self.model, features, self.tokenizer.pad_token_id, self.batch_size, self.precision,
                            progress=self.task if self.show_progress else None)

    def _require(self, task: str) -> None:
        if self.task != task:
            raise BertkitError(f"this model's head ({type(self.model).__name__}) does {self.task or 'no task'}, "
                               f"not {task}", hint=f"use a model fine-tuned for {task}")

    # ------------------------------------------------------------------------------------------

    def classify(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                 threshold: float | None = None) -> list[dict]:
        """Per text (or pair), by the model's problem_type: `label`, its probability `score`, and every
        label's `probabilities` (softmax over the labels); multi-label: `labels`, every label whose own
        probability (sigmoid) is above `threshold` (default: the fine-tuned one, else 0.5), most probable
        first, and every label's `probabilities`; regression: `score` (several outputs: `scores` by name)."""
        from bertkit.data.features import encode_sentence_tasks
        from bertkit.data.tasks import Example
        from bertkit.inference import labels_above

        self._require("classify")
        if threshold is None:
            threshold = self.settings.get("threshold", 0.5)
        if not 0 < threshold < 1:
            raise BertkitError(f"threshold {threshold}: must be between 0 and 1 (exclusive)", hint="e.g. 0.5")
        if pairs is not None and len(pairs) != len(texts):
            raise BertkitError(f"{len(texts)} texts but {len(pairs)} pairs", hint="give one pair per text")
        examples = [Example(text, None if pairs is None else pairs[i]) for i, text in enumerate(texts)]
        features, cut = encode_sentence_tasks(examples, self.tokenizer, self.max_len, None)
        _warn_truncated(cut, len(texts), self.max_len)
        id2label = self.model.config.id2label or {0: "0", 1: "1"}
        names = [id2label[i] for i in range(len(id2label))]
        problem_type = self.model.config.problem_type
        results = []
        for row in self._run(features):
            if len(row) == 1 and problem_type != "multi_label_classification":
                results.append({"score": float(row[0])})
                continue
            if problem_type == "regression":
                results.append({"scores": {name: float(x) for name, x in zip(names, row)}})
                continue
            if problem_type == "multi_label_classification":
                labels, probs = labels_above(row, names, threshold)
                results.append({"labels": labels, "probabilities": {n: float(p) for n, p in zip(names, probs)}})
                continue
            probs = _softmax(row)
            best = int(probs.argmax())
            results.append({"label": id2label[best], "score": float(probs[best]),
                            "probabilities": {id2label[i]: float(p) for i, p in enumerate(probs)}})
        return results

    def tag(self, texts: Sequence[str]) -> list[dict]:
        """Per text: `entities` (type, text, start, end characters, score) and the `words` with their
        `tags`. A word takes the tag of its first piece; B-/I- (and S-/E-) runs of one type make an entity."""
        self._require("tag")
        encoded = self.tokenizer(list(texts), truncation=False, padding=False, return_offsets=True,
                                 return_tensors=None)
        features, cut = [], 0
        for ids in encoded["input_ids"]:
            if len(ids) > self.max_len:
                cut += 1
                ids = ids[:self.max_len - 1] + [self.tokenizer.sep_token_id]
            features.append({"input_ids": ids, "token_type_ids": [0] * len(ids)})
        _warn_truncated(cut, len(texts), self.max_len)
        id2label = self.model.config.id2label
        results = []
        for text, feature, offsets, word_ids, row in zip(texts, features, encoded["offset_mapping"],
                                                         encoded["word_ids"], self._run(features)):
            probs = _softmax(row[:len(feature["input_ids"]) - 1])  # all but the final [SEP]
            words: dict[int, dict] = {}
            for position in range(1, len(probs)):
                word = word_ids[position]
                start, end = offsets[position]
                if word not in words:  # the word's first piece carries its tag
                    best = int(probs[position].argmax())
                    words[word] = {"start": start, "end": end, "tag": id2label[best],
                                   "score": float(probs[position, best])}
                else:
                    words[word]["end"] = end
            ordered = [words[w] for w in sorted(words)]
            results.append({"entities": _entities(text, ordered), "words": [text[w["start"]:w["end"]] for w in ordered],
                            "tags": [w["tag"] for w in ordered]})
        return results

    def answer(self, questions: Sequence[tuple[str, str]], n_best: int = 20, max_answer_len: int = 30) -> list[dict]:
        """Per (question, context): `answer` text, its `start`/`end` characters in the context, and `score`
        (the start probability times the end probability, in the window it was found in)."""
        from bertkit.data.features import encode_squad
        from bertkit.data.tasks import QAExample
        from bertkit.eval.squad import best_spans

        self._require("answer")
        examples = [QAExample(id=str(i), question=q, context=c) for i, (q, c) in enumerate(questions)]
        max_len = min(self.settings.get("max_seq_len") or 384, self.model.config.max_position_embeddings)
        features = encode_squad(examples, self.tokenizer, max_len, self.settings.get("doc_stride") or 128,
                                self.settings.get("max_query_len") or 64, training=False)
        outputs = self._run(features)
        starts, ends = [o[0] for o in outputs], [o[1] for o in outputs]
        results = []
        for best in best_spans(examples, features, starts, ends, n_best, max_answer_len):
            if best["feature"] is None:
                results.append({"answer": "", "start": None, "end": None, "score": 0.0})
                continue
            length = len(features[best["feature"]]["input_ids"])
            p_start = _softmax(starts[best["feature"]][:length])[best["start_token"]]
            p_end = _softmax(ends[best["feature"]][:length])[best["end_token"]]
            results.append({"answer": best["text"], "start": best["start"], "end": best["end"],
                            "score": float(p_start * p_end)})
        return results

    def choose(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[dict]:
        """Per (context, endings): the chosen ending's index `choice` and every ending's `probabilities`."""
        from bertkit.data.features import encode_choices
        from bertkit.data.tasks import ChoiceExample

        self._require("choose")
        examples = [ChoiceExample(context, list(endings)) for context, endings in items]
        features, cut = encode_choices(examples, self.tokenizer, self.max_len)
        _warn_truncated(cut, len(items), self.max_len)
        results: list = [None] * len(items)
        for n_endings in sorted({len(e.endings) for e in examples}):  # a batch holds items of one size
            chosen = [i for i, e in enumerate(examples) if len(e.endings) == n_endings]
            for i, row in zip(chosen, self._run([features[i] for i in chosen])):
                probs = _softmax(row)
                results[i] = {"choice": int(probs.argmax()), "probabilities": [float(p) for p in probs]}
        return results

    def generate(self, sources: Sequence[str], prompts: Sequence[str] | None = None, **options) -> list[dict]:
        """Per source text: the `generated` text and its `score` (summed log-probability; mask-predict: the
        mean); with beam search or num_return > 1, also the `n_best` ({text, score}, best first). Options: those
        of generate.GenerateConfig (method greedy|beam|sample|gibbs|mask-predict, beams, length_penalty,
        max_new_tokens, top_k, top_p, temperature, num_return, seed, sweeps, iterations, lengths, no_repeat_ngram);
        max_new_tokens and mask-predict's lengths default to the model's generation_config.json, whose
        objective decides which methods the model may use. prompts (gibbs): per source, the text its target
        starts with (held fixed as tokenized, so an uncased model lowercases it; "" for none), followed by
        max_new_tokens sampled tokens, the first a whole word (never a "##" piece)."""
        from bertkit.device import resolve_precision
        from bertkit.generate import GenerateConfig, check_objective, generate

        if not hasattr(self.model, "mlm"):
            raise BertkitError(f"a {type(self.model).__name__} has no MLM head to generate with",
                               hint="use a model fine-tuned with bertkit finetune --task seq2seq")
        saved = self.settings.get("generation", {})
        trained = saved.get("bertkit", {})
        if options.get("max_new_tokens") is None:
            options["max_new_tokens"] = saved.get("max_new_tokens") or 48
        if options.get("method") == "mask-predict" and options.get("lengths") is None:
            options["lengths"] = tuple(trained.get("length_candidates") or ()) or None
        cfg = GenerateConfig(**{k: v for k, v in options.items() if v is not None})
        cfg.check()
        check_objective(cfg.method, trained.get("objective"), self.name)
        if cfg.method == "mask-predict" and not cfg.lengths:
            raise BertkitError("mask-predict: the model's generation_config.json names no length candidates",
                               hint="pass --length-candidates, e.g. 4,6,8")
        for i, source in enumerate(sources):
            if not isinstance(source, str) or not source.strip():
                raise BertkitError(f"source {i + 1} is empty", hint="give every source some text to generate from")
        prompt_ids = None
        if prompts is not None:  # (generate_ids refuses a prompt with any method but gibbs)
            if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
                raise BertkitError("prompts must be a list of texts, one a source", hint='e.g. prompts=["the", ""]')
            if len(prompts) != len(sources):
                raise BertkitError(f"{len(prompts)} prompts for {len(sources)} sources",
                                   hint="give one prompt a source (\"\" for none)")
            prompt_ids = self.tokenizer.encode_batch(list(prompts))
        positions = self.model.config.max_position_embeddings
        limit = min(trained.get("max_seq_len") or positions, positions)
        if cfg.method == "mask-predict":
            new_tokens, option = max(cfg.lengths), f"--length-candidates {max(cfg.lengths)}"
        else:
            new_tokens, option = cfg.max_new_tokens, f"--max-new-tokens {cfg.max_new_tokens}"
        if prompt_ids and (longest := max(len(p) for p in prompt_ids)):
            new_tokens, option = new_tokens + longest, f"{option} after a prompt of {longest} tokens"
        max_source_len = limit - new_tokens - 1  # (gibbs and mask-predict hold a final [SEP] too)
        if max_source_len < 3:
            raise BertkitError(f"{option} leaves no room for a source in the model's {limit} positions",
                               hint=f"use {max(1, limit - 16)} tokens or fewer in all")
        device = next(self.model.parameters()).device
        with resolve_precision(self.precision, device, announce=False).autocast(device):  # as the other pipelines
            results, cut = generate(self.model, self.tokenizer, list(sources), cfg, max_source_len, self.batch_size,
                                    trained.get("objective"), prompt_ids)
        _warn_truncated(cut, len(sources), max_source_len)
        out = []
        for hypotheses in results:
            row = {"generated": hypotheses[0]["text"], "score": hypotheses[0]["score"]}
            if cfg.method == "beam" or cfg.num_return > 1:
                row["n_best"] = [{"text": h["text"], "score": h["score"]} for h in hypotheses]
            out.append(row)
        return out


def _entities(text: str, words: list[dict]) -> list[dict]:
    """Entities from tagged words (each with start, end, tag, score): IOB2, IOB1, IOBES/BILOU or bare types."""
    entities: list[dict] = []
    current: dict | None = None

    def close():
        nonlocal current
        if current is not None:
            scores = current.pop("scores")
            current.update(text=text[current["start"]:current["end"]], score=sum(scores) / len(scores))
            entities.append(current)
            current = None

    for word in words:
        tag = word["tag"]
        if tag == "O":
            close()
            continue
        prefix, _, kind = tag.partition("-") if "-" in tag else ("I", "", tag)
        prefix = {"L": "E", "U": "S"}.get(prefix, prefix)  # BILOU -> IOBES
        if prefix in ("B", "S") or current is None or current["type"] != kind:
            close()
            current = {"type": kind, "start": word["start"], "end": word["end"], "scores": [word["score"]]}
        else:
            current["end"] = word["end"]
            current["scores"].append(word["score"])
        if prefix in ("S", "E"):
            close()
    close()
    return entities
