"""The BERT encoder (Devlin et al., 2018), its pre-training heads, and the fine-tuning heads.

Read top to bottom: embeddings -> self-attention -> feed-forward -> layer -> encoder -> pooler, then
the heads. The model is written for one device; distribution, compilation and checkpoint formats live
elsewhere (train/distributed.py, checkpoint.py). Parameter names here are our own; the one table that
maps them to HuggingFace's names is in checkpoint.py.

Shapes: B batch, T tokens, H hidden, nh heads, hs head size, N masked positions, C choices, V vocab.
Generation (generate.py) runs the same encoder as a UniLM decoder (Dong et al. 2019): a (B, T, T)
attention mask from the segments (`seq2seq_mask`) and a `KVCache` of the positions already run;
mask-predict runs it as a conditional masked LM (`cmlm_mask`: the target sees the whole target).
Left out on purpose: relative position embeddings and cross-attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.checkpoint import PretrainedMixin
from bertkit.config import BertConfig

IGNORE_INDEX = -100  # label value for positions that do not enter a loss (HF's convention)


def activation(name: str):
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    return F.relu


# ----------------------------------------------------------------------------------------------
# Encoder


class Embeddings(nn.Module):
    """Token + segment + position embeddings, summed (paper, section 3, figure 2), then LayerNorm.
    `width` is hidden_size for BERT; ELECTRA's embeddings may be narrower (config.embedding_size)."""

    def __init__(self, config: BertConfig, width: int):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, width)
        self.position = nn.Embedding(config.max_position_embeddings, width)
        self.segment = nn.Embedding(config.type_vocab_size, width)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, segment_ids: torch.Tensor | None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[-1]
        position = self.position.weight[:T] if position_ids is None else self.position(position_ids)
        x = self.word(input_ids) + position  # (B, T, E), E = H but for a narrow ELECTRA
        if segment_ids is None:
            x = x + self.segment.weight[0]
        else:
            x = x + self.segment(segment_ids)
        return self.dropout(self.norm(x))


