"""Using a trained encoder: batched sentence embeddings, with length-grouped batches.

Texts are sorted by token count and batched neighbours together, so a batch pads to its own longest
text rather than the corpus' longest: on a mixed-length input most of the padding, and the compute
spent on it, disappears. Results come back in input order.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bertkit.device import resolve_precision, to_device
from bertkit.errors import BertkitError

POOLINGS = ("mean", "cls", "max")


def length_grouped_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices of the inputs, longest first, in chunks of batch_size."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def feature_length(feature: dict) -> int:
    """Tokens in a feature: its sequence, or for multiple choice its longest choice."""
    ids = feature["input_ids"]
    return max(len(row) for row in ids) if ids and isinstance(ids[0], list) else len(ids)


@torch.inference_mode()
def run_features(model, features: Sequence[dict], pad_token_id: int, batch_size: int = 128,
                 precision: str = "auto", progress: str | None = None) -> list:
    """A task model's outputs for each feature, in feature order, batched by length: logit rows
    (numpy), or (start, end) logit rows for span QA. The model is left in eval mode. `progress`: a
    progress bar's label (none without it)."""
    from tqdm.auto import tqdm

    from bertkit.data.features import collate

    model.eval()
    device = next(model.parameters()).device
    autocast = resolve_precision(precision, device).autocast(device)  # checked and said once
    out: list = [None] * len(features)
    batches = list(length_grouped_batches([feature_length(f) for f in features], batch_size))
    for indices in tqdm(batches, desc=progress, unit="batch", disable=progress is None, dynamic_ncols=True):
        batch = collate([features[i] for i in indices], pad_token_id)
        batch = to_device(batch, device, keys=("input_ids", "token_type_ids", "attention_mask"))
        with autocast:
            result = model(**batch)
        if result.logits is not None:
            rows = list(result.logits.float().cpu().numpy())
        else:
            rows = list(zip(result.start_logits.float().cpu().numpy(), result.end_logits.float().cpu().numpy()))
        for i, row in zip(indices, rows):
            out[i] = row
    return out


def labels_above(logits: np.ndarray, labels, threshold: float) -> tuple[list[str], np.ndarray]:
    """Multi-label: every label whose probability (the sigmoid of its own logit) is above threshold, most
    probable first, and the probabilities, (num_labels,). The list may be empty."""
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    order = np.argsort(-probs, kind="stable")
    return [labels[i] for i in order if probs[i] > threshold], probs


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, H) token vectors -> (B, H). Mean and max run over the non-padding tokens only,
    as sentence-transformers does."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if pooling == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if pooling == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    raise BertkitError(f"unknown pooling {pooling!r}", hint=f"use one of {', '.join(POOLINGS)}")


def parse_layers(text: str, n_layers: int) -> list[int]:
    """"-1,-2,-3,-4" -> layer indices of the hidden states (0 = embeddings, n_layers = the last layer)."""
    try:
        layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        layers = []
    if not layers:
        raise BertkitError(f"--layers {text!r}: expected comma-separated integers", hint="e.g. --layers -1,-2,-3,-4")
    for layer in layers:
        if not -(n_layers + 1) <= layer <= n_layers:
            raise BertkitError(f"--layers {text!r}: layer {layer} does not exist; the model has {n_layers} layers",
                               hint=f"use -1 (the last) to -{n_layers + 1} (the embeddings), or 0 to {n_layers}")
    return layers


def _encode(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[dict], int]:
    """Features of texts, tokenized once, cut to max_length (the count of cut texts returned)."""
    encoded = tokenizer(list(texts), truncation=False, padding=False, return_offsets=True, return_tensors=None)
    features, cut = [], 0
    for ids, types, offsets in zip(encoded["input_ids"], encoded["token_type_ids"], encoded["offset_mapping"]):
        if len(ids) > max_length:
            cut += 1
            ids, types, offsets = ids[:max_length - 1] + [tokenizer.sep_token_id], types[:max_length], \
                offsets[:max_length - 1] + [(0, 0)]
        features.append({"input_ids": ids, "token_type_ids": types, "offsets": offsets})
    return features, cut


@torch.inference_mode()
def encode_layers(model, tokenizer, texts: Sequence[str], layers: Sequence[int] = (-1,), layer_merge: str = "concat",
                  batch_size: int = 64, max_length: int | None = None, precision: str = "auto",
                  show_progress: bool = False) -> Iterator[tuple[list[int], list[dict], torch.Tensor, torch.Tensor]]:
    """Per length-grouped batch: (input indices, their features, token vectors (B, T, H or H * len(layers)),
    attention mask (B, T)). Token vectors are the chosen layers' hidden states (0 = the embeddings,
    -1 = the last layer), concatenated in the order given or averaged, in float32."""
    import logging

    from tqdm.auto import tqdm

    from bertkit.data.features import collate

    if layer_merge not in ("concat", "mean"):
        raise BertkitError(f"unknown layer merge {layer_merge!r}", hint="use concat or mean")
    model.eval()
    device = next(model.parameters()).device
    autocast = resolve_precision(precision, device).autocast(device)  # checked and said once
    positions = model.config.max_position_embeddings
    max_length = min(max_length or positions, positions)
    features, cut = _encode(tokenizer, texts, max_length)
    if cut:
        logging.getLogger("bertkit").warning(
            f"note: {cut} of {len(texts)} texts were longer than {max_length} tokens and were truncated")
    only_last = list(layers) == [-1]
    batches = list(length_grouped_batches([len(f["input_ids"]) for f in features], batch_size))
    for indices in tqdm(batches, desc="embed", unit="batch", disable=not show_progress):
        chosen = [features[i] for i in indices]
        batch = to_device(collate(chosen, tokenizer.pad_token_id), device)
        with autocast:
            out = model(**batch, output_hidden_states=not only_last)
        if only_last:
            vectors = out.last_hidden_state.float()
        else:
            picked = [out.hidden_states[layer].float() for layer in layers]
            vectors = torch.cat(picked, -1) if layer_merge == "concat" else torch.stack(picked).mean(0)
        yield indices, chosen, vectors, batch["attention_mask"]


