"""BertConfig: the model's hyper-parameters, with HuggingFace `config.json` field names, and the presets.

The field names are those of HuggingFace's `BertConfig`, so a `config.json` from any BERT checkpoint reads
into this dataclass unchanged and ours reads back into `transformers`. Fields we do not model (e.g.
`gradient_checkpointing`, `use_cache`) are kept in `extra` and written back, so a round trip loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bertkit.errors import BertkitError


@dataclass
class BertConfig:
    model_type: ClassVar[str] = "bert"  # config.json's model_type; it also picks the checkpoint format (checkpoint.py)

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # exact (erf) GELU, as the original BERT
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # segment A and segment B
    initializer_range: float = 0.02  # truncated-normal std in the paper's code; we use a plain normal like HF
    layer_norm_eps: float = 1e-12  # as in the original BERT
    pad_token_id: int = 0
    # Task heads: label names are kept so predictions come back as names, not indices.
    id2label: dict[int, str] | None = None
    problem_type: str | None = None  # one of PROBLEM_TYPES; None: inferred from the labels, as HF does
    classifier_dropout: float | None = None  # None: use hidden_dropout_prob, as HF does
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not _type_ok(value, int) or value < 1:
                raise BertkitError(f"{name} must be a positive integer, got {value!r}",
                                   hint="fix the value in the config file")
        if self.hidden_size % self.num_attention_heads:
            raise BertkitError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})",
                hint="choose a head count that divides the hidden size",
            )
        if self.hidden_act not in ACTIVATIONS:
            raise BertkitError(
                f"hidden_act {self.hidden_act!r} is not supported",
                hint=f"use one of {', '.join(sorted(ACTIVATIONS))}",
            )
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise BertkitError(f"problem_type {self.problem_type!r} is not supported",
                               hint=f"use one of {', '.join(PROBLEM_TYPES)}, or leave it out")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in (self.id2label or {}).items()}

    # ---- HuggingFace config.json ----

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d = {**self.extra, **d, "model_type": self.model_type, "position_embedding_type": "absolute"}
        if self.id2label is None:
            for key in ("id2label", "problem_type", "classifier_dropout"):
                if d[key] is None:
                    d.pop(key)
        else:
            d["id2label"] = {str(k): v for k, v in self.id2label.items()}
            d["label2id"] = self.label2id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "BertConfig":
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            if name not in known:
                continue
            expected = _FIELD_TYPES.get(name)
            if expected is not None and value is not None and not _type_ok(value, expected):
                raise BertkitError(
                    f"{source}: field {name!r} should be {expected.__name__}, got {value!r}",
                    hint="fix the value in the config file",
                )
            kwargs[name] = value
        for required in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            if required not in d:
                raise BertkitError(
                    f"{source}: required field {required!r} is missing",
                    hint="a BERT config.json needs vocab_size, hidden_size, num_hidden_layers, num_attention_heads",
                )
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise BertkitError(
                f"{source}: position_embedding_type {d['position_embedding_type']!r} is not supported",
                hint="bertkit implements BERT's absolute position embeddings",
            )
        kwargs.setdefault("intermediate_size", 4 * d["hidden_size"])
        if "id2label" in kwargs and kwargs["id2label"] is not None:
            if not all(re.fullmatch(r"\d+", str(k)) for k in kwargs["id2label"]):
                raise BertkitError(f"{source}: id2label keys must be label indices 0, 1, ..., got "
                                   f"{list(kwargs['id2label'])[:5]}", hint="fix id2label in the config file")
            kwargs["id2label"] = {int(k): v for k, v in kwargs["id2label"].items()}
            if d.get("num_labels") is None and len(kwargs["id2label"]) == 2 and _default_labels(kwargs["id2label"]):
                # HF writes LABEL_0/LABEL_1 for every model: that is no label information.
                kwargs["id2label"] = None
        extra = {k: v for k, v in d.items() if k not in known and k not in _DERIVED}
        try:
            return cls(**kwargs, extra=extra)
        except BertkitError as e:  # a value out of range: name the file it came from
            raise BertkitError(f"{source}: {e.message}", hint=e.hint) from None

    def save(self, path: str) -> None:
        from bertkit.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str) -> "BertConfig":
        return cls.from_dict(_read_config_json(path), source=path)


@dataclass
class ElectraConfig(BertConfig):
    """A BertConfig plus ELECTRA's embedding width (Clark et al., 2020): the embeddings may be narrower than the
    encoder (ELECTRA-Small: 128 into 256 hidden), and a linear map `embeddings_project` then widens them. The
    generator and the discriminator share one embedding table, so both have the discriminator's width."""

    model_type: ClassVar[str] = "electra"

    embedding_size: int | None = None  # None: hidden_size (no projection)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        if not _type_ok(self.embedding_size, int) or self.embedding_size < 1:
            raise BertkitError(f"embedding_size must be a positive integer, got {self.embedding_size!r}",
                               hint="fix the value in the config file")


# config.json's model_type -> the class that reads it; any other model_type reads as a BertConfig, as before.
CONFIG_CLASSES: dict[str, type[BertConfig]] = {"bert": BertConfig, "electra": ElectraConfig}


def load_config(path: str) -> BertConfig:
    """A model directory's config.json, as the class its model_type names (ElectraConfig for "electra")."""
    d = _read_config_json(path)
    return CONFIG_CLASSES.get(d.get("model_type"), BertConfig).from_dict(d, source=path)


def _read_config_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise BertkitError(f"{path}: config file not found", hint="pass a model directory with config.json")
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BertkitError(f"{path}: not valid JSON ({e})", hint="restore config.json from the original model") from None
    if not isinstance(d, dict):
        raise BertkitError(f"{path}: expected a JSON object", hint="restore config.json from the original model")
    return d


def _default_labels(id2label: dict[int, str]) -> bool:
    return all(v == f"LABEL_{k}" for k, v in id2label.items())


def _type_ok(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


_FIELD_TYPES: dict[str, type] = {
    "vocab_size": int, "hidden_size": int, "num_hidden_layers": int, "num_attention_heads": int,
    "intermediate_size": int, "hidden_act": str, "hidden_dropout_prob": float,
    "attention_probs_dropout_prob": float, "max_position_embeddings": int, "type_vocab_size": int,
    "initializer_range": float, "layer_norm_eps": float, "pad_token_id": int, "id2label": dict,
    "classifier_dropout": float, "problem_type": str, "embedding_size": int,
}
# Written by to_dict from other fields; never stored as extra.
_DERIVED = {"label2id", "num_labels", "model_type", "position_embedding_type"}

ACTIVATIONS = {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu"}
# The sequence classifier's losses (model.SEQUENCE_LOSSES), named as HF's config.json names them.
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def _preset(layers: int, hidden: int, heads: int) -> BertConfig:
    return BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                      intermediate_size=4 * hidden)


# The BERT miniatures of Turc et al. (2019) plus the paper's base and large.
PRESETS = {
    "tiny": lambda: _preset(2, 128, 2),
    "mini": lambda: _preset(4, 256, 4),
    "small": lambda: _preset(4, 512, 8),
    "medium": lambda: _preset(8, 512, 8),
    "base": lambda: _preset(12, 768, 12),
    "large": lambda: _preset(24, 1024, 16),
}


def preset(name: str, **overrides: Any) -> BertConfig:
    """A named preset (tiny, mini, small, medium, base, large) with fields overridden."""
    if name not in PRESETS:
        raise BertkitError(f"unknown model preset {name!r}", hint=f"use one of {', '.join(PRESETS)} or a config.json")
    return dataclasses.replace(PRESETS[name](), **overrides)
