"""benchmarks/question_generation.py without training anything: its SQuAD pairs, the template baseline, the
scores, and its refusal of a missing data folder."""

import importlib.util
import json
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
pytest.importorskip("sacrebleu", reason="the dev extra's sacrebleu scores question generation")
pytest.importorskip("rouge_score", reason="the dev extra's rouge-score scores question generation")
pytest.importorskip("blingfire", reason="the dev extra's blingfire splits SQuAD paragraphs into sentences")


@pytest.fixture(scope="module")
def qg():
    spec = importlib.util.spec_from_file_location("question_generation", BENCHMARKS / "question_generation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def squad_file(tmp_path):
    context = "The tower was built in 1889. It was designed by Gustave Eiffel. It has three levels."
    qas = [{"id": "1", "question": "When was the tower built?", "answers": [{"text": "1889", "answer_start": 22}]},
           {"id": "2", "question": "Who designed it?",
            "answers": [{"text": "Gustave Eiffel", "answer_start": context.index("Gustave")}]},
           {"id": "3", "question": "How many levels?", "answers": [{"text": "three", "answer_start": 72}]}]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}))
    return path


def test_pairs_take_the_sentence_that_holds_the_answer(qg, tmp_path):
    pairs = qg.squad_pairs(str(squad_file(tmp_path)))
    assert [p["source"] for p in pairs] == ["1889 : The tower was built in 1889.",
                                            "Gustave Eiffel : It was designed by Gustave Eiffel.",
                                            "three : It has three levels."]
    assert [p["target"] for p in pairs] == ["When was the tower built?", "Who designed it?", "How many levels?"]


def test_a_file_that_is_not_squad_is_a_failure(qg, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(qg.Failure, match="not a readable SQuAD"):
        qg.squad_pairs(str(bad))


@pytest.mark.parametrize("answer, word", [("1889", "when"), ("12 March", "when"), ("3,000", "how many"),
                                          ("Gustave Eiffel", "who"), ("a copper statue", "what")])
def test_wh_word_follows_the_answer(qg, answer, word):
    assert qg.wh_word(answer) == word


def test_template_takes_the_answer_out(qg):
    assert qg.template_question("Gustave Eiffel", "It was designed by Gustave Eiffel.") == "who It was designed by?"


def test_scores_know_right_from_wrong(qg):
    refs = ["when was the tower built ?", "who designed the tower ?"]
    same = qg.scores(refs, refs)
    assert same["bleu4"] == pytest.approx(100) and same["rougeL"] == pytest.approx(100)
    other = qg.scores(["what is the colour of the sky ?", "how many levels ?"], refs)
    assert other["bleu4"] < 10 and other["rougeL"] < 50
    assert qg.scores(["WHEN WAS THE TOWER BUILT ?", refs[1]], refs)["bleu4"] == pytest.approx(100)  # lowercased


@pytest.fixture(scope="module")
def wordnet(qg):
    reader, source = qg.wordnet(None)
    if reader is None:
        pytest.skip(f"METEOR needs WordNet 3.0, absent here ({source})")
    return reader


def test_meteor_matches_wordnet_synonyms(qg, wordnet):
    refs = ["where is the auto ?"]
    assert qg.meteor(refs, refs, wordnet) == pytest.approx(100, abs=1)
    # "car" and "auto" share a WordNet synset; "cat" and "auto" do not
    assert qg.meteor(["where is the car ?"], refs, wordnet) > qg.meteor(["where is the cat ?"], refs, wordnet) + 10
    assert qg.scores(refs, refs, wordnet)["meteor"] == pytest.approx(100, abs=1)


def test_a_folder_without_wordnet_is_a_failure(qg, tmp_path):
    with pytest.raises(qg.Failure, match="no WordNet 3.0 database there"):
        qg.wordnet(str(tmp_path))


def test_missing_squad_folder_exits_2(qg, tmp_path, capsys):
    assert qg.main(["--out", str(tmp_path / "out"), "--squad-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "--squad-dir" in err


@pytest.mark.parametrize("masking, methods", [("shifted", ["greedy", "beam", "beam-no-repeat"]),
                                             ("uniform", ["mask-predict"]),
                                             ("unilm", ["greedy", "beam", "beam-no-repeat"])])
def test_table_rows_and_examples(qg, masking, methods):
    args = qg.parse_args(["--out", "o", "--target-masking", masking])
    dev = [{"source": f"a{i} : s{i}", "target": f"question {i} ?"} for i in range(6)]
    generated = {"template": [f"what s{i} ?" for i in range(6)]}
    generated.update({m: [d["target"] if i % 2 else "nothing like it" for i, d in enumerate(dev)] for m in methods})
    refs = [d["target"] for d in dev]
    results = {m: qg.scores(h, refs) for m, h in generated.items()}
    results["template"]["meteor"] = 12.345
    text = qg.render(args, ["--out", "o"], "MODEL", dev, generated, results, {}, "not run: no WordNet found")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "BLEU" not in line]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == [qg.NAMES[m] for m in ["template", *methods]]
    assert rows[0].endswith("| 12.35 |") and all(r.endswith("| not run |") for r in rows[1:])
    assert "not run: no WordNet found" in text
    examples = [line for line in text.splitlines() if line.startswith("- (")]
    assert len(examples) == 5 and all("(good, ROUGE-L 100)" in e for e in examples[:3])
    assert all("(bad, ROUGE-L 0)" in e for e in examples[3:])