def embed(model, tokenizer, texts: Sequence[str], pooling: str = "mean", batch_size: int = 64,
          normalize: bool = False, max_length: int | None = None, precision: str = "auto",
          show_progress: bool = False, layers: Sequence[int] = (-1,), layer_merge: str = "concat") -> np.ndarray:
    """One float32 vector per text: (len(texts), hidden * (len(layers) if concatenated else 1))."""
    if pooling not in POOLINGS:
        raise BertkitError(f"unknown pooling {pooling!r}", hint=f"use one of {', '.join(POOLINGS)}")
    width = model.config.hidden_size * (len(layers) if layer_merge == "concat" else 1)
    out = np.zeros((len(texts), width), dtype=np.float32)
    for indices, _, hidden, mask in encode_layers(model, tokenizer, texts, layers, layer_merge, batch_size,
                                                  max_length, precision, show_progress):
        vectors = pool(hidden, mask, pooling)
        if normalize:
            vectors = F.normalize(vectors, dim=-1)
        out[indices] = vectors.cpu().numpy()
    return out


def token_vectors(model, tokenizer, texts: Sequence[str], batch_size: int = 64, normalize: bool = False,
                  max_length: int | None = None, precision: str = "auto", show_progress: bool = False,
                  layers: Sequence[int] = (-1,), layer_merge: str = "concat") -> list[dict]:
    """Per text, every token's vector (pooling "none"): {"tokens", "offsets" (character spans in the
    text, [0, 0] for [CLS]/[SEP]), "vectors" (float32 array, tokens x width)}."""
    out: list = [None] * len(texts)
    for indices, features, hidden, _ in encode_layers(model, tokenizer, texts, layers, layer_merge, batch_size,
                                                      max_length, precision, show_progress):
        if normalize:
            hidden = F.normalize(hidden, dim=-1)
        for row, i, feature in zip(hidden.cpu().numpy(), indices, features):
            n = len(feature["input_ids"])
            out[i] = {"tokens": tokenizer.convert_ids_to_tokens(feature["input_ids"]),
                      "offsets": [list(o) for o in feature["offsets"]], "vectors": row[:n]}
    return out


@torch.inference_mode()
def fill_mask(model, tokenizer, text: str, top_k: int = 5, precision: str = "auto") -> list[list[tuple[str, float]]]:
    """The MLM head's top-k (token, probability) for each [MASK] in `text`, left to right."""
    positions = model.config.max_position_embeddings
    batch = tokenizer([text], max_length=positions + 1)
    if batch["input_ids"].shape[1] > positions:
        raise BertkitError(f"the text is longer than the model's {positions} positions",
                           hint="shorten the text around the [MASK]")
    masks = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten()
    if masks.numel() == 0:
        raise BertkitError(f"no [MASK] in {text!r}", hint="write [MASK] where the model should fill in a word")
    top_k = min(top_k, model.config.vocab_size)
    model.eval()
    device = next(model.parameters()).device
    with resolve_precision(precision, device).autocast(device):
        logits = model(**to_device(batch, device)).mlm_logits[0, masks]  # (masks, V)
    probs, ids = logits.float().softmax(-1).topk(top_k, dim=-1)
    return [[(tokenizer.convert_ids_to_tokens(int(i)), float(p)) for p, i in zip(ps, is_)]
            for ps, is_ in zip(probs, ids)]


def join_pieces(pieces: Sequence[str]) -> str:
    """WordPiece tokens back into text: "play", "##ing" -> "playing"; "new", "york" -> "new york"."""
    text = ""
    for piece in pieces:
        text += piece[2:] if piece.startswith("##") and text else (" " + piece if text else piece)
    return text


def mask_words(tokenizer, text: str, predictions: list[list[tuple[str, float]]]) -> list[dict]:
    """Runs of adjacent [MASK]s (a word or phrase spanning several pieces): the top guess of each mask,
    joined ("play" + "##ing" -> "playing"), and the product of their probabilities. `predictions` is
    fill_mask's result for `text`."""
    ids = tokenizer([text], return_tensors=None)["input_ids"][0]
    positions = [i for i, token_id in enumerate(ids) if token_id == tokenizer.mask_token_id]
    runs: list[list[int]] = []
    for k, position in enumerate(positions):
        if runs and positions[runs[-1][-1]] == position - 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    words = []
    for run in runs:
        pieces = [predictions[k][0][0] for k in run]
        probability = float(np.prod([predictions[k][0][1] for k in run]))
        words.append({"masks": run, "word": join_pieces(pieces), "pieces": pieces, "probability": probability})
    return words
