"""ELECTRA (Clark et al., 2020): a small generator fills the masked positions, a discriminator tells which tokens
were replaced. The discriminator is the model kept and fine-tuned afterwards.

Read top to bottom: the two heads -> the discriminator and the generator (named as transformers names them,
ElectraForPreTraining and ElectraForMaskedLM, so config.json's `architectures` says what a directory holds) ->
the generator's size for a discriminator -> ElectraPretrainer, both models with one shared embedding module ->
electra_loss -> building a pretrainer (for a config, or from a BERT directory).

Both encoders are bertkit's BertModel (model.py): BERT's embeddings, attention and layers, given an
ElectraConfig whose embedding_size may be narrower than hidden_size. Parameter names are our own; their names
in the ELECTRA format are the table ELECTRA_KEY_MAP in checkpoint.py.

Shapes: B batch, T tokens, H hidden, E embedding width, N masked positions, n real (non-padding) tokens, V vocab.
Left out on purpose: masking (data/pretraining.py) and the loop (train/pretrain.py); HF's ElectraFor...Classification
heads (bertkit's own task heads load an ELECTRA directory instead, checkpoint.py).
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.checkpoint import CONFIG_NAME, PretrainedMixin, load_state, read_weights
from bertkit.config import BertConfig, ElectraConfig, load_config
from bertkit.errors import BertkitError
from bertkit.model import IGNORE_INDEX, BertModel, activation, init_weights, masked_lm_loss

# λ in the paper's loss L_MLM + λ L_Disc: the discriminator's per-token loss is much smaller than the generator's
# (Clark et al., 2020, section 2 and appendix A: λ = 50).
DISCRIMINATOR_WEIGHT = 50.0
# Generator hidden size / discriminator hidden size: 1/4 to 1/2 works best (the paper, section 3.2 and figure 3);
# ELECTRA-Small and -Large use 1/4.
DEFAULT_GENERATOR_RATIO = Fraction(1, 4)
# The generator gets one attention head per 64 hidden units, at least one, and a feed-forward 4x its hidden size
# (the original code's get_generator_config, run_pretraining.py).
GENERATOR_HEAD_WIDTH = 64
GENERATOR_DIR = "generator"  # ElectraPretrainer.save_pretrained: the generator's directory, inside the discriminator's


# ----------------------------------------------------------------------------------------------
# Heads


class DiscriminatorHead(nn.Module):
    """Replaced-token detection: dense + activation, then one logit per token (HF's discriminator_predictions)."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., H) -> (...): > 0 means "replaced"
        return self.prediction(self.act(self.dense(h))).squeeze(-1)


class GeneratorHead(nn.Module):
    """The generator's MLM head: dense to the embedding width + GELU + LayerNorm, then the vocabulary projection
    tied to the word embeddings, plus a bias (HF's generator_predictions and generator_lm_head)."""

    def __init__(self, config: ElectraConfig, word_embeddings: nn.Embedding):
        super().__init__()
        width = word_embeddings.embedding_dim  # E
        self.dense = nn.Linear(config.hidden_size, width)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.word_embeddings = [word_embeddings]  # a list, so the tied matrix is not registered twice
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., V)
        h = self.norm(F.gelu(self.dense(h)))  # GELU whatever hidden_act says, as HF's ElectraGeneratorPredictions
        return F.linear(h, self.word_embeddings[0].weight, self.bias)


# ----------------------------------------------------------------------------------------------
# The two models, each one HF directory


def _require_electra(config: BertConfig, name: str) -> None:
    if not isinstance(config, ElectraConfig):
        raise BertkitError(f"{name} needs an ElectraConfig (config.json model_type \"electra\"), got a "
                           f"{config.model_type.upper()} config",
                           hint="start ELECTRA pre-training from a BERT directory with electra_from_bert_init")


