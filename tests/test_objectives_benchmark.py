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


@pytest.mark.parametrize("setups", ["nsp,bogus", "randomly"])
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


def test_overlap_fine_tunes_only_what_is_pre_trained(bench, tmp_path, monkeypatch):
    """--overlap's schedule, with pre-training and fine-tuning faked: one pre-training at a time, in order; the
    random twins while the first pre-trains; a setup's fine-tunes only after its pre-training finished."""
    import os

    args = bench.parse_args(["--data", "d", "--out", str(tmp_path), "--setups", "random,nsp,sop",
                             "--tasks", "rte", "--seeds", "1", "2", "--overlap"])
    events = []

    class Process:  # finishes on its third poll
        def __init__(self, name):
            self.name, self.polls = name, 0

        def poll(self):
            self.polls += 1
            return 0 if self.polls >= 3 else None

    def start(run, data, budget, options, log, cpus=None):
        assert cpus and not cpus & os.sched_getaffinity(0)  # apart from the CPUs this process fine-tunes on
        assert not any(e[0] == "start" and ("finish", e[1]) not in events for e in events)  # one at a time
        name = os.path.basename(run).removeprefix("pretrain-")
        events.append(("start", name))
        return Process(name)

    monkeypatch.setattr(bench.payoff, "start_pretraining", start)
    monkeypatch.setattr(bench.payoff, "finish_pretraining",
                        lambda process, run, log: events.append(("finish", process.name)))
    monkeypatch.setattr(bench, "finetune", lambda args, entry, *rest: events.append(("finetune", entry[1])))
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("--overlap needs 2 CPUs")
    try:
        todo = bench.payoff.pending({}, ["rte"], [1, 2], ["random", "nsp", "sop"])
        bench.overlapped(args, ["nsp", "sop"], {"random": "template"}, todo, {}, {}, "results.jsonl")
    finally:
        os.sched_setaffinity(0, cpus)
    assert [e for e in events if e[0] != "finetune"] == [("start", "nsp"), ("finish", "nsp"), ("start", "sop"),
                                                         ("finish", "sop")]
    assert sorted(e[1] for e in events if e[0] == "finetune") == ["nsp", "nsp", "random", "random", "sop", "sop"]
    assert events[1] == ("finetune", "random")  # beside the first pre-training
    for name in ("nsp", "sop"):
        finished = events.index(("finish", name))
        assert all(i > finished for i, e in enumerate(events) if e == ("finetune", name))
