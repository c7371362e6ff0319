"""UniLM's own sequence-to-sequence fine-tuning (Dong et al. 2019; `--target-masking unilm`): 70% of the target
masked under the left-to-right mask, and decoding that reads each next token off a [MASK] put after the tokens
so far: the collate's statistics, cached decoding equal to recomputation and to a hand-built reference, one
beam equal to greedy, and a CLI round trip."""

import json

import numpy as np
import pytest
import torch

from bertkit.generate import GenerateConfig, _Decoder, generate_ids
from bertkit.model import IGNORE_INDEX, seq2seq_mask

import test_seq2seq_cli
from conftest import run_cli
from test_generate import tiny_lm

CLS, SEP, PAD, MASK = 2, 3, 0, 4
encoder_only, pairs = test_seq2seq_cli.encoder_only, test_seq2seq_cli.pairs  # its fixtures, used here too
SOURCES = [[CLS, 5, 6, 7, 8, 9, SEP], [CLS, 11, SEP], [CLS, 12, 13, 14, SEP]]


def test_unilm_target_masking_collate(tiny_model):
    from bertkit.data.features import collate_unilm, encode_seq2seq
    from bertkit.data.tasks import PairExample
    from bertkit.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(tiny_model)
    examples = [PairExample("the cat sat on the mat", "a dog ran away from the house"), PairExample("hello", "x")]
    features, _ = encode_seq2seq(examples, tokenizer, 32, 12)
    rng = np.random.default_rng(0)
    chosen = shown_mask = shown_same = target_tokens = 0
    for _ in range(300):
        batch = collate_unilm(features, tokenizer.pad_token_id, tokenizer.mask_token_id, tokenizer.vocab_size, rng)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            original = torch.tensor(feature["input_ids"])
            types = torch.tensor(feature["token_type_ids"])
            labels, ids = batch["labels"][row, :length], batch["input_ids"][row, :length]
            picked = labels != IGNORE_INDEX
            assert not (picked & (types == 0)).any() and picked.any()  # only target tokens, at least one
            assert torch.equal(labels[picked], original[picked])  # each labeled with its own token
            assert torch.equal(ids[~picked], original[~picked])  # nothing unchosen changes
            assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
            chosen += int(picked.sum())
            target_tokens += int(types.sum())
            shown_mask += int((ids[picked] == tokenizer.mask_token_id).sum())
            shown_same += int((ids[picked] == original[picked]).sum())
        torch.testing.assert_close(batch["attention_mask"], seq2seq_mask(batch["token_type_ids"],
                                                                         _real(batch, features).long()))
    # 70% of the target chosen (the one-token target is always chosen: at least one), 80/10/10 of those
    assert 0.68 < chosen / target_tokens < 0.78
    assert abs(shown_mask / chosen - 0.8) < 0.04 and abs(shown_same / chosen - 0.1) < 0.03
    first = collate_unilm(features, 0, tokenizer.mask_token_id, tokenizer.vocab_size, np.random.default_rng(5))
    again = collate_unilm(features, 0, tokenizer.mask_token_id, tokenizer.vocab_size, np.random.default_rng(5))
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])


def _real(batch, features):
    """(B, T) True at each row's real (unpadded) positions."""
    T = batch["input_ids"].shape[1]
    return torch.tensor([[i < len(f["input_ids"]) for i in range(T)] for f in features])


