"""Bad model directories: each gives one clear error naming the file and the fix."""

import json

import pytest
import torch

from bertkit.checkpoint import load_model
from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.model import BertForPreTraining, BertModel

CFG = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=16)


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    BertForPreTraining(CFG).save_pretrained(d)
    return d


def test_directory_without_weights(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(BertkitError, match=r"model: no model weights found \(expected model.safetensors\)"):
        BertModel.from_pretrained(model_dir)


def test_missing_directory(tmp_path):
    with pytest.raises(BertkitError, match="nowhere: model directory not found"):
        BertModel.from_pretrained(tmp_path / "nowhere")


def test_vocab_size_disagrees_with_embeddings(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    config["vocab_size"] = 60
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(BertkitError, match=r"model.safetensors: the word embedding matrix has 50 rows but "
                                           r"config.json says vocab_size=60 \(set vocab_size to 50"):
        BertForPreTraining.from_pretrained(model_dir)


def test_truncated_safetensors(model_dir):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(BertkitError, match=r"model.safetensors: cannot read safetensors file .*truncated or corrupt"):
        BertModel.from_pretrained(model_dir)


def test_pickle_only_directory_is_refused_then_read_safely(model_dir):
    state = BertForPreTraining.from_pretrained(model_dir).hf_state_dict()
    (model_dir / "model.safetensors").unlink()
    torch.save(state, model_dir / "pytorch_model.bin")
    with pytest.raises(BertkitError, match=r"pytorch_model.bin: refusing to read a pickle file.*model.safetensors"):
        BertModel.from_pretrained(model_dir)
    model = BertForPreTraining.from_pretrained(model_dir, allow_pickle=True)
    assert model.load_report.missing == [] and model.load_report.unused == []


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle ran code')",))


def test_malicious_pickle_is_not_executed(model_dir):
    (model_dir / "model.safetensors").unlink()
    torch.save({"x": Boom()}, model_dir / "pytorch_model.bin")
    with pytest.raises(BertkitError, match="pytorch_model.bin: not a plain weights file"):
        BertModel.from_pretrained(model_dir, allow_pickle=True)


@pytest.mark.parametrize("content, message", [
    ("{not json", "config.json: not valid JSON"),
    ('{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}', "required field 'vocab_size' is missing"),
    ('{"vocab_size": "fifty", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}',
     "field 'vocab_size' should be int, got 'fifty'"),
])
def test_bad_config(model_dir, content, message):
    (model_dir / "config.json").write_text(content)
    with pytest.raises(BertkitError, match=message):
        load_model(model_dir)


def test_save_is_atomic_and_leaves_no_temporaries(model_dir):
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]
