"""Sequence-to-sequence BERT (UniLM): the seq2seq mask, its features, and decoding (generate.py): cached equals
recomputed, one beam equals greedy, a hand-set model gives its exact sequence, a seed repeats a sample."""

import pytest
import torch

from bertkit.config import preset
from bertkit.errors import BertkitError
from bertkit.generate import GenerateConfig, _Decoder, generate_ids
from bertkit.model import IGNORE_INDEX, BertForMaskedLM, seq2seq_mask

CLS, SEP, PAD = 2, 3, 0


def tiny_lm(vocab=40, positions=64, seed=0):
    torch.manual_seed(seed)
    config = preset("tiny", vocab_size=vocab, max_position_embeddings=positions, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(config).eval()


def test_seq2seq_mask_exact():
    types = torch.tensor([[0, 0, 0, 1, 1, 0]])  # [CLS] a [SEP] y1 [SEP] pad
    attention = torch.tensor([[1, 1, 1, 1, 1, 0]])
    expected = [[1, 1, 1, 0, 0, 0],  # the source sees the source only
                [1, 1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0, 0],
                [1, 1, 1, 1, 0, 0],  # a target token sees the source and itself
                [1, 1, 1, 1, 1, 0],  # ... and the target to its left
                [1, 1, 1, 1, 1, 0]]  # padding attends (nobody reads it) but is never seen
    assert seq2seq_mask(types, attention)[0].int().tolist() == expected


def encoder_moves(mask_fn, position: int, token: int) -> torch.Tensor:
    """How far each position's output moves, (T,), when the token at `position` of `[CLS] s s s [SEP] t t t t
    [SEP]` changes to `token`, under the mask mask_fn(segments) builds (test_mask_predict uses it too)."""
    model = tiny_lm()
    ids = torch.tensor([[CLS, 10, 11, 12, SEP, 20, 21, 22, 23, SEP]])
    types = torch.tensor([[0] * 5 + [1] * 5])
    changed = ids.clone()
    changed[0, position] = token
    base, moved = (model.bert(x, types, mask_fn(types)).last_hidden_state[0] for x in (ids, changed))
    return (moved - base).abs().amax(-1)


def test_seq2seq_mask_hides_the_future_and_shows_the_source():
    moves = encoder_moves(seq2seq_mask, 7, 30)  # a later target token
    assert moves[:7].max() <= 1e-6  # no earlier position moves
    assert moves[7:].min() > 1e-4  # that position and every later one does
    assert encoder_moves(seq2seq_mask, 2, 31)[5:].min() > 1e-4  # a source token: every target position


def test_seq2seq_features(tiny_model):
    from bertkit.data.features import encode_seq2seq
    from bertkit.data.tasks import PairExample
    from bertkit.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(tiny_model)
    source, target = tokenizer.encode("the cat sat"), tokenizer.encode("a dog ran away")
    (feature,), cut = encode_seq2seq([PairExample("the cat sat", "a dog ran away")], tokenizer, 32, 8)
    ids = [tokenizer.cls_token_id, *source, tokenizer.sep_token_id, *target, tokenizer.sep_token_id]
    assert cut == 0 and feature["input_ids"] == ids
    assert feature["token_type_ids"] == [0] * (len(source) + 2) + [1] * (len(target) + 1)
    # the source's [SEP] predicts the first target token; the last target token predicts the final [SEP]
    assert feature["labels"] == [IGNORE_INDEX] * (len(source) + 1) + target + [tokenizer.sep_token_id, IGNORE_INDEX]
    (short,), cut = encode_seq2seq([PairExample("the cat sat", "a dog ran away")], tokenizer, 32, 2)
    assert cut == 1 and short["input_ids"][-3:] == [*target[:2], tokenizer.sep_token_id]


SOURCES = [[CLS, 5, 6, 7, 8, 9, SEP], [CLS, 11, SEP], [CLS, 12, 13, 14, SEP]]


def test_cached_decoding_equals_recomputation_and_single_rows():
    model = tiny_lm()
    S = max(len(s) for s in SOURCES)
    ids = torch.tensor([s + [PAD] * (S - len(s)) for s in SOURCES])
    lengths = torch.tensor([len(s) for s in SOURCES])
    generated = torch.tensor([[20, 21, 22, 23], [24, 25, 26, 27], [28, 29, 30, 31]])
    with torch.no_grad():
        cached, full = _Decoder(model, ids, lengths, True), _Decoder(model, ids, lengths, False)
        torch.testing.assert_close(cached.start(), full.start(), rtol=1e-5, atol=1e-5)
        for t in range(1, generated.shape[1] + 1):
            step = cached.step(generated[:, :t])
            torch.testing.assert_close(step, full.step(generated[:, :t]), rtol=1e-5, atol=1e-5)
        # the reference: each row alone, unpadded, `[CLS] source [SEP] y1..yt` under the training mask
        for row, source in enumerate(SOURCES):
            sequence = torch.tensor([source + generated[row].tolist()])
            types = torch.tensor([[0] * len(source) + [1] * generated.shape[1]])
            hidden = model.bert(sequence, types, seq2seq_mask(types)).last_hidden_state
            expected = model.mlm(hidden[0, -1]).log_softmax(-1)
            torch.testing.assert_close(step[row], expected, rtol=1e-5, atol=1e-5)


def test_one_beam_is_greedy_and_cache_changes_nothing():
    model = tiny_lm(seed=1)
    greedy = generate_ids(model, SOURCES, GenerateConfig(max_new_tokens=6), SEP, PAD)
    uncached = generate_ids(model, SOURCES, GenerateConfig(max_new_tokens=6, use_cache=False), SEP, PAD)
    beam = generate_ids(model, SOURCES, GenerateConfig(method="beam", beams=1, max_new_tokens=6), SEP, PAD)
    assert [g[0]["ids"] for g in greedy] == [u[0]["ids"] for u in uncached] == [b[0]["ids"] for b in beam]
    assert all(len(g[0]["ids"]) >= 1 for g in greedy)


def sequence_logprob(model, source, ids, finished):
    """log p(ids (+ [SEP]) | source), teacher-forced in one unpadded forward under the training mask."""
    target = ids + [SEP] if finished else ids
    sequence = torch.tensor([source + target])
    types = torch.tensor([[0] * len(source) + [1] * len(target)])
    with torch.no_grad():
        hidden = model.bert(sequence, types, seq2seq_mask(types)).last_hidden_state[0]
        logprobs = model.mlm(hidden[len(source) - 1:-1]).log_softmax(-1)  # the positions that predict the target
    return float(logprobs.gather(1, torch.tensor(target)[:, None]).sum())


def test_beam_search_scores_are_the_sequences_log_probabilities():
    model = tiny_lm(seed=2)
    for penalty in (0.0, 1.0):
        cfg = GenerateConfig(method="beam", beams=4, num_return=3, max_new_tokens=5, length_penalty=penalty)
        for source, hypotheses in zip(SOURCES, generate_ids(model, SOURCES, cfg, SEP, PAD)):
            assert len(hypotheses) == 3
            assert [h["score"] for h in hypotheses] == sorted((h["score"] for h in hypotheses), reverse=True)
            for h in hypotheses:
                length = len(h["ids"]) + h["finished"]
                expected = sequence_logprob(model, source, h["ids"], h["finished"]) / length ** penalty
                assert h["score"] == pytest.approx(expected, abs=1e-4)


def successor_model(chain: dict[int, int], vocab=12, hidden=16):
    """Hand-set weights: attention and feed-forward zero, so each position's output is LayerNorm of its own
    token's one-hot embedding; the MLM head's dense layer is the permutation token -> chain[token], so the
    model predicts, after any token, its successor in `chain` (the others map to themselves)."""
    config = preset("tiny", vocab_size=vocab, hidden_size=hidden, num_attention_heads=2, intermediate_size=16,
                    max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForMaskedLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
        model.bert.embeddings.word.weight.copy_(torch.eye(vocab, hidden) * 3)
        permutation = torch.zeros(hidden, hidden)
        for token in range(hidden):
            permutation[chain.get(token, token), token] = 1.0
        model.mlm.dense.weight.copy_(permutation)
    return model


def test_hand_set_model_gives_the_exact_greedy_sequence():
    model = successor_model({SEP: 7, 7: 9, 9: 5, 5: SEP})
    out = generate_ids(model, [[CLS, 4, SEP], [CLS, 6, 8, SEP]], GenerateConfig(max_new_tokens=10), SEP, PAD)
    assert [o[0]["ids"] for o in out] == [[7, 9, 5], [7, 9, 5]] and all(o[0]["finished"] for o in out)
    limited = generate_ids(model, [[CLS, 4, SEP]], GenerateConfig(max_new_tokens=2), SEP, PAD)
    assert limited[0][0]["ids"] == [7, 9] and not limited[0][0]["finished"]
    beam = generate_ids(model, [[CLS, 4, SEP]], GenerateConfig(method="beam", beams=3, max_new_tokens=10), SEP, PAD)
    assert beam[0][0]["ids"] == [7, 9, 5]


def test_sampling_repeats_with_a_seed_and_top_k_1_is_greedy():
    model = tiny_lm(seed=3)
    cfg = GenerateConfig(method="sample", seed=7, num_return=3, max_new_tokens=6, temperature=2.0)
    first, again = generate_ids(model, SOURCES, cfg, SEP, PAD), generate_ids(model, SOURCES, cfg, SEP, PAD)
    assert first == again
    other = generate_ids(model, SOURCES, GenerateConfig(**{**cfg.__dict__, "seed": 8}), SEP, PAD)
    assert other != first  # 9 sequences of up to 6 tokens over 40 at temperature 2: a collision would be a bug
    greedy = generate_ids(model, SOURCES, GenerateConfig(max_new_tokens=6), SEP, PAD)
    top1 = generate_ids(model, SOURCES, GenerateConfig(method="sample", top_k=1, seed=1, max_new_tokens=6), SEP, PAD)
    assert [g[0]["ids"] for g in greedy] == [t[0]["ids"] for t in top1]
    nucleus = generate_ids(model, SOURCES, GenerateConfig(method="sample", top_p=1e-6, seed=1, max_new_tokens=6),
                           SEP, PAD)
    assert [g[0]["ids"] for g in greedy] == [t[0]["ids"] for t in nucleus]  # the smallest nucleus: the argmax


@pytest.mark.parametrize("options, fragment", [
    ({"beams": 0}, "--beams 0"), ({"top_p": 1.5}, "--top-p 1.5"), ({"temperature": 0.0}, "--temperature"),
    ({"num_return": 2}, "greedy"), ({"method": "beam", "beams": 2, "num_return": 3}, "--num-return 3"),
    ({"max_new_tokens": 0}, "--max-new-tokens 0"), ({"no_repeat_ngram": -1}, "--no-repeat-ngram -1"),
    ({"method": "gibbs", "no_repeat_ngram": 2}, "left-to-right")])
def test_bad_options(options, fragment):
    from bertkit.errors import BertkitError

    with pytest.raises(BertkitError, match=fragment.replace("-", r"\-")):
        GenerateConfig(**options).check()


def test_gibbs_repeats_with_a_seed_and_samples_no_special_tokens():
    model = tiny_lm(seed=4)
    MASK = 4
    cfg = GenerateConfig(method="gibbs", seed=5, sweeps=2, max_new_tokens=5, num_return=2, top_k=10)
    first = generate_ids(model, SOURCES, cfg, SEP, PAD, mask_id=MASK)
    assert first == generate_ids(model, SOURCES, cfg, SEP, PAD, mask_id=MASK)
    assert first != generate_ids(model, SOURCES, GenerateConfig(**{**cfg.__dict__, "seed": 6}), SEP, PAD, mask_id=MASK)
    for hypotheses in first:
        assert len(hypotheses) == 2
        for h in hypotheses:
            assert len(h["ids"]) == 5 and not {CLS, SEP, PAD, MASK} & set(h["ids"])


def test_gibbs_from_a_prompt_holds_it_and_samples_after_it():
    model = tiny_lm(seed=4)
    MASK = 4
    cfg = GenerateConfig(method="gibbs", seed=5, sweeps=2, max_new_tokens=4, top_k=10)
    prompts = [[11, 12, 13], [], [14]]
    rows = generate_ids(model, SOURCES, cfg, SEP, PAD, mask_id=MASK, prompts=prompts)
    for hypotheses, prompt in zip(rows, prompts):
        ids = hypotheses[0]["ids"]
        assert ids[:len(prompt)] == prompt and len(ids) == len(prompt) + 4
        assert not {CLS, SEP, PAD, MASK} & set(ids[len(prompt):])
    # empty prompts are no prompts: the same rows, sample for sample
    plain = generate_ids(model, SOURCES, cfg, SEP, PAD, mask_id=MASK)
    assert generate_ids(model, SOURCES, cfg, SEP, PAD, mask_id=MASK, prompts=[[], [], []]) == plain
    # the prompt conditions the samples: with the same seed, the first source samples other tokens without it
    assert plain[0][0]["ids"] != rows[0][0]["ids"][3:]
    with pytest.raises(BertkitError, match="prompt is for --method gibbs"):
        generate_ids(model, SOURCES, GenerateConfig(method="greedy", max_new_tokens=4), SEP, PAD, mask_id=MASK,
                     prompts=prompts)
    # word pieces are never sampled first: after a prompt, or at the head of a target
    pieces = [i for i in range(5, 40) if i not in (20, 21)]
    for p in (prompts, None):
        for seed in range(3):
            rows = generate_ids(model, SOURCES, GenerateConfig(**{**cfg.__dict__, "seed": seed}), SEP, PAD,
                                mask_id=MASK, prompts=p, word_pieces=pieces)
            firsts = [h[0]["ids"][len(q)] for h, q in zip(rows, p or [[]] * len(SOURCES))]
            assert set(firsts) <= {1, 20, 21}, firsts
            assert any(i in pieces for h in rows for i in h[0]["ids"][1:])  # (allowed after the first)


@pytest.mark.parametrize("precision, autocast", [("fp32", False), ("bf16", True)])
def test_pipeline_generates_in_the_precision_asked_for(tiny_model, precision, autocast):
    """Pipeline.generate runs the encoder under --precision's autocast, as the other pipelines do."""
    from bertkit.pipelines import Pipeline
    from bertkit.tokenizer import Tokenizer

    model = BertForMaskedLM.from_pretrained(str(tiny_model)).eval()
    pipe = Pipeline(model, Tokenizer.from_pretrained(str(tiny_model)), {}, precision=precision)
    seen = []
    model.bert.register_forward_hook(lambda module, args, output: seen.append(torch.is_autocast_enabled("cpu")))
    rows = pipe.generate(["the film was good"], method="greedy", max_new_tokens=3)
    assert len(rows) == 1 and isinstance(rows[0]["generated"], str)
    assert seen and set(seen) == {autocast}


def test_pipeline_prompts_are_checked(tiny_model):
    from bertkit.pipelines import Pipeline
    from bertkit.tokenizer import Tokenizer

    pipe = Pipeline(BertForMaskedLM.from_pretrained(str(tiny_model)).eval(), Tokenizer.from_pretrained(str(tiny_model)),
                    {})
    for prompts, fragment in (("the", "a list of texts"), ([None], "a list of texts"), (["a", "b"], "2 prompts for 1"),
                              (["the"], None)):
        options = dict(prompts=prompts, method="gibbs", max_new_tokens=2, seed=0)
        if fragment is None:
            assert pipe.generate(["the film"], **options)[0]["generated"].startswith("the")
        else:
            with pytest.raises(BertkitError, match=fragment):
                pipe.generate(["the film"], **options)
    with pytest.raises(BertkitError, match="prompt is for --method gibbs"):
        pipe.generate(["the film"], prompts=["the"], method="greedy", max_new_tokens=2)


def bigrams(ids):
    return list(zip(ids, ids[1:]))


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_no_repeat_ngram_breaks_a_loop(method):
    """A hand-set model that loops 7 9 7 9 ...: with --no-repeat-ngram 2 no bigram comes twice, and the
    sequence follows the model until the first repeat would happen."""
    model = successor_model({SEP: 7, 7: 9, 9: 7})
    looping = generate_ids(model, [[CLS, 4, SEP]], GenerateConfig(method=method, beams=2, max_new_tokens=8), SEP, PAD)
    loop = looping[0][0]["ids"]
    assert loop[:6] == [7, 9, 7, 9, 7, 9] and len(set(bigrams(loop))) < len(bigrams(loop))
    cfg = GenerateConfig(method=method, beams=2, max_new_tokens=8, no_repeat_ngram=2)
    ids = generate_ids(model, [[CLS, 4, SEP]], cfg, SEP, PAD)[0][0]["ids"]
    assert ids[:3] == [7, 9, 7] and ids[3:4] != [9]
    assert len(set(bigrams(ids))) == len(bigrams(ids))
