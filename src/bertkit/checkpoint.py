"""HuggingFace-format model directories: the key map, safetensors load/save, atomic file writes.

A model directory is `config.json` + `model.safetensors` (or a sharded `model.safetensors.index.json`),
exactly what `transformers` writes and reads, so every BERT checkpoint on the hub loads here and ours
load there. The whole correspondence between our parameter names and HuggingFace's is one table per
format: `KEY_MAP` for BERT, `ELECTRA_KEY_MAP` for ELECTRA, chosen by config.json's model_type (`FORMATS`).
Pickle files (`pytorch_model.bin`) are refused unless the caller asks for them, and even then read with
`torch.load(weights_only=True)`, which cannot run code.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field

import torch

from bertkit.config import BertConfig, load_config
from bertkit.errors import BertkitError
from bertkit.files import atomic_write, atomic_write_json

log = logging.getLogger("bertkit")

# ours -> HuggingFace, relative to the encoder ("bert." is prefixed for task models) or to the task model.
# {i}: layer index, {p}: weight|bias. A tuple on the right is several HF tensors concatenated on dim 0.
KEY_MAP: list[tuple[str, str | tuple[str, ...]]] = [
    ("embeddings.word.weight", "embeddings.word_embeddings.weight"),
    ("embeddings.position.weight", "embeddings.position_embeddings.weight"),
    ("embeddings.segment.weight", "embeddings.token_type_embeddings.weight"),
    ("embeddings.norm.{p}", "embeddings.LayerNorm.{p}"),
    ("layers.{i}.attention.qkv.{p}", ("encoder.layer.{i}.attention.self.query.{p}",
                                      "encoder.layer.{i}.attention.self.key.{p}",
                                      "encoder.layer.{i}.attention.self.value.{p}")),
    ("layers.{i}.attention.out.{p}", "encoder.layer.{i}.attention.output.dense.{p}"),
    ("layers.{i}.attention_norm.{p}", "encoder.layer.{i}.attention.output.LayerNorm.{p}"),
    ("layers.{i}.ffn.up.{p}", "encoder.layer.{i}.intermediate.dense.{p}"),
    ("layers.{i}.ffn.down.{p}", "encoder.layer.{i}.output.dense.{p}"),
    ("layers.{i}.ffn_norm.{p}", "encoder.layer.{i}.output.LayerNorm.{p}"),
    ("pooler.{p}", "pooler.dense.{p}"),
    # heads (outside the encoder)
    ("mlm.dense.{p}", "cls.predictions.transform.dense.{p}"),
    ("mlm.norm.{p}", "cls.predictions.transform.LayerNorm.{p}"),
    ("mlm.bias", "cls.predictions.bias"),
    ("nsp.{p}", "cls.seq_relationship.{p}"),
    ("classifier.{p}", "classifier.{p}"),
    ("qa.{p}", "qa_outputs.{p}"),
]
ENCODER_PREFIX = "bert."

# The ELECTRA format (transformers' modeling_electra.py, Clark et al. 2020): BERT's encoder names under "electra."
# plus embeddings_project (when embedding_size != hidden_size), and ELECTRA's two heads (electra.py) in place of
# BERT's. bertkit's own pooler and task heads, fine-tuned from an ELECTRA checkpoint, keep BERT's names.
ELECTRA_KEY_MAP: list[tuple[str, str | tuple[str, ...]]] = [
    row for row in KEY_MAP if not row[0].startswith(("mlm.", "nsp."))] + [
    ("embeddings_project.{p}", "embeddings_project.{p}"),
    ("rtd.dense.{p}", "discriminator_predictions.dense.{p}"),  # the discriminator: ElectraForPreTraining
    ("rtd.prediction.{p}", "discriminator_predictions.dense_prediction.{p}"),
    ("mlm.dense.{p}", "generator_predictions.dense.{p}"),  # the generator: ElectraForMaskedLM
    ("mlm.norm.{p}", "generator_predictions.LayerNorm.{p}"),
    ("mlm.bias", "generator_lm_head.bias"),
]


@dataclass(frozen=True)
class Format:
    """One HF checkpoint format: the prefix of its encoder's keys in a model with a head, and its key table."""

    encoder_prefix: str
    key_map: list[tuple[str, str | tuple[str, ...]]]
    patterns: list = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "patterns", [(_compile(ours), hf) for ours, hf in self.key_map])


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(pattern + "$")


