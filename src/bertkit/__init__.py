"""bertkit: BERT end to end, in plain PyTorch.

The names transformers users reach for, at the top level (loaded on first use, so `import bertkit`
stays fast and the `bertkit` command does not pay for torch before it needs it):

    import bertkit
    model = bertkit.BertModel.from_pretrained("path/to/any/hf-bert")
    tokenizer = bertkit.Tokenizer.from_pretrained("path/to/any/hf-bert")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "BertConfig": "bertkit.config",
    "BertModel": "bertkit.model",
    "BertForPreTraining": "bertkit.model",
    "BertForMaskedLM": "bertkit.model",
    "BertForSequenceClassification": "bertkit.model",
    "BertForTokenClassification": "bertkit.model",
    "BertForQuestionAnswering": "bertkit.model",
    "BertForMultipleChoice": "bertkit.model",
    "ElectraConfig": "bertkit.config",
    "ElectraForPreTraining": "bertkit.electra",
    "ElectraForMaskedLM": "bertkit.electra",
    "ElectraPretrainer": "bertkit.electra",
    "Tokenizer": "bertkit.tokenizer",
    "Pipeline": "bertkit.pipelines",
    "BertkitError": "bertkit.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'bertkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
