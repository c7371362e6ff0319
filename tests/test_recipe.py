"""The pre-training recipe: unset settings come from the preset's measured recipe, set ones are kept, a
--budget picks its preset, and what was chosen is said and recorded."""

import dataclasses
import json

import pytest

from bertkit.config import preset
from bertkit.train.pretrain import PretrainConfig
from bertkit.train.recipe import (BUDGET_PRESETS, DEFAULT_PRESET, PAPER, RECIPE_FIELDS, RECIPES, apply_recipe,
                                  preset_for_budget)
from conftest import assert_one_line_error, run_cli


def test_unset_fields_come_from_the_presets_recipe():
    cfg, note = apply_recipe(PretrainConfig(data=["d"], out="o", model_config="mini", steps=10))
    for f in RECIPE_FIELDS:
        assert getattr(cfg, f) == getattr(RECIPES["mini"], f)
    assert note.startswith("recipe: ") and "the mini recipe" in note and "--lr" in note


def test_set_fields_are_kept_and_only_the_unset_ones_are_named():
    cfg, note = apply_recipe(PretrainConfig(data=["d"], out="o", model_config="tiny", steps=10, lr=0.5, batch_size=3))
    assert (cfg.lr, cfg.batch_size) == (0.5, 3)
    assert cfg.warmup == RECIPES["tiny"].warmup
    assert "--lr" not in note and "--batch-size" not in note and "--warmup" in note


def test_nothing_to_choose_says_nothing():
    values = {f: getattr(PAPER, f) for f in RECIPE_FIELDS}
    cfg, note = apply_recipe(PretrainConfig(data=["d"], out="o", model_config="base", steps=10, **values))
    assert note is None and cfg.lr == PAPER.lr


def test_base_and_large_keep_the_papers_settings():
    assert RECIPES["base"] == RECIPES["large"] == PAPER
    assert PAPER.lr == 1e-4 and PAPER.betas == (0.9, 0.999) and PAPER.mask_rate == 0.15


def test_budget_picks_the_preset_and_steps_default_to_mini():
    assert preset_for_budget("30m") == BUDGET_PRESETS[0][1]
    assert preset_for_budget("100d") == BUDGET_PRESETS[-1][1]
    cfg, note = apply_recipe(PretrainConfig(data=["d"], out="o", budget="30m"))
    assert cfg.model_config == preset_for_budget("30m") and "the preset for --budget 30m" in note
    cfg, _ = apply_recipe(PretrainConfig(data=["d"], out="o", steps=5))
    assert cfg.model_config == DEFAULT_PRESET


def test_budget_bounds_increase():
    bounds = [b for b, _ in BUDGET_PRESETS]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf")
    assert all(name in RECIPES for _, name in BUDGET_PRESETS)


def test_init_takes_the_recipe_of_the_preset_it_has_the_shape_of(tmp_path):
    preset("small").save(str(tmp_path / "config.json"))
    cfg, note = apply_recipe(PretrainConfig(data=["d"], out="o", init=str(tmp_path), steps=5))
    assert cfg.lr == RECIPES["small"].lr and "the small recipe" in note
    odd = dataclasses.replace(preset("small"), num_hidden_layers=3)
    odd.save(str(tmp_path / "config.json"))
    cfg, note = apply_recipe(PretrainConfig(data=["d"], out="o", init=str(tmp_path), steps=5))
    assert cfg.lr == PAPER.lr and "paper's settings" in note


def test_the_cli_says_and_records_the_recipe(prepared, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("pretrain", "--data", prepared / "data", "--out", out, "--model-config", "tiny", "--steps", 2,
                   "--seq-len", 32, "--batch-size", 4, "--precision", "fp32", "--quiet")
    assert "recipe: --lr" in proc.stderr and "the tiny recipe" in proc.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["lr"] == RECIPES["tiny"].lr and run["betas"] == list(RECIPES["tiny"].betas)
    assert run["batch_size"] == 4 and run["mask_rate"] == RECIPES["tiny"].mask_rate


@pytest.mark.parametrize("extra, fragment", [
    (["--betas", "0.9", "1.5"], "--betas 0.9 1.5"),
    (["--eps", "0"], "epsilon positive"),
    (["--lr", "-1"], "--lr -1"),
    (["--warmup", "2"], "--warmup 2"),
])
def test_bad_optimizer_settings(prepared, tmp_path, extra, fragment):
    out = tmp_path / "run"
    proc = run_cli("pretrain", "--data", prepared / "data", "--out", out, "--model-config", "tiny", "--steps", 2,
                   "--seq-len", 32, "--quiet", *extra, check=False)
    assert_one_line_error(proc, fragment)
    assert not out.exists()

