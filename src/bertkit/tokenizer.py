"""BERT's WordPiece tokenizer, on the HuggingFace `tokenizers` library.

`Tokenizer` holds one `tokenizers.Tokenizer` (the backend) set up exactly as BERT's:
BertNormalizer (control characters removed, whitespace normalised, CJK characters split,
accents stripped and text lowercased for uncased models), BertPreTokenizer (split on
whitespace and punctuation), WordPiece with `##` continuations and words over 100
characters mapped to [UNK], and `[CLS] A [SEP] B [SEP]` added by a TemplateProcessing
post-processor. It loads Google/HuggingFace `vocab.txt` and `tokenizer.json` files, trains
new vocabularies, and saves directories that `transformers.AutoTokenizer` loads.

Left out on purpose: added tokens beyond the five specials, other normalisers, and the
`strip_accents`/`tokenize_chinese_chars` overrides; every model here is either BERT-cased or
BERT-uncased, so a vocabulary and the lowercase flag fully determine the tokenizer.

Known differences from transformers' pure-Python BertTokenizer, all inherited from the
`tokenizers` library (and shared with transformers' own fast tokenizer): a word-final capital
sigma lowercases to "σ", not "ς"; cased models do not NFC-compose text first; and when both
texts of a pair must be cut to nearly equal lengths, an odd leftover token goes to the second.
Training is not bit-for-bit reproducible (the trainer breaks frequency ties in hash order), so
check prepared data against the saved tokenizer's `fingerprint`, not against a re-training.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import tokenizers
import torch
from tokenizers import decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import WordPiece

from bertkit.errors import BertkitError, MissingFileError
from bertkit.files import atomic_write_json, atomic_write_text, read_text

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # a trained vocabulary gives them ids 0..4
MAX_INPUT_CHARS_PER_WORD = 100  # longer words become [UNK], as in Google's tokenization.py


def _build_backend(tokens: list[str], lowercase: bool) -> tokenizers.Tokenizer:
    """The BERT pipeline over `tokens`, where a token's position is its id."""
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = tokenizers.Tokenizer(WordPiece(
        vocab, unk_token=UNK, continuing_subword_prefix="##",
        max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD,
    ))
    # strip_accents=None follows lowercase, as in BERT: uncased models also drop accents.
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    # Registered as special so that "[MASK]" in raw text stays one token (as in transformers)
    # and decode(skip_special_tokens=True) drops them; they keep their vocabulary ids.
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return backend


def _require_specials(vocab: Iterable[str], source: object) -> None:
    vocab = set(vocab)
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise BertkitError(
            f"{source} lacks the special token(s) {' '.join(missing)}",
            hint=f"a BERT vocabulary needs all of {' '.join(SPECIAL_TOKENS)}; add the missing ones")


def _read_vocab(path: Path) -> list[str]:
    """The tokens of a vocab.txt in id order (line 1 is id 0), checked for BERT's needs."""
    # Split on "\n" only: str.splitlines would also split inside tokens such as "\x1c" and shift ids.
    lines = read_text(str(path)).split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    tokens = [line.removesuffix("\r") for line in lines]
    if not tokens:
        raise BertkitError(f"{path}: file is empty",
                           hint="a vocab.txt holds one token per line, line 1 being id 0")
    first_line: dict[str, int] = {}
    for line_number, token in enumerate(tokens, start=1):
        if token == "":
            raise BertkitError(f"{path}: line {line_number}: empty line",
                               hint="every line must hold one token")
        if token in first_line:
            raise BertkitError(
                f"{path}: token {token!r} appears twice, on lines {first_line[token]} and {line_number}",
                hint="each token must appear once, since its line number is its id")
        first_line[token] = line_number
    _require_specials(first_line, path)
    return tokens


def _read_json(path: Path) -> dict:
    try:
        return json.loads(read_text(str(path)))
    except json.JSONDecodeError as err:
        raise BertkitError(
            f"{path}: line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}") from None