# config.model_type -> its format
FORMATS = {"bert": Format(ENCODER_PREFIX, KEY_MAP), "electra": Format("electra.", ELECTRA_KEY_MAP)}


def format_of(config: BertConfig) -> Format:
    return FORMATS[config.model_type]


def config_kind(config: BertConfig) -> str:
    return config.model_type.upper()  # "BERT", "ELECTRA": for messages


# Present in some checkpoints, never needed: the tied decoders (each is the word embedding matrix, plus
# cls.predictions.bias or generator_lm_head.bias) and position-id buffers.
IGNORED_HF_KEYS = re.compile(
    r"(cls\.predictions\.decoder\.(weight|bias)|generator_lm_head\.weight|.*position_ids|.*token_type_ids)$")

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"


def to_hf_keys(name: str, is_encoder_param: bool, fmt: Format = FORMATS["bert"]) -> tuple[str, ...]:
    """Our parameter name (relative to its model) -> the HF key(s) holding it in format `fmt`."""
    local = name[len("bert."):] if name.startswith("bert.") else name
    for pattern, hf in fmt.patterns:
        m = pattern.match(local)
        if m:
            parts = (hf,) if isinstance(hf, str) else hf
            prefix = fmt.encoder_prefix if is_encoder_param else ""
            return tuple(prefix + p.format(**m.groupdict()) for p in parts)
    table = "KEY_MAP" if fmt is FORMATS["bert"] else "ELECTRA_KEY_MAP"
    raise KeyError(f"no HuggingFace name for parameter {name!r}: add it to {table}")


def save_tensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", **(metadata or {})}))


