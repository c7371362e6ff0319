"""Examples -> model inputs: token ids, token types and labels, one unpadded dict per feature.

    sentence tasks  {"input_ids", "token_type_ids", "label"}          label: class index, float score, or
                                                                      multi-hot floats (multi-label)
    tagging         {"input_ids", "token_type_ids", "labels", "word_ids", "n_words"}
                    labels: per token, the word's tag id on its first piece, IGNORE_INDEX elsewhere
    SQuAD           {"input_ids", "token_type_ids", "offsets", "example_index", "start_position", "end_position"}
    multiple choice {"input_ids", "token_type_ids", "label"}          ids: one list per ending (C, L)
    seq2seq         {"input_ids", "token_type_ids", "labels"}         `[CLS] source [SEP] target [SEP]`, segments
                    0 / 1; labels: at each position the next target token (IGNORE_INDEX where none follows)
                    (collate_cmlm masks the target afresh at each batch instead, for mask-predict)

Unlabeled examples give features without "label"/"labels"/positions. `collate` pads a batch of
any of these into tensors named as the model's forward() arguments. Encoders that truncate
return how many examples they cut, so the caller can say so.

Left out on purpose: Google's "max context" rule for SQuAD windows (a token is scored only in the
window where it has the most context around it): taking the best span over all windows, as
HuggingFace's run_qa does, scores the same on SQuAD and needs no extra bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bertkit.data.tasks import ChoiceExample, Example, PairExample, QAExample, check_labels
from bertkit.model import IGNORE_INDEX
from bertkit.tokenizer import Tokenizer


def _encode_texts(tokenizer: Tokenizer, texts_a: list[str], texts_b: list[str] | None,
                  max_len: int) -> tuple[list[list[int]], list[list[int]], list[bool]]:
    """input_ids and token_type_ids of `[CLS] a [SEP] (b [SEP])`, at most max_len long, and which were cut.

    Tokenizes once in full and again, with the tokenizer's longest-first truncation, only the
    ones that are too long: so truncation matches what inference does with the same tokenizer.
    """
    if not texts_a:
        return [], [], []
    options = {"padding": False, "return_tensors": None}
    full = tokenizer(texts_a, texts_b, truncation=False, **options)
    input_ids, token_type_ids = full["input_ids"], full["token_type_ids"]
    cut = [len(ids) > max_len for ids in input_ids]
    long = [i for i, is_cut in enumerate(cut) if is_cut]
    if long:
        short = tokenizer([texts_a[i] for i in long], None if texts_b is None else [texts_b[i] for i in long],
                          max_length=max_len, truncation=True, **options)
        for k, i in enumerate(long):
            input_ids[i], token_type_ids[i] = short["input_ids"][k], short["token_type_ids"][k]
    return input_ids, token_type_ids, cut


def _check_max_len(max_len: int) -> None:
    if max_len < 4:
        raise ValueError(f"max_len={max_len} leaves no room for text between [CLS] and the [SEP]s")


def encode_sentence_tasks(examples: Sequence[Example], tokenizer: Tokenizer, max_len: int,
                          label_list: Sequence[str] | None) -> tuple[list[dict], int]:
    """Features of sentence (pair) examples; label_list=None means regression (float labels).

    An example labeled with a list of class names (multi-label) gets a multi-hot label: one float per
    entry of label_list, 1.0 where the example has that label, as BCE-with-logits takes it.

    Returns the features, in example order, and the number of examples truncated to max_len.
    """
    _check_max_len(max_len)
    if label_list is not None:
        check_labels(examples, label_list)
        label_index = {label: i for i, label in enumerate(label_list)}
    features: list[dict] = [{} for _ in examples]
    n_truncated = 0
    # Singles and pairs are tokenized as two batches: the tokenizer takes all pairs or none.
    for with_pair in (False, True):
        chosen = [i for i, e in enumerate(examples) if (e.text_b is not None) == with_pair]
        texts_b = [examples[i].text_b for i in chosen] if with_pair else None
        input_ids, token_type_ids, cut = _encode_texts(
            tokenizer, [examples[i].text_a for i in chosen], texts_b, max_len)
        n_truncated += sum(cut)
        for i, ids, types in zip(chosen, input_ids, token_type_ids):
            features[i] = {"input_ids": ids, "token_type_ids": types}
            label = examples[i].label
            if isinstance(label, list):
                features[i]["label"] = [float(name in label) for name in label_list]
            elif label is not None:
                features[i]["label"] = float(label) if label_list is None else label_index[label]
    return features, n_truncated


def encode_tagging(examples: Sequence[Example], tokenizer: Tokenizer, max_len: int,
                   label_list: Sequence[str], label_all_subtokens: bool = False) -> tuple[list[dict], int]:
    """Features of tagged sentences, with word-level tags moved onto word pieces.

    A word's tag goes on its first piece; its other pieces get IGNORE_INDEX, or with
    label_all_subtokens the same tag (B-X turned into I-X, since they continue the entity).
    [CLS]/[SEP] get IGNORE_INDEX. `word_ids` holds each token's word index (-1 for specials),
    so `word_tags` can map predictions back. Sentences longer than max_len are cut (counted):
    their last words get no token, and are predicted "O".
    """
    _check_max_len(max_len)
    label_index = {label: i for i, label in enumerate(label_list)}
    if any(example.label is not None for example in examples):
        check_labels(examples, label_list)
    encodings = tokenizer.backend.encode_batch(
        [example.words for example in examples], is_pretokenized=True, add_special_tokens=False)
    budget = max_len - 2  # room for [CLS] and [SEP]
    features, n_truncated = [], 0
    for example, encoding in zip(examples, encodings):
        n_truncated += len(encoding.ids) > budget
        input_ids = [tokenizer.cls_token_id, *encoding.ids[:budget], tokenizer.sep_token_id]
        word_ids = [-1, *encoding.word_ids[:budget], -1]
        feature = {"input_ids": input_ids, "token_type_ids": [0] * len(input_ids),
                   "word_ids": word_ids, "n_words": len(example.words)}
        if example.label is not None:
            labels, previous = [], -1
            for word in word_ids:
                if word == -1:
                    labels.append(IGNORE_INDEX)
                elif word != previous:
                    labels.append(label_index[example.label[word]])
                elif label_all_subtokens:
                    tag = example.label[word]
                    labels.append(label_index["I-" + tag[2:] if tag.startswith("B-") else tag])
                else:
                    labels.append(IGNORE_INDEX)
                previous = word
            feature["labels"] = labels
        features.append(feature)
    return features, n_truncated


def word_tags(feature: dict, predicted_ids: Sequence[int], label_list: Sequence[str]) -> list[str]:
    """Per-word tags from per-token predictions: each word takes its first piece's tag; words cut off, "O"."""
    tags = ["O"] * feature["n_words"]
    previous = -1
    for position, word in enumerate(feature["word_ids"]):
        if word != -1 and word != previous:
            tags[word] = label_list[int(predicted_ids[position])]
        previous = word
    return tags