def test_masked_decoding_cached_equals_recomputed_and_the_reference():
    """The next token's log-probabilities are read off a [MASK] after the tokens so far: the cached decoder,
    the recomputing one, and each row alone with `[CLS] source [SEP] y1..yt [MASK]` under the seq2seq mask."""
    model = tiny_lm(seed=3)
    S = max(len(s) for s in SOURCES)
    ids = torch.tensor([s + [PAD] * (S - len(s)) for s in SOURCES])
    lengths = torch.tensor([len(s) for s in SOURCES])
    generated = torch.tensor([[20, 21, 22], [24, 25, 26], [28, 29, 30]])
    with torch.no_grad():
        cached, full = _Decoder(model, ids, lengths, True, MASK), _Decoder(model, ids, lengths, False, MASK)
        steps = [(cached.start(), full.start())]
        assert len(cached.cache) == S  # the [MASK] is not kept
        for t in range(1, generated.shape[1] + 1):
            steps.append((cached.step(generated[:, :t]), full.step(generated[:, :t])))
            assert len(cached.cache) == S + t
        for t, (a, b) in enumerate(steps):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            for row, source in enumerate(SOURCES):
                sequence = torch.tensor([source + generated[row, :t].tolist() + [MASK]])
                types = torch.tensor([[0] * len(source) + [1] * (t + 1)])
                hidden = model.bert(sequence, types, seq2seq_mask(types)).last_hidden_state
                expected = model.mlm(hidden[0, -1]).log_softmax(-1)
                torch.testing.assert_close(a[row], expected, rtol=1e-5, atol=1e-5)
        # not the shifted reading: the output at the last real token differs
        shifted = _Decoder(model, ids, lengths, True).start()
        assert not torch.allclose(shifted, steps[0][0], atol=1e-3)


def test_masked_objective_decodes_with_the_mask_and_one_beam_is_greedy():
    model = tiny_lm(seed=4)
    kwargs = dict(mask_id=MASK, objective="unilm-masked")
    greedy = generate_ids(model, SOURCES, GenerateConfig(max_new_tokens=5), SEP, PAD, **kwargs)
    uncached = generate_ids(model, SOURCES, GenerateConfig(max_new_tokens=5, use_cache=False), SEP, PAD, **kwargs)
    beam = generate_ids(model, SOURCES, GenerateConfig(method="beam", beams=1, max_new_tokens=5), SEP, PAD, **kwargs)
    assert [g[0]["ids"] for g in greedy] == [u[0]["ids"] for u in uncached] == [b[0]["ids"] for b in beam]
    # the first token is the argmax at the [MASK] after each source
    S = max(len(s) for s in SOURCES)
    ids = torch.tensor([s + [PAD] * (S - len(s)) for s in SOURCES])
    with torch.no_grad():
        first = _Decoder(model, ids, torch.tensor([len(s) for s in SOURCES]), False, MASK).start().argmax(-1)
    for row, g in enumerate(greedy):
        assert (g[0]["ids"] or [SEP])[0] == int(first[row])


@pytest.fixture(scope="module")
def unilm_run(tmp_path_factory, encoder_only, pairs):
    out = tmp_path_factory.mktemp("unilm") / "run"
    train, dev = pairs
    run_cli("finetune", "--task", "seq2seq", "--train", train, "--dev", dev, "--model", encoder_only,
            "--out", out, "--epochs", 2, "--batch-size", 8, "--lr", 1e-3, "--max-seq-len", 48,
            "--max-target-len", 8, "--target-masking", "unilm", "--quiet")
    return out / "seed-1"


def test_finetune_unilm_then_generate(unilm_run, tmp_path):
    generation = json.loads((unilm_run / "generation_config.json").read_text())
    assert generation["bertkit"]["objective"] == "unilm-masked"
    result = json.loads((unilm_run / "eval_results.json").read_text())
    assert 0 <= result["token_accuracy"] <= 1 and result["perplexity"] > 1
    sources = tmp_path / "sources.txt"
    sources.write_text("the film was good but the cast was bad\nthe film was fine\n")
    for method in (["--method", "greedy"], ["--method", "beam", "--beams", "2"]):
        output = tmp_path / f"{method[1]}.jsonl"
        run_cli("generate", "--model", unilm_run, "--input", sources, "--output", output, "--max-new-tokens", 5,
                *method)
        lines = [json.loads(line) for line in output.read_text().splitlines()]
        assert len(lines) == 2 and all(isinstance(line["generated"], str) for line in lines)
    proc = run_cli("generate", "--model", unilm_run, "--input", sources, "--output", tmp_path / "mp.jsonl",
                   "--method", "mask-predict", check=False)
    assert proc.returncode == 2 and not (tmp_path / "mp.jsonl").exists()
