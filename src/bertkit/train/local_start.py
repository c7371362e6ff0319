"""A start that reads each word's neighbours: local attention at initialisation, held while the rest learns.

Why (BENCHMARKS.md, "Breaking the plateau"): a small BERT initialised the paper's way (every weight N(0, 0.02))
and trained for half an hour on a CPU stays on the MLM plateau (~13% held-out accuracy): its attention stays
uniform, so it reads its input as a bag of words, while a model that sees only the two words either side of the
mask (a CBOW) reaches 23% on the same data in the same steps. Aiming the heads at neighbours at step 0 is not
enough: Adam's first updates scramble position embeddings of std 0.02 within a few dozen steps, and a value path
of std 0.02 adds only ~5% of the residual. What breaks the plateau is all three together:

  1. positions in a subspace of their own: the last head_size dimensions of the width hold sinusoids of
     n = head_size / 2 frequencies, the word and segment embeddings start at zero there;
  2. every head starts aimed at one offset: query = the position part, key = the same rotated by the offset,
     so head (layer l, head h) attends mostly to position i - OFFSETS[(l * heads + h) % 4], with its peak
     logit PEAK_LOGIT above the median (~70% of the weight at 128 tokens in the first layer); values read the word part only, and the
     value and output projections start at std 1/sqrt(hidden) (a gain of ~1, not ~0.05);
  3. the position embeddings and the query/key projections are held at those values for the first part of
     the run (`HeldWeights`), then train like the rest.

The result is an ordinary BERT (transformers' BertModel loads it); only the starting weights and which
weights move early differ. Hand-built starts of this kind: mimetic initialisation (Trockman and Kolter, 2023);
positions in a subspace of their own: as in DeBERTa's disentangled attention, here without changing the model.

  OFFSETS, PEAK_LOGIT
  head_offset(layer, head, heads)       the offset a head starts aimed at
  local_attention_init(encoder, seed)   set a BertModel's starting weights as above (in place)
  check_local_start(config)             the model shapes it applies to (at least 2 heads, head size even and
                                        smaller than the width); raises BertkitError otherwise
  HeldWeights(encoder, until_step)      zero_grads(step) before clipping, restore(step) after optimizer.step()
"""

from __future__ import annotations

import math

import torch

from bertkit.errors import BertkitError

OFFSETS = (1, -1, 2, -2)  # head k (counted over layers) looks at position i - OFFSETS[k % 4]: left, right, ...
PEAK_LOGIT = 6.0  # the aimed-at key's attention logit minus the median logit, after calibration


def head_offset(layer: int, head: int, heads: int) -> int:
    """The offset head `head` of layer `layer` starts aimed at: it attends to position i - offset."""
    return OFFSETS[(layer * heads + head) % len(OFFSETS)]


def check_local_start(config) -> None:
    heads = config.num_attention_heads
    size = config.hidden_size // heads
    if heads < 2 or size % 2 or size >= config.hidden_size:
        raise BertkitError(f"--init-scheme local needs at least 2 attention heads of an even size; this model has "
                           f"{heads} head(s) of {size}", hint="use --init-scheme normal, or a preset (tiny, mini, ...)")


def frequencies(n: int) -> torch.Tensor:
    """n angular frequencies spread over (0, pi), slightly irregular so that no offset within the positions
    aliases to 0: the sum of cos(w * d) over them peaks at d = 0 alone."""
    k = torch.arange(n, dtype=torch.float64)
    return torch.linspace(0.03, 3.1, n, dtype=torch.float64) * (1 + 0.05 * torch.sin(1.7 * k))


def _rotation(omega: torch.Tensor, offset: int) -> torch.Tensor:
    """(2n, 2n) block-diagonal: the (sin, cos) pair of frequency w at position j -> the pair at j + offset."""
    c, s = torch.cos(omega * offset), torch.sin(omega * offset)
    blocks = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)  # (n, 2, 2)
    return torch.block_diag(*blocks)


