"""Multi-label classification and config.problem_type: the sequence classifier's loss against transformers
for every problem type (given, or inferred from the labels as transformers infers it), the multi-label
metrics against scikit-learn, the label-set reader, and `finetune --task classify --label-separator` with
evaluate and predict through the CLI, and its bad input."""

import json

import numpy as np
import pytest
import sklearn.metrics
import sklearn.preprocessing
import torch

from bertkit.data.features import collate, encode_sentence_tasks
from bertkit.data.tasks import Example, check_labels, make_label_list, read_table, task_spec
from bertkit.errors import BertkitError
from bertkit.eval.metrics import multi_label_metrics
from conftest import assert_one_line_error, run_cli

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
TOL = dict(atol=1e-5, rtol=1e-5)


def batch():
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 99, (4, 10), generator=g)
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[1, 7:], mask[3, 4:] = 0, 0
    return dict(input_ids=input_ids * mask, token_type_ids=torch.zeros_like(input_ids), attention_mask=mask)


MULTI_HOT = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
CLASSES = torch.tensor([2, 0, 1, 2])
# (problem_type in config.json, num_labels, labels); None: transformers infers the problem type
CASES = {
    "multi-label": ("multi_label_classification", 3, MULTI_HOT),
    "single-label": ("single_label_classification", 3, CLASSES),
    "regression": ("regression", 1, torch.tensor([0.5, -1.0, 2.0, 3.5])),
    "regression-several-outputs": ("regression", 3, MULTI_HOT * 2 - 0.5),
    "inferred-regression": (None, 1, torch.tensor([0.5, -1.0, 2.0, 3.5])),
    "inferred-single-label": (None, 3, CLASSES),
    "inferred-multi-label": (None, 3, MULTI_HOT),
}


@pytest.mark.parametrize("case", CASES)
def test_sequence_loss_by_problem_type_matches_transformers(tmp_path, case):
    import bertkit.model as bk

    problem_type, num_labels, labels = CASES[case]
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(
        transformers.BertConfig(**TINY, num_labels=num_labels, problem_type=problem_type)).eval()
    with torch.no_grad():  # a bias far from zero, so that a loss reading the wrong logits cannot pass
        hf.classifier.bias.add_(torch.randn(num_labels))
    hf.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved.get("problem_type") == problem_type
    ours = bk.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert ours.config.problem_type == problem_type
    with torch.no_grad():
        theirs_out = hf(**batch(), labels=labels)  # (infers, and then sets, hf.config.problem_type)
        our_out = ours(**batch(), labels=labels)
    torch.testing.assert_close(our_out.logits, theirs_out.logits, **TOL)
    torch.testing.assert_close(our_out.loss, theirs_out.loss, **TOL)
    assert bk.problem_type(ours.config, labels) == hf.config.problem_type
    assert ours.config.problem_type == problem_type  # ours infers per call and leaves the config alone


def test_problem_type_inferred_as_transformers_infers():
    """transformers' rule (its forward, when config.problem_type is None): int64 and int32 labels are
    classes, any other dtype over several outputs multi-label; one output is always regression."""
    from bertkit.config import BertConfig
    from bertkit.model import problem_type

    three, one = BertConfig(**TINY, id2label={0: "a", 1: "b", 2: "c"}), BertConfig(**TINY, id2label={0: "score"})
    assert problem_type(three, CLASSES) == problem_type(three, CLASSES.int()) == "single_label_classification"
    assert problem_type(three, MULTI_HOT) == problem_type(three, CLASSES.short()) == "multi_label_classification"
    assert problem_type(one, CLASSES) == problem_type(one, MULTI_HOT[:, 0]) == "regression"
    three.problem_type = "regression"
    assert problem_type(three, CLASSES) == "regression"


def test_multi_label_loss_is_binary_cross_entropy_per_label():
    """Hand-computed: mean over examples and labels of -[y log s(x) + (1 - y) log(1 - s(x))]."""
    from bertkit.model import SEQUENCE_LOSSES

    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    s = torch.sigmoid(logits)
    expected = -(labels * s.log() + (1 - labels) * (1 - s).log()).mean()
    torch.testing.assert_close(SEQUENCE_LOSSES["multi_label_classification"](logits, labels), expected)


