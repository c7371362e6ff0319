"""benchmarks/objectives.py without pre-training or fine-tuning anything: which setups it offers, the refusals of
its options, and its table on made-up pre-training runs and results."""

import importlib.util
import json
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("objectives_benchmark", BENCHMARKS / "objectives.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_setups_follow_the_objective_table(bench):
    from bertkit.objectives import OBJECTIVES

    offered = bench.available_setups()
    assert offered[:2] == ["random", "nsp"]
    for name in offered[1:]:
        assert dict(zip(bench.SETUPS[name][::2], bench.SETUPS[name][1::2]))["--objective"] in OBJECTIVES
    assert "span" in offered and "sop" in offered and "none" in offered


@pytest.mark.parametrize("setups", ["nsp,bogus", "random,sop"])
def test_bad_setups_are_refused(bench, setups, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--data", "d", "--out", "o", "--setups", setups])
    assert e.value.code == 2
    assert "--setups" in capsys.readouterr().err


def test_table_on_made_up_runs(bench, tmp_path):
    args = bench.parse_args(["--data", "d", "--out", str(tmp_path), "--setups", "random,nsp,span",
                             "--tasks", "rte", "mrpc", "--seeds", "1", "2"])
    speeds = {"nsp": 10000.0, "span": 8000.0}
    for name, accuracy in (("nsp", 0.12), ("span", 0.10)):
        run = tmp_path / f"pretrain-{name}"
        run.mkdir()
        lines = [{"step": 10, "tokens_per_s": speeds[name] - 1000}, {"step": 20, "tokens_per_s": speeds[name] + 1000},
                 {"step": 20, "split": "validation", "mlm_accuracy": accuracy}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    values = {"random": (0.50, 0.54), "nsp": (0.60, 0.62), "span": (0.70, 0.70)}
    results = {(task, name, seed): {"value": v} for name, pair in values.items() for task in ("rte", "mrpc")
               for seed, v in zip((1, 2), pair)}
    del results[("mrpc", "span", 2)]
    text = bench.render(args, ["--setups", "random,nsp,span"], results, [])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| random | no pre-training | — | — | — | 52.0 ± 2.8 | 52.0 ± 2.8 |" == rows["random"]
    assert "12.0%" in rows["nsp"] and "10,000" in rows["nsp"] and "61.0 ± 1.4" in rows["nsp"]
    assert "10.0%" in rows["span"] and "8,000" in rows["span"] and "70.0 ± 0.0 (1 of 2 seeds)" in rows["span"]
