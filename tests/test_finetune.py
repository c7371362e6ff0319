"""Fine-tuning through the CLI on tiny made-up data: every task kind runs, saves a directory transformers
loads with the same predictions, and bad input stops with one clear line and exit status 2."""

import json
import os
import random

import pytest
import torch

from conftest import NEGATIVE, POSITIVE, assert_one_line_error, run_cli

def test_sst2_finetune_evaluate_predict_and_transformers_parity(tiny_model, sst2, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "out"
    proc = run_cli("finetune", "--task", "sst2", "--data", sst2, "--model", tiny_model, "--out", tmp_path / "run",
                   "--epochs", 2, "--batch-size", 8, "--lr", 1e-3, "--quiet")
    out = tmp_path / "run" / "seed-1"  # one seed, the layout of many: what --help and the README say
    result = json.loads((out / "eval_results.json").read_text())
    summary = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert summary["seeds"] == [1] and summary["accuracy"]["mean"] == result["accuracy"]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"accuracy {result['accuracy']:.4f},") and "±" not in last  # no "± 0.0000", one seed
    assert not (out / "checkpoints").exists()  # a finished run keeps no checkpoints
    assert 0.0 <= result["accuracy"] <= 1.0 and result["epoch"] in (1, 2)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines if line.get("split") == "dev"] == [1, 2]
    # a short run logs every step by default (it used to log every 50: one point for these 12 steps)
    assert [line["step"] for line in lines if "split" not in line] == list(range(1, 13))
    # evaluate gives the kept epoch's metric; OUT with one seed stands for OUT/seed-1
    evaluated = json.loads(run_cli("evaluate", "--task", "sst2", "--data", sst2, "--model", tmp_path / "run",
                               "--output", tmp_path / "eval.json").stdout)
    assert evaluated["accuracy"] == pytest.approx(result["accuracy"])
    # by default evaluate writes beside the model, leaving the fine-tune's eval_results.json as it was
    before = (out / "eval_results.json").read_bytes()
    proc = run_cli("evaluate", "--task", "sst2", "--data", sst2, "--model", out)
    assert "evaluate" in proc.stderr  # its progress bar
    assert (out / "eval_results.json").read_bytes() == before
    assert json.loads((out / "evaluate_results.json").read_text())["accuracy"] == pytest.approx(result["accuracy"])
    # predict: the GLUE submission format
    test = tmp_path / "test.tsv"
    test.write_text("index\tsentence\n0\tthe film was great\n1\tthe film was awful\n")
    run_cli("predict", "--task", "sst2", "--model", out, "--input", test, "--output", tmp_path / "pred.tsv")
    pred = (tmp_path / "pred.tsv").read_text().splitlines()
    assert pred[0] == "index\tprediction" and [p.split("\t")[0] for p in pred[1:]] == ["0", "1"]
    assert all(p.split("\t")[1] in ("0", "1") for p in pred[1:])
    # transformers loads the directory into the matching class, with the same logits
    from bertkit.model import BertForSequenceClassification
    from bertkit.tokenizer import Tokenizer

    hf = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    ours = BertForSequenceClassification.from_pretrained(out).eval()
    batch = Tokenizer.from_pretrained(out)(["the film was great", "a dull cast"])
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, hf(**batch).logits, atol=1e-5, rtol=1e-5)


