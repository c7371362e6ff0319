"""`bertkit fill-mask` on a tiny model whose MLM head is set by hand, and on the real MiniLM encoder."""

import json

import pytest
import torch

from conftest import assert_one_line_error, minilm_path, run_cli


@pytest.fixture(scope="module")
def rigged_model(tmp_path_factory):
    """A tiny BertForMaskedLM whose output bias makes 'paris' by far the likeliest word everywhere."""
    from bertkit.config import preset
    from bertkit.model import BertForMaskedLM
    from bertkit.tokenizer import Tokenizer

    d = tmp_path_factory.mktemp("rigged")
    tokenizer = Tokenizer.from_pretrained(minilm_path())
    model = BertForMaskedLM(preset("tiny", vocab_size=tokenizer.vocab_size, max_position_embeddings=32))
    with torch.no_grad():
        model.mlm.bias[tokenizer.convert_tokens_to_ids("paris")] = 50.0
        model.mlm.bias[tokenizer.convert_tokens_to_ids("london")] = 40.0
    model.save_pretrained(d)
    tokenizer.save_pretrained(d, model_max_length=32)
    return d


def test_expected_token_for_each_mask(rigged_model):
    out = run_cli("fill-mask", "--model", rigged_model, "the capital is [MASK] and not [MASK] .", "--top-k", 2)
    result = json.loads(out.stdout)
    assert len(result["predictions"]) == 2  # one list per [MASK]
    for guesses in result["predictions"]:
        assert [g["token"] for g in guesses] == ["paris", "london"]
        assert guesses[0]["probability"] > 0.99
    assert [w["word"] for w in result["words"]] == ["paris", "paris"]  # two separate masks, two words


def test_adjacent_masks_are_joined_into_a_word(rigged_model):
    out = run_cli("fill-mask", "--model", rigged_model, "we went to [MASK] [MASK] [MASK] today .")
    (word,) = json.loads(out.stdout)["words"]
    assert word["masks"] == [0, 1, 2] and word["word"] == "paris paris paris"
    assert word["probability"] == pytest.approx(
        float(torch.tensor([p[0]["probability"] for p in json.loads(out.stdout)["predictions"]]).prod()), rel=1e-4)


@pytest.mark.parametrize("pieces, word", [
    (["play", "##ing"], "playing"), (["new", "york"], "new york"), (["un", "##believ", "##able", "!"], "unbelievable !"),
    (["##ing"], "##ing"),  # a lone continuation piece stays as the model gave it
])
def test_join_pieces(pieces, word):
    from bertkit.inference import join_pieces

    assert join_pieces(pieces) == word


@pytest.mark.parametrize("text, message", [
    ("no mask here", "no [MASK] in 'no mask here'"),
    ("[MASK] " + "word " * 40, "longer than the model's 32 positions"),
])
def test_bad_text(rigged_model, text, message):
    assert_one_line_error(run_cli("fill-mask", "--model", rigged_model, text, check=False), message)


def test_model_without_mlm_head():
    assert_one_line_error(run_cli("fill-mask", "--model", minilm_path(), "a [MASK] .", check=False),
                          "has no MLM head")