def _resolve_lowercase(found: bool | None, requested: bool | None, source: object) -> bool:
    """The file's lowercase flag wins; an argument that contradicts it is an error, not a silent override."""
    if found is not None and not isinstance(found, bool):
        raise BertkitError(f"{source}: do_lower_case / lowercase should be true or false, got {found!r}",
                           hint="fix the value in the file")
    if found is None:
        return True if requested is None else requested
    if requested is not None and requested != found:
        raise BertkitError(f"lowercase={requested} was requested but {source} says lowercase={found}",
                           hint="drop the argument or fix the file")
    return found


class Tokenizer:
    """A BERT WordPiece tokenizer wrapping a `tokenizers.Tokenizer` backend."""

    def __init__(self, backend: tokenizers.Tokenizer, lowercase: bool):
        # __call__ truncates and pads itself; a loaded tokenizer.json may carry its own settings.
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.lowercase = lowercase
        vocab = backend.get_vocab(with_added_tokens=True)
        _require_specials(vocab, "the backend's vocabulary")
        # Looked up by name: Google's vocabularies put [CLS] at 101, trained ones at 2.
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id = (
            vocab[token] for token in SPECIAL_TOKENS)
        self.special_ids = frozenset(vocab[token] for token in SPECIAL_TOKENS)

    # ---- loading, saving, training ----

    @classmethod
    def from_vocab(cls, vocab_file: str | os.PathLike, lowercase: bool = True) -> Tokenizer:
        """Build from a vocab.txt: one token per line, line 1 being id 0."""
        path = Path(vocab_file)
        if not path.is_file():
            raise MissingFileError(f"vocabulary file {path} does not exist")
        return cls(_build_backend(_read_vocab(path), lowercase), lowercase)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, lowercase: bool | None = None) -> Tokenizer:
        """Load a directory holding tokenizer.json, or vocab.txt (plus tokenizer_config.json, if any)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise MissingFileError(f"tokenizer directory {directory} does not exist")
        if (directory / "tokenizer.json").is_file():
            return cls._from_tokenizer_json(directory / "tokenizer.json", lowercase)
        vocab_file = directory / "vocab.txt"
        if not vocab_file.is_file():
            raise MissingFileError(
                f"{directory} holds neither tokenizer.json nor vocab.txt; expected one of them, "
                "as written by save_pretrained or found in a HuggingFace BERT checkpoint")
        config_file = directory / "tokenizer_config.json"
        config = _read_json(config_file) if config_file.is_file() else {}
        lowercase = _resolve_lowercase(config.get("do_lower_case"), lowercase, config_file)
        return cls.from_vocab(vocab_file, lowercase)

    @classmethod
    def _from_tokenizer_json(cls, path: Path, lowercase: bool | None) -> Tokenizer:
        # The vocabulary and lowercase flag are read from the file and the pipeline rebuilt from
        # them, so a loaded tokenizer behaves exactly like one built by from_vocab.
        spec = _read_json(path)
        model, normalizer = spec.get("model") or {}, spec.get("normalizer") or {}
        is_bert = (
            model.get("type") == "WordPiece" and model.get("continuing_subword_prefix") == "##"
            and model.get("max_input_chars_per_word") == MAX_INPUT_CHARS_PER_WORD
            and normalizer.get("type") == "BertNormalizer" and normalizer.get("clean_text")
            and normalizer.get("handle_chinese_chars")
            and normalizer.get("strip_accents") in (None, normalizer.get("lowercase")))
        if not is_bert:
            raise BertkitError(
                f"{path} is not a BERT WordPiece tokenizer: found model {model.get('type')!r} "
                f"and normalizer {normalizer}",
                hint=f"expected a WordPiece model ('##' prefix, max_input_chars_per_word="
                     f"{MAX_INPUT_CHARS_PER_WORD}) and BERT's BertNormalizer")
        lowercase = _resolve_lowercase(normalizer["lowercase"], lowercase, path)
        vocab: dict[str, int] = model["vocab"]
        tokens = sorted(vocab, key=vocab.get)
        if [vocab[token] for token in tokens] != list(range(len(tokens))):
            raise BertkitError(f"{path}: vocabulary ids must run 0..{len(tokens) - 1} without gaps")
        _require_specials(vocab, path)
        return cls(_build_backend(tokens, lowercase), lowercase)

    def save_pretrained(self, directory: str | os.PathLike, model_max_length: int = 512) -> None:
        """Write tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        specials = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD,
                    "cls_token": CLS, "mask_token": MASK}
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.lowercase,
                  "strip_accents": None, "tokenize_chinese_chars": True,
                  "model_max_length": model_max_length, **specials}
        # Each file is written atomically (temporary file, then rename): see bertkit.files.
        atomic_write_text(str(directory / "tokenizer.json"), self.backend.to_str(pretty=True))
        atomic_write_text(str(directory / "vocab.txt"), "".join(token + "\n" for token in self._tokens()))
        atomic_write_json(str(directory / "tokenizer_config.json"), config)
        atomic_write_json(str(directory / "special_tokens_map.json"), specials)

    @classmethod
    def train(cls, files: str | os.PathLike | Iterable[str | os.PathLike], vocab_size: int,
              lowercase: bool = True, min_frequency: int = 2, show_progress: bool = False) -> Tokenizer:
        """Learn a WordPiece vocabulary of at most `vocab_size` tokens from text files."""
        files = [str(files)] if isinstance(files, (str, os.PathLike)) else [str(f) for f in files]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing or not files:
            raise MissingFileError(f"training file(s) not found: {', '.join(missing) or '(none given)'}")
        return cls._train(lambda backend, trainer: backend.train(files, trainer),
                          vocab_size, lowercase, min_frequency, show_progress)

    @classmethod
    def train_from_iterator(cls, iterator: Iterable[str], vocab_size: int,
                            lowercase: bool = True, min_frequency: int = 2,
                            show_progress: bool = False) -> Tokenizer:
        """Learn a WordPiece vocabulary of at most `vocab_size` tokens from strings."""
        return cls._train(lambda backend, trainer: backend.train_from_iterator(iterator, trainer),
                          vocab_size, lowercase, min_frequency, show_progress)

    @classmethod
    def _train(cls, run, vocab_size, lowercase, min_frequency, show_progress) -> Tokenizer:
        backend = _build_backend(list(SPECIAL_TOKENS), lowercase)  # normalises as the result will
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress,
            special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##",
            limit_alphabet=1000)  # as Google's BERT vocabularies: rare characters become [UNK]
        run(backend, trainer)
        vocab = backend.get_vocab()
        return cls(_build_backend(sorted(vocab, key=vocab.get), lowercase), lowercase)

    # ---- vocabulary ----

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def _tokens(self) -> list[str]:
        vocab = self.get_vocab()
        tokens = sorted(vocab, key=vocab.get)
        if vocab[tokens[-1]] != len(tokens) - 1:
            raise BertkitError(f"vocabulary ids must run 0..{len(tokens) - 1} without gaps")
        return tokens

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the tokens in id order (each followed by a newline) and the lowercase flag."""
        digest = hashlib.sha256()
        for token in self._tokens():
            digest.update(token.encode("utf-8") + b"\n")
        digest.update(f"lowercase={self.lowercase}".encode())
        return digest.hexdigest()

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self.convert_ids_to_tokens([ids])[0]
        ids = [int(i) for i in ids]
        tokens = [self.backend.id_to_token(i) for i in ids]
        if None in tokens:
            bad_id = ids[tokens.index(None)]
            raise IndexError(f"id {bad_id} is outside the vocabulary of {self.vocab_size} tokens")
        return tokens

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Ids of tokens; a token outside the vocabulary maps to [UNK]."""
        if isinstance(tokens, str):
            return self.convert_tokens_to_ids([tokens])[0]
        ids = (self.backend.token_to_id(token) for token in tokens)
        return [self.unk_token_id if i is None else i for i in ids]

    # ---- encoding ----

    def tokenize(self, text: str) -> list[str]:
        return self.backend.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str) -> list[int]:
        """Word-piece ids of `text`, without [CLS]/[SEP]."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Word-piece ids of each text, without [CLS]/[SEP]; the backend runs them in parallel."""
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def build_inputs(self, ids_a: list[int], ids_b: list[int] | None = None) -> tuple[list[int], list[int]]:
        """`[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]` and its token types (0 up to the first [SEP], then 1)."""
        input_ids = [self.cls_token_id, *ids_a, self.sep_token_id]
        token_type_ids = [0] * len(input_ids)
        if ids_b is not None:
            input_ids += [*ids_b, self.sep_token_id]
            token_type_ids += [1] * (len(ids_b) + 1)
        return input_ids, token_type_ids

    def __call__(self, texts: str | list[str], text_pairs: str | list[str] | None = None, *,
                 max_length: int = 512, truncation: bool = True, padding: bool | str = "longest",
                 return_offsets: bool = False, return_tensors: str | None = "pt") -> dict:
        """Model inputs for a batch of texts (a single string is a batch of one).

        Returns `input_ids`, `token_type_ids` and `attention_mask`, each (batch, seq) torch.long;
        with `return_offsets`, also `offset_mapping` (batch, seq, 2): character spans into the
        text each token came from (text_pairs for the B part), (0, 0) for special and pad
        tokens; and `word_ids` (batch, seq): the index of the word in its text, -1 for special
        and pad tokens. Pairs are truncated longest-first. Padding is "longest", "max_length",
        or False / "do_not_pad", which returns ragged lists, as does return_tensors=None.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        inputs: list = texts
        if text_pairs is not None:
            text_pairs = [text_pairs] if isinstance(text_pairs, str) else list(text_pairs)
            if len(text_pairs) != len(texts):
                raise ValueError(
                    f"got {len(texts)} texts but {len(text_pairs)} text_pairs; they pair up one to one")
            inputs = list(zip(texts, text_pairs))
        if padding is True:
            padding = "longest"
        if padding not in ("longest", "max_length", False, "do_not_pad"):
            raise ValueError(f"padding must be 'longest', 'max_length' or False, not {padding!r}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or None, not {return_tensors!r}")

        # The backend's truncation is per-tokenizer state: set for this call only, so that
        # encode() never truncates. (Not safe to share one Tokenizer across threads.)
        if truncation:
            self.backend.enable_truncation(max_length, strategy="longest_first")
        try:
            encodings = self.backend.encode_batch(inputs, add_special_tokens=True)
        finally:
            self.backend.no_truncation()

        if padding in (False, "do_not_pad"):
            length = None
        else:
            length = max((len(encoding.ids) for encoding in encodings), default=0)
            if padding == "max_length":
                length = max(length, max_length)

        def pad(values: list, fill) -> list:
            return values if length is None else values + [fill] * (length - len(values))

        batch = {
            "input_ids": [pad(e.ids, self.pad_token_id) for e in encodings],
            "token_type_ids": [pad(e.type_ids, 0) for e in encodings],
            "attention_mask": [pad(e.attention_mask, 0) for e in encodings],
        }
        if return_offsets:
            batch["offset_mapping"] = [pad(list(e.offsets), (0, 0)) for e in encodings]
            batch["word_ids"] = [pad([-1 if w is None else w for w in e.word_ids], -1) for e in encodings]
        if length is None or return_tensors is None:
            return batch
        # reshape keeps (batch, seq) even for an empty batch, where torch.tensor([]) is 1-D.
        tensors = {name: torch.tensor(values, dtype=torch.long).reshape(len(encodings), length)
                   for name, values in batch.items() if name != "offset_mapping"}
        if return_offsets:
            tensors["offset_mapping"] = torch.tensor(
                batch["offset_mapping"], dtype=torch.long).reshape(len(encodings), length, 2)
        return tensors
