"""Seeing a BERT: attention maps (PNG and HTML), training curves, TensorBoard scalars."""

import json

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, minilm_path, run_cli


def png_description(path) -> dict:
    from PIL import Image

    with Image.open(path) as image:
        image.verify()  # a valid PNG
    with Image.open(path) as image:
        return json.loads(image.text["Description"])


def test_attention_probabilities_match_transformers():
    transformers = pytest.importorskip("transformers")
    from bertkit.attention import attention_maps
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer

    tokens, probs = attention_maps(BertModel.from_pretrained(minilm_path()), Tokenizer.from_pretrained(minilm_path()),
                                   "The cat sat on the mat.", pair="It slept.", precision="fp32")
    assert probs.shape == (6, 12, len(tokens), len(tokens))
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    hf = transformers.BertModel.from_pretrained(minilm_path(), attn_implementation="eager").eval()
    batch = tok("The cat sat on the mat.", "It slept.", return_tensors="pt")
    assert tokens == tok.convert_ids_to_tokens(batch["input_ids"][0])
    with torch.no_grad():
        expected = torch.stack(hf(**batch, output_attentions=True).attentions)[:, 0].numpy()
    assert np.abs(probs - expected).max() < 1e-5


def test_attention_png_has_a_panel_per_layer_and_head(tmp_path):
    out = tmp_path / "attention.png"
    proc = run_cli("attention", "--model", minilm_path(), "A short sentence.", "--out", out, "--layer", "2",
                   "--head", "5")
    assert "6 layers x 12 heads" in proc.stderr
    drawn = png_description(out)
    assert drawn["panels"] == 6 * 12 and drawn["enlarged"] == [2, 5] and drawn["tokens"] == 6  # [CLS] a short sentence . [SEP]


def test_attention_html_holds_every_layer_and_head(tmp_path):
    out = tmp_path / "attention.html"
    run_cli("attention", "--model", minilm_path(), "Where is </script> the cat?", "--pair", "In the hat.",
            "--out", out, "--precision", "fp32")
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count("</script>") == 1  # the text cannot close the page's script early
    payload = html.split("const data = ", 1)[1].split(";\nconst layerSel", 1)[0]
    data = json.loads(payload.replace("<\\/", "</"))
    assert (data["layers"], data["heads"]) == (6, 12)
    attentions = np.array(data["attentions"])
    assert attentions.shape == (6, 12, len(data["tokens"]), len(data["tokens"]))
    assert np.allclose(attentions.sum(-1), 1.0, atol=1e-3)


@pytest.mark.parametrize("flags, fragments", [
    (["--out", "x.jpg"], ["must end in .png or .html"]),
    (["--out", "x.png", "--layer", "6"], ["--layer 6: the model has 6 layers"]),
    (["--out", "x.png", "--head", "12"], ["--head 12: the model has 12 heads"]),
])
def test_attention_bad_flags(tmp_path, flags, fragments):
    proc = run_cli("attention", "--model", minilm_path(), "text", *[str(tmp_path / f) if f.startswith("x.") else f
                                                                    for f in flags], check=False)
    assert_one_line_error(proc, *fragments)
    assert not list(tmp_path.iterdir())


def write_metrics(run, rows):
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_plot_overlays_runs_with_a_panel_per_metric(tmp_path):
    pretrain = [{"step": s, "loss": 10 - s, "mlm_accuracy": s / 10, "nsp_accuracy": 0.5, "lr": 1e-4,
                 "tokens_per_s": 1000.0} for s in range(1, 6)]
    pretrain.append({"step": 5, "split": "validation", "loss": 6.0, "mlm_accuracy": 0.4, "nsp_accuracy": 0.6})
    write_metrics(tmp_path / "a", pretrain)
    write_metrics(tmp_path / "b", pretrain[:3])
    out = tmp_path / "curves.png"
    run_cli("plot", tmp_path / "a", tmp_path / "b", "--out", out)
    drawn = png_description(out)
    assert drawn["panels"] == ["loss", "MLM accuracy", "NSP accuracy", "learning rate", "tokens / s"]
    assert drawn["runs"] == 2 and drawn["labels"] == ["a", "b"]

    finetune = [{"step": 50, "epoch": 1, "loss": 0.6, "lr": 2e-5, "samples_per_s": 80.0},
                {"step": 60, "epoch": 1, "split": "dev", "accuracy": 0.8, "f1": 0.75}]
    write_metrics(tmp_path / "ft", finetune)
    run_cli("plot", tmp_path / "ft")
    drawn = png_description(tmp_path / "ft" / "curves.png")
    assert drawn["panels"] == ["loss", "learning rate", "samples / s", "dev accuracy", "dev f1"]