def rounded_up(index: torch.Tensor, multiple: int) -> torch.Tensor:
    """index (N,) extended to a multiple of `multiple` entries with copies of its first: tensors built from it
    then come in a few sizes, which the memory allocator reuses (a new size every batch fragments glibc's heap)."""
    rows = -(-index.numel() // multiple) * multiple
    return torch.cat([index, index[:1].expand(rows - index.numel())])


class Unpadded:
    """Where the real tokens of a padded (B, T) batch are. With it, a layer's linear maps, LayerNorms and
    dropout run on the N real tokens only, (N, H), and attention alone puts them back in (B, T) layout
    (zeros at padding, which the key mask hides). No compute is spent on padding outside attention.

    N is rounded up to a multiple of ROUND rows with copies of the first token: a handful of rows computed
    for nothing, which never reach attention or the output (so they get no gradient), but the tensors then
    come in a few sizes rather than a new one every batch, which the memory allocator reuses (with
    exact sizes, glibc's heap fragments: a pre-training run's resident memory kept growing)."""

    ROUND = 128

    def __init__(self, attention_mask: torch.Tensor):
        self.B, self.T = attention_mask.shape
        real = attention_mask.flatten().nonzero().squeeze(1)  # (N,) positions in the flattened batch
        self.n = real.numel()
        self.index = rounded_up(real, self.ROUND)  # (rows,)

    def pad(self, x: torch.Tensor) -> torch.Tensor:  # (rows, C) -> (B, T, C), zeros at padding
        out = x.new_zeros(self.B * self.T, x.shape[-1]).index_copy(0, self.index[:self.n], x[:self.n])
        return out.view(self.B, self.T, -1)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (rows, C)
        return x.reshape(self.B * self.T, -1).index_select(0, self.index)


class KVCache:
    """Keys and values of the positions run so far, per layer, (B, nh, T_past, hs) each: decoding a new token
    then runs only its own position, attending to the cached ones (generate.py)."""

    def __init__(self, n_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    def __len__(self) -> int:  # positions cached
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k, v = torch.cat([self.keys[layer], k], dim=2), torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on: a [MASK] run only to read the next token off it."""
        self.keys = [k[:, :, :length] for k in self.keys]
        self.values = [v[:, :, :length] for v in self.values]

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and repeat) the batch rows `rows` (B',): beam search follows the beams it keeps."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]


EXPLICIT_MAX_KEYS = 256  # BENCHMARKS.md, "Attention kernels on a CPU"


def explicit_is_faster(q: torch.Tensor, k: torch.Tensor) -> bool:
    """On a CPU in bf16, the explicit softmax (two batched matmuls) runs 2-2.6x faster forward and backward than
    PyTorch's fused kernel up to 256 keys, and slower at 512; in fp32 and on GPUs the fused kernel wins."""
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and k.shape[-2] <= EXPLICIT_MAX_KEYS


class SelfAttention(nn.Module):
    """Multi-head self-attention. Query, key and value come from one fused projection (one GEMM)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, return_probs: bool = False,
                layout: Unpadded | None = None, cache: KVCache | None = None, layer: int = 0):
        qkv = self.qkv(x)  # (B, T, 3H), or (rows, 3H) unpadded
        if layout is not None:
            qkv = layout.pad(qkv)
        B, T, H = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        q, k, v = qkv.view(B, T, 3, self.num_heads, H // self.num_heads).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.extend(layer, k, v)  # (B, nh, T_past + T, hs)
        dropout_p = self.dropout_p if self.training else 0.0
        if return_probs or explicit_is_faster(q, k):
            # The explicit softmax: the attention maps when the caller wants them, and the faster kernel where
            # explicit_is_faster says so.
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, nh, T, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            y = F.dropout(probs, dropout_p, self.training) @ v
        else:
            probs = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
        if layout is not None:
            y = layout.unpad(y)  # (rows, H)
        return self.out(y), probs


class FeedForward(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class Layer(nn.Module):
    """One Transformer layer, post-LayerNorm as in the original: x = LN(x + Dropout(Sublayer(x)))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, return_probs: bool = False,
                layout: Unpadded | None = None, cache: KVCache | None = None, layer: int = 0):
        a, probs = self.attention(x, mask, return_probs, layout, cache, layer)
        x = self.attention_norm(x + self.dropout(a))
        x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        return x, probs


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None  # (B, H): tanh(W h_[CLS] + b)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings output, then each layer's
    attentions: tuple[torch.Tensor, ...] | None = None  # (B, nh, T, T) per layer


class BertModel(PretrainedMixin, nn.Module):
    """The bidirectional Transformer encoder, with the [CLS] pooler. It is ELECTRA's encoder too (electra.py):
    given an ElectraConfig whose embedding_size differs from hidden_size, a linear map widens the embeddings."""

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        width = getattr(config, "embedding_size", None) or config.hidden_size  # only ElectraConfig has the field
        self.embeddings = Embeddings(config, width)
        self.embeddings_project = nn.Linear(width, config.hidden_size) if width != config.hidden_size else None
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooler else None
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        token_type_ids: torch.Tensor | None = None,  # (B, T) segment ids: 0 for A, 1 for B
        attention_mask: torch.Tensor | None = None,  # (B, T) 1 for tokens, 0 for padding; or (B, T, T_past + T)
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        unpad: bool = False,  # skip padding between layers; its outputs are then zeros (see Unpadded)
        position_ids: torch.Tensor | None = None,  # (B, T); default 0..T-1
        cache: KVCache | None = None,  # keys and values of earlier positions, extended with these
    ) -> EncoderOutput:
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, E)
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)  # (B, T, H)
        mask = None
        if attention_mask is not None and attention_mask.dim() == 3:  # which key each query sees (seq2seq_mask)
            mask = attention_mask.bool()[:, None]  # (B, 1, T, T_past + T)
        # Without padding the mask is dropped (SDPA's fastest path); under torch.compile that data-dependent
        # test would break the graph, so there the mask is always applied.
        elif attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): True where a key may be attended
        layout = None
        if (unpad and mask is not None and mask.shape[2] == 1 and cache is None
                and not (output_hidden_states or output_attentions)):
            layout = Unpadded(attention_mask)
            x = layout.unpad(x)  # (rows, H)
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for i, layer in enumerate(self.layers):
            x, probs = layer(x, mask, output_attentions, layout, cache, i)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)
        if layout is not None:
            x = layout.pad(x)  # (B, T, H)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return EncoderOutput(x, pooled, tuple(hidden_states) if hidden_states else None,
                             tuple(attentions) if attentions else None)


