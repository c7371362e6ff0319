"""`bertkit pretrain --objective electra` (objectives.py's entry, electra.py's model) through the CLI: the statistics
it logs, the directories it saves (loaded by transformers and by bertkit's fine-tuning heads), exact resume, and
--init from a BERT directory the generator's ratio does not fit.
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from bertkit import electra
from bertkit.objectives import OBJECTIVES
from conftest import assert_one_line_error, pretrain_args, run_cli

ELECTRA = ["--objective", "electra"]
STATISTICS = ["mlm_loss", "mlm_accuracy", "rtd_loss", "rtd_accuracy"]
TIMING = ("tokens_per_s", "time_s")


def rows(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r.get("split") != "validation"], [r for r in lines if r.get("split") == "validation"]


def test_the_entry_weighs_the_discriminator_as_the_paper():
    assert OBJECTIVES["electra"].loss_weights == {"mlm_loss": 1.0, "rtd_loss": electra.DISCRIMINATOR_WEIGHT}


def test_pretrain_electra_through_the_cli_saves_what_transformers_and_finetuning_load(prepared, tmp_path):
    transformers = pytest.importorskip("transformers")
    run = tmp_path / "run"
    run_cli(*pretrain_args(prepared, run, "--steps", 3, "--eval-every", 3, *ELECTRA))
    train, held_out = rows(run)
    assert [r["step"] for r in train] == [1, 2, 3] and len(held_out) == 1
    for r in train + held_out:
        assert [k for k in r if k.endswith(("_loss", "_accuracy"))] == STATISTICS
        assert 0 <= r["mlm_accuracy"] <= 1 and 0 <= r["rtd_accuracy"] <= 1 and 0 <= r["replaced_fraction"] <= 1
        assert r["loss"] == pytest.approx(r["mlm_loss"] + electra.DISCRIMINATOR_WEIGHT * r["rtd_loss"])
    assert json.loads((run / "run.json").read_text())["objective"] == "electra"

    model_dir, generator_dir = run / "model", run / "model" / electra.GENERATOR_DIR
    assert json.loads((model_dir / "config.json").read_text())["architectures"] == ["ElectraForPreTraining"]
    for cls, path in ((transformers.ElectraForPreTraining, model_dir), (transformers.ElectraForMaskedLM, generator_dir)):
        hf, info = cls.from_pretrained(path, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], (path, info)
    # both directories load on their own, tokenizer included (a fill-mask pipeline can use the generator)
    assert (generator_dir / "vocab.txt").read_bytes() == (model_dir / "vocab.txt").read_bytes()
    transformers.AutoTokenizer.from_pretrained(generator_dir)
    # the generator is the smaller model, and both hold the same (shared) embeddings
    disc, gen = load_file(model_dir / "model.safetensors"), load_file(generator_dir / "model.safetensors")
    word = "electra.embeddings.word_embeddings.weight"
    assert torch.equal(disc[word], gen[word])
    assert json.loads((generator_dir / "config.json").read_text())["hidden_size"] * 4 == \
        json.loads((model_dir / "config.json").read_text())["hidden_size"]

    # bertkit finetune's model loading takes the discriminator's encoder
    from bertkit.model import BertForSequenceClassification
    from bertkit.train.finetune import _load_model

    classifier = _load_model("classification", str(model_dir), ["negative", "positive"]).eval()
    assert type(classifier) is BertForSequenceClassification
    assert classifier.load_report.missing == ["bert.pooler.weight", "bert.pooler.bias", "classifier.weight",
                                              "classifier.bias"]
    assert (model_dir / "vocab.txt").exists()  # with its tokenizer, as `bertkit finetune --model` needs
    ids = torch.randint(5, classifier.config.vocab_size, (2, 12))
    assert classifier(input_ids=ids).logits.shape == (2, 2)


def test_resume_is_bit_identical(prepared, tmp_path):
    """Stopped at step 5 and resumed: the same weights (both models) and per-step statistics as the run that never
    stopped (the generator's samples come from a generator seeded by (seed, step, micro-batch))."""
    run_cli(*pretrain_args(prepared, tmp_path / "straight", *ELECTRA))
    run_cli(*pretrain_args(prepared, tmp_path / "resumed", "--stop-at", 5, *ELECTRA))
    assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["step-00000003", "step-00000005"]
    run_cli(*pretrain_args(prepared, tmp_path / "resumed", "--resume", *ELECTRA))
    for sub in ("", electra.GENERATOR_DIR):
        a = load_file(tmp_path / "straight" / "model" / sub / "model.safetensors")
        b = load_file(tmp_path / "resumed" / "model" / sub / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub
    straight, resumed = rows(tmp_path / "straight"), rows(tmp_path / "resumed")
    assert [r["step"] for r in resumed[0]] == list(range(1, 9))
    for s, r in zip(straight, resumed):  # training rows, then held-out rows
        assert [{k: v for k, v in x.items() if k not in TIMING} for x in s] == \
               [{k: v for k, v in x.items() if k not in TIMING} for x in r]
    assert any(r["replaced_fraction"] > 0 for r in straight[0])  # the samples did replace tokens


def test_init_from_a_bert_directory_whose_width_the_ratio_does_not_fit_is_one_line_exit_2(prepared, tmp_path):
    from bertkit.config import preset
    from bertkit.model import BertForPreTraining
    from bertkit.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(prepared / "tok")
    bert = tmp_path / "bert"
    BertForPreTraining(preset("tiny", hidden_size=126, num_attention_heads=2, intermediate_size=256,
                              vocab_size=tokenizer.vocab_size, max_position_embeddings=64)).save_pretrained(bert)
    args = [a for a in pretrain_args(prepared, tmp_path / "run", *ELECTRA, "--init", bert)]
    i = args.index("--model-config")
    del args[i:i + 2]
    proc = run_cli(*args, check=False)
    assert_one_line_error(proc, str(bert), "generator_ratio 1/4 does not fit hidden_size 126", "31.5")
    assert not (tmp_path / "run").exists()

    # a BERT directory that fits: the run starts from its encoder
    good = tmp_path / "good"
    BertForPreTraining(preset("tiny", vocab_size=tokenizer.vocab_size, max_position_embeddings=64)).save_pretrained(good)
    args[args.index(bert)] = good
    run_cli(*args, "--steps", 2)
    assert (tmp_path / "run" / "model" / electra.GENERATOR_DIR / "config.json").exists()


def test_help_and_readme_name_electra():
    text = " ".join(run_cli("pretrain", "--help").stdout.split())
    assert "electra:" in text and "replaced-token detection" in text
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    assert "--objective electra" in readme
