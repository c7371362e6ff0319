"""ELECTRA against transformers: the discriminator and generator in both directions, the loss against transformers'
own ElectraForMaskedLM and ElectraForPreTraining losses on the corrupted batch, and the fine-tuning load path."""

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from bertkit import electra  # noqa: E402
from bertkit.checkpoint import load_model  # noqa: E402
from bertkit.config import BertConfig, ElectraConfig  # noqa: E402
from bertkit.errors import BertkitError  # noqa: E402
from bertkit.model import IGNORE_INDEX, BertForPreTraining, BertForSequenceClassification  # noqa: E402

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu")
TOL = dict(atol=1e-5, rtol=1e-5)
WIDTHS = [32, 16]  # embedding_size == hidden_size (no projection), and narrower (embeddings_project)


def padded_batch():
    """Three sequences of lengths 12, 9, 5, two segments each, right-padded to 12."""
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 99, (3, 12), generator=g)
    segments = torch.zeros(3, 12, dtype=torch.long)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for b, n in enumerate([12, 9, 5]):
        mask[b, :n] = 1
        segments[b, n // 2:n] = 1
        input_ids[b, n:] = 0
    return dict(input_ids=input_ids, token_type_ids=segments, attention_mask=mask)


def hf_config(embedding_size, **overrides):
    return transformers.ElectraConfig(**{**TINY, "embedding_size": embedding_size, **overrides})


def perturbed(model):
    """Random biases and norms, so that a swapped tensor cannot go unnoticed."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def logits(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return out.logits if isinstance(model, transformers.PreTrainedModel) else out


def assert_same_on_tokens(ours, theirs, mask):
    keep = mask.bool()  # padded positions are not part of either model's contract
    torch.testing.assert_close(ours[keep], theirs[keep], **TOL)


# ----------------------------------------------------------------------------------------------
# Parity with transformers, both directions


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("ours_cls, hf_name", [(electra.ElectraForPreTraining, "ElectraForPreTraining"),
                                               (electra.ElectraForMaskedLM, "ElectraForMaskedLM")])
def test_hf_checkpoint_loads_with_identical_logits(tmp_path, width, ours_cls, hf_name):
    hf = perturbed(getattr(transformers, hf_name)(hf_config(width))).eval()
    hf.save_pretrained(tmp_path)
    assert os.path.isfile(tmp_path / "model.safetensors") and not os.path.exists(tmp_path / "pytorch_model.bin")
    ours = ours_cls.from_pretrained(tmp_path).eval()
    assert ours.load_report.missing == [] and ours.load_report.unused == [], ours.load_report
    assert (ours.bert.embeddings_project is None) == (width == TINY["hidden_size"])
    batch = padded_batch()
    assert_same_on_tokens(logits(ours, batch), logits(hf, batch), batch["attention_mask"])


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("ours_cls, hf_name", [(electra.ElectraForPreTraining, "ElectraForPreTraining"),
                                               (electra.ElectraForMaskedLM, "ElectraForMaskedLM")])
def test_our_checkpoint_loads_in_transformers(tmp_path, width, ours_cls, hf_name):
    ours = perturbed(ours_cls(ElectraConfig(**TINY, embedding_size=width))).eval()
    ours.save_pretrained(tmp_path)
    hf, info = getattr(transformers, hf_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert hf.config.model_type == "electra" and hf.config.architectures == [hf_name]
    assert hf.config.embedding_size == width
    batch = padded_batch()
    assert_same_on_tokens(logits(ours, batch), logits(hf.eval(), batch), batch["attention_mask"])


def test_pretrainer_saves_both_models_and_loads_back(tmp_path):
    pretrainer = electra.build_pretrainer(BertConfig(**TINY), generator_ratio="1/2", embedding_size=16)
    perturbed(pretrainer).eval()
    pretrainer.save_pretrained(tmp_path)
    assert type(load_model(str(tmp_path))) is electra.ElectraForPreTraining  # architectures names the class
    generator = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / electra.GENERATOR_DIR).eval()
    assert generator.config.hidden_size == 16 and generator.config.embedding_size == 16
    batch = padded_batch()
    assert_same_on_tokens(logits(pretrainer.generator, batch), logits(generator, batch), batch["attention_mask"])

    again = electra.ElectraPretrainer.from_pretrained(tmp_path).eval()
    assert again.generator.bert.embeddings is again.discriminator.bert.embeddings
    assert again.generator.mlm.word_embeddings[0] is again.discriminator.bert.embeddings.word
    labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    labels[:, 2] = batch["input_ids"][:, 2]
    a = pretrainer(**batch, labels=labels, rng=torch.Generator().manual_seed(3))
    b = again(**batch, labels=labels, rng=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a[0], b[0], **TOL)


# ----------------------------------------------------------------------------------------------
# The loss


FORCED = 7  # the token the generator is forced to sample


def forced_setup(tmp_path):
    """A pretrainer in eval mode whose generator samples FORCED at every masked position (a huge output bias);
    a batch whose masked positions hold FORCED as the original at some places and other tokens elsewhere."""
    pretrainer = electra.build_pretrainer(BertConfig(**TINY), generator_ratio="1/2", embedding_size=16).eval()
    with torch.no_grad():
        pretrainer.generator.mlm.bias[FORCED] = 60.0  # exp(-60) per other token: the sample is FORCED
    batch = padded_batch()
    originals = batch["input_ids"].clone()
    originals[0, 3] = originals[1, 4] = originals[2, 1] = FORCED  # the generator will reproduce these
    labels = torch.full_like(originals, IGNORE_INDEX)
    for b, t in [(0, 1), (0, 3), (0, 10), (1, 4), (1, 7), (2, 1), (2, 3)]:
        labels[b, t] = originals[b, t]
    assert (labels[labels != IGNORE_INDEX] != FORCED).any() and (labels == FORCED).sum() == 3
    masked_ids = originals.clone()
    masked_ids[labels != IGNORE_INDEX] = 4  # [MASK]
    masked_ids[0, 10] = 50  # one "random token" of the 80/10/10 scheme: replaced by the sample all the same
    batch["input_ids"] = masked_ids
    return pretrainer, batch, originals, labels


@pytest.mark.parametrize("unpad", [True, False])
def test_loss_is_transformers_mlm_loss_plus_50_times_its_discriminator_loss(tmp_path, unpad):
    pretrainer, batch, originals, labels = forced_setup(tmp_path)
    loss, stats = pretrainer(**batch, labels=labels, rng=torch.Generator().manual_seed(0), unpad=unpad)

    # The reference: transformers' models on the same weights, given the corrupted batch and the paper's labels.
    pretrainer.save_pretrained(tmp_path)
    generator = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / electra.GENERATOR_DIR).eval()
    discriminator = transformers.ElectraForPreTraining.from_pretrained(tmp_path).eval()
    masked = labels != IGNORE_INDEX
    corrupted = torch.where(masked, torch.full_like(originals, FORCED), originals)
    is_replaced = (masked & (originals != FORCED)).long()  # 1 exactly where the sample differs from the original
    assert is_replaced.sum() == 4 and is_replaced[0, 3] == is_replaced[1, 4] == is_replaced[2, 1] == 0
    with torch.no_grad():
        mlm = generator(**batch, labels=labels).loss
        rtd = discriminator(input_ids=corrupted, attention_mask=batch["attention_mask"],
                            token_type_ids=batch["token_type_ids"], labels=is_replaced).loss
    torch.testing.assert_close(loss, mlm + electra.DISCRIMINATOR_WEIGHT * rtd, **TOL)
    assert electra.DISCRIMINATOR_WEIGHT == 50.0

    n_real = int(batch["attention_mask"].sum())
    assert set(stats) == {"mlm_loss", "mlm_accuracy", "rtd_loss", "rtd_accuracy", "replaced_fraction"}
    counted = lambda name: (float(stats[name][0]), float(stats[name][1]))  # noqa: E731
    assert counted("mlm_accuracy") == (3.0, 7.0)  # the generator predicts FORCED: right where it is the original
    assert counted("replaced_fraction") == (4.0, 7.0)
    torch.testing.assert_close(stats["mlm_loss"][0] / stats["mlm_loss"][1], mlm, **TOL)
    torch.testing.assert_close(stats["rtd_loss"][0] / stats["rtd_loss"][1], rtd, **TOL)
    with torch.no_grad():
        predicted = discriminator(input_ids=corrupted, attention_mask=batch["attention_mask"],
                                  token_type_ids=batch["token_type_ids"]).logits > 0
    correct = (predicted.long() == is_replaced)[batch["attention_mask"].bool()].sum()
    assert counted("rtd_accuracy") == (float(correct), float(n_real))


def test_bf16_autocast_samples_in_fp32(tmp_path):
    pretrainer, batch, originals, labels = forced_setup(tmp_path)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = pretrainer(**batch, labels=labels, rng=torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert (float(stats["replaced_fraction"][0]), float(stats["replaced_fraction"][1])) == (4.0, 7.0)


def test_no_gradient_reaches_the_generator_through_the_samples(tmp_path):
    pretrainer, batch, originals, labels = forced_setup(tmp_path)
    loss, _ = pretrainer(**batch, labels=labels, rng=torch.Generator().manual_seed(0))
    loss.backward()
    through_loss = pretrainer.generator.bert.layers[0].ffn.up.weight.grad.clone()
    pretrainer.zero_grad()
    logits = pretrainer.generator(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    torch.nn.functional.cross_entropy(logits[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX]).backward()
    torch.testing.assert_close(through_loss, pretrainer.generator.bert.layers[0].ffn.up.weight.grad, **TOL)
    assert pretrainer.discriminator.bert.layers[0].ffn.up.weight.grad is None  # the MLM loss alone never reaches it


def test_samples_follow_the_generator_softmax():
    """Unforced, the rng alone fixes the samples; over many draws the replaced fraction is the mean of
    1 - p(original), within a binomial bound."""
    pretrainer = electra.build_pretrainer(BertConfig(**TINY), generator_ratio="1/2").eval()
    with torch.no_grad():
        pretrainer.generator.mlm.bias.zero_()
        pretrainer.generator.mlm.bias[FORCED] = 2.0  # p(FORCED) well above the rest, not 1
    ids = torch.full((8, 50), FORCED)
    labels = ids.clone()  # every position masked, every original FORCED
    with torch.no_grad():
        p_keep = float(pretrainer.generator(ids).softmax(-1)[..., FORCED].mean())
    assert 0.05 < p_keep < 0.95
    with torch.no_grad():
        _, stats = pretrainer(ids, labels, rng=torch.Generator().manual_seed(0))
        _, again = pretrainer(ids, labels, rng=torch.Generator().manual_seed(0))
    assert float(stats["replaced_fraction"][0]) == float(again["replaced_fraction"][0])
    fraction = float(stats["replaced_fraction"][0] / stats["replaced_fraction"][1])
    assert abs(fraction - (1 - p_keep)) < 4 * ((p_keep * (1 - p_keep)) / 400) ** 0.5, (fraction, p_keep)


# ----------------------------------------------------------------------------------------------
# Fine-tuning from an ELECTRA directory


@pytest.mark.parametrize("width", WIDTHS)
def test_finetuning_loads_the_discriminator_encoder(tmp_path, width):
    from bertkit.train.finetune import _load_model

    hf = perturbed(transformers.ElectraForPreTraining(hf_config(width))).eval()
    hf.save_pretrained(tmp_path / "electra")
    model = _load_model("classification", str(tmp_path / "electra"), ["a", "b", "c"]).eval()
    assert type(model) is BertForSequenceClassification
    assert model.load_report.missing == ["bert.pooler.weight", "bert.pooler.bias", "classifier.weight", "classifier.bias"]
    assert model.load_report.unused == ["discriminator_predictions.dense.bias", "discriminator_predictions.dense.weight",
                                        "discriminator_predictions.dense_prediction.bias",
                                        "discriminator_predictions.dense_prediction.weight"]
    encoder = transformers.ElectraModel.from_pretrained(tmp_path / "electra").eval()
    batch = padded_batch()
    with torch.no_grad():
        ours = model.bert(**batch).last_hidden_state
        theirs = encoder(**batch).last_hidden_state
    assert_same_on_tokens(ours, theirs, batch["attention_mask"])

    model.save_pretrained(tmp_path / "finetuned")  # and back, as evaluate/predict load it
    again = load_model(str(tmp_path / "finetuned")).eval()
    assert type(again) is BertForSequenceClassification and isinstance(again.config, ElectraConfig)
    torch.testing.assert_close(logits(again, batch).logits, logits(model, batch).logits, **TOL)


def test_bert_pretraining_class_refuses_an_electra_directory(tmp_path):
    transformers.ElectraForPreTraining(hf_config(16)).save_pretrained(tmp_path)
    with pytest.raises(BertkitError, match="BertForPreTraining does not load from this ELECTRA checkpoint"):
        BertForPreTraining.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------
# Starting from a BERT directory


def bert_dir(tmp_path, hidden_size, heads):
    path = tmp_path / "bert"
    config = transformers.BertConfig(**{**TINY, "hidden_size": hidden_size, "num_attention_heads": heads})
    perturbed(transformers.BertForPreTraining(config)).save_pretrained(path)
    return path


def test_electra_from_bert_init_starts_the_discriminator_from_the_bert_encoder(tmp_path):
    path = bert_dir(tmp_path, 32, 4)
    pretrainer = electra.electra_from_bert_init(path, generator_ratio=electra.DEFAULT_GENERATOR_RATIO).eval()
    assert pretrainer.config.embedding_size == 32 and pretrainer.discriminator.bert.embeddings_project is None
    g = pretrainer.generator.config
    assert (g.hidden_size, g.num_attention_heads, g.intermediate_size, g.embedding_size) == (8, 1, 32, 32)
    assert pretrainer.generator.bert.embeddings_project.in_features == 32
    bert = transformers.BertModel.from_pretrained(path).eval()
    batch = padded_batch()
    with torch.no_grad():
        ours = pretrainer.discriminator.bert(**batch).last_hidden_state
        theirs = bert(**batch).last_hidden_state
    assert_same_on_tokens(ours, theirs, batch["attention_mask"])


def test_a_generator_ratio_that_does_not_fit_the_bert_init_is_one_clear_error(tmp_path):
    path = bert_dir(tmp_path, 36, 4)
    with pytest.raises(BertkitError) as e:
        electra.electra_from_bert_init(path, generator_ratio=0.125)
    message = str(e.value)
    assert "\n" not in message
    assert message == (f"{path}: generator_ratio 1/8 does not fit hidden_size 36 (the generator's hidden size would "
                       "be 4.5, not a whole number) (use generator_ratio 1/2 or 1/3 or 1/4 or 1/6)")


def test_generator_sizes_follow_the_original_code():
    # ELECTRA-Small, -Base, -Large: the generators of the released checkpoints (hidden, heads, feed-forward)
    for hidden, heads, ratio, expected in [(256, 4, "1/4", (64, 1, 256)), (768, 12, "1/3", (256, 4, 1024)),
                                           (1024, 16, "1/4", (256, 4, 1024))]:
        config = ElectraConfig(hidden_size=hidden, num_attention_heads=heads, embedding_size=128)
        g = electra.generator_config(config, ratio)
        assert (g.hidden_size, g.num_attention_heads, g.intermediate_size, g.embedding_size) == (*expected, 128)
    with pytest.raises(BertkitError, match="does not split into 3 attention heads"):
        electra.generator_config(ElectraConfig(hidden_size=800, num_attention_heads=8), "1/4")  # 200 units, 3 heads
    with pytest.raises(BertkitError, match=r"must be in \(0, 1\]"):
        electra.generator_config(ElectraConfig(**TINY), 2)