@torch.no_grad()
def local_attention_init(encoder, seed: int = 0) -> None:
    """Set `encoder` (a BertModel, freshly initialised) to the local start described in the module docstring."""
    config = encoder.config
    check_local_start(config)
    H, heads = config.hidden_size, config.num_attention_heads
    size = H // heads
    part = slice(H - size, H)  # the positions' dimensions
    emb = encoder.embeddings
    emb.word.weight[:, part] = 0
    emb.segment.weight[:, part] = 0
    n = size // 2
    omega = frequencies(n)
    angles = torch.arange(emb.position.weight.shape[0], dtype=torch.float64)[:, None] * omega  # (P, n)
    table = torch.zeros(emb.position.weight.shape, dtype=torch.float64)
    table[:, H - size::2], table[:, H - size + 1::2] = torch.sin(angles), torch.cos(angles)
    # the positions' norm equals a word embedding's (std initializer_range over the other dimensions)
    table *= config.initializer_range * math.sqrt(H - size) / math.sqrt(n)
    emb.position.weight.copy_(table)
    eye = torch.eye(size, dtype=torch.float64)
    for layer_index, layer in enumerate(encoder.layers):
        weight, bias = layer.attention.qkv.weight, layer.attention.qkv.bias  # rows: queries, keys, values
        for h in range(heads):
            offset = head_offset(layer_index, h, heads)
            q, k, v = (slice(i * H + h * size, i * H + (h + 1) * size) for i in range(3))
            weight[q], weight[k] = 0, 0
            weight[q, part] = eye.to(weight.dtype)
            weight[k, part] = _rotation(omega, offset).to(weight.dtype)
            weight[v].normal_(0, 1 / math.sqrt(H))
            weight[v, part] = 0
        bias[:2 * H] = 0
        layer.attention.out.weight.normal_(0, 1 / math.sqrt(H))
    _calibrate(encoder, seed)


def _calibrate(encoder, seed: int, rounds: int = 3) -> None:
    """Scale each layer's queries and keys so that the aimed-at key's logit is PEAK_LOGIT above the median,
    measured on random tokens (a logit is the product of a query and a key: both scale by sqrt of the ratio)."""
    config = encoder.config
    H, heads = config.hidden_size, config.num_attention_heads
    T = min(128, config.max_position_embeddings)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(config.vocab_size // 10, config.vocab_size, (4, T), generator=g)
    was_training = encoder.training
    encoder.eval()
    for layer_index, layer in enumerate(encoder.layers):
        for _ in range(rounds):
            probs = encoder(ids, output_attentions=True).attentions[layer_index].double()  # (B, heads, T, T)
            logits = probs.clamp_min(1e-30).log()
            gaps = []
            for h in range(heads):
                offset = head_offset(layer_index, h, heads)
                rows = torch.arange(max(0, offset), min(T, T + offset))
                gaps.append((logits[:, h, rows, rows - offset] - logits[:, h, rows].median(-1).values).mean())
            gap = float(torch.stack(gaps).mean())
            layer.attention.qkv.weight[:2 * H] *= math.sqrt(PEAK_LOGIT / max(gap, 1e-3))
    encoder.train(was_training)


class HeldWeights:
    """The position embeddings and every layer's query and key projections, held at their values of step 0
    until `until_step`: their gradients are zeroed before clipping (so the clipping sees only the weights
    that move) and their values put back after each optimizer step (AdamW's weight decay would otherwise
    shrink them). Held exactly, a resumed run sees the same values as an uninterrupted one."""

    def __init__(self, encoder, until_step: int):
        H = encoder.config.hidden_size
        self.until_step = until_step
        self.parts = [(encoder.embeddings.position.weight, slice(None))]
        for layer in encoder.layers:
            self.parts += [(layer.attention.qkv.weight, slice(0, 2 * H)), (layer.attention.qkv.bias, slice(0, 2 * H))]
        self.values = [p.detach()[rows].clone() for p, rows in self.parts]

    def zero_grads(self, step: int) -> None:
        if step < self.until_step:
            for p, rows in self.parts:
                if p.grad is not None:
                    p.grad[rows] = 0

    @torch.no_grad()
    def restore(self, step: int) -> None:
        if step < self.until_step:
            for (p, rows), value in zip(self.parts, self.values):
                p[rows] = value
