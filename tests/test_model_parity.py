"""bertkit against transformers on random weights, in both directions: HF saves, we load; we save, HF loads."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import bertkit.model as bk  # noqa: E402
from bertkit.config import BertConfig  # noqa: E402

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1)
CLASSES = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
           "BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice"]
TOL = dict(atol=1e-5, rtol=1e-5)


def padded_batch(choices: int | None = None):
    """Three sequences of lengths 12, 9, 5, two segments each, right-padded to 12."""
    g = torch.Generator().manual_seed(1)
    lengths, T = [12, 9, 5], 12
    input_ids = torch.randint(5, 99, (3, T), generator=g)
    segments = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        segments[b, n // 2:n] = 1
        input_ids[b, n:] = 0
    if choices:
        rep = lambda t: t[:, None].expand(3, choices, T).clone()  # noqa: E731
        input_ids, segments, mask = rep(input_ids), rep(segments), rep(mask)
        input_ids[:, 1, 1] = 7  # the choices differ
    return dict(input_ids=input_ids, token_type_ids=segments, attention_mask=mask)


# bertkit's output field -> transformers' field of the same tensor
HF_NAMES = {"last_hidden_state": "last_hidden_state", "pooler_output": "pooler_output",
            "mlm_logits": "prediction_logits", "nsp_logits": "seq_relationship_logits", "logits": "logits",
            "start_logits": "start_logits", "end_logits": "end_logits"}


def outputs(model, batch) -> dict[str, torch.Tensor]:
    """The tensors a model returns, under bertkit's names."""
    with torch.no_grad():
        out = model(**batch)
    if isinstance(model, transformers.PreTrainedModel):
        names = dict(HF_NAMES, mlm_logits="logits") if isinstance(model, transformers.BertForMaskedLM) else HF_NAMES
        if isinstance(model, transformers.BertForMaskedLM):
            names.pop("logits")
        found = {ours: getattr(out, theirs, None) for ours, theirs in names.items()}
    else:
        found = {ours: getattr(out, ours, None) for ours in HF_NAMES}
    return {k: v for k, v in found.items() if isinstance(v, torch.Tensor)}


def hf_config(name):
    cfg = transformers.BertConfig(**TINY, num_labels=3 if name != "BertForQuestionAnswering" else 2)
    return cfg