def seq2seq_mask(token_type_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """UniLM's sequence-to-sequence mask (Dong et al. 2019) from the segments of `[CLS] source [SEP] target [SEP]`,
    (B, T) each -> (B, T, T), True where query i may attend to key j: every position sees the whole source,
    target positions also see the target to their left (and themselves), nothing sees the target to its right.
    As bert4keras builds it: with c = cumsum(segment ids), i sees j iff c[j] <= c[i]. Padding is never seen."""
    c = token_type_ids.cumsum(-1)  # (B, T): 0 over the source, 1, 2, ... over the target
    mask = c[:, None, :] <= c[:, :, None]  # (B, T, T)
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, :]
    return mask


def cmlm_mask(token_type_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The conditional masked LM's mask (Ghazvininejad et al. 2019, mask-predict) over `[CLS] source [SEP] target
    [SEP]`, (B, T) each -> (B, T, T), True where query i may attend to key j: every position sees the whole
    source, target positions also see the whole target (both sides), the source never sees the target.
    Padding is never seen."""
    types = token_type_ids.bool()
    mask = ~types[:, None, :] | types[:, :, None]  # (B, T, T): key in the source, or query in the target
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, :]
    return mask


def init_weights(module: nn.Module, std: float) -> None:
    """Normal(0, 0.02) weights, zero biases, LayerNorm 1/0, as in the paper's code."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def set_dropout(model: nn.Module, p: float) -> None:
    """Every dropout of `model` (hidden and attention probabilities) to `p`; model.config keeps its own values."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        elif isinstance(m, SelfAttention):
            m.dropout_p = p


# ----------------------------------------------------------------------------------------------
# Pre-training heads


class MaskedLMHead(nn.Module):
    """Dense + GELU + LayerNorm, then the vocabulary projection tied to the word embeddings, plus a bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.word_embeddings = [word_embeddings]  # a list, so the tied matrix is not registered twice
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., V)
        h = self.norm(self.act(self.dense(h)))
        return F.linear(h, self.word_embeddings[0].weight, self.bias)


SPARSE_ROUND = 64  # chosen positions decoded per batch: a multiple of this (see masked_lm_loss)


def masked_lm_loss(head: MaskedLMHead, hidden: torch.Tensor, labels: torch.Tensor, sparse: bool = True,
                   label_smoothing: float = 0.0):
    """Cross-entropy over the chosen positions only (labels != IGNORE_INDEX).

    Sparse (the default) gathers the chosen positions first and decodes only those: ~15% of the tokens,
    so the (H x V) projection, the largest matmul of a small BERT, costs ~7x less. The loss is the same
    as decoding every position and ignoring the rest (`sparse=False`, kept as the reference path).
    Returns (loss, logits at the chosen positions (N, V), their labels (N,)).
    """
    chosen = labels != IGNORE_INDEX  # (B, T)
    targets = labels[chosen]  # (N,)
    if not sparse:
        logits = head(hidden)[chosen]  # (B, T, V) -> (N, V)
        return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing), logits, targets
    # N rounded up to a multiple of SPARSE_ROUND (rounded_up), the extra rows ignored by the loss
    n = targets.numel()
    index = rounded_up(chosen.flatten().nonzero().squeeze(1), SPARSE_ROUND)  # (rows,)
    logits = head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, index))  # (rows, V)
    padded = torch.cat([targets, targets.new_full((len(index) - n,), IGNORE_INDEX)])
    loss = F.cross_entropy(logits.float(), padded, label_smoothing=label_smoothing)
    return loss, logits[:n], targets


def _unpad(enabled: bool, labels) -> bool:
    """Skip padding only when computing the loss (the outputs at padding are then zeros, and nothing reads
    them), and not under torch.compile, where the data-dependent token count would break the graph."""
    return enabled and labels is not None and not torch.compiler.is_compiling()


@dataclass
class PreTrainingOutput:
    loss: torch.Tensor | None = None  # mlm_loss + nsp_loss
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None  # (N, V) at the chosen positions when labels are given, else (B, T, V)
    mlm_targets: torch.Tensor | None = None  # (N,)
    nsp_logits: torch.Tensor | None = None  # (B, 2): index 0 IsNext, 1 NotNext (HF's convention)


class BertForPreTraining(PretrainedMixin, nn.Module):
    """Encoder + MLM head + NSP head (a 2-way classifier on the pooled [CLS] output)."""

    def __init__(self, config: BertConfig, sparse_mlm: bool = True, unpad: bool = True):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.sparse_mlm = sparse_mlm
        self.unpad = unpad  # with labels, the losses never read padding: the encoder may skip it
        for m in (self.mlm, self.nsp):
            m.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                next_sentence_label=None) -> PreTrainingOutput:
        """labels: (B, T) original ids at the chosen positions, IGNORE_INDEX elsewhere.
        next_sentence_label: (B,) 0 IsNext, 1 NotNext; None skips the NSP loss (e.g. --objective none)."""
        enc = self.bert(input_ids, token_type_ids, attention_mask, unpad=_unpad(self.unpad, labels))
        out = PreTrainingOutput(nsp_logits=self.nsp(enc.pooler_output))
        if labels is None:
            out.mlm_logits = self.mlm(enc.last_hidden_state)
            return out
        out.mlm_loss, out.mlm_logits, out.mlm_targets = masked_lm_loss(
            self.mlm, enc.last_hidden_state, labels, self.sparse_mlm)
        out.loss = out.mlm_loss
        if next_sentence_label is not None:
            out.nsp_loss = F.cross_entropy(out.nsp_logits.float(), next_sentence_label)
            out.loss = out.loss + out.nsp_loss
        return out


class BertForMaskedLM(PretrainedMixin, nn.Module):
    """Encoder + MLM head, no pooler (as HF's BertForMaskedLM): fill-mask and MLM-only training."""

    def __init__(self, config: BertConfig, sparse_mlm: bool = True, unpad: bool = True):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        self.mlm.apply(lambda m: init_weights(m, config.initializer_range))
        self.sparse_mlm = sparse_mlm
        self.unpad = unpad
        self.label_smoothing = 0.0  # a training setting (seq2seq fine-tuning), not saved with the model

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> PreTrainingOutput:
        hidden = self.bert(input_ids, token_type_ids, attention_mask,
                           unpad=_unpad(self.unpad, labels)).last_hidden_state
        if labels is None:
            return PreTrainingOutput(mlm_logits=self.mlm(hidden))
        loss, logits, targets = masked_lm_loss(self.mlm, hidden, labels, self.sparse_mlm, self.label_smoothing)
        return PreTrainingOutput(loss=loss, mlm_loss=loss, mlm_logits=logits, mlm_targets=targets)


# ----------------------------------------------------------------------------------------------
# Fine-tuning heads: sentence-level from the pooled [CLS], token-level from every token.


@dataclass
class TaskOutput:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, num_labels), (B, T, num_labels) or (B, C)
    start_logits: torch.Tensor | None = None  # span QA: (B, T)
    end_logits: torch.Tensor | None = None


class _TaskHead(PretrainedMixin, nn.Module):
    def __init__(self, config: BertConfig, out_features: int | None, add_pooler: bool):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=add_pooler)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        if out_features is not None:
            self.classifier = nn.Linear(config.hidden_size, out_features)
            init_weights(self.classifier, config.initializer_range)


def _mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[-1] == 1:  # one score per example: labels (B,) or (B, 1)
        return F.mse_loss(logits.float().view(-1), labels.float().view(-1))
    return F.mse_loss(logits.float(), labels.float())  # several scores: labels (B, num_labels)


# config.problem_type -> loss(logits (B, num_labels), labels), as transformers' BertForSequenceClassification.
SEQUENCE_LOSSES = {
    "regression": _mse,
    "single_label_classification": lambda logits, labels: F.cross_entropy(logits.float(), labels.view(-1)),
    # independent yes/no per label: labels (B, num_labels) multi-hot floats
    "multi_label_classification": lambda logits, labels: F.binary_cross_entropy_with_logits(
        logits.float(), labels.float()),
}


def problem_type(config: BertConfig, labels: torch.Tensor) -> str:
    """config.problem_type, or when None what transformers infers: one output is regression, integer labels
    are single-label classes, anything else (float labels over several outputs) multi-label."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


class BertForSequenceClassification(_TaskHead):
    """Classifier on the pooled [CLS] output; the loss follows config.problem_type (SEQUENCE_LOSSES)."""

    def __init__(self, config: BertConfig):
        super().__init__(config, config.num_labels, add_pooler=True)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> TaskOutput:
        pooled = self.bert(input_ids, token_type_ids, attention_mask).pooler_output
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = SEQUENCE_LOSSES[problem_type(self.config, labels)](logits, labels)
        return TaskOutput(loss=loss, logits=logits)


class BertForTokenClassification(_TaskHead):
    """A classifier on every token's output (tagging, NER). Labels of IGNORE_INDEX are not scored."""

    def __init__(self, config: BertConfig):
        super().__init__(config, config.num_labels, add_pooler=False)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> TaskOutput:
        hidden = self.bert(input_ids, token_type_ids, attention_mask).last_hidden_state
        logits = self.classifier(self.dropout(hidden))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        return TaskOutput(loss=loss, logits=logits)


class BertForQuestionAnswering(_TaskHead):
    """Start and end logits over the tokens for span extraction (SQuAD). No dropout, as HF."""

    def __init__(self, config: BertConfig):
        super().__init__(config, None, add_pooler=False)
        self.qa = nn.Linear(config.hidden_size, 2)
        init_weights(self.qa, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, start_positions=None,
                end_positions=None) -> TaskOutput:
        hidden = self.bert(input_ids, token_type_ids, attention_mask).last_hidden_state
        start, end = self.qa(hidden).unbind(-1)  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            T = input_ids.shape[1]  # answers outside the window point past the end and are ignored
            loss = (F.cross_entropy(start.float(), start_positions.clamp(0, T), ignore_index=T)
                    + F.cross_entropy(end.float(), end_positions.clamp(0, T), ignore_index=T)) / 2
        return TaskOutput(loss=loss, start_logits=start, end_logits=end)


class BertForMultipleChoice(_TaskHead):
    """One score per choice from its pooled [CLS] output; softmax over the choices."""

    def __init__(self, config: BertConfig):
        super().__init__(config, 1, add_pooler=True)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> TaskOutput:
        B, C, T = input_ids.shape  # (B, C, T): each choice is its own [CLS] context [SEP] ending [SEP]
        flat = lambda t: None if t is None else t.reshape(B * C, T)  # noqa: E731
        pooled = self.bert(flat(input_ids), flat(token_type_ids), flat(attention_mask)).pooler_output
        logits = self.classifier(self.dropout(pooled)).view(B, C)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return TaskOutput(loss=loss, logits=logits)


MODEL_CLASSES = {
    cls.__name__: cls
    for cls in (BertModel, BertForPreTraining, BertForMaskedLM, BertForSequenceClassification,
                BertForTokenClassification, BertForQuestionAnswering, BertForMultipleChoice)
}
