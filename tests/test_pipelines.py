"""Task pipelines (classify, tag, answer, choose) on tiny models with the real uncased vocabulary.

`tag` and `answer` are checked with rigged logits (the model's forward replaced by hand-made scores), so
the expected entities and answer spans are exact: pieces merged back into words, words into entities,
tokens back into character spans, windows of a long context back into the context.
"""

import json

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, minilm_path, run_cli

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


def save_tiny(directory, cls_name: str, id2label=None):
    from bertkit import model as models
    from bertkit.config import preset
    from bertkit.tokenizer import Tokenizer

    torch.manual_seed(0)
    config = preset("tiny", vocab_size=30522, max_position_embeddings=128)
    if id2label is not None:
        config.id2label = dict(enumerate(id2label))
    getattr(models, cls_name)(config).save_pretrained(directory)
    Tokenizer.from_pretrained(minilm_path()).save_pretrained(directory, model_max_length=128)
    return directory


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {
        "classify": save_tiny(root / "classify", "BertForSequenceClassification", ["negative", "positive"]),
        "tag": save_tiny(root / "tag", "BertForTokenClassification", TAGS),
        "answer": save_tiny(root / "answer", "BertForQuestionAnswering"),
        "choose": save_tiny(root / "choose", "BertForMultipleChoice"),
        "encoder": save_tiny(root / "encoder", "BertForPreTraining"),
    }


def pipeline(directory):
    from bertkit.pipelines import Pipeline

    return Pipeline.from_pretrained(str(directory), device="cpu", precision="fp32")


def test_classify_gives_the_models_probabilities_for_texts_and_pairs(dirs):
    pipe = pipeline(dirs["classify"])
    texts, pairs = ["a fine film", "a dull, long film with no plot"], ["it was good", "it was bad"]
    for second in (None, pairs):
        results = pipe.classify(texts, second)
        batch = pipe.tokenizer(texts, second)
        with torch.no_grad():
            expected = pipe.model(**batch).logits.softmax(-1).numpy()
        for result, row in zip(results, expected):
            assert set(result["probabilities"]) == {"negative", "positive"}
            assert np.allclose([result["probabilities"]["negative"], result["probabilities"]["positive"]], row,
                               atol=1e-5)
            assert result["label"] == ["negative", "positive"][int(row.argmax())]
            assert result["score"] == pytest.approx(row.max(), abs=1e-5)


def test_classify_truncates_long_texts_with_a_warning(dirs, caplog):
    pipe = pipeline(dirs["classify"])
    with caplog.at_level("WARNING", logger="bertkit"):
        results = pipe.classify(["word " * 400, "short"])
    assert len(results) == 2
    assert "1 of 2 inputs were longer than 128 tokens and were truncated" in caplog.text


def rig(pipe, make_rows):
    """Replace the forward pass: make_rows(feature) gives that feature's output rows."""
    pipe._run = lambda features: [make_rows(f) for f in features]


def test_tag_merges_pieces_into_words_and_words_into_entities(dirs):
    pipe = pipeline(dirs["tag"])
    text = "Angela Merkel visited New York-based Acmeworx Corp. in 2019."
    first_piece_tags = {"angela": "B-PER", "new": "B-LOC", "york": "I-LOC", "corp": "I-ORG"}
    tokens_of = pipe.tokenizer.convert_ids_to_tokens

    def rows(feature):
        out = np.full((len(feature["input_ids"]), len(TAGS)), -5.0)
        for position, token in enumerate(tokens_of(feature["input_ids"])):
            if token.startswith("##"):
                tag = "B-MISC"  # a continuation piece: must be ignored, the word keeps its first piece's tag
            elif token in ("mer", "merkel"):
                tag = "I-PER"
            elif token.startswith("acme") or token == "ac":
                tag = "B-ORG"
            else:
                tag = first_piece_tags.get(token, "O")
            out[position, TAGS.index(tag)] = 5.0
        return out

    pieces = tokens_of(pipe.tokenizer.encode(text))
    assert any(p.startswith("##") for p in pieces)  # the rigging covers split words
    rig(pipe, rows)
    result = pipe.tag([text])[0]
    entities = [(e["type"], e["text"], e["start"], e["end"]) for e in result["entities"]]
    assert entities == [("PER", "Angela Merkel", 0, 13), ("LOC", "New York", 22, 30),
                        ("ORG", "Acmeworx Corp", 37, 50)], pieces
    assert all(text[e["start"]:e["end"]] == e["text"] for e in result["entities"])
    assert result["words"][:6] == ["Angela", "Merkel", "visited", "New", "York", "-"]
    assert result["tags"][:2] == ["B-PER", "I-PER"] and len(result["words"]) == len(result["tags"])
    assert all(0.99 < e["score"] <= 1 for e in result["entities"])