def test_seeds_report_mean_and_std(tiny_model, sst2, tmp_path):
    run_cli("finetune", "--task", "sst2", "--data", sst2, "--model", tiny_model, "--out", tmp_path / "o", "--epochs", 1,
        "--batch-size", 16, "--seeds", "1,2", "--quiet")
    summary = json.loads((tmp_path / "o" / "eval_results.json").read_text())
    per_seed = [json.loads((tmp_path / "o" / f"seed-{s}" / "eval_results.json").read_text())["accuracy"] for s in (1, 2)]
    assert summary["seeds"] == [1, 2]
    assert summary["accuracy"]["mean"] == pytest.approx(sum(per_seed) / 2)
    assert summary["accuracy"]["std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)
    # OUT itself holds no model: with several seeds, the error names them
    proc = run_cli("evaluate", "--task", "sst2", "--data", sst2, "--model", tmp_path / "o", check=False)
    assert_one_line_error(proc, "2 seeds", f"did you mean --model {tmp_path / 'o' / 'seed-1'}?")


def test_regression_from_own_csv(tiny_model, tmp_path):
    rng = random.Random(0)
    rows = [(f"score {w} {w}", float(i % 5)) for i, w in enumerate(rng.choices(POSITIVE + NEGATIVE, k=30))]
    for name in ("train", "dev"):
        (tmp_path / f"{name}.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    run_cli("finetune", "--task", "regress", "--train", tmp_path / "train.csv", "--dev", tmp_path / "dev.csv",
        "--model", tiny_model, "--out", tmp_path / "o", "--epochs", 1, "--quiet", "--tensorboard", "--log-every", 1,
        "--batch-size", 8)
    result = json.loads((tmp_path / "o" / "seed-1" / "eval_results.json").read_text())
    assert {"pearson", "spearmanr"} <= result.keys()
    assert (tmp_path / "o" / "seed-1" / "curves.png").stat().st_size > 0  # the run draws its curves at the end
    assert list((tmp_path / "o" / "seed-1" / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "o" / "seed-1" / "config.json").read_text())["id2label"] == {"0": "score"}


def test_ner_and_squad_run(tiny_model, tmp_path):
    conll = "-DOCSTART- -X- -X- O\n\n" + "\n\n".join(
        "John NNP B-NP B-PER\nlives VBZ B-VP O\nin IN B-PP O\nParis NNP B-NP B-LOC\n. . O O" for _ in range(6)) + "\n"
    (tmp_path / "ner").mkdir()
    for name in ("train.txt", "dev.txt"):
        (tmp_path / "ner" / name).write_text(conll)
    run_cli("finetune", "--task", "ner", "--data", tmp_path / "ner", "--model", tiny_model, "--out", tmp_path / "n",
        "--epochs", 1, "--batch-size", 4, "--quiet")
    assert {"precision", "recall", "f1"} <= json.loads((tmp_path / "n" / "seed-1" / "eval_results.json").read_text()).keys()
    (tmp_path / "words.txt").write_text("Anna\nlives\nin\nRome\n\nBob\nruns\n")  # unlabeled: tokens only
    run_cli("predict", "--task", "ner", "--model", tmp_path / "n" / "seed-1", "--input", tmp_path / "words.txt",
            "--output", tmp_path / "tags.jsonl")
    tagged = [json.loads(line) for line in (tmp_path / "tags.jsonl").read_text().splitlines()]
    assert [t["words"] for t in tagged] == [["Anna", "lives", "in", "Rome"], ["Bob", "runs"]]
    assert all(len(t["tags"]) == len(t["words"]) and set(t["tags"]) <= {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}
               for t in tagged)
    context = "The tower was built in 1889 by Gustave Eiffel for the world fair in Paris."
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": f"q{i}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
        for i, (q, a) in enumerate([("When was it built?", "1889"), ("Who built it?", "Gustave Eiffel"),
                                    ("Where is the fair?", "Paris")])]}]}]}
    (tmp_path / "squad").mkdir()
    for name in ("train.json", "dev.json"):
        (tmp_path / "squad" / name).write_text(json.dumps(squad))
    run_cli("finetune", "--task", "squad", "--data", tmp_path / "squad", "--model", tiny_model, "--out", tmp_path / "q",
        "--epochs", 1, "--max-seq-len", 64, "--doc-stride", 16, "--batch-size", 2, "--quiet")
    result = json.loads((tmp_path / "q" / "seed-1" / "eval_results.json").read_text())
    assert 0 <= result["exact_match"] <= 100 and 0 <= result["f1"] <= 100
    for qa in squad["data"][0]["paragraphs"][0]["qas"]:
        qa["answers"] = []  # input to predict carries no answers
    (tmp_path / "questions.json").write_text(json.dumps(squad))
    run_cli("predict", "--task", "squad", "--model", tmp_path / "q" / "seed-1", "--input", tmp_path / "questions.json",
            "--output", tmp_path / "answers.jsonl")
    answers = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == ["q0", "q1", "q2"] and all(a["answer"] in context for a in answers)


def test_eval_at_end_reads_dev_once_and_trains_the_same_model(tiny_model, sst2, tmp_path):
    from safetensors.torch import load_file

    for eval_at in ("epoch", "end"):
        run_cli("finetune", "--task", "sst2", "--data", sst2, "--model", tiny_model, "--out", tmp_path / eval_at,
                "--epochs", 3, "--batch-size", 16, "--lr", 1e-3, "--keep", "last", "--eval-at", eval_at, "--quiet")
    runs = {e: tmp_path / e / "seed-1" for e in ("epoch", "end")}
    rows = {e: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for e, d in runs.items()}
    dev_epochs = {e: [row["epoch"] for row in lines if row.get("split") == "dev"] for e, lines in rows.items()}
    assert dev_epochs == {"epoch": [1, 2, 3], "end": [3]}
    results = {e: json.loads((d / "eval_results.json").read_text()) for e, d in runs.items()}
    assert results["end"]["epoch"] == 3 and results["end"]["accuracy"] == results["epoch"]["accuracy"]
    weights = {e: load_file(d / "model.safetensors") for e, d in runs.items()}
    assert weights["end"].keys() == weights["epoch"].keys()
    for name, tensor in weights["epoch"].items():  # reading dev draws nothing from the training's random streams
        assert torch.equal(weights["end"][name], tensor), name


