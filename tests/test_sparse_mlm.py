"""The sparse MLM head (decode only the chosen positions) against the dense reference."""

import torch

from bertkit.config import BertConfig
from bertkit.model import IGNORE_INDEX, BertForPreTraining

CFG = BertConfig(vocab_size=211, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def batch():
    g = torch.Generator().manual_seed(3)
    input_ids = torch.randint(5, 211, (4, 16), generator=g)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    chosen = torch.rand(4, 16, generator=g) < 0.15
    chosen[:, 3] = True
    labels[chosen] = torch.randint(5, 211, (int(chosen.sum()),), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 12:] = 0
    labels[1, 12:] = IGNORE_INDEX
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                next_sentence_label=torch.tensor([0, 1, 1, 0]))


def loss_and_grads(sparse: bool):
    torch.manual_seed(0)
    model = BertForPreTraining(CFG, sparse_mlm=sparse)
    out = model(**batch())
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_sparse_loss_and_gradients_equal_dense():
    sparse, sparse_grads = loss_and_grads(True)
    dense, dense_grads = loss_and_grads(False)
    torch.testing.assert_close(sparse.mlm_loss, dense.mlm_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(sparse.loss, dense.loss, atol=1e-6, rtol=0)
    assert sparse_grads.keys() == dense_grads.keys()
    for name in sparse_grads:
        torch.testing.assert_close(sparse_grads[name], dense_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_loss_is_the_mean_over_chosen_positions_only():
    torch.manual_seed(0)
    model = BertForPreTraining(CFG).eval()
    b = batch()
    out = model(**b)
    with torch.no_grad():
        full = model(b["input_ids"], attention_mask=b["attention_mask"]).mlm_logits  # (B, T, V)
    chosen = b["labels"] != IGNORE_INDEX
    logp = full.log_softmax(-1)[chosen]
    expected = -logp.gather(1, b["labels"][chosen][:, None]).mean()
    torch.testing.assert_close(out.mlm_loss, expected, atol=1e-6, rtol=0)
    assert out.mlm_logits.shape == (int(chosen.sum()), 211)
    assert out.mlm_targets.tolist() == b["labels"][chosen].tolist()


def padded_batch():
    """Sequences of lengths 16, 11, 5, 1: a quarter of every layer's rows would otherwise be padding."""
    b = batch()
    for row, n in enumerate([16, 11, 5, 1]):
        b["attention_mask"][row] = 0
        b["attention_mask"][row, :n] = 1
        b["labels"][row, n:] = IGNORE_INDEX
        b["input_ids"][row, n:] = 0
    b["labels"][3, 0] = 7  # the one-token sample predicts something too
    b["token_type_ids"] = (torch.arange(16) >= 3).long().expand(4, 16) * b["attention_mask"]
    return b


def test_unpadded_encoder_equals_padded():
    """The unpadded path (linear maps on the real tokens only, attention in (B, T) layout) gives the padded
    reference path's outputs at every real position, and its loss and every gradient."""
    from bertkit.model import BertForMaskedLM, BertModel

    b = padded_batch()
    real = b["attention_mask"].bool()
    torch.manual_seed(0)
    encoder = BertModel(CFG)
    args = (b["input_ids"], b["token_type_ids"], b["attention_mask"])
    padded, unpadded = encoder(*args), encoder(*args, unpad=True)
    torch.testing.assert_close(unpadded.last_hidden_state[real], padded.last_hidden_state[real], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(unpadded.pooler_output, padded.pooler_output, atol=1e-6, rtol=1e-5)
    assert unpadded.last_hidden_state[~real].abs().max() == 0  # nothing was computed there
    for cls in (BertForPreTraining, BertForMaskedLM):
        results = []
        for unpad in (False, True):
            torch.manual_seed(0)
            model = cls(CFG, unpad=unpad)
            out = model(**{k: v for k, v in b.items() if cls is BertForPreTraining or k != "next_sentence_label"})
            out.loss.backward()
            results.append((out, {n: p.grad for n, p in model.named_parameters()}))
        (ref, ref_grads), (fast, fast_grads) = results
        torch.testing.assert_close(fast.loss, ref.loss, atol=1e-6, rtol=0)
        torch.testing.assert_close(fast.mlm_logits, ref.mlm_logits, atol=1e-5, rtol=1e-5)
        for name in ref_grads:
            torch.testing.assert_close(fast_grads[name], ref_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_unpadding_is_used_only_for_losses():
    """Without labels (fill-mask, feature extraction) the full padded outputs come back, as transformers'."""
    b = padded_batch()
    torch.manual_seed(0)
    model = BertForPreTraining(CFG).eval()
    with torch.no_grad():
        logits = model(b["input_ids"], b["token_type_ids"], b["attention_mask"]).mlm_logits
        model.unpad = False
        assert torch.equal(model(b["input_ids"], b["token_type_ids"], b["attention_mask"]).mlm_logits, logits)
    assert logits[~b["attention_mask"].bool()].abs().sum() > 0


def test_sparse_rounding_keeps_the_label_smoothed_loss():
    """The sparse path decodes a multiple of SPARSE_ROUND rows (the extra ones ignored); with label smoothing, as
    seq2seq fine-tuning trains, its loss and gradients still equal the dense reference's."""
    from bertkit.model import SPARSE_ROUND, BertForMaskedLM

    b = {k: v for k, v in batch().items() if k != "next_sentence_label"}
    assert int((b["labels"] != IGNORE_INDEX).sum()) % SPARSE_ROUND  # the rounding adds rows here
    results = []
    for sparse in (True, False):
        torch.manual_seed(0)
        model = BertForMaskedLM(CFG, sparse_mlm=sparse)
        model.label_smoothing = 0.1
        out = model(**b)
        out.loss.backward()
        results.append((out.loss, model.bert.embeddings.word.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-5)