def test_our_multi_label_checkpoint_gives_transformers_the_same_loss(tmp_path):
    import bertkit.model as bk
    from bertkit.config import BertConfig

    config = BertConfig(**TINY, id2label={0: "arts", 1: "politics", 2: "sports"},
                        problem_type="multi_label_classification")
    ours = bk.BertForSequenceClassification(config).eval()
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["problem_type"] == "multi_label_classification" and saved["id2label"]["2"] == "sports"
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert hf.config.problem_type == "multi_label_classification"
    with torch.no_grad():
        a, b = ours(**batch(), labels=MULTI_HOT), hf(**batch(), labels=MULTI_HOT)
    torch.testing.assert_close(a.logits, b.logits, **TOL)
    torch.testing.assert_close(a.loss, b.loss, **TOL)


def test_problem_type_is_validated(tmp_path):
    from bertkit.config import BertConfig

    with pytest.raises(BertkitError, match="problem_type 'multi_label' is not supported"):
        BertConfig(problem_type="multi_label")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, "problem_type": "ranking"}))
    with pytest.raises(BertkitError) as error:
        BertConfig.load(str(path))
    assert error.value.message.startswith(f"{path}: problem_type 'ranking'")
    assert "multi_label_classification" in error.value.hint


# ----------------------------------------------------------------------------------------------
# Metrics, reader, features