@pytest.mark.parametrize("eval_at", ["epoch", "end"])
def test_a_stop_during_the_last_step_resumes_to_the_final_evaluation(tiny_model, sst2, tmp_path, monkeypatch,
                                                                     eval_at):
    """Stopped while training its last step, a run has trained every step but read no dev after it: --resume
    evaluates and keeps the final model, as the uninterrupted run does (it used to keep the epoch before's, or,
    with --eval-at end, nothing: eval_results.json null and the weights deleted with the checkpoints)."""
    import bertkit.train.state as state
    from bertkit.errors import Interrupted
    from bertkit.train.finetune import FinetuneConfig, finetune

    def config(out, **options):
        return FinetuneConfig(task="sst2", data=str(sst2), model=str(tiny_model), out=str(out), epochs=2,
                              batch_size=16, lr=1e-3, keep="last", eval_at=eval_at, precision="fp32",
                              show_progress=False, **options)

    straight = finetune(config(tmp_path / "straight"))

    class StopInTheLastStep(state.StopRequest):  # SIGTERM arriving while step 6 of 6 trains
        checks, signum = 0, 15

        @property
        def requested(self):  # read once a step, at its end
            type(self).checks += 1
            return type(self).checks >= 6  # 48 examples in batches of 16: 3 steps an epoch, 2 epochs

        @requested.setter
        def requested(self, value):
            pass

    with monkeypatch.context() as patch:
        patch.setattr(state, "StopRequest", StopInTheLastStep)
        with pytest.raises(Interrupted, match="stopped at step 6 of seed 1"):
            finetune(config(tmp_path / "run"))
    assert not (tmp_path / "run" / "seed-1" / "eval_results.json").exists()
    resumed = finetune(config(tmp_path / "run", resume=True))
    assert resumed["accuracy"]["mean"] == straight["accuracy"]["mean"]
    run = tmp_path / "run" / "seed-1"
    assert json.loads((run / "eval_results.json").read_text())["epoch"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows if row.get("split") == "dev"] == ([1, 2] if eval_at == "epoch" else [2])
    from safetensors.torch import load_file

    ours, theirs = (load_file(d / "seed-1" / "model.safetensors") for d in (tmp_path / "run", tmp_path / "straight"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_bad_inputs(tiny_model, sst2, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.tsv").write_text("sentence\tlabel\nfine\t1\ntoo\tmany\tfields\n")
    (bad / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n")
    assert_one_line_error(run_cli("finetune", "--task", "sst2", "--data", bad, "--model", tiny_model, "--out", tmp_path / "o1",
                       check=False), "train.tsv", "line 3")
    unseen = tmp_path / "unseen"
    unseen.mkdir()
    (unseen / "train.csv").write_text("text,label\na,x\nb,y\n")
    (unseen / "dev.csv").write_text("text,label\nc,z\n")
    assert_one_line_error(run_cli("finetune", "--task", "classify", "--data", unseen, "--model", tiny_model, "--out",
                       tmp_path / "o2", check=False), "dev.csv", "'z'")
    assert_one_line_error(run_cli("evaluate", "--task", "ner", "--dev", sst2 / "dev.tsv", "--model", tiny_model, check=False),
                   "BertForPreTraining", "BertForTokenClassification")
    assert_one_line_error(run_cli("finetune", "--task", "sst2", "--data", sst2, "--model", tiny_model, "--out", tmp_path / "o3",
                       "--max-seq-len", 512, check=False), "--max-seq-len 512", "128 positions")
    assert_one_line_error(run_cli("finetune", "--task", "sst2", "--data", sst2, "--model", tiny_model, "--out", tmp_path / "o4",
                       "--seeds", "1,1", check=False), "--seeds")
    # a batch larger than the data: refused as pretrain refuses it (it used to train one step and exit 0)
    assert_one_line_error(run_cli("finetune", "--task", "sst2", "--data", sst2, "--model", tiny_model, "--out",
                                  tmp_path / "o5", "--batch-size", 100000, check=False),
                          "48 examples", "--batch-size 100000", "lower --batch-size")
    # --eval-at end has no best epoch to pick
    assert_one_line_error(run_cli("finetune", "--task", "sst2", "--data", sst2, "--model", tiny_model, "--out",
                                  tmp_path / "o6", "--eval-at", "end", check=False),
                          "--eval-at end", "--keep last")
    for name in ("o1", "o2", "o3", "o4", "o5", "o6"):
        assert not (tmp_path / name).exists() or not os.listdir(tmp_path / name)


def test_squad2_tunes_and_keeps_the_null_threshold(tiny_model, tmp_path):
    context = "The tower was built in 1889 by Gustave Eiffel for the world fair in Paris."
    qas = [{"id": "a", "question": "When was it built?", "answers": [{"text": "1889", "answer_start": 23}]},
           {"id": "b", "question": "Who painted it?", "answers": [], "is_impossible": True}]
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    (tmp_path / "squad2").mkdir()
    for name in ("train.json", "dev.json"):
        (tmp_path / "squad2" / name).write_text(json.dumps(data))
    run_cli("finetune", "--task", "squad2", "--data", tmp_path / "squad2", "--model", tiny_model, "--out",
            tmp_path / "q", "--epochs", 1, "--max-seq-len", 64, "--batch-size", 2, "--quiet")
    result = json.loads((tmp_path / "q" / "seed-1" / "eval_results.json").read_text())
    assert {"exact_match", "f1", "best_null_threshold", "best_f1"} <= result.keys()
    assert result["best_f1"] >= 50.0  # answering "" to the impossible question alone scores 1 of 2
    settings = json.loads((tmp_path / "q" / "seed-1" / "bertkit_task.json").read_text())
    assert settings["null_threshold"] == result["best_null_threshold"]
