"""`pretrain --budget`: durations, the plan, the schedule that ends with it, exact resume; --mask-rate and
dropout through the CLI; bad input.

A plan measured on this machine depends on its speed, so the tests that compare runs bit for bit plan with
BERTKIT_BUDGET_SECONDS_PER_STEP (the measurement still runs, and must leave no trace); one test runs the
real measurement and checks only what does not depend on the speed.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from bertkit.errors import BertkitError
from bertkit.train.budget import SECONDS_PER_STEP_ENV, Measurement, parse_duration, plan_steps
from bertkit.train.optim import warmup_linear
from conftest import assert_one_line_error, run_cli

# 1h at 360 s a step: 10 steps, whatever this machine's speed (the run itself takes seconds)
TEN_STEPS = {SECONDS_PER_STEP_ENV: "360"}


def budget_args(prepared, out, *extra):
    """pretrain_args without its --steps: a tiny model, seq 32, batch 4, fp32."""
    return ["pretrain", "--data", prepared / "data", "--out", out, "--model-config", "tiny", "--batch-size", 4,
            "--seq-len", 32, "--lr", 1e-3, "--warmup", 0.2, "--log-every", 1, "--eval-every", 4, "--eval-samples", 8,
            "--save-every", 3, "--precision", "fp32", "--quiet", *extra]


def train_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if '"split"' not in line]


def same_weights(a_dir, b_dir):
    a, b = load_file(a_dir / "model" / "model.safetensors"), load_file(b_dir / "model" / "model.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400),
                                           ("1h30m", 5400), ("1.5h", 5400), ("1d2h3m4s", 93784), (" 2H ", 7200)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "30x", "m", "", "h1", "-5m", "30m 2", "1e3s", "0s", "0m0s"])
def test_parse_duration_refuses(text):
    with pytest.raises(BertkitError, match="--budget"):
        parse_duration(text)


def test_plan_steps_exact():
    m = Measurement(step=1.0, evaluation=2.0, checkpoint=4.0, spent=10.0, timed_steps=5)
    # 100 s - 10 spent - 2 for the last evaluation - 2 x 4 for the last checkpoint and the model = 80 s left;
    # a step costs 1 s + 2/10 of an evaluation + 4/20 of a checkpoint = 1.4 s: 57 steps
    assert plan_steps(100, m, eval_every=10, save_every=20, has_validation=True) == 57
    assert plan_steps(100, m, eval_every=10, save_every=20, has_validation=False) == 68  # 82 / 1.2
    assert plan_steps(100, Measurement(0.5, 0, 0, 0, 3), 10, 20, True) == 200
    assert plan_steps(15, m, 10, 20, True) == 0  # less than one step left


def test_schedule_reaches_zero_at_the_planned_end():
    """warmup_linear, the multiplier of the peak lr: up to 1 over warmup, then down to exactly 0 at the planned
    step count. Step s (0-based) trains at the value at s, so the last step, N - 1, takes the smallest
    positive value and the schedule reaches 0 where the run, and the budget, end."""
    n, warmup = 10, 2
    values = [warmup_linear(s, warmup, n) for s in range(n + 1)]
    assert values[:warmup] == [0.5, 1.0]
    assert values[warmup:] == pytest.approx([(n - s) / (n - warmup) for s in range(warmup, n + 1)])
    assert values[n] == 0.0 and values[n - 1] == pytest.approx(1 / (n - warmup))
    assert all(a >= b for a, b in zip(values[warmup - 1:], values[warmup:]))


def test_budget_plan_is_recorded_and_resume_follows_it(prepared, tmp_path):
    """Planned for 10 steps: run.json records the plan, the lr of step 10 is the schedule's last positive
    value (0 comes at the planned end), and the final weights equal those of --steps 10: the measurement's
    training steps left no trace. Stopped at step 4 and resumed without the test override (a resume must not
    measure again, or it would plan thousands of steps here), the run is bit-identical to the straight one."""
    straight, plain, resumed = tmp_path / "straight", tmp_path / "plain", tmp_path / "resumed"
    proc = run_cli(*budget_args(prepared, straight, "--budget", "1h"), env=TEN_STEPS)
    assert "--budget 1h: 360 s/step" in proc.stderr and "-> 10 steps, lr decays to 0 at step 10" in proc.stderr
    record = json.loads((straight / "run.json").read_text())
    assert record["planned_steps"] == 10 and record["steps"] is None and record["budget"] == "1h"
    assert record["plan"]["steps"] == 10 and record["plan"]["measured"]["overridden"] is True
    assert record["plan"]["measured"]["timed_steps"] >= 1  # the measurement ran
    lines = train_lines(straight)
    assert [r["step"] for r in lines] == list(range(1, 11))
    warmup = round(0.2 * 10)
    assert lines[-1]["lr"] == pytest.approx(1e-3 * warmup_linear(9, warmup, 10)) == pytest.approx(1e-3 / (10 - warmup))
    assert [r["lr"] for r in lines][warmup - 1:] == sorted([r["lr"] for r in lines][warmup - 1:], reverse=True)

    run_cli(*budget_args(prepared, plain, "--steps", 10))
    assert same_weights(straight, plain)

    run_cli(*budget_args(prepared, resumed, "--budget", "1h", "--stop-at", 4), env=TEN_STEPS)
    state = json.loads((resumed / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())
    assert state["plan"]["steps"] == 10 and state["plan"]["budget"] == "1h"
    proc = run_cli(*budget_args(prepared, resumed, "--budget", "2h", "--resume"), check=False)
    assert_one_line_error(proc, "learning-rate schedule", "--budget 1h (now 2h)", "resume with --budget 1h")
    proc = run_cli(*budget_args(prepared, resumed, "--steps", 10, "--resume"), check=False)
    assert_one_line_error(proc, "--budget 1h (now --steps 10)")
    run_cli(*budget_args(prepared, resumed, "--budget", "60m", "--resume"))  # the same budget, written otherwise
    assert same_weights(straight, resumed)
    assert [(r["step"], r["loss"], r["lr"]) for r in train_lines(resumed)] == [
        (r["step"], r["loss"], r["lr"]) for r in lines]
    assert json.loads((resumed / "run.json").read_text())["planned_steps"] == 10


def test_max_steps_caps_the_plan_and_resume_keeps_the_cap(prepared, tmp_path):
    """--budget 1h at 360 s a step fits 10 steps; --max-steps 6 plans 6 (the schedule decays to 0 at step 6, so
    the weights equal --steps 6), says which number held, and records both. A resume must repeat the cap; a cap
    above what fits changes nothing."""
    capped, plain, loose = tmp_path / "capped", tmp_path / "plain", tmp_path / "loose"
    proc = run_cli(*budget_args(prepared, capped, "--budget", "1h", "--max-steps", 6, "--stop-at", 3), env=TEN_STEPS)
    assert "10 steps would fit, --max-steps 6 holds -> 6 steps, lr decays to 0 at step 6" in proc.stderr
    plan = json.loads((capped / "run.json").read_text())["plan"]
    assert (plan["steps"], plan["max_steps"], plan["fitting_steps"]) == (6, 6, 10)
    proc = run_cli(*budget_args(prepared, capped, "--budget", "1h", "--max-steps", 7, "--resume"), check=False)
    assert_one_line_error(proc, "--budget 1h --max-steps 6 (now --budget 1h --max-steps 7)",
                          "resume with --budget 1h --max-steps 6")
    proc = run_cli(*budget_args(prepared, capped, "--budget", "1h", "--resume"), check=False)
    assert_one_line_error(proc, "--budget 1h --max-steps 6 (now --budget 1h)")
    run_cli(*budget_args(prepared, capped, "--budget", "1h", "--max-steps", 6, "--resume"))
    assert [r["step"] for r in train_lines(capped)] == list(range(1, 7))
    run_cli(*budget_args(prepared, plain, "--steps", 6))
    assert same_weights(capped, plain)

    proc = run_cli(*budget_args(prepared, loose, "--budget", "1h", "--max-steps", 50, "--stop-at", 1), env=TEN_STEPS)
    assert "(--max-steps 50) -> 10 steps" in proc.stderr
    assert json.loads((loose / "run.json").read_text())["plan"]["steps"] == 10


def test_budget_with_a_real_measurement(prepared, tmp_path):
    """No override: the plan comes from timed steps on this machine. What it must be, whatever the speed:
    at least one step, recorded with its measurement, and the run ends at the plan or (on a machine slower
    than measured) earlier, saying so."""
    run = tmp_path / "run"
    proc = run_cli(*budget_args(prepared, run, "--budget", "5s", "--eval-every", 1000, "--save-every", 1000,
                                "--log-every", 50), check=False)
    if proc.returncode == 2 and "too short for one step" in proc.stderr:  # starting the run took the 5 s
        pytest.skip(f"this machine is too busy for a 5 s budget: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((run / "run.json").read_text())["plan"]
    measured = plan["measured"]
    assert plan["steps"] >= 1 and measured["overridden"] is False and measured["step"] > 0
    assert 1 <= measured["timed_steps"] <= 100 and measured["checkpoint"] > 0 and measured["evaluation"] > 0
    assert f"-> {plan['steps']:,} steps" in proc.stderr
    last = train_lines(run)[-1]["step"]
    assert last == plan["steps"] or (last < plan["steps"] and "time is up" in proc.stdout + proc.stderr)


def test_dropout_off_while_pre_training_and_kept_in_the_saved_config(prepared, tmp_path):
    """Dropout is 0 while pre-training by default (and --dropout sets it), while the saved config.json keeps the
    preset's 0.1 for fine-tuning. --mask-rate is recorded and is part of what a resume must keep."""
    run = tmp_path / "run"
    run_cli(*budget_args(prepared, run, "--steps", 3, "--mask-rate", 0.3, "--stop-at", 2))
    record = json.loads((run / "run.json").read_text())
    assert record["dropout"] == 0.0 and record["mask_rate"] == 0.3
    proc = run_cli(*budget_args(prepared, run, "--steps", 3, "--resume"), check=False)
    assert_one_line_error(proc, "mask_rate 0.3 -> 0.15")
    proc = run_cli(*budget_args(prepared, run, "--steps", 3, "--mask-rate", 0.3, "--dropout", 0.1, "--resume"),
                   check=False)
    assert_one_line_error(proc, "dropout 0.0 -> 0.1")
    run_cli(*budget_args(prepared, run, "--steps", 3, "--mask-rate", 0.3, "--resume"))
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["hidden_dropout_prob"] == 0.1 and config["attention_probs_dropout_prob"] == 0.1

    # the training itself: with dropout 0 a training-mode forward is deterministic; with --dropout 0.1 it is not
    from bertkit.config import preset
    from bertkit.data.pretraining import collate
    from bertkit.train.pretrain import PretrainConfig, build

    for dropout, deterministic in ((0.0, True), (0.1, False)):
        cfg = PretrainConfig(data=[str(prepared / "data")], out=str(tmp_path / f"unused-{dropout}"),
                             model_config="tiny", steps=1, seq_len=32, dropout=dropout)
        model, tokenizer, train_set, _ = build(cfg)
        assert model.config.hidden_dropout_prob == preset("tiny").hidden_dropout_prob == 0.1
        batch = collate([train_set[i] for i in range(4)], train_set.pad_id)
        model.train()
        first, second = model(**batch).loss, model(**batch).loss
        assert torch.equal(first, second) == deterministic