def load_tensors(path: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning a truncated or corrupt file into a clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise BertkitError(f"{path}: cannot read safetensors file ({e})",
                           hint="the file is truncated or corrupt: copy or re-save it from the original model") from None


# ----------------------------------------------------------------------------------------------
# Reading a directory


def read_weights(directory: str, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of a HF model directory, by their HF names."""
    single = os.path.join(directory, WEIGHTS_NAME)
    index = os.path.join(directory, WEIGHTS_INDEX_NAME)
    pickle_file = os.path.join(directory, PICKLE_NAME)
    if os.path.isfile(single):
        return load_tensors(single)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as e:
            raise BertkitError(f"{index}: not a valid safetensors index ({e})", hint="re-save the model") from None
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            shard_path = os.path.join(directory, shard)
            if not os.path.isfile(shard_path):
                raise BertkitError(f"{shard_path}: shard named in {index} is missing", hint="copy the whole model directory")
            tensors.update(load_tensors(shard_path))
        return tensors
    if os.path.isfile(pickle_file):
        if not allow_pickle:
            raise BertkitError(
                f"{pickle_file}: refusing to read a pickle file (unpickling can run arbitrary code)",
                hint="use the model's model.safetensors, or convert it once with `bertkit convert "
                     f"{directory} OUT_DIR --allow-pickle` (read with torch.load(weights_only=True))")
        try:
            state = torch.load(pickle_file, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses anything but tensors and plain containers
            raise BertkitError(f"{pickle_file}: not a plain weights file ({e.__class__.__name__}: {e})",
                               hint="only state dicts of tensors are accepted; get a safetensors copy") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise BertkitError(f"{pickle_file}: expected a dict of tensors", hint="get a safetensors copy")
        return state
    raise BertkitError(f"{directory}: no model weights found (expected {WEIGHTS_NAME})",
                       hint="pass a HuggingFace model directory with config.json and model.safetensors")


def _normalize_hf_key(key: str) -> str:
    # Checkpoints converted from the original TensorFlow code name LayerNorm parameters gamma/beta.
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))


@dataclass
class LoadReport:
    """What from_pretrained did: keys the model wanted but the file lacked (left initialised), and
    keys the file had that this model does not use (e.g. pre-training heads under a classifier)."""

    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    missing_files_keys: dict[str, list[str]] = field(default_factory=dict)  # missing name -> the file's absent keys

    def __str__(self) -> str:
        lines = []
        if self.missing:
            lines.append(f"newly initialised (not in the checkpoint): {', '.join(self.missing)}")
        if self.unused:
            lines.append(f"not used by this model: {', '.join(self.unused)}")
        return "; ".join(lines) or "all keys matched"


def load_state(model: torch.nn.Module, hf_state: dict[str, torch.Tensor], source: str) -> LoadReport:
    """Copy HF-named tensors into `model`; shapes are checked, the rest reported."""
    hf_state = {_normalize_hf_key(k): v for k, v in hf_state.items() if not IGNORED_HF_KEYS.match(k)}
    fmt = format_of(model.config)
    prefix = fmt.encoder_prefix
    is_encoder_only = not hasattr(model, "bert")
    if is_encoder_only:  # a bare BertModel: drop the "bert." (or "electra.") of a task checkpoint
        hf_state = {k[len(prefix):]: v for k, v in hf_state.items() if k.startswith(prefix)} or hf_state
    elif not any(k.startswith(prefix) for k in hf_state):  # a bare BertModel checkpoint under a head
        encoder_keys = ("embeddings.", "embeddings_project.", "encoder.", "pooler.")
        hf_state = {(prefix + k if k.startswith(encoder_keys) else k): v for k, v in hf_state.items()}
    report = LoadReport()
    used: set[str] = set()
    with torch.no_grad():
        for name, param in model.state_dict().items():
            try:
                hf_keys = to_hf_keys(name, not is_encoder_only and name.startswith("bert."), fmt)
            except KeyError:
                raise BertkitError(f"{source}: {type(model).__name__} does not load from this "
                                   f"{config_kind(model.config)} checkpoint (its {name} has no name in that format)",
                                   hint="load it into a class of that format: fine-tuning heads and BertModel read "
                                        "both BERT and ELECTRA; ELECTRA pre-training is bertkit.electra") from None
            if not all(k in hf_state for k in hf_keys):
                report.missing.append(name)
                report.missing_files_keys[name] = [k for k in hf_keys if k not in hf_state]
                continue
            value = torch.cat([hf_state[k] for k in hf_keys]) if len(hf_keys) > 1 else hf_state[hf_keys[0]]
            if value.shape != param.shape:
                raise _shape_error(name, hf_keys[0], tuple(value.shape), tuple(param.shape), model.config, source)
            param.copy_(value)
            used.update(hf_keys)
    report.unused = sorted(set(hf_state) - used)
    return report


def _shape_error(name, hf_key, got, want, config: BertConfig, source: str) -> BertkitError:
    if name.endswith("embeddings.word.weight") and got[0] != config.vocab_size:
        return BertkitError(
            f"{source}: the word embedding matrix has {got[0]} rows but config.json says vocab_size={config.vocab_size}",
            hint=f"set vocab_size to {got[0]} in config.json, or use the config that came with these weights")
    if name.endswith("embeddings.word.weight") and got[0] == config.vocab_size:  # the width disagrees
        width = "embedding_size" if hasattr(config, "embedding_size") else "hidden_size"
        return BertkitError(f"{source}: the word embeddings are {got[1]} wide but config.json says "
                            f"{width}={want[1]}",
                            hint="config.json does not describe these weights: use the config saved with them")
    return BertkitError(f"{source}: tensor {hf_key} has shape {list(got)}, the config expects {list(want)}",
                        hint="config.json does not describe these weights: use the config saved with them")


# ----------------------------------------------------------------------------------------------
# The mixin every model class inherits: from_pretrained / save_pretrained


class PretrainedMixin:
    config: BertConfig
    load_report: LoadReport | None = None

    @classmethod
    def from_pretrained(cls, directory: str, *, allow_pickle: bool = False, **config_overrides):
        """Load a HuggingFace BERT directory into this class. Weights the checkpoint lacks (a new task
        head) keep their fresh initialisation; `model.load_report` lists them and any unused keys."""
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise BertkitError(f"{directory}: model directory not found",
                               hint="pass a directory holding config.json and model.safetensors")
        config = load_config(os.path.join(directory, CONFIG_NAME))  # an ElectraConfig for an ELECTRA directory
        for key, value in config_overrides.items():
            setattr(config, key, value)
        config.__post_init__()
        hf_state = read_weights(directory, allow_pickle)
        model = cls(config)
        source = os.path.join(directory, WEIGHTS_NAME)
        model.load_report = load_state(model, hf_state, source=source)
        # A task head or a pooler may be new; the encoder itself never is: a missing encoder weight means a
        # damaged or foreign file, and a model that would silently run with random layers.
        encoder = [n for n in model.load_report.missing
                   if (n.startswith("bert.") or not hasattr(model, "bert")) and ".pooler." not in f".{n}"]
        if encoder:
            keys = [k for n in encoder for k in model.load_report.missing_files_keys[n]]
            raise BertkitError(f"{source}: the encoder weights {', '.join(keys[:3])}"
                               f"{f' (and {len(keys) - 3} more)' if len(keys) > 3 else ''} are missing",
                               hint=f"the file is damaged or not a {config_kind(config)} checkpoint; "
                                    "restore it from the original")
        if model.load_report.missing or model.load_report.unused:
            log.info("%s from %s: %s", cls.__name__, directory, model.load_report)
        return model

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's tensors under HuggingFace's names (fused q/k/v split again)."""
        is_encoder_only = not hasattr(self, "bert")
        fmt = format_of(self.config)
        out = {}
        for name, tensor in self.state_dict().items():
            hf_keys = to_hf_keys(name, not is_encoder_only and name.startswith("bert."), fmt)
            for key, part in zip(hf_keys, tensor.chunk(len(hf_keys))):
                out[key] = part
        return out

    def save_pretrained(self, directory: str) -> None:
        """Write config.json and model.safetensors, each atomically, into `directory`."""
        os.makedirs(directory, exist_ok=True)
        d = self.config.to_dict()
        d["architectures"] = [type(self).__name__]
        atomic_write_json(os.path.join(directory, CONFIG_NAME), d)
        save_tensors(os.path.join(directory, WEIGHTS_NAME), self.hf_state_dict())


def resolve_model_dir(path: str) -> str:
    """The model directory a user means: a pre-training run stands for RUN/model, a fine-tuning output with one
    seed for OUT/seed-N; with several seeds, an error that names them."""
    import glob

    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, CONFIG_NAME)):
        return path
    if os.path.isfile(os.path.join(path, "model", CONFIG_NAME)):
        return os.path.join(path, "model")
    seeds = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(path), "seed-*", CONFIG_NAME)))
    if len(seeds) == 1:
        return seeds[0]
    if seeds:
        raise BertkitError(f"{path}: a fine-tuning output with {len(seeds)} seeds, each its own model",
                           hint=f"did you mean --model {seeds[0]}? (or {', '.join(seeds[1:])})")
    return path


def load_model(directory: str, **kwargs):
    """Load a directory into the class its config names (architectures[0]), BertModel by default."""
    from bertkit.electra import ELECTRA_CLASSES
    from bertkit.model import MODEL_CLASSES, BertModel

    config_path = os.path.join(directory, CONFIG_NAME)
    arch = None
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                arch = (json.load(f).get("architectures") or [None])[0]
        except (ValueError, AttributeError):
            pass  # BertConfig.load reports the bad file
    return {**MODEL_CLASSES, **ELECTRA_CLASSES}.get(arch, BertModel).from_pretrained(directory, **kwargs)