def assert_same(a: dict, b: dict, mask: torch.Tensor):
    assert a.keys() == b.keys() and a, (a.keys(), b.keys())
    for key in a:
        x, y = a[key], b[key]
        assert x.shape == y.shape, key
        if x.dim() >= 2 and x.shape[:2] == mask.shape[:2] and mask.dim() == 2 and key != "logits" or key in (
                "start_logits", "end_logits"):
            keep = mask.bool()  # padded positions are not part of either model's contract
            x, y = x[keep], y[keep]
        torch.testing.assert_close(x, y, **TOL, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("name", CLASSES)
def test_hf_checkpoint_loads_with_identical_outputs(tmp_path, name):
    torch.manual_seed(0)
    hf = getattr(transformers, name)(hf_config(name)).eval()
    hf.save_pretrained(tmp_path)
    ours = getattr(bk, name).from_pretrained(tmp_path).eval()
    assert ours.load_report.missing == [], ours.load_report
    assert ours.load_report.unused == [], ours.load_report
    batch = padded_batch(choices=2 if name == "BertForMultipleChoice" else None)
    mask = batch["attention_mask"] if name != "BertForMultipleChoice" else batch["attention_mask"][:, 0]
    assert_same(outputs(ours, batch), outputs(hf, batch), mask)


@pytest.mark.parametrize("name", CLASSES)
def test_our_checkpoint_loads_in_transformers(tmp_path, name):
    torch.manual_seed(0)
    ours = getattr(bk, name)(BertConfig.from_dict(hf_config(name).to_dict())).eval()
    with torch.no_grad():  # random biases and norms, so that a swapped tensor cannot go unnoticed
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours.save_pretrained(tmp_path)
    hf, info = getattr(transformers, name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    batch = padded_batch(choices=2 if name == "BertForMultipleChoice" else None)
    mask = batch["attention_mask"] if name != "BertForMultipleChoice" else batch["attention_mask"][:, 0]
    assert_same(outputs(ours, batch), outputs(hf.eval(), batch), mask)


def test_pretraining_checkpoint_into_classifier_reports_keys(tmp_path):
    hf = transformers.BertForPreTraining(hf_config("BertForPreTraining"))
    hf.save_pretrained(tmp_path)
    model = bk.BertForSequenceClassification.from_pretrained(tmp_path, id2label={0: "a", 1: "b", 2: "c"})
    assert model.load_report.missing == ["classifier.weight", "classifier.bias"]
    assert "cls.seq_relationship.weight" in model.load_report.unused
    torch.testing.assert_close(model.bert.embeddings.word.weight, hf.bert.embeddings.word_embeddings.weight)


def test_bare_encoder_checkpoint_under_a_head(tmp_path):
    hf = transformers.BertModel(hf_config("BertModel"))
    hf.save_pretrained(tmp_path)
    model = bk.BertForTokenClassification.from_pretrained(tmp_path)
    assert model.load_report.missing == ["classifier.weight", "classifier.bias"]
    assert model.load_report.unused == ["pooler.dense.bias", "pooler.dense.weight"] or model.load_report.unused == [
        "bert.pooler.dense.bias", "bert.pooler.dense.weight"]
    torch.testing.assert_close(model.bert.layers[1].ffn.up.weight, hf.encoder.layer[1].intermediate.dense.weight)


def test_tf_style_layernorm_names_load(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = transformers.BertModel(hf_config("BertModel"))
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in state.items()}
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = bk.BertModel.from_pretrained(tmp_path)
    assert model.load_report.missing == [] and model.load_report.unused == []


def test_attention_reference_path_equals_sdpa():
    model = bk.BertModel(BertConfig(**TINY)).eval()
    batch = padded_batch()
    with torch.no_grad():
        fast = model(**batch)
        ref = model(**batch, output_attentions=True, output_hidden_states=True)
    keep = batch["attention_mask"].bool()
    torch.testing.assert_close(fast.last_hidden_state[keep], ref.last_hidden_state[keep], **TOL)
    assert len(ref.attentions) == 2 and ref.attentions[0].shape == (3, 4, 12, 12)
    # padding keys get no attention, and each row is a distribution
    assert ref.attentions[0][2, :, :, 5:].abs().max() == 0
    torch.testing.assert_close(ref.attentions[1].sum(-1), torch.ones(3, 4, 12))
    assert len(ref.hidden_states) == 3
    torch.testing.assert_close(ref.hidden_states[-1], ref.last_hidden_state)


def test_kernel_choice_on_cpu():
    q = torch.zeros(2, 4, 8, 16, dtype=torch.bfloat16)
    assert bk.explicit_is_faster(q, torch.zeros(2, 4, 256, 16, dtype=torch.bfloat16))
    assert not bk.explicit_is_faster(q, torch.zeros(2, 4, 257, 16, dtype=torch.bfloat16))
    assert not bk.explicit_is_faster(q.float(), torch.zeros(2, 4, 8, 16))


@pytest.mark.parametrize("seq2seq", [False, True])
def test_bf16_explicit_kernel_equals_fused(monkeypatch, seq2seq):
    """Under bf16 autocast on a CPU the encoder takes the explicit softmax for short inputs: its outputs and
    gradients match the fused kernel's (forced by lowering the key limit to 0) to bf16's precision."""
    # weights of std 0.2, so that the outputs depend on where each position attends (at 0.02 they barely do)
    model = bk.BertForMaskedLM(BertConfig(**{**TINY, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                                             "initializer_range": 0.2}))
    batch = padded_batch()
    if seq2seq:
        batch["attention_mask"] = bk.seq2seq_mask(batch["token_type_ids"], batch["attention_mask"])
    keep = padded_batch()["attention_mask"].bool()

    def run():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(**batch).mlm_logits
        logits.float()[keep].logsumexp(-1).sum().backward()
        return logits.float()[keep], model.bert.layers[0].attention.qkv.weight.grad.clone()

    explicit = run()
    monkeypatch.setattr(bk, "EXPLICIT_MAX_KEYS", 0)
    fused = run()
    for ours, theirs in zip(explicit, fused):  # within 5% of the largest value (bf16 keeps 8 bits)
        assert (ours - theirs).abs().max() < 0.05 * theirs.abs().max(), (ours - theirs).abs().max()
