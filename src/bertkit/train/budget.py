"""A pre-training run planned for a wall-clock budget (`bertkit pretrain --budget 30m`).

The learning-rate schedule (warmup, then linear decay) must end exactly where the run ends, as Cramming
(Geiping and Goldstein, 2022) does for its one-day budget. Cramming reads the schedule off the clock at
every step; that makes a run depend on the machine's speed from step to step and breaks exact resume.
Here the budget becomes a number of steps once, at the start of a fresh run, from a few timed training
steps, and that number is recorded in run.json and in every checkpoint: a resumed run follows the
recorded plan and never measures again.

  parse_duration   "90s", "30m", "2h", "1d", "1h30m", "1.5h" -> seconds
  Measurement      what the timed steps found
  plan_steps       the measurement and the budget -> the number of steps
  SECONDS_PER_STEP_ENV  for tests: plan as if each step took this long and nothing else took any time
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from bertkit.errors import BertkitError

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")

# For tests, which need a plan that does not depend on the machine's speed: the measurement still runs
# (and must leave no trace), but the plan uses this many seconds per step and counts no other time.
SECONDS_PER_STEP_ENV = "BERTKIT_BUDGET_SECONDS_PER_STEP"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as 90s, 30m, 2h, 1d, 1h30m or 1.5h (a unit after every number)."""
    compact = str(text).strip().lower().replace(" ", "")
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise BertkitError(f"--budget {text}: not a duration",
                           hint="write a number and a unit (s, m, h, d), e.g. 90s, 30m, 2h, 1h30m or 1d")
    seconds = sum(float(n) * UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise BertkitError(f"--budget {text}: must be longer than zero", hint="e.g. --budget 30m")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


@dataclass
class Measurement:
    """Seconds taken by the parts of a run, measured on this machine before training starts."""
    step: float  # one optimizer step (all micro-batches, on real batches): the median of the timed steps
    evaluation: float  # one held-out evaluation (0 without validation data)
    checkpoint: float  # one checkpoint save, with the optimizer's full state
    spent: float  # seconds of the budget already gone: building the model and data, and the measurement
    timed_steps: int
    overridden: bool = False  # planned with SECONDS_PER_STEP_ENV instead of the measured times


def plan_steps(budget: float, m: Measurement, eval_every: int, save_every: int, has_validation: bool) -> int:
    """The most steps that fit in the budget: what is left after the time already spent and the run's last
    evaluation and saves (a checkpoint and the final model), divided by a step's time plus its share of the
    periodic evaluations and checkpoints."""
    evaluation = m.evaluation if has_validation else 0.0
    left = budget - m.spent - evaluation - 2 * m.checkpoint
    per_step = m.step + evaluation / eval_every + m.checkpoint / save_every
    return max(0, math.floor(left / per_step))


def measurement_override() -> float | None:
    value = os.environ.get(SECONDS_PER_STEP_ENV)
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise BertkitError(f"{SECONDS_PER_STEP_ENV}={value}: must be a positive number of seconds",
                           hint=f"unset {SECONDS_PER_STEP_ENV} (it is meant for tests)")
    return seconds
