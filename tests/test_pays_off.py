"""benchmarks/pretraining_pays_off.py without fine-tuning anything: the > 2 std verdict and the table on made-up
results, the resume bookkeeping of results.jsonl, and the fixed random subset of a capped training set."""

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "pretraining_pays_off.py"


@pytest.fixture(scope="module")
def payoff():
    spec = importlib.util.spec_from_file_location("pretraining_pays_off", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(task, init, seed, value, model="/m"):
    return {"task": task, "init": init, "seed": seed, "metric": "accuracy", "value": value, "model": model}


def test_verdict_uses_the_larger_std(payoff):
    # random 0.52 ± 0.02, pre-trained 0.61 ± 0.01: +0.09 > 2 x 0.02
    verdict = payoff.compare([0.50, 0.52, 0.54], [0.60, 0.61, 0.62])
    assert verdict["difference"] == pytest.approx(0.09) and verdict["beats"] is True
    # +0.08 beats 2 x the pre-trained std (0.02) but not 2 x the random-init std (0.10): no
    assert payoff.compare([0.45, 0.50, 0.55], [0.57, 0.58, 0.59])["beats"] is False
    assert payoff.compare([0.60, 0.61, 0.62], [0.50, 0.52, 0.54])["beats"] is False  # worse is never a win
    # one seed has no spread: a difference, no verdict
    assert payoff.compare([0.5], [0.9]) == {"difference": pytest.approx(0.4), "beats": None}
    assert payoff.compare([], [0.9]) == {"difference": None, "beats": None}
    assert payoff.mean_std([0.5, 0.7]) == (pytest.approx(0.6), pytest.approx(0.1414213, abs=1e-6))  # sample std


def test_table_rows_on_synthetic_results(payoff):
    values = {("rte", "random"): [0.50, 0.52, 0.54], ("rte", "pretrained"): [0.60, 0.61, 0.62],
              ("cola", "random"): [0.10, 0.20, 0.30], ("cola", "pretrained"): [0.25, 0.26, 0.27],
              ("rte", "ceiling"): [0.70, 0.70, 0.70]}
    results = {(task, init, seed): record(task, init, seed, v)
               for (task, init), vs in values.items() for seed, v in zip((1, 2, 3), vs)}
    del results[("cola", "pretrained", 3)]  # a run interrupted before its last seed
    rows, wins, decided = payoff.table_rows(results, ["rte", "cola", "sst2"], [1, 2, 3], with_ceiling=True)
    assert (wins, decided) == (1, 2)  # sst2 has no results: no verdict
    assert rows[2] == "| RTE | accuracy | 52.0 ± 2.0 | 61.0 ± 1.0 | +9.0 | yes | 70.0 ± 0.0 |"
    assert rows[3] == "| CoLA | matthews_corr | 20.0 ± 10.0 | 25.5 ± 0.7 (2 of 3 seeds) | +5.5 | no | — |"
    assert rows[4] == "| SST-2 | accuracy | — | — | — | n/a | — |"


def test_resume_skips_finished_entries_and_drops_a_cut_line(payoff, tmp_path):
    path = tmp_path / "results.jsonl"
    payoff.append_result(str(path), record("rte", "random", 1, 0.5))
    payoff.append_result(str(path), record("rte", "pretrained", 1, 0.6, model="/pre"))
    with open(path, "a") as f:
        f.write('{"task": "rte", "init": "ceil')  # the line an interruption cut short
    done = payoff.load_results(str(path), {"pretrained": "/pre", "ceiling": "/minilm"})
    assert sorted(done) == [("rte", "pretrained", 1), ("rte", "random", 1)]
    todo = payoff.pending(done, ["rte"], [1, 2], ["random", "pretrained", "ceiling"])
    assert todo == [("rte", "ceiling", 1), ("rte", "random", 2), ("rte", "pretrained", 2), ("rte", "ceiling", 2)]
    # entries made from another pre-trained model are refused, not mixed in
    with pytest.raises(payoff.Failure, match="made from /pre"):
        payoff.load_results(str(path), {"pretrained": "/other", "ceiling": None})


def test_a_changed_recipe_is_refused(payoff, tmp_path):
    payoff.check_recipe(str(tmp_path), {"lr": 1e-4, "epochs": 3.0})
    payoff.check_recipe(str(tmp_path), {"lr": 1e-4, "epochs": 3.0})  # the same: continues
    with pytest.raises(payoff.Failure, match=r"--lr 0.0001 \(now 5e-05\)"):
        payoff.check_recipe(str(tmp_path), {"lr": 5e-5, "epochs": 3.0})


def test_capped_training_set_is_a_fixed_random_subset(payoff, tmp_path):
    from bertkit.data.tasks import read_glue

    sst2 = tmp_path / "sst2.tsv"
    sst2.write_text("sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(50)))
    path, used, available = payoff.capped_train_file("sst2", str(sst2), 20, str(tmp_path / "a"))
    again, _, _ = payoff.capped_train_file("sst2", str(sst2), 20, str(tmp_path / "b"))
    assert (used, available) == (20, 50) and pathlib.Path(path).read_text() == pathlib.Path(again).read_text()
    kept = [int(e.text_a.split()[1]) for e in read_glue("sst2", path)]  # bertkit reads it as an SST-2 file
    assert len(kept) == 20 and kept == sorted(kept) and kept != list(range(20))  # not simply the first 20
    cola = tmp_path / "cola.tsv"  # no header: every line is an example
    cola.write_text("".join(f"src\t{i % 2}\t\tsentence {i}\n" for i in range(30)))
    path, used, available = payoff.capped_train_file("cola", str(cola), 10, str(tmp_path / "c"))
    assert (used, available) == (10, 30) and len(read_glue("cola", path)) == 10
    assert payoff.capped_train_file("cola", str(cola), 30, str(tmp_path / "d")) == (str(cola), 30, 30)


def test_missing_glue_data_is_one_clear_line(payoff, tmp_path, capsys):
    status = payoff.main(["--pretrained", str(tmp_path), "--out", str(tmp_path / "out"),
                          "--glue-dir", str(tmp_path / "nowhere"), "--tasks", "RTE"])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1
    assert "GLUE data not found" in error[0] and "--glue-dir" in error[0] and "nowhere/RTE/train.tsv" in error[0]


def test_finetune_and_record_appends_one_line_and_says_it(payoff, tmp_path, monkeypatch, capsys):
    calls = []

    def fake_finetune_one(args, task, init, seed, model, train, dev):
        calls.append((task, init, seed, model, train, dev))
        return record(task, init, seed, 0.75, model=model) | {"seconds": 3.0}

    monkeypatch.setattr(payoff, "finetune_one", fake_finetune_one)
    results, path = {}, str(tmp_path / "results.jsonl")
    payoff.finetune_and_record(None, ("rte", "random", 2), "/twin", {"train": "t.tsv", "dev": "d.tsv"}, results,
                               path, "1/4")
    assert calls == [("rte", "random", 2, "/twin", "t.tsv", "d.tsv")]
    assert results[("rte", "random", 2)]["value"] == 0.75
    assert payoff.load_results(path, {})[("rte", "random", 2)]["model"] == "/twin"
    assert "[1/4] RTE seed 2 random: accuracy 0.7500 (3 s)" in capsys.readouterr().err


def test_frozen_probe_reads_labels_and_pairs(payoff, tiny_model, tmp_path):
    """SST-2 labels carried by one word, STS-B pairs identical (5.0) or unrelated (0.0): the probe learns the
    word (a shuffled label column would score ~50) and the cosine ranks identical pairs above unrelated ones."""
    import random

    rng = random.Random(0)
    nouns = ["film", "story", "cast", "plot", "music", "ending", "script", "scene"]

    def sentiment(n):
        rows = [(f"the {rng.choice(nouns)} was {'good' if y else 'bad'} .", y) for y in (rng.randint(0, 1)
                                                                                      for _ in range(n))]
        return "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows)

    (tmp_path / "train.tsv").write_text(sentiment(80))
    (tmp_path / "dev.tsv").write_text(sentiment(40))
    sentences = [f"a {w} {v} in the {p}" for w, v, p in zip(["man", "cat", "child", "woman", "dog", "bird"] * 3,
                                                              ["sings", "runs", "sleeps", "eats", "jumps", "reads"] * 3,
                                                              ["park", "house", "city", "rain", "snow", "dark"] * 3)]
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    lines = [f"{i}\tg\tf\ty\to\ts\ts\t{s}\t{s if i % 2 else sentences[(i + 7) % len(sentences)]}\t"
             f"{5.0 if i % 2 else 0.0}\n" for i, s in enumerate(sentences)]
    (tmp_path / "sts.tsv").write_text(header + "".join(lines))
    scores = payoff.frozen_probe(str(tiny_model), {"train": str(tmp_path / "train.tsv"),
                                                   "dev": str(tmp_path / "dev.tsv")}, str(tmp_path / "sts.tsv"))
    assert scores["sst2_probe"] > 90
    assert scores["stsb_cosine"] > 80  # identical pairs have cosine 1, above every unrelated pair


def test_majority_class_column(payoff, tmp_path):
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("sentence\tlabel\n" + "a b\t1\n" * 3 + "c d\t0\n")
    dev.write_text("sentence\tlabel\n" + "e f\t1\n" + "g h\t0\n" * 3)
    assert payoff.majority_score("sst2", str(train), str(dev)) == pytest.approx(25.0)  # always 1: 1 of 4 right
    cola_train, cola_dev = tmp_path / "cola_train.tsv", tmp_path / "cola_dev.tsv"  # CoLA: no header, 4 fields
    cola_train.write_text("src\t1\t\tA b.\n" * 3 + "src\t0\t*\tB a.\n")
    cola_dev.write_text("src\t1\t\tC d.\n" + "src\t0\t*\tD c.\n")
    assert payoff.majority_score("cola", str(cola_train), str(cola_dev)) == pytest.approx(0.0)  # a constant: MCC 0
    pairs = "sentence1\tsentence2\tscore\n" + "a\tb\t1.0\n" + "c\td\t4.5\n"
    (tmp_path / "stsb.tsv").write_text(pairs)
    assert payoff.majority_score("stsb", str(tmp_path / "stsb.tsv"), str(tmp_path / "stsb.tsv")) is None
    results = {("rte", init, s): record("rte", init, s, v) for init, v in (("random", 0.5), ("pretrained", 0.6))
               for s in (1, 2)}
    rows, _, _ = payoff.table_rows(results, ["rte", "stsb"], [1, 2], with_ceiling=False,
                                   majority={"rte": 52.7, "stsb": None})
    assert rows[0].endswith("| majority class |") and rows[1].endswith("---:|---:|")
    assert rows[2].endswith("| not run | 52.7 |") and rows[3].endswith("| not run | — |")