def test_multi_label_metrics_match_sklearn():
    labels = ["a", "b", "c", "d"]
    rng = np.random.default_rng(0)
    cases = [([["a", "b"], ["c"], []], [["a"], ["c", "b"], []]),
             ([["a"], ["b"]], [["a"], ["b"]]),  # all right; c and d never occur: F1 0 for each, as sklearn
             ([[], []], [[], []])]
    for _ in range(5):
        draw = lambda: [[x for x in labels if rng.random() < 0.4] for _ in range(40)]  # noqa: E731
        cases.append((draw(), draw()))
    binarizer = sklearn.preprocessing.MultiLabelBinarizer(classes=labels).fit([labels])
    for true_sets, pred_sets in cases:
        y_true, y_pred = binarizer.transform(true_sets), binarizer.transform(pred_sets)
        result = multi_label_metrics(true_sets, pred_sets, labels)
        assert result["micro_f1"] == pytest.approx(
            sklearn.metrics.f1_score(y_true, y_pred, average="micro", zero_division=0), abs=1e-12)
        assert result["macro_f1"] == pytest.approx(
            sklearn.metrics.f1_score(y_true, y_pred, average="macro", zero_division=0), abs=1e-12)
        assert result["subset_accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(y_true, y_pred), abs=1e-12)
    # by hand: tp a, c; fn b (example 1); fp b (example 2) -> micro F1 = 4 / (4 + 1 + 1)
    assert multi_label_metrics([["a", "b"], ["c"]], [["a"], ["c", "b"]], ["a", "b", "c"]) == {
        "micro_f1": pytest.approx(2 / 3), "macro_f1": pytest.approx(2 / 3), "subset_accuracy": 0.0}


def test_label_sets_from_csv_tsv_and_jsonl(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text('text,label\n"goal, then a vote",sports|politics\nquiet day,\nmatch,sports | sports\n')
    examples = read_table(str(csv), label_separator="|")
    assert [e.label for e in examples] == [["sports", "politics"], [], ["sports"]]
    assert make_label_list("classify", examples) == ["politics", "sports"]
    tsv = tmp_path / "train.tsv"
    tsv.write_text("text\ttags\nx\ta;b\n")
    assert read_table(str(tsv), label_column="tags", label_separator=";")[0].label == ["a", "b"]
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text('{"text": "x", "label": ["sports", "arts"]}\n{"text": "y", "label": "arts|politics"}\n'
                     '{"text": "z", "label": []}\n')
    dev = read_table(str(jsonl), label_separator="|")
    assert [e.label for e in dev] == [["sports", "arts"], ["arts", "politics"], []]
    with pytest.raises(BertkitError) as error:  # the line of the unknown label, not line + its index in the set
        check_labels(dev, ["politics", "sports"], str(jsonl))
    assert error.value.message == f"{jsonl}: line 1: label 'arts' does not occur in the training data"
    with pytest.raises(BertkitError, match=r"dev\.jsonl: line 1: label .* is a list") as error:
        read_table(str(jsonl))  # without the separator a list is not one class name
    assert "--label-separator" in error.value.hint
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": [["a"]]}\n')
    with pytest.raises(BertkitError, match=r"bad\.jsonl: line 1: .* not a list of class names"):
        read_table(str(bad), label_separator="|")


def test_label_separator_switches_classify_to_multi_label():
    assert task_spec("classify").kind == "classification"
    spec = task_spec("classify", "|")
    assert (spec.kind, spec.metric, spec.metrics) == ("multi_label", "micro_f1",
                                                      ("micro_f1", "macro_f1", "subset_accuracy"))
    with pytest.raises(BertkitError, match="--label-separator is for --task classify, not sst2"):
        task_spec("sst2", "|")
    with pytest.raises(BertkitError, match="--label-separator is empty"):
        task_spec("classify", "")


def test_multi_hot_features_collate_to_floats():
    from bertkit.tokenizer import Tokenizer
    from conftest import minilm_path

    tokenizer = Tokenizer.from_pretrained(minilm_path())
    examples = [Example("goal", label=["sports"]), Example("vote on the goal", label=["politics", "sports"]),
                Example("rain", label=[])]
    features, _ = encode_sentence_tasks(examples, tokenizer, 16, ["arts", "politics", "sports"])
    assert [f["label"] for f in features] == [[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    labels = collate(features, tokenizer.pad_token_id)["labels"]
    assert labels.dtype == torch.float and labels.shape == (3, 3)


# ----------------------------------------------------------------------------------------------
# The CLI: finetune, evaluate, predict

TOPICS = {"sports": "goal match team", "politics": "vote election minister", "arts": "painting museum poem"}


def topic_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        chosen = [t for t in TOPICS if rng.random() < 0.5] or ["sports"]
        words = [w for t in chosen for w in rng.choice(TOPICS[t].split(), 2)]
        rows.append((" ".join(rng.permutation(words)), "|".join(chosen)))
    return rows


@pytest.fixture(scope="module")
def multilabel_run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    for name, n, seed in (("train", 48, 0), ("dev", 16, 1)):
        (root / f"{name}.csv").write_text("text,topics\n" + "".join(f"{t},{y}\n" for t, y in topic_rows(n, seed)))
    run_cli("finetune", "--task", "classify", "--train", root / "train.csv", "--dev", root / "dev.csv",
            "--label-column", "topics", "--label-separator", "|", "--model", tiny_model, "--out", root / "out",
            "--epochs", 2, "--batch-size", 8, "--lr", 1e-3, "--threshold", 0.4, "--quiet")
    return root


def test_finetune_evaluate_predict_multi_label(multilabel_run, tmp_path):
    root, out = multilabel_run, multilabel_run / "out" / "seed-1"  # every seed in OUT/seed-N
    result = json.loads((out / "eval_results.json").read_text())
    assert {"micro_f1", "macro_f1", "subset_accuracy"} <= result.keys()
    assert all(0.0 <= result[k] <= 1.0 for k in ("micro_f1", "macro_f1", "subset_accuracy"))
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "arts", "1": "politics", "2": "sports"}
    settings = json.loads((out / "bertkit_task.json").read_text())
    assert (settings["problem_type"], settings["label_separator"], settings["threshold"]) == (
        "multi_label_classification", "|", 0.4)
    # evaluate: the separator and threshold come from bertkit_task.json
    evaluated = json.loads(run_cli("evaluate", "--task", "classify", "--dev", root / "dev.csv", "--label-column",
                                   "topics", "--model", out, "--output", tmp_path / "eval.json").stdout)
    assert evaluated["micro_f1"] == pytest.approx(result["micro_f1"])
    assert evaluated["subset_accuracy"] == pytest.approx(result["subset_accuracy"])

    # predict with --task: one JSON line per input, its prediction the list of labels above the threshold
    (tmp_path / "test.csv").write_text("text\ngoal vote\nmuseum poem\n")
    run_cli("predict", "--task", "classify", "--model", out, "--input", tmp_path / "test.csv",
            "--output", tmp_path / "pred.jsonl")
    task_predictions = [json.loads(line)["prediction"] for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(task_predictions) == 2 and all(isinstance(p, list) for p in task_predictions)

    # the pipeline: every label whose own sigmoid probability is above the threshold, most probable first
    from bertkit.model import BertForSequenceClassification
    from bertkit.pipelines import Pipeline
    from bertkit.tokenizer import Tokenizer

    texts = ["goal vote", "museum poem"]
    pipe = Pipeline.from_pretrained(str(out), device="cpu", precision="fp32")
    model = BertForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(**Tokenizer.from_pretrained(out)(texts)).logits)  # (2, 3)
    names = ["arts", "politics", "sports"]
    middle = probs.flatten().sort().values[2:4].mean().item()  # between the 3rd and 4th of 6: some in, some out
    for threshold in (0.4, 0.5, middle):
        results = pipe.classify(texts, threshold=threshold if threshold != 0.4 else None)  # None: the saved 0.4
        for result, row in zip(results, probs):
            expected = [names[i] for i in row.argsort(descending=True).tolist() if row[i] > threshold]
            assert result["labels"] == expected
            assert result["probabilities"] == pytest.approx(dict(zip(names, row.tolist())), abs=1e-5)
    assert [sorted(p) for p in task_predictions] == [sorted(r["labels"]) for r in pipe.classify(texts)]
    # predict without --task: the pipeline, JSON Lines out
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    run_cli("predict", "--model", out, "--input", tmp_path / "texts.txt", "--output", tmp_path / "p.jsonl",
            "--threshold", 0.05)
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["labels"] for r in rows] == [r["labels"] for r in pipe.classify(texts, threshold=0.05)]

    # transformers loads the directory as multi-label and computes the same loss
    hf = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    inputs = Tokenizer.from_pretrained(out)(texts)
    labels = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    with torch.no_grad():
        a, b = model(**inputs, labels=labels), hf(**inputs, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, **TOL)
    torch.testing.assert_close(a.loss, b.loss, **TOL)


def test_multi_label_bad_input(multilabel_run, tiny_model, tmp_path):
    root, out = multilabel_run, multilabel_run / "out" / "seed-1"  # every seed in OUT/seed-N
    train = root / "train.csv"
    unseen = tmp_path / "dev.csv"
    unseen.write_text("text,topics\ngoal,sports\nrecipe,sports|cooking\n")
    common = ["--train", train, "--label-column", "topics", "--model", tiny_model, "--quiet"]
    assert_one_line_error(run_cli("finetune", "--task", "classify", "--dev", unseen, "--label-separator", "|",
                                  "--out", tmp_path / "o1", *common, check=False),
                          f"{unseen}: line 3: label 'cooking' does not occur in the training data")
    assert_one_line_error(run_cli("evaluate", "--task", "classify", "--dev", unseen, "--label-column", "topics",
                                  "--model", out, "--output", tmp_path / "e.json", check=False),
                          f"{unseen}: line 3: label 'cooking' does not occur in the model's labels")
    assert_one_line_error(run_cli("finetune", "--task", "regress", "--dev", root / "dev.csv", "--label-separator",
                                  "|", "--out", tmp_path / "o2", *common, check=False),
                          "--label-separator is for --task classify, not regress")
    assert_one_line_error(run_cli("finetune", "--task", "classify", "--dev", root / "dev.csv", "--label-separator",
                                  "", "--out", tmp_path / "o3", *common, check=False), "--label-separator is empty")
    for threshold in ("0", "1", "1.5", "-0.2", "nan"):
        assert_one_line_error(run_cli("finetune", "--task", "classify", "--dev", root / "dev.csv",
                                      "--label-separator", "|", "--threshold", threshold, "--out", tmp_path / "o4",
                                      *common, check=False), f"--threshold {float(threshold)}", "between 0 and 1")
    assert_one_line_error(run_cli("evaluate", "--task", "classify", "--dev", root / "dev.csv", "--label-column",
                                  "topics", "--model", out, "--threshold", "1", "--output", tmp_path / "e.json",
                                  check=False), "--threshold 1.0")
    (tmp_path / "texts.txt").write_text("goal\n")
    assert_one_line_error(run_cli("predict", "--model", out, "--input", tmp_path / "texts.txt", "--output",
                                  tmp_path / "p.jsonl", "--threshold", "2", check=False), "threshold 2.0")
    # a multi-label model's labels cannot be read without the separator
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        if (out / name).exists():
            (bare / name).write_bytes((out / name).read_bytes())
    assert_one_line_error(run_cli("evaluate", "--task", "classify", "--dev", root / "dev.csv", "--label-column",
                                  "topics", "--model", bare, "--output", tmp_path / "e.json", check=False),
                          "multi-label classifier", "--label-separator")
    for name in ("o1", "o2", "o3", "o4", "e.json", "p.jsonl"):
        assert not (tmp_path / name).exists()