class ElectraForPreTraining(PretrainedMixin, nn.Module):
    """The discriminator: encoder + DiscriminatorHead. After pre-training, the model to fine-tune."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        _require_electra(config, "ElectraForPreTraining")
        self.config = config
        self.bert = BertModel(config, add_pooler=False)  # "bert." in our names, "electra." in the file
        self.rtd = DiscriminatorHead(config)
        self.rtd.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        """Replaced-token logits (B, T)."""
        return self.rtd(self.bert(input_ids, token_type_ids, attention_mask).last_hidden_state)


class ElectraForMaskedLM(PretrainedMixin, nn.Module):
    """The generator: encoder + GeneratorHead, a masked language model."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        _require_electra(config, "ElectraForMaskedLM")
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.mlm = GeneratorHead(config, self.bert.embeddings.word)
        self.mlm.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        """Vocabulary logits (B, T, V)."""
        return self.mlm(self.bert(input_ids, token_type_ids, attention_mask).last_hidden_state)


# config.json's architectures -> class (checkpoint.load_model); a bare ElectraModel is bertkit's BertModel
ELECTRA_CLASSES = {"ElectraForPreTraining": ElectraForPreTraining, "ElectraForMaskedLM": ElectraForMaskedLM,
                   "ElectraModel": BertModel}


# ----------------------------------------------------------------------------------------------
# The generator's size


def _ratio(value) -> Fraction:
    try:
        ratio = Fraction(value) if isinstance(value, (str, int, Fraction)) else Fraction(value).limit_denominator(1000)
    except (ValueError, TypeError, ZeroDivisionError):
        raise BertkitError(f"generator_ratio {value!r} is not a number",
                           hint="give a fraction of the discriminator's hidden size, e.g. 1/4") from None
    if not 0 < ratio <= 1:
        raise BertkitError(f"generator_ratio {value!r} must be in (0, 1]",
                           hint="the paper's generators are 1/4 to 1/2 of the discriminator, e.g. 1/4")
    return ratio


