"""config.problem_type: the sequence classifier's loss against transformers for every problem type (given,
or inferred from the labels as transformers infers it)."""

import json

import pytest
import torch

from bertkit.errors import BertkitError

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