def test_plot_names_runs_apart_and_keeps_a_flat_loss_flat(tmp_path):
    """Two runs called run are labelled by the path parts that differ; a loss flat at 0.693 (the loss axis once
    spanned 0.6927-0.6934 and made it look like a fall) is drawn on an axis from 0."""
    flat = [{"step": s, "loss": 0.6931 + (0.0003 if s % 2 else -0.0003), "lr": 2e-5} for s in range(1, 20)]
    for parent in ("rte-a", "rte-b"):
        (tmp_path / parent).mkdir()
        write_metrics(tmp_path / parent / "run", flat)
    run_cli("plot", tmp_path / "rte-a" / "run", tmp_path / "rte-b" / "run", "--out", tmp_path / "c.png")
    drawn = png_description(tmp_path / "c.png")
    assert drawn["labels"] == ["rte-a/run", "rte-b/run"]
    bottom, top = drawn["ylim"]["loss"]
    assert bottom == 0 and 0.69 < top < 0.8


def test_plot_bad_input(tmp_path):
    assert_one_line_error(run_cli("plot", tmp_path / "nothing", check=False), "no metrics file")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1}\n{broken\n')
    assert_one_line_error(run_cli("plot", tmp_path / "run", check=False), "line 2 is not JSON")


def test_tensorboard_scalars_match_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from bertkit.train.metrics_log import MetricsLog

    log = MetricsLog(str(tmp_path), tensorboard=True)
    rows = [{"step": 10, "loss": 2.5, "lr": 1e-4}, {"step": 20, "loss": 2.0, "lr": 5e-5},
            {"step": 20, "split": "dev", "accuracy": 0.75}]
    for row in rows:
        log.write(row)
    log.close()
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == rows
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["dev/accuracy", "train/loss", "train/lr"]
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("train/loss")] == [(10, 2.5), (20, 2.0)]
    assert [(e.step, e.value) for e in events.Scalars("dev/accuracy")] == [(20, 0.75)]


def test_plot_against_wall_clock_minutes_with_labels(tmp_path):
    fast = [{"step": s, "loss": 8.0 - s, "mlm_accuracy": 0.1 * s, "time_s": 30.0 * s} for s in range(1, 5)]
    fast.append({"step": 4, "split": "validation", "mlm_accuracy": 0.35, "time_s": 120.0})
    write_metrics(tmp_path / "fast", fast)
    write_metrics(tmp_path / "slow", [{"step": 1, "loss": 7.0, "mlm_accuracy": 0.05, "time_s": 600.0}])
    out = tmp_path / "minutes.png"
    run_cli("plot", tmp_path / "fast", tmp_path / "slow", "--x", "minutes", "--labels", "new recipe", "old",
            "--out", out)
    drawn = png_description(out)
    assert drawn["x"] == "minutes" and drawn["labels"] == ["new recipe", "old"]
    write_metrics(tmp_path / "old-run", [{"step": 1, "loss": 7.0}])  # before time_s was logged
    proc = run_cli("plot", tmp_path / "old-run", "--x", "minutes", "--out", tmp_path / "x.png", check=False)
    assert_one_line_error(proc, "time_s", "--x step")
    proc = run_cli("plot", tmp_path / "fast", "--labels", "a", "b", "--out", tmp_path / "y.png", check=False)
    assert_one_line_error(proc, "2 labels for 1 runs")