def _generator_shape(hidden_size: int, ratio: Fraction) -> tuple[int, int] | None:
    """(hidden, heads) of the generator, or None where the ratio does not fit hidden_size."""
    hidden = hidden_size * ratio
    if hidden.denominator != 1:
        return None
    heads = max(1, int(hidden) // GENERATOR_HEAD_WIDTH)
    return (int(hidden), heads) if int(hidden) % heads == 0 else None


def generator_config(config: ElectraConfig, generator_ratio=DEFAULT_GENERATOR_RATIO,
                     source: str = "the model") -> ElectraConfig:
    """The generator's config for a discriminator's: hidden_size times the ratio, one head per 64 units, a 4x
    feed-forward; the same layers and embedding width (the embeddings are shared). A ratio that does not give a
    whole hidden size, divisible by its heads, raises a BertkitError naming `source` and the ratios that fit."""
    ratio = _ratio(generator_ratio)
    shape = _generator_shape(config.hidden_size, ratio)
    if shape is None:
        hidden = config.hidden_size * ratio
        why = (f"{float(hidden):g}, not a whole number" if hidden.denominator != 1 else
               f"{hidden}, which does not split into {max(1, int(hidden) // GENERATOR_HEAD_WIDTH)} attention heads "
               f"(one per {GENERATOR_HEAD_WIDTH} units)")
        fits = [f"{r.numerator}/{r.denominator}" for r in map(Fraction, ("1/2", "1/3", "1/4", "1/6", "1/8"))
                if _generator_shape(config.hidden_size, r)]
        raise BertkitError(f"{source}: generator_ratio {ratio} does not fit hidden_size {config.hidden_size} "
                           f"(the generator's hidden size would be {why})",
                           hint=f"use generator_ratio {' or '.join(fits)}" if fits else
                                "use a model whose hidden_size is a multiple of 4, with generator_ratio 1/4")
    hidden, heads = shape
    return dataclasses.replace(config, hidden_size=hidden, num_attention_heads=heads, intermediate_size=4 * hidden,
                               extra=dict(config.extra))


# ----------------------------------------------------------------------------------------------
# Pre-training: both models, the loss


class ElectraPretrainer(nn.Module):
    """Generator + discriminator with one shared embedding module (word, position and segment tables and their
    LayerNorm: the original code builds both in the one "electra/embeddings" scope; the paper, section 3.2, finds
    tying the token and position embeddings helps). Calling it computes electra_loss, so a DDP wrapper sees one
    forward. Its config is the discriminator's: the model that is saved and fine-tuned."""

    def __init__(self, config: ElectraConfig, generator_config: ElectraConfig):
        super().__init__()
        shared_fields = ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps")
        differ = [f"{f} {getattr(generator_config, f)} (discriminator {getattr(config, f)})" for f in shared_fields
                  if getattr(config, f) != getattr(generator_config, f)]
        if differ:
            raise BertkitError(f"the generator cannot share the discriminator's embeddings: {', '.join(differ)}",
                               hint="derive the generator's config with electra.generator_config")
        self.config = config
        self.discriminator = ElectraForPreTraining(config)
        self.generator = ElectraForMaskedLM(generator_config)
        shared = self.discriminator.bert.embeddings
        self.generator.bert.embeddings = shared
        self.generator.mlm.word_embeddings = [shared.word]

    def forward(self, input_ids, labels, token_type_ids=None, attention_mask=None, *, rng=None, unpad=True):
        return electra_loss(self, input_ids, labels, attention_mask, token_type_ids, rng, unpad=unpad)

    def save_pretrained(self, directory: str) -> None:
        """The discriminator as a HF ElectraForPreTraining directory, the generator as ElectraForMaskedLM in
        DIRECTORY/generator (one safetensors file each; each holds its own copy of the shared embeddings)."""
        self.discriminator.save_pretrained(directory)
        self.generator.save_pretrained(os.path.join(directory, GENERATOR_DIR))

    @classmethod
    def from_pretrained(cls, directory: str) -> "ElectraPretrainer":
        """What save_pretrained wrote: the discriminator's directory, with its generator inside."""
        directory = os.fspath(directory)
        generator_dir = os.path.join(directory, GENERATOR_DIR)
        model = cls(load_config(os.path.join(directory, CONFIG_NAME)),
                    load_config(os.path.join(generator_dir, CONFIG_NAME)))
        model.load_weights(directory)
        return model

    def load_weights(self, directory: str) -> None:
        """Both models' weights from what save_pretrained wrote (a resumed run); every tensor must be there."""
        for model, path in ((self.discriminator, directory), (self.generator, os.path.join(directory, GENERATOR_DIR))):
            report = load_state(model, read_weights(path), source=path)
            if report.missing:
                raise BertkitError(f"{path}: lacks {', '.join(report.missing[:3])}"
                                   f"{f' (and {len(report.missing) - 3} more)' if len(report.missing) > 3 else ''}",
                                   hint="it was written by a different model; load the directory saved with it")


def electra_loss(model: ElectraPretrainer, input_ids: torch.Tensor, labels: torch.Tensor,
                 attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None,
                 rng: torch.Generator | None, unpad: bool = True):
    """The ELECTRA loss for one batch (Clark et al., 2020, section 2).

    input_ids: (B, T) with the masking applied; labels: (B, T) the original ids at the masked positions,
    IGNORE_INDEX elsewhere; attention_mask: (B, T) 1 on real tokens; token_type_ids: (B, T) segment ids;
    rng: the torch.Generator the replacements are sampled with, on the model's device (None: torch's global one).

    Returns (loss, statistics). loss = generator MLM loss + DISCRIMINATOR_WEIGHT * discriminator loss, each a mean.
    statistics: {name: (sum, count)}, detached 0-dim float tensors, for the loop to sum over micro-batches and
    ranks and divide: mlm_loss, mlm_accuracy (the generator at the masked positions), rtd_loss, rtd_accuracy
    (the discriminator on every real token), replaced_fraction (masked positions whose sample is not the original).
    """
    masked = labels != IGNORE_INDEX  # (B, T)
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(masked)  # (B, T)
    skip_padding = unpad and not torch.compiler.is_compiling()  # as model._unpad: the losses never read padding

    # 1. The generator predicts the masked positions (decoding those only: model.masked_lm_loss).
    hidden = model.generator.bert(input_ids, token_type_ids, attention_mask, unpad=skip_padding).last_hidden_state
    mlm_loss, mlm_logits, originals = masked_lm_loss(model.generator.mlm, hidden, labels)  # (N, V), (N,)

    # 2. A replacement sampled at each masked position from the generator's softmax. No gradient flows through the
    # discrete sample (the generator learns from its MLM loss only); fp32, since bf16 probabilities would coarsen
    # the sampling distribution.
    with torch.no_grad():
        sampled = torch.multinomial(mlm_logits.detach().float().softmax(-1), 1, generator=rng).squeeze(1)  # (N,)
        corrupted = input_ids.clone()
        corrupted[masked] = sampled  # (B, T): the original tokens elsewhere
        replaced = sampled != originals  # (N,): a sample equal to the original counts as original (the paper)
        is_replaced = torch.zeros(input_ids.shape, dtype=torch.float, device=input_ids.device)
        is_replaced[masked] = replaced.float()  # (B, T)

    # 3. The discriminator labels every real token, replaced or not (the loss covers all of them, not only the
    # masked 15%: the source of ELECTRA's efficiency).
    hidden = model.discriminator.bert(corrupted, token_type_ids, attention_mask, unpad=skip_padding).last_hidden_state
    rtd_logits = model.discriminator.rtd(hidden[real]).float()  # (n,)
    rtd_targets = is_replaced[real]  # (n,)
    rtd_per_token = F.binary_cross_entropy_with_logits(rtd_logits, rtd_targets, reduction="none")  # (n,)
    rtd_loss = rtd_per_token.mean()

    loss = mlm_loss + DISCRIMINATOR_WEIGHT * rtd_loss
    with torch.no_grad():
        n_masked = rtd_logits.new_tensor(float(originals.numel()))
        n_real = rtd_logits.new_tensor(float(rtd_targets.numel()))
        statistics = {
            "mlm_loss": (mlm_loss.detach().float() * n_masked, n_masked),
            "mlm_accuracy": ((mlm_logits.argmax(-1) == originals).sum().float(), n_masked),
            "rtd_loss": (rtd_per_token.sum(), n_real),
            "rtd_accuracy": (((rtd_logits > 0) == rtd_targets.bool()).sum().float(), n_real),
            "replaced_fraction": (replaced.sum().float(), n_masked),
        }
    return loss, statistics


# ----------------------------------------------------------------------------------------------
# Building a pretrainer


def as_electra_config(config: BertConfig, embedding_size: int | None = None) -> ElectraConfig:
    """The discriminator's config for a BERT config (e.g. a preset): the same fields; embeddings as wide as
    hidden_size unless `embedding_size` says otherwise (ELECTRA-Small: 128 into hidden 256)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(BertConfig) if f.name != "extra"}
    width = embedding_size or getattr(config, "embedding_size", None)
    return ElectraConfig(**fields, extra=dict(config.extra), embedding_size=width)


def build_pretrainer(config: BertConfig, generator_ratio=DEFAULT_GENERATOR_RATIO, embedding_size: int | None = None,
                     source: str = "the model config") -> ElectraPretrainer:
    """A freshly initialised pretrainer whose discriminator is `config` (e.g. config.preset("small")) and whose
    generator is sized by generator_ratio (generator_config; `source` names the config in its error)."""
    discriminator = as_electra_config(config, embedding_size)
    return ElectraPretrainer(discriminator, generator_config(discriminator, generator_ratio, source))


def electra_from_bert_init(bert_dir: str, generator_ratio=DEFAULT_GENERATOR_RATIO) -> ElectraPretrainer:
    """A pretrainer whose discriminator starts from a BERT (or ELECTRA) directory's encoder, and whose generator
    is new, sized by generator_ratio; the embeddings it shares are the directory's. The ratio is checked against
    the directory's hidden_size before any weights are read."""
    bert_dir = os.fspath(bert_dir)
    if not os.path.isdir(bert_dir):
        raise BertkitError(f"{bert_dir}: model directory not found",
                           hint="pass a directory holding config.json and model.safetensors")
    discriminator = as_electra_config(load_config(os.path.join(bert_dir, CONFIG_NAME)))
    pretrainer = ElectraPretrainer(discriminator, generator_config(discriminator, generator_ratio, source=bert_dir))
    encoder = BertModel.from_pretrained(bert_dir)
    state = {name: value for name, value in encoder.state_dict().items() if not name.startswith("pooler.")}
    pretrainer.discriminator.bert.load_state_dict(state)  # strict: every encoder tensor, the shared embeddings too
    return pretrainer
