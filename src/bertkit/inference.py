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

from bertkit.errors import BertkitError

POOLINGS = ("mean", "cls", "max")


def length_grouped_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices of the inputs, longest first, in chunks of batch_size."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


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


@torch.inference_mode()
def embed(model, tokenizer, texts: Sequence[str], pooling: str = "mean", batch_size: int = 64,
          normalize: bool = False, max_length: int | None = None, precision: str = "fp32",
          show_progress: bool = False) -> np.ndarray:
    """One float32 vector per text: (len(texts), hidden)."""
    from tqdm.auto import tqdm

    if pooling not in POOLINGS:
        raise BertkitError(f"unknown pooling {pooling!r}", hint=f"use one of {', '.join(POOLINGS)}")
    from bertkit.data.features import collate

    model.eval()
    device = next(model.parameters()).device
    max_length = min(max_length or model.config.max_position_embeddings, model.config.max_position_embeddings)
    encoded = tokenizer(list(texts), max_length=max_length, padding=False, return_tensors=None)  # tokenized once
    features = [{"input_ids": ids, "token_type_ids": types}
                for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"])]
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    batches = list(length_grouped_batches([len(f["input_ids"]) for f in features], batch_size))
    for indices in tqdm(batches, desc="embed", unit="batch", disable=not show_progress):
        batch = {k: v.to(device) for k, v in collate([features[i] for i in indices], tokenizer.pad_token_id).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            hidden = model(**batch).last_hidden_state
        vectors = pool(hidden.float(), batch["attention_mask"], pooling)
        if normalize:
            vectors = F.normalize(vectors, dim=-1)
        out[indices] = vectors.cpu().numpy()
    return out


@torch.inference_mode()
def fill_mask(model, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
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
    logits = model(**{k: v.to(device) for k, v in batch.items()}).mlm_logits[0, masks]  # (masks, V)
    probs, ids = logits.float().softmax(-1).topk(top_k, dim=-1)
    return [[(tokenizer.convert_ids_to_tokens(int(i)), float(p)) for p, i in zip(ps, is_)]
            for ps, is_ in zip(probs, ids)]
