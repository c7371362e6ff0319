"""The pre-training recipe: the optimizer and masking settings a preset trains with unless a flag says otherwise.

The BERT paper's settings (lr 1e-4, batch 256, 10k warmup steps of 1M) are for BERT-base and a budget of
days on TPUs. A small model on a CPU for half an hour needs other ones: with lr 1e-4, a `mini` BERT is
still guessing frequent words ("the unigram plateau") after thousands of steps. The values for the small
presets below were chosen by measurement on the shared Wikipedia (BENCHMARKS.md, "A recipe for a budget",
which gives every run of the search and its command); base and large keep the paper's.

  Recipe           lr, warmup, batch size, masking rate, AdamW betas and epsilon
  RECIPES          preset name -> Recipe
  BUDGET_PRESETS   which preset a --budget trains when --model-config is not given
  apply_recipe     fill the settings a run left unset (None) from its preset's recipe; says what it chose
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from bertkit.config import BertConfig, preset
from bertkit.train.budget import parse_duration


@dataclass(frozen=True)
class Recipe:
    lr: float  # peak learning rate, after the linear warmup; decays linearly to 0 at the last step
    warmup: float  # fraction of the steps
    batch_size: int  # per process and micro-batch
    mask_rate: float  # share of the tokens the model predicts
    betas: tuple[float, float]  # AdamW's
    eps: float = 1e-6
    init_scheme: str = "normal"  # "local": heads aimed at neighbours at step 0 (train/local_start.py)
    hold_local: float = 0.0  # share of the steps that "local" holds positions and query/key at their start


INIT_SCHEMES = ("normal", "local")


# The paper (Devlin et al. 2018, appendix A.2; Google's optimization.py): BERT-base and large.
PAPER = Recipe(lr=1e-4, warmup=0.01, batch_size=32, mask_rate=0.15, betas=(0.9, 0.999))

RECIPES = {
    # measured: lr 1e-3 / 3e-3 / 6e-3 (6e-3 stays on the plateau) at batch 32, batch 8 / 16 / 32 at equal tokens,
    # betas 0.999 / 0.98, mask 15% / 30%
    # and the local start, held for half the run: 13% -> 24% held-out MLM accuracy at 4,500 steps (held for all
    # of it: 22%) (BENCHMARKS.md, "Breaking the plateau")
    "tiny": Recipe(lr=1.5e-3, warmup=0.06, batch_size=8, mask_rate=0.15, betas=(0.9, 0.98), init_scheme="local",
                   hold_local=0.5),
    # measured: 5e-4 leaves the plateau in 15 minutes, 2e-3 stays on it for 30
    "mini": Recipe(lr=5e-4, warmup=0.06, batch_size=32, mask_rate=0.15, betas=(0.9, 0.98)),
    # not measured on this machine (too slow for its budgets): the learning rate halved again per width doubling
    "small": Recipe(lr=2.5e-4, warmup=0.06, batch_size=32, mask_rate=0.15, betas=(0.9, 0.98)),
    "medium": Recipe(lr=2e-4, warmup=0.06, batch_size=32, mask_rate=0.15, betas=(0.9, 0.98)),
    "base": PAPER,
    "large": PAPER,
}

# (longest budget in seconds, preset): the first whose bound holds. Measured at 15 and 30 minutes (BENCHMARKS.md);
# the longer bounds are where the next size's slower steps stop costing more than its capacity gives (not measured).
BUDGET_PRESETS = [(3600, "tiny"), (12 * 3600, "mini"), (float("inf"), "small")]
DEFAULT_PRESET = "mini"  # --steps without --model-config


def preset_for_budget(budget: str) -> str:
    seconds = parse_duration(budget)
    return next(name for bound, name in BUDGET_PRESETS if seconds <= bound)


def _preset_of(config: BertConfig) -> str | None:
    """The preset a config has the shape of (layers, hidden size, heads), if any."""
    shape = (config.num_hidden_layers, config.hidden_size, config.num_attention_heads)
    for name in RECIPES:
        p = preset(name)
        if (p.num_hidden_layers, p.hidden_size, p.num_attention_heads) == shape:
            return name
    return None


RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))


def apply_recipe(cfg):
    """cfg (a PretrainConfig) with model_config and every recipe field left as None filled in, and a line
    saying what was chosen (None when the user set everything). A field the user set is kept. With --init,
    the recipe is that of the preset the model has the shape of."""
    chosen = []
    init_config = None
    if cfg.init is not None and os.path.isfile(os.path.join(cfg.init, "config.json")):
        try:
            init_config = BertConfig.load(os.path.join(cfg.init, "config.json"))
        except Exception:  # build() says what is wrong with the directory
            init_config = None
    if cfg.model_config is None and cfg.init is None:
        name = preset_for_budget(cfg.budget) if cfg.budget is not None else DEFAULT_PRESET
        cfg = dataclasses.replace(cfg, model_config=name)
        chosen.append(f"--model-config {name}" + (f" (the preset for --budget {cfg.budget})" if cfg.budget else ""))
    if init_config is not None:
        source = _preset_of(init_config)
    elif cfg.model_config is not None and os.path.isfile(cfg.model_config):
        source = _preset_of(BertConfig.load(cfg.model_config))
    else:
        source = cfg.model_config if cfg.model_config in RECIPES else None
    recipe = RECIPES.get(source, PAPER)
    unset = [f for f in RECIPE_FIELDS if getattr(cfg, f) is None]
    if not unset:
        return cfg, None
    values = {f: getattr(recipe, f) for f in unset}
    if "init_scheme" in values and (cfg.init is not None or cfg.objective == "electra"):
        values["init_scheme"] = "normal"  # the local start builds a new BERT; it does not apply here
    if "hold_local" in values and values.get("init_scheme", cfg.init_scheme) != "local":
        values["hold_local"] = 0.0  # nothing to hold without the local start
    cfg = dataclasses.replace(cfg, **values)
    values = ", ".join(_show(f, getattr(cfg, f)) for f in unset)
    whose = f"the {source} recipe" if source else "the paper's settings (no preset has this model's shape)"
    chosen.append(f"{values} ({whose}; each flag overrides)")
    return cfg, "recipe: " + "; ".join(chosen)


def _show(field: str, value) -> str:
    if isinstance(value, str):
        return f"--{field.replace('_', '-')} {value}"
    shown = " ".join(f"{v:g}" for v in value) if field == "betas" else f"{value:g}"
    return f"--{field.replace('_', '-')} {shown}"