def _window_starts(n_tokens: int, window: int, stride: int) -> list[int]:
    """Start of each context window: `window` tokens each, starts `stride` apart, the last one reaching the end.

    As in Google's run_squad.py, doc_stride is the step between window starts (HuggingFace's
    run_qa uses the same name for the overlap instead).
    """
    starts = [0]
    while starts[-1] + window < n_tokens:
        starts.append(starts[-1] + min(window, stride))
    return starts


def _answer_tokens(offsets: list[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last context token overlapping the characters [start_char, end_char)."""
    first = next((i for i, (_, end) in enumerate(offsets) if end > start_char), None)
    last = next((i for i in reversed(range(len(offsets))) if offsets[i][0] < end_char), None)
    if first is None or last is None or last < first:
        return None
    return first, last


def encode_squad(examples: Sequence[QAExample], tokenizer: Tokenizer, max_seq_len: int = 384,
                 doc_stride: int = 128, max_query_len: int = 64, training: bool = True) -> list[dict]:
    """Features `[CLS] question [SEP] context window [SEP]`, one per window of each example's context.

    The question is cut to max_query_len tokens; the context is split into windows of the
    tokens that remain, starting doc_stride tokens apart. `offsets[i]` is the (start, end)
    character span in the context of token i, None for question and special tokens. For
    training, start/end_position index the first answer's first and last tokens, or are both
    0 ([CLS]) when the window does not hold the whole answer or the question has none.
    """
    question_ids = [ids[:max_query_len] for ids in tokenizer.encode_batch([e.question for e in examples])]
    contexts = tokenizer.backend.encode_batch([e.context for e in examples], add_special_tokens=False)
    features = []
    for example_index, (example, q_ids, context) in enumerate(zip(examples, question_ids, contexts)):
        window = max_seq_len - len(q_ids) - 3  # [CLS] question [SEP] window [SEP]
        if window < 1:
            raise ValueError(f"max_seq_len={max_seq_len} leaves no room for the context after a "
                             f"{len(q_ids)}-token question; raise it or lower max_query_len")
        answer = None
        if training and not example.is_impossible and example.answers:
            text, start_char = example.answers[0]
            answer = _answer_tokens(context.offsets, start_char, start_char + len(text))
        context_start = len(q_ids) + 2  # position of the first context token in a feature
        for start in _window_starts(len(context.ids), window, doc_stride):
            end = min(start + window, len(context.ids))
            input_ids, token_type_ids = tokenizer.build_inputs(q_ids, context.ids[start:end])
            feature = {
                "input_ids": input_ids,
                "token_type_ids": token_type_ids,
                "offsets": [None] * context_start + [tuple(o) for o in context.offsets[start:end]] + [None],
                "example_index": example_index,
            }
            if training:
                inside = answer is not None and start <= answer[0] and answer[1] < end
                feature["start_position"] = answer[0] - start + context_start if inside else 0
                feature["end_position"] = answer[1] - start + context_start if inside else 0
            features.append(feature)
    return features


def encode_choices(examples: Sequence[ChoiceExample], tokenizer: Tokenizer,
                   max_len: int) -> tuple[list[dict], int]:
    """Features with one `[CLS] context [SEP] ending [SEP]` per ending; examples with any pair cut are counted."""
    _check_max_len(max_len)
    contexts = [example.context for example in examples for _ in example.endings]
    endings = [ending for example in examples for ending in example.endings]
    input_ids, token_type_ids, cut = _encode_texts(tokenizer, contexts, endings, max_len)
    features, n_truncated, position = [], 0, 0
    for example in examples:
        span = slice(position, position + len(example.endings))
        position = span.stop
        n_truncated += any(cut[span])
        feature = {"input_ids": input_ids[span], "token_type_ids": token_type_ids[span]}
        if example.label is not None:
            feature["label"] = example.label
        features.append(feature)
    return features, n_truncated


def encode_seq2seq(examples: Sequence[PairExample], tokenizer: Tokenizer, max_len: int,
                   max_target_len: int) -> tuple[list[dict], int]:
    """Features `[CLS] source [SEP] target [SEP]` (segments 0 / 1) for UniLM fine-tuning with a shifted
    left-to-right loss: position p is trained to predict token p + 1 over the target, so the source's [SEP]
    predicts the first target token and the last target token predicts the final [SEP] (which stops
    generation). The target is cut to max_target_len tokens, then the source to what is left of max_len;
    an example cut either way is counted. Unlabeled examples (target None) give `[CLS] source [SEP]`."""
    if max_len < max_target_len + 4:
        raise ValueError(f"max_len={max_len} leaves no room for a source beside {max_target_len} target tokens")
    sources = tokenizer.encode_batch([e.source for e in examples])
    targets = tokenizer.encode_batch([e.target or "" for e in examples])
    features, n_truncated = [], 0
    for example, source, target in zip(examples, sources, targets):
        if example.target is None:
            target = None
            cut_source = source[:max_len - 2]
            n_truncated += len(cut_source) < len(source)
        else:
            cut_target = target[:max_target_len]
            cut_source = source[:max_len - 3 - len(cut_target)]
            n_truncated += len(cut_target) < len(target) or len(cut_source) < len(source)
            target = cut_target
        ids = [tokenizer.cls_token_id, *cut_source, tokenizer.sep_token_id]
        types = [0] * len(ids)
        feature = {"input_ids": ids, "token_type_ids": types}
        if target is not None:
            ids += [*target, tokenizer.sep_token_id]
            types += [1] * (len(target) + 1)
            start = len(cut_source) + 1  # the source's [SEP]: the first position that predicts
            feature["labels"] = [IGNORE_INDEX] * start + ids[start + 1:] + [IGNORE_INDEX]
        features.append(feature)
    return features, n_truncated


def collate_seq2seq(features: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """collate, with the (B, T, T) sequence-to-sequence attention mask built from the segments."""
    from bertkit.model import seq2seq_mask

    batch = collate(features, pad_token_id)
    batch["attention_mask"] = seq2seq_mask(batch["token_type_ids"], batch["attention_mask"])
    return batch


def collate_cmlm(features: Sequence[dict], pad_token_id: int, mask_token_id: int,
                 rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A conditional masked LM batch (Ghazvininejad et al. 2019, as mask-predict trains): per example, n drawn
    uniformly from 1..m (m: the target's tokens, its final [SEP] included), n of the m target positions drawn
    at random are replaced by [MASK] and labeled with their tokens; nothing else is labeled. The features are
    encode_seq2seq's (their shifted labels are not used). attention_mask: cmlm_mask's (B, T, T), the target
    seeing the whole target. rng: the run's generator, so each step draws afresh and a seed repeats it."""
    from bertkit.model import cmlm_mask

    batch = collate([{k: f[k] for k in ("input_ids", "token_type_ids")} for f in features], pad_token_id)
    ids, types = batch["input_ids"], batch["token_type_ids"]
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row in range(len(features)):
        target = types[row].nonzero().squeeze(1)  # (m,) the target's positions, its [SEP] last
        if len(target) == 0:  # an unlabeled example: nothing to predict
            continue
        n = int(rng.integers(1, len(target) + 1))
        chosen = target[torch.from_numpy(rng.permutation(len(target))[:n])]  # (n,)
        labels[row, chosen] = ids[row, chosen]
        ids[row, chosen] = mask_token_id
    batch["labels"] = labels
    batch["attention_mask"] = cmlm_mask(types, batch["attention_mask"])
    return batch


UNILM_TARGET_MASK_RATE = 0.7  # UniLM's share of the target's tokens masked for sequence-to-sequence fine-tuning


def collate_unilm(features: Sequence[dict], pad_token_id: int, mask_token_id: int, vocab_size: int,
                  rng: np.random.Generator, rate: float = UNILM_TARGET_MASK_RATE) -> dict[str, torch.Tensor]:
    """UniLM's own sequence-to-sequence batch (Dong et al. 2019): each target token (its final [SEP] included, so
    the model learns to stop) is chosen with probability `rate` (at least one per target), labeled with itself,
    and shown as [MASK] 80% of the time, a random token 10%, unchanged 10%, as BERT's MLM does; nothing else is
    labeled. attention_mask: seq2seq_mask's (B, T, T), the target seeing only the target to its left, so a
    [MASK] put after the tokens so far predicts the next one (generate.py's decoding of such a model).
    The features are encode_seq2seq's (their shifted labels are not used). rng: the run's generator."""
    from bertkit.data.masking import replace_chosen
    from bertkit.model import seq2seq_mask

    batch = collate([{k: f[k] for k in ("input_ids", "token_type_ids")} for f in features], pad_token_id)
    ids, types = batch["input_ids"].numpy(), batch["token_type_ids"]
    target = types.bool() & batch["attention_mask"].bool()  # (B, T)
    chosen = target & torch.from_numpy(rng.random(ids.shape) < rate)
    first = target & (target.long().cumsum(1) == 1)  # each target's first token: chosen if none of them was
    chosen |= first & ~chosen.any(1, keepdim=True)
    labels = torch.where(chosen, batch["input_ids"], IGNORE_INDEX)
    every_id = np.arange(vocab_size)
    for row in range(len(ids)):  # pre-training's 80/10/10 step, each chosen token on its own
        positions = chosen[row].nonzero().squeeze(1).numpy()
        ids[row] = replace_chosen(ids[row], positions, np.arange(len(positions)), len(positions), rng,
                                  mask_token_id, every_id)
    batch["input_ids"], batch["labels"] = torch.from_numpy(ids), labels
    batch["attention_mask"] = seq2seq_mask(types, batch["attention_mask"])
    return batch


# ----------------------------------------------------------------------------------------------
# Batching


def _pad(rows: list[list], length: int, fill) -> list[list]:
    return [row + [fill] * (length - len(row)) for row in rows]


def collate(features: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of features into tensors named as the model's forward() arguments.

    input_ids / token_type_ids / attention_mask: (B, T), or (B, C, T) for multiple choice;
    labels: (B,) long (float for regression), (B, num_labels) float for multi-label, or (B, T) for
    tagging, padded with IGNORE_INDEX;
    start_positions / end_positions: (B,). Other keys (offsets, word_ids, ...) stay behind.
    """
    choices = isinstance(features[0]["input_ids"][0], list)
    rows = [feature["input_ids"] for feature in features]
    types = [feature["token_type_ids"] for feature in features]
    if choices:  # flatten (B, C) sequences, pad them together, then fold back
        n_choices = len(rows[0])
        rows = [row for feature_rows in rows for row in feature_rows]
        types = [row for feature_types in types for row in feature_types]
    length = max(len(row) for row in rows)
    batch = {
        "input_ids": torch.tensor(_pad(rows, length, pad_token_id)),
        "token_type_ids": torch.tensor(_pad(types, length, 0)),
        "attention_mask": torch.tensor(_pad([[1] * len(row) for row in rows], length, 0)),
    }
    if choices:
        batch = {name: tensor.view(len(features), n_choices, length) for name, tensor in batch.items()}
    for feature_key, batch_key, make in TARGETS:
        if feature_key in features[0]:
            batch[batch_key] = make([feature[feature_key] for feature in features], length)
    return batch


def _labels(values: list, length: int) -> torch.Tensor:  # class ids, scores or multi-hot rows
    return torch.tensor(values, dtype=torch.long if isinstance(values[0], int) else torch.float)


# A feature's training targets: (feature key, forward() argument, values of the batch and its length -> tensor).
TARGETS = (
    ("label", "labels", _labels),
    ("labels", "labels", lambda values, length: torch.tensor(_pad(values, length, IGNORE_INDEX))),  # per token
    ("start_position", "start_positions", lambda values, length: torch.tensor(values)),
    ("end_position", "end_positions", lambda values, length: torch.tensor(values)),
)