@pytest.mark.parametrize("tags, expected", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    (["I-PER", "I-PER", "I-LOC", "O"], [("PER", 0, 2), ("LOC", 2, 3)]),  # IOB1 / a type change starts anew
    (["B-PER", "B-PER", "O", "O"], [("PER", 0, 1), ("PER", 1, 2)]),
    (["S-ORG", "B-ORG", "E-ORG", "U-LOC"], [("ORG", 0, 1), ("ORG", 1, 3), ("LOC", 3, 4)]),  # IOBES, BILOU
    (["PER", "PER", "O", "LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),  # bare types (IO)
])
def test_entity_schemes(tags, expected):
    from bertkit.pipelines import _entities

    text = "w0 w1 w2 w3"
    words = [{"start": 3 * i, "end": 3 * i + 2, "tag": tag, "score": 1.0} for i, tag in enumerate(tags)]
    got = [(e["type"], e["start"] // 3, (e["end"] + 1) // 3) for e in _entities(text, words)]
    assert got == expected


def test_answer_returns_the_exact_character_span_from_a_windowed_context(dirs):
    pipe = pipeline(dirs["answer"])
    filler = " ".join(f"Sentence number {i} says nothing much." for i in range(60))
    context = filler + " The treaty was signed in Ghent in December 1814. " + filler
    answer_start = context.index("Ghent in December 1814")
    answer_end = answer_start + len("Ghent in December 1814")

    def rows(feature):
        n = len(feature["input_ids"])
        starts, ends = np.full(n, -10.0), np.full(n, -10.0)
        for position, span in enumerate(feature["offsets"]):
            if span is not None and span[0] == answer_start:
                starts[position] = 10.0
            if span is not None and span[1] == answer_end:
                ends[position] = 10.0
        return starts, ends

    rig(pipe, rows)
    from bertkit.data.features import encode_squad
    from bertkit.data.tasks import QAExample

    windows = encode_squad([QAExample("0", "When was it signed?", context)], pipe.tokenizer, 128, 128, 64, False)
    assert len(windows) > 4  # the context is far longer than the model's 128 positions
    result = pipe.answer([("When was it signed?", context), ("Anything?", "Short context.")])[0]
    assert (result["answer"], result["start"], result["end"]) == ("Ghent in December 1814", answer_start, answer_end)
    assert context[result["start"]:result["end"]] == result["answer"]
    assert 0.99 < result["score"] <= 1.0


def test_choose_gives_a_distribution_over_the_endings(dirs):
    pipe = pipeline(dirs["choose"])
    results = pipe.choose([("She opened the door", ["and walked out.", "and ate it.", "then sang."]),
                           ("He sat", ["down.", "up."])])
    assert [len(r["probabilities"]) for r in results] == [3, 2]
    for r in results:
        assert sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert r["choice"] == int(np.argmax(r["probabilities"]))


def test_call_dispatches_on_the_head_and_refuses_the_wrong_task(dirs):
    from bertkit.errors import BertkitError

    pipe = pipeline(dirs["classify"])
    assert pipe(["nice"])[0]["label"] in ("negative", "positive")
    with pytest.raises(BertkitError, match="does classify, not tag"):
        pipe.tag(["nice"])


def test_predict_cli_reads_the_head_from_the_config(dirs, tmp_path):
    cases = {
        "classify": ('{"text": "a fine film"}\n{"text": "a dull film"}\n', "label"),
        "tag": ("Angela Merkel visited Paris.\nNothing here.\n", "entities"),
        "answer": ('{"question": "Where?", "context": "She lives in Paris."}\n', "answer"),
        "choose": ('{"context": "He sat", "endings": ["down.", "up."]}\n', "choice"),
    }
    for task, (content, key) in cases.items():
        inp = tmp_path / (f"{task}.txt" if task == "tag" else f"{task}.jsonl")
        inp.write_text(content, encoding="utf-8")
        out = tmp_path / f"{task}.out.jsonl"
        run_cli("predict", "--model", dirs[task], "--input", inp, "--output", out)
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == len(content.strip().splitlines()) and all(key in r for r in rows), rows


@pytest.mark.parametrize("model, content, name, fragments", [
    ("encoder", '{"text": "x"}\n', "in.jsonl", ["has no task head"]),
    ("classify", "", "in.jsonl", ["file is empty"]),
    ("classify", b"ok\n\xff bad\n", "in.txt", ["line 2: invalid UTF-8"]),
    ("answer", "Where is it?\n", "in.txt", ["needs JSON Lines input"]),
    ("answer", '{"question": "Where?"}\n', "in.jsonl", ["record 1 has no 'context' field"]),
    ("classify", '{"text": "a"}\n{"text": "b", "text_pair": "c"}\n', "in.jsonl", ["some records have a text_pair"]),
])
def test_predict_cli_bad_input(dirs, tmp_path, model, content, name, fragments):
    inp = tmp_path / name
    inp.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "out.jsonl"
    out.write_text("keep me")
    proc = run_cli("predict", "--model", dirs[model], "--input", inp, "--output", out, check=False)
    assert_one_line_error(proc, *fragments)
    assert out.read_text() == "keep me"


def test_predict_warns_when_a_pair_model_gets_single_texts(dirs, tmp_path):
    import shutil

    model = tmp_path / "rte-model"
    shutil.copytree(dirs["classify"], model)
    (model / "bertkit_task.json").write_text(json.dumps({"task": "rte", "labels": ["negative", "positive"]}))
    single, paired = tmp_path / "single.jsonl", tmp_path / "paired.jsonl"
    single.write_text('{"text": "A man sleeps."}\n', encoding="utf-8")
    paired.write_text('{"text": "A man sleeps.", "text_pair": "Someone rests."}\n', encoding="utf-8")
    proc = run_cli("predict", "--model", model, "--input", single, "--output", tmp_path / "a.jsonl", "--quiet")
    assert "fine-tuned on text pairs (rte)" in proc.stderr and "text_pair" in proc.stderr
    proc = run_cli("predict", "--model", model, "--input", paired, "--output", tmp_path / "b.jsonl", "--quiet")
    assert "warning" not in proc.stderr
    proc = run_cli("predict", "--model", dirs["classify"], "--input", single, "--output", tmp_path / "c.jsonl")
    assert "warning" not in proc.stderr and "classify" in proc.stderr  # no pair task; the progress bar shows
