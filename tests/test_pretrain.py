"""Pre-training end to end through the CLI: exact resume, DDP equivalence, bad input, the demo."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_one_line_error, pretrain_args, run_cli, slow

def losses(run_dir):
    with open(run_dir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return [(r["step"], r["loss"], r["mlm_loss"], r["nsp_loss"]) for r in rows if r.get("split") != "validation"]


def test_resume_is_bit_identical(prepared, tmp_path):
    run_cli(*pretrain_args(prepared, tmp_path / "straight"))
    run_cli(*pretrain_args(prepared, tmp_path / "resumed", "--stop-at", 5))
    assert not (tmp_path / "resumed" / "model").exists()  # stopped early: no final model yet
    assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["step-00000003", "step-00000005"]
    run_cli(*pretrain_args(prepared, tmp_path / "resumed", "--resume"))
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    assert [s for s, *_ in losses(tmp_path / "resumed")] == list(range(1, 9))


def test_resume_refuses_a_changed_plan_or_model_by_name(prepared, tmp_path):
    """A resumed run keeps its learning-rate schedule: a changed --steps would restart the decay (a finished
    300-step run resumed with --steps 400 went from lr 3.4e-6 to 2.3e-4). A changed --model-config names the
    settings that differ, not "config.json does not describe these weights"."""
    run = tmp_path / "run"
    run_cli(*pretrain_args(prepared, run, "--stop-at", 3))
    proc = run_cli(*pretrain_args(prepared, run, "--resume", "--steps", 12), check=False)
    assert_one_line_error(proc, "learning-rate schedule", "--steps 8 (now 12)", "resume with --steps 8")
    proc = run_cli(*pretrain_args(prepared, run, "--resume", "--model-config", "mini"), check=False)
    assert_one_line_error(proc, "--model-config mini", "hidden_size 128 (now 256)", "num_hidden_layers 2 (now 4)")
    assert sorted(os.listdir(run / "checkpoints")) == ["step-00000003"]  # refused before anything was written
    run_cli(*pretrain_args(prepared, run, "--resume"))  # the original plan resumes
    lrs = [json.loads(line)["lr"] for line in open(run / "metrics.jsonl") if "split" not in line]
    assert lrs == sorted(lrs, reverse=True) and len(lrs) == 8  # one decaying schedule (warmup is one step)


def test_small_corpus_still_gets_a_held_out_evaluation(prepared, tmp_path):
    """The default --validation-fraction 0.01 of 120 documents used to hold out one document, and pre-training
    (NSP needs two) then skipped held-out evaluation without a word."""
    from conftest import WORDS
    import random

    rng = random.Random(1)
    docs = ["\n".join(" ".join(rng.choices(WORDS, k=8)) + "." for _ in range(4)) for _ in range(120)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs) + "\n")
    run_cli("prepare", "--input", corpus, "--tokenizer", prepared / "tok", "--out", tmp_path / "data", "--quiet")
    splits = json.loads((tmp_path / "data" / "manifest.json").read_text())["splits"]
    assert splits["validation"]["documents"] == 10 and splits["train"]["documents"] == 110
    args = [a if a != prepared / "data" else tmp_path / "data" for a in pretrain_args(prepared, tmp_path / "run")]
    run_cli(*args)
    held_out = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if "validation" in line]
    assert [r["step"] for r in held_out] == [4, 8]
    # none held out: said, not silent
    run_cli("prepare", "--input", corpus, "--tokenizer", prepared / "tok", "--out", tmp_path / "none", "--quiet",
            "--validation-fraction", 0)
    args = [a if a != prepared / "data" else tmp_path / "none" for a in pretrain_args(prepared, tmp_path / "run2")]
    proc = run_cli(*args)
    assert "no held-out evaluation" in proc.stderr and "0 validation documents" in proc.stderr, proc.stderr


def test_final_model_loads_in_transformers(prepared, tmp_path):
    transformers = pytest.importorskip("transformers")
    run_cli(*pretrain_args(prepared, tmp_path / "run", "--steps", 2))
    model, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "run" / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    assert tok("the model")["input_ids"][0] == tok.cls_token_id
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the run directory stands for its model/ (it used to fail: "holds neither tokenizer.json nor vocab.txt")
    guesses = json.loads(run_cli("fill-mask", "--model", tmp_path / "run", "the [MASK] .").stdout)
    assert len(guesses["predictions"][0]) == 5


def test_two_process_ddp_equals_one_process_with_accumulation(prepared, tmp_path):
    common = pretrain_args(prepared, tmp_path / "x")[:-1]  # drop --quiet's position below
    single = [a if a != tmp_path / "x" else tmp_path / "single" for a in common] + ["--grad-accum", 2, "--quiet"]
    run_cli(*single)
    ddp = [a if a != tmp_path / "x" else tmp_path / "ddp" for a in common] + ["--quiet", "--device", "cpu"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(29500 + os.getpid() % 1000), "-m", "bertkit", *map(str, ddp)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert [s for s, *_ in one] == [s for s, *_ in two] == list(range(1, 9))
    for (step, *a), (_, *b) in zip(one, two):
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (step, a, b)


def test_bad_inputs_exit_2_and_leave_out_untouched(prepared, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert_one_line_error(run_cli("prepare", "--input", empty, "--tokenizer", prepared / "tok", "--out", tmp_path / "p1",
                               "--quiet", check=False), "empty.txt")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("first line\nsecond caf\u00e9 line\n".encode("latin-1"))
    assert_one_line_error(run_cli("prepare", "--input", latin, "--tokenizer", prepared / "tok", "--out", tmp_path / "p2",
                               "--quiet", check=False), "latin.txt", "byte offset 21")
    assert not (tmp_path / "p2").exists()
    run_cli("prepare", "--input", latin, "--tokenizer", prepared / "tok", "--out", tmp_path / "p3", "--quiet",
        "--skip-bad-lines", "--validation-fraction", 0)
    assert json.loads((tmp_path / "p3" / "manifest.json").read_text())["bad_lines"] == 1
    # --data that is not prepared data
    assert_one_line_error(run_cli("pretrain", "--data", prepared / "tok", "--out", tmp_path / "r1", "--quiet",
                               check=False), "tok")
    # an existing non-empty --out without --resume
    assert_one_line_error(run_cli(*pretrain_args(prepared, out), check=False), "not empty", "--resume")
    # --seq-len beyond the model's positions
    assert_one_line_error(run_cli(*pretrain_args(prepared, tmp_path / "r2", "--seq-len", 1000), check=False),
                           "--seq-len 1000", "512 positions")
    assert not (tmp_path / "r2").exists()
    # a model whose vocabulary disagrees with the data's tokenizer
    from bertkit.config import preset
    from bertkit.model import BertForPreTraining

    BertForPreTraining(preset("tiny", vocab_size=123)).save_pretrained(tmp_path / "other")
    assert_one_line_error(run_cli(*pretrain_args(prepared, tmp_path / "r3", "--init", tmp_path / "other"), check=False),
                           "--init", "123")
    assert (out / "keep.txt").read_text() == "precious" and os.listdir(out) == ["keep.txt"]


def test_demo_smoke(tmp_path):
    """The whole demo, a few steps of each part; then a demo stopped in step 5 (fine-tuning) resumes there: the
    finished fine-tuning runs are reused, the rest run, and the returned dict holds both dev accuracies."""
    from bertkit.demo import FINETUNE_SEEDS, WEIGHT_DECAY, run_demo

    out = tmp_path / "demo"
    proc = run_cli("demo", "--out", out, "--steps", 4, "--quiet", "--corpus-bytes", 200_000, "--finetune-epochs", 1)
    assert "MLM accuracy" in proc.stdout and "NSP accuracy" in proc.stdout
    assert (out / "run" / "model" / "model.safetensors").exists()
    assert (out / "run" / "curves.png").exists()
    assert "[5/5] fine-tuning" in proc.stdout and "dev accuracy: pre-trained" in proc.stdout
    assert "epoch 1: accuracy" not in proc.stdout  # finetune's line per epoch and seed stays in metrics.jsonl
    seeds = [f"seed-{s}" for s in range(FINETUNE_SEEDS)]
    done = {(start, seed): out / "finetune" / start / seed / "eval_results.json"
            for start in ("pretrained", "random") for seed in seeds}
    assert all(path.exists() for path in done.values())
    # the random start is the paper's N(0, 0.02), not the local start pre-training began from (which zeroes the
    # word embeddings' last head-size dimensions)
    words = load_file(out / "finetune" / "random-init" / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    assert bool((words[:, -64:] != 0).all()) and abs(float(words.std()) - 0.02) < 0.002
    run_config = json.loads((out / "run" / "run.json").read_text())
    assert run_config["init_scheme"] == "local" and run_config["hold_local"] == 0.5
    assert run_config["mask_rate"] == 0.25  # the demo's own rate for its small, repeated corpus (demo.MASK_RATE)
    assert run_config["weight_decay"] == WEIGHT_DECAY  # --weight-decay unset: demo.py's, not the CLI's
    # planned for --max-minutes 7 and capped at --steps: `pretrain --budget 420s --max-steps 4`
    assert (run_config["budget"], run_config["plan"]["max_steps"], run_config["planned_steps"]) == ("420s", 4, 4)
    assert json.loads((out / "demo.json").read_text())["pretrain_schedule"] == "budget"

    shutil.rmtree(out / "finetune" / "random" / seeds[-1])  # stopped during the random start's last seed
    settings = json.loads((out / "demo.json").read_text())
    del settings["weight_decay"]  # a demo made before --weight-decay (it trained with 0.01) still resumes
    (out / "demo.json").write_text(json.dumps(settings))
    kept = {key: path.stat().st_mtime_ns for key, path in done.items() if key != ("random", seeds[-1])}
    result = run_demo(str(out), steps=4, corpus_bytes=200_000, finetune_epochs=1, show_progress=False, resume=True)
    assert {key: done[key].stat().st_mtime_ns for key in kept} == kept  # reused, not trained again
    assert done["random", seeds[-1]].exists()
    for start in ("pretrained", "random"):
        accuracies = [json.loads(done[start, seed].read_text())["accuracy"] for seed in seeds]
        assert result[f"finetune_{start}"]["accuracy"] == pytest.approx(sum(accuracies) / len(accuracies))
    assert result["step"] == 4 and 0 <= result["mlm_accuracy"] <= 1
    assert result["task"]["train"] == len((out / "task" / "train.jsonl").read_text().splitlines())


@pytest.mark.parametrize("option, fragment", [(["--hold-local", 1.5], "--hold-local 1.5"),
                                              (["--lr", 0], "--lr 0"), (["--max-minutes", -1], "--max-minutes -1"),
                                              (["--mask-rate", 1.0], "--mask-rate 1.0"),
                                              (["--weight-decay", -0.1], "--weight-decay -0.1")])
def test_demo_bad_numbers_are_refused_before_anything_runs(tmp_path, option, fragment):
    out = tmp_path / "demo"
    proc = run_cli("demo", "--out", out, "--quiet", *option, check=False)
    assert_one_line_error(proc, fragment)
    assert not out.exists()


def test_demo_task_is_deterministic_well_formed_and_held_out(tmp_path):
    """Step 5's task: the same files for the same seed, in the format `bertkit finetune --task classify` reads,
    TASK_TRAIN_PER_MODULE training sentences a module, no sentence twice, and none in the pre-training corpus."""
    from collections import Counter

    from bertkit.data.tasks import read_table
    from bertkit.demo import TASK_MODULES, TASK_TRAIN_PER_MODULE, module_task, python_docs_corpus

    infos = [module_task(str(tmp_path / name), seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    files = {name: {split: (tmp_path / name / f"{split}.jsonl").read_bytes() for split in ("train", "dev")}
             for name in "abc"}
    assert files["a"] == files["b"] and infos[0] == infos[1]
    assert files["a"]["train"] != files["c"]["train"]  # another seed, another split
    train = read_table(str(tmp_path / "a" / "train.jsonl"))
    dev = read_table(str(tmp_path / "a" / "dev.jsonl"))
    assert Counter(e.label for e in train) == {module: TASK_TRAIN_PER_MODULE for module in TASK_MODULES}
    dev_counts = Counter(e.label for e in dev)
    assert set(dev_counts) == set(TASK_MODULES) and min(dev_counts.values()) >= 50
    assert infos[0]["train"] == len(train) and infos[0]["dev"] == len(dev)
    assert infos[0]["majority_accuracy"] == max(dev_counts.values()) / len(dev)
    texts = [e.text_a for e in train + dev]
    assert len(set(texts)) == len(texts) and all(len(t.split()) >= 3 for t in texts)
    pretraining = set(python_docs_corpus(exclude=TASK_MODULES).split("\n"))  # the demo's (whole) corpus
    assert not pretraining & set(texts)
    assert set(texts) <= set(python_docs_corpus().split("\n"))  # left out of it, not made up


def test_real_wikipedia_vocab_prepare_pretrain(tmp_path):
    """The WikiExtractor files of ../shared/data: tags and empty pages gone, a few real training steps.
    (The 15-minute run against transformers is benchmarks/wiki_pretrain.py; numbers in BENCHMARKS.md.)"""
    from conftest import shared_data

    corpus = shared_data("corpus", "enwiki-wikiextractor")
    files = [corpus / "wiki_00", corpus / "wiki_01"]
    run_cli("vocab", "--input", *files, "--format", "wikiextractor", "--vocab-size", 8000, "--out", tmp_path / "tok",
        "--quiet")
    vocab = (tmp_path / "tok" / "vocab.txt").read_text().split("\n")
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    run_cli("prepare", "--input", *files, "--format", "wikiextractor", "--tokenizer", tmp_path / "tok", "--out",
        tmp_path / "data", "--workers", 2, "--validation-fraction", 0.02, "--quiet")
    splits = json.loads((tmp_path / "data" / "manifest.json").read_text())["splits"]
    # MANIFEST.md: wiki_00 has 620 non-empty documents, wiki_01 495
    assert splits["train"]["documents"] + splits["validation"]["documents"] == 620 + 495
    assert splits["validation"]["documents"] >= 1
    from bertkit.data.pretraining import PreparedCorpus
    from bertkit.tokenizer import Tokenizer

    text = Tokenizer.from_pretrained(tmp_path / "tok").decode(PreparedCorpus([str(tmp_path / "data")]).tokens(0, 20000))
    assert "doc id" not in text and "< / doc >" not in text and "wikipedia. org" not in text  # tags dropped
    run_cli("pretrain", "--data", tmp_path / "data", "--out", tmp_path / "run", "--model-config", "tiny", "--steps", 3,
        "--batch-size", 8, "--seq-len", 128, "--log-every", 1, "--eval-every", 3, "--eval-samples", 16, "--quiet")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    fields = {"step", "loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "lr", "tokens_per_s", "grad_norm"}
    assert [r["step"] for r in rows if r.get("split") != "validation"] == [1, 2, 3]
    assert all(fields <= r.keys() for r in rows if r.get("split") != "validation")
    held_out = [r for r in rows if r.get("split") == "validation"]
    assert len(held_out) == 1 and 0 <= held_out[0]["mlm_accuracy"] <= 1 and 0 <= held_out[0]["nsp_accuracy"] <= 1


def test_mlm_only_with_whole_word_masking(prepared, tmp_path):
    run_cli(*pretrain_args(prepared, tmp_path / "run", "--steps", 2, "--objective", "none", "--masking", "whole-word"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("split") != "validation"] == [1, 2]
    assert all("mlm_accuracy" in r and "nsp_loss" not in r and r["loss"] == r["mlm_loss"] for r in rows)


@slow
def test_compile_gives_the_same_losses(prepared, tmp_path):
    """--compile (torch.compile of the model) trains to the same per-step losses as eager mode. Dropout is
    off: compiled code draws its dropout masks from its own generator, so with dropout the runs differ."""
    common = ["--steps", 4, "--precision", "fp32", "--dropout", 0]
    run_cli(*pretrain_args(prepared, tmp_path / "eager", *common))
    run_cli(*pretrain_args(prepared, tmp_path / "compiled", *common, "--compile"))
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert [s for s, *_ in compiled] == [1, 2, 3, 4]
    for a, b in zip(eager, compiled):
        assert b[1:] == pytest.approx(a[1:], rel=1e-4, abs=1e-5), (a, b)


def test_help_shows_defaults_and_exit_status():
    pretrain = run_cli("pretrain", "--help").stdout
    assert "default: 1000" in pretrain and "the preset's recipe" in pretrain  # --steps has no help text of its own
    finetune = run_cli("finetune", "--help").stdout
    for text in (pretrain, finetune, run_cli("demo", "--help").stdout):
        assert "exit status:" in text and "130" in text and "143" in text and "--resume" in text
    assert "--stop-at N, a stop asked for" in pretrain and "--keep-checkpoints-at-end" in finetune
