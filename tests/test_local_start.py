"""`pretrain --init-scheme local` (train/local_start.py): heads start aimed at their offsets, the model stays a
BERT that transformers loads, the held weights do not move until their step and then do, a resumed run is
bit-identical, the recipe picks it for tiny only where it applies, and bad settings are one line, exit 2."""

import json

import pytest
import torch

from bertkit.config import preset
from bertkit.errors import BertkitError
from bertkit.model import BertForPreTraining
from bertkit.train.local_start import HeldWeights, check_local_start, head_offset, local_attention_init
from bertkit.train.pretrain import PretrainConfig
from bertkit.train.recipe import apply_recipe
from conftest import assert_one_line_error, pretrain_args, run_cli
from test_budget import same_weights


def local_model(name="tiny", seed=0, **overrides):
    torch.manual_seed(seed)
    model = BertForPreTraining(preset(name, vocab_size=500, max_position_embeddings=128, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0, **overrides))
    local_attention_init(model.bert, seed)
    return model.eval()


def weight_at_offsets(model, T=128):
    """Mean attention weight each (layer, head) puts on its aimed-at key, on random tokens."""
    ids = torch.randint(50, 500, (2, T), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        attentions = model.bert(ids, output_attentions=True).attentions
    heads = model.config.num_attention_heads
    weights = {}
    for layer, probs in enumerate(attentions):
        for h in range(heads):
            offset = head_offset(layer, h, heads)
            rows = torch.arange(max(0, offset), min(T, T + offset))
            weights[layer, h] = float(probs[:, h, rows, rows - offset].mean())
    return weights


@pytest.mark.parametrize("name", ["tiny", "mini"])
def test_every_head_starts_aimed_at_its_offset(name):
    """Uniform attention would give each key 1/128 = 0.008; the first layer's heads give their neighbour > 0.6,
    the later ones (whose input is no longer the embeddings alone) > 0.3."""
    weights = weight_at_offsets(local_model(name))
    assert all(w > 0.6 for (layer, _), w in weights.items() if layer == 0), weights
    assert all(w > 0.3 for w in weights.values()), weights
    assert weights == weight_at_offsets(local_model(name))  # the same start for the same seed
    normal = BertForPreTraining(preset(name, vocab_size=500, max_position_embeddings=128)).eval()
    assert max(weight_at_offsets(normal).values()) < 0.05


def test_the_local_start_is_a_bert_transformers_loads(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = local_model()
    model.save_pretrained(tmp_path)
    theirs = transformers.BertModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(50, 500, (2, 40))
    with torch.no_grad():
        ours = model.bert(ids).last_hidden_state
        reference = theirs(ids).last_hidden_state
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_shapes_it_does_not_apply_to():
    check_local_start(preset("mini"))
    for overrides in ({"num_attention_heads": 1}, {"hidden_size": 96, "num_attention_heads": 32}):  # 1 head; size 3
        with pytest.raises(BertkitError, match="--init-scheme local needs at least 2 attention heads of an even size"):
            check_local_start(preset("tiny", **overrides))


def test_held_weights_stay_until_their_step_then_move():
    model = local_model()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    held = HeldWeights(model.bert, until_step=3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    H = model.config.hidden_size
    ids = torch.randint(50, 500, (4, 32))
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, torch.full_like(ids, -100))

    def step(i):
        loss = model(ids, labels=labels, next_sentence_label=torch.zeros(4, dtype=torch.long)).loss
        loss.backward()
        held.zero_grads(i)
        optimizer.step()
        held.restore(i)
        optimizer.zero_grad()

    for i in range(3):
        step(i)
    now = model.state_dict()
    assert torch.equal(now["bert.embeddings.position.weight"], start["bert.embeddings.position.weight"])
    for layer in range(model.config.num_hidden_layers):
        qkv = f"bert.layers.{layer}.attention.qkv"
        assert torch.equal(now[qkv + ".weight"][:2 * H], start[qkv + ".weight"][:2 * H])
        assert torch.equal(now[qkv + ".bias"][:2 * H], start[qkv + ".bias"][:2 * H])
        assert not torch.equal(now[qkv + ".weight"][2 * H:], start[qkv + ".weight"][2 * H:])  # the values train
    assert not torch.equal(now["bert.embeddings.word.weight"], start["bert.embeddings.word.weight"])
    step(3)  # past until_step: everything trains
    assert not torch.equal(model.state_dict()["bert.embeddings.position.weight"],
                           start["bert.embeddings.position.weight"])
    assert not torch.equal(model.state_dict()["bert.layers.0.attention.qkv.weight"][:2 * H],
                           start["bert.layers.0.attention.qkv.weight"][:2 * H])


def test_the_recipe_picks_local_for_tiny_where_it_applies(tmp_path):
    cfg, note = apply_recipe(PretrainConfig(data=["d"], out="o", model_config="tiny", steps=5))
    assert cfg.init_scheme == "local" and cfg.hold_local > 0 and "--init-scheme local" in note
    cfg, _ = apply_recipe(PretrainConfig(data=["d"], out="o", model_config="mini", steps=5))
    assert cfg.init_scheme == "normal"
    cfg, _ = apply_recipe(PretrainConfig(data=["d"], out="o", model_config="tiny", steps=5, objective="electra"))
    assert cfg.init_scheme == "normal"
    cfg, _ = apply_recipe(PretrainConfig(data=["d"], out="o", model_config="tiny", steps=5, init_scheme="normal"))
    assert cfg.init_scheme == "normal" and cfg.hold_local == 0.0  # nothing of tiny's hold is left without local


def test_a_resumed_local_run_is_bit_identical(prepared, tmp_path):
    """Held for half of 8 steps: stopped at step 2 (held) and resumed, the run equals the straight one; the
    saved model's positions are not the start's (they trained after step 4)."""
    args = ("--init-scheme", "local", "--hold-local", 0.5)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_cli(*pretrain_args(prepared, straight, *args))
    assert json.loads((straight / "run.json").read_text())["init_scheme"] == "local"
    run_cli(*pretrain_args(prepared, resumed, *args, "--stop-at", 2))
    run_cli(*pretrain_args(prepared, resumed, *args, "--resume"))
    assert same_weights(straight, resumed)


def test_resume_with_another_hold_is_refused(prepared, tmp_path):
    """The hold decides which weights move at which step: a resumed run must keep it (and the scheme)."""
    run = tmp_path / "run"
    run_cli(*pretrain_args(prepared, run, "--init-scheme", "local", "--hold-local", 0.5, "--stop-at", 2))
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    proc = run_cli(*pretrain_args(prepared, run, "--init-scheme", "local", "--hold-local", 0.25, "--resume"),
                   check=False)
    assert_one_line_error(proc, "--resume", "hold_local 0.5 -> 0.25")
    proc = run_cli(*pretrain_args(prepared, run, "--init-scheme", "normal", "--resume"), check=False)
    assert_one_line_error(proc, "--resume", "init_scheme 'local' -> 'normal'")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("extra, fragments", [
    (["--init-scheme", "local", "--hold-local", 1.5], ["--hold-local 1.5", "in [0, 1]"]),
    (["--init-scheme", "local", "--objective", "electra"], ["--init-scheme local", "--objective electra"]),
    (["--init-scheme", "normal", "--hold-local", 0.5], ["--hold-local 0.5", "--init-scheme normal"]),
])
def test_bad_local_settings(prepared, tmp_path, extra, fragments):
    proc = run_cli(*pretrain_args(prepared, tmp_path / "run", *extra), check=False)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "run").exists()


def test_local_with_init_is_refused(prepared, tmp_path):
    run_cli(*pretrain_args(prepared, tmp_path / "first", "--steps", 1))
    proc = run_cli(*pretrain_args(prepared, tmp_path / "second", "--init", tmp_path / "first" / "model",
                                  "--init-scheme", "local"), check=False)
    assert_one_line_error(proc, "--init-scheme local", "--init")
    assert not (tmp_path / "second").exists()