@pytest.mark.parametrize("extra, fragments", [
    (["--budget", "30x"], ["--budget 30x: not a duration", "e.g. 90s, 30m"]),
    (["--budget", "0m"], ["--budget 0m: must be longer than zero"]),
    (["--budget", "30m", "--steps", 100], ["--budget 30m and --steps 100", "pass one of them"]),
    (["--max-steps", 100], ["--max-steps 100 caps the steps a --budget plans", "add --budget", "--steps 100"]),
    (["--budget", "30m", "--max-steps", 0], ["--max-steps", "0"]),
    (["--mask-rate", 0], ["--mask-rate 0.0", "between 0 and 1"]),
    (["--mask-rate", 1], ["--mask-rate 1.0", "between 0 and 1"]),
    (["--mask-rate", -0.2], ["--mask-rate -0.2", "between 0 and 1"]),
    (["--weight-decay", -0.1], ["--weight-decay -0.1", "[0, 1)"]),
    (["--max-minutes", -1], ["--max-minutes -1.0", "must be positive"]),
])
def test_bad_budget_and_mask_rate(prepared, tmp_path, extra, fragments):
    proc = run_cli(*budget_args(prepared, tmp_path / "run", *extra), check=False)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "run").exists()


def test_budget_too_short_for_one_step(prepared, tmp_path):
    """Said after measuring, with how long a step took; the run directory is removed again."""
    proc = run_cli(*budget_args(prepared, tmp_path / "run", "--budget", "0.001s"), check=False)
    assert_one_line_error(proc, "--budget 0.001s is too short for one step", "one step took", " s here",
                          "give a --budget longer than")
    assert not (tmp_path / "run").exists()
    proc = run_cli(*budget_args(prepared, tmp_path / "run", "--budget", "1m"), check=False,
                   env={SECONDS_PER_STEP_ENV: "100"})
    assert_one_line_error(proc, "--budget 1m is too short for one step", f"one step takes 100 s ({SECONDS_PER_STEP_ENV})")
    assert not (tmp_path / "run").exists()
