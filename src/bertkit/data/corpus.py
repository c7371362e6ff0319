"""Reading raw pre-training text into documents, each a list of sentences.

Three input formats, all streamed line by line so that a corpus never has to fit in memory:

  text           documents separated by blank lines; one sentence per line (the format of the
                 original BERT's create_pretraining_data.py) or whole paragraphs per line.
  wikiextractor  WikiExtractor's `<doc id=.. url=.. title=..>` ... `</doc>` blocks; the first line
                 of each block repeats the title and is dropped.
  jsonl          one JSON object per line whose `text` field holds the document, paragraphs
                 separated by newlines (WikiExtractor --json, most web-crawl dumps).

A line that may hold several sentences is split with pysbd (a rule-based segmenter that knows
abbreviations such as "Mr." and "U.S."); lines that are already single sentences skip it, since
pysbd costs milliseconds per paragraph.

Reading is split in two so that `bertkit prepare` can run the slow sentence splitting in its
worker processes: `iter_paragraphs` reads the lines of each document, `split_sentences` turns
them into sentences, and `iter_documents` does both.

Left out on purpose: other languages' sentence rules, and any cleaning beyond whitespace
(markup removal is WikiExtractor's job).
"""

from __future__ import annotations

import functools
import glob
import os
import re
from collections.abc import Iterator

from bertkit.errors import BertkitError
from bertkit.files import json_object

FORMATS = ("text", "wikiextractor", "jsonl")

# A sentence-ending mark followed by whitespace and more text: the line may hold a second sentence.
_INNER_BOUNDARY = re.compile(r"[.!?][\"'”’)\]]*\s+\S")


@functools.lru_cache(maxsize=1)
def _segmenter():
    import pysbd  # imported here: building its rules takes a moment and most commands never split text

    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(lines: list[str]) -> list[str]:
    """The sentences of a document's lines: a line with no inner sentence boundary is one sentence."""
    sentences = []
    for line in lines:
        if _INNER_BOUNDARY.search(line):
            sentences.extend(s.strip() for s in _segmenter().segment(line))
        else:
            sentences.append(line)
    return [s for s in sentences if s]


def iter_documents(path: str, fmt: str, skip_bad_lines: bool = False,
                   stats: dict | None = None) -> Iterator[list[str]]:
    """Each document of the file at `path` as a list of sentences (non-empty, stripped).

    `stats`, if given, is a dict this adds to: "bad_lines" (lines skipped for invalid UTF-8
    when skip_bad_lines) and "bytes_read".
    """
    for lines in iter_paragraphs(path, fmt, skip_bad_lines, stats):
        sentences = split_sentences(lines)
        if sentences:
            yield sentences


def iter_paragraphs(path: str, fmt: str, skip_bad_lines: bool = False,
                    stats: dict | None = None) -> Iterator[list[str]]:
    """Each non-empty document of the file as its non-empty stripped lines, not yet split into sentences."""
    if fmt not in FORMATS:
        raise BertkitError(f"unknown corpus format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    stats = {} if stats is None else stats
    stats.setdefault("bad_lines", 0)
    stats.setdefault("bytes_read", 0)
    lines = _read_lines(path, skip_bad_lines, stats)
    reader = {"text": _text_documents, "wikiextractor": _wikiextractor_documents, "jsonl": _jsonl_documents}[fmt]
    for document in reader(path, lines):
        if document:
            yield document


def _read_lines(path: str, skip_bad_lines: bool, stats: dict) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of a UTF-8 file, read one line at a time."""
    if not os.path.isfile(path):
        raise BertkitError(f"{path}: file not found", hint="check the path")
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            stats["bytes_read"] += len(raw)
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw, offset = raw[3:], 3  # a byte-order mark is not text
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if not skip_bad_lines:
                    raise BertkitError(
                        f"{path}: line {number}: invalid UTF-8 at byte offset {offset + e.start}",
                        hint="convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8), "
                             "or pass --skip-bad-lines to drop such lines") from None
                stats["bad_lines"] += 1
                line = None  # dropped, not made blank: a blank line would end the document
            offset += len(raw)
            if line is not None:
                yield number, line.strip()


def _text_documents(path: str, lines) -> Iterator[list[str]]:
    document = []
    for _, line in lines:
        if line:
            document.append(line)
        elif document:
            yield document
            document = []
    yield document


def _wikiextractor_documents(path: str, lines) -> Iterator[list[str]]:
    document, inside, title_pending = [], False, False
    for number, line in lines:
        if line.startswith("<doc ") or line == "<doc>":
            if inside:  # an unclosed block: keep what it held
                yield document
            document, inside, title_pending = [], True, True
        elif line == "</doc>":
            yield document
            document, inside = [], False
        elif not line:
            continue
        elif not inside:
            raise BertkitError(f"{path}: line {number}: text outside a <doc ...> ... </doc> block",
                               hint="is this WikiExtractor output? For plain text use --format text")
        elif title_pending:
            title_pending = False  # WikiExtractor repeats the title as the block's first line
        else:
            document.append(line)
    if inside:
        yield document


def _jsonl_documents(path: str, lines) -> Iterator[list[str]]:
    for number, line in lines:
        if not line:
            continue
        record = json_object(path, number, line)
        if not isinstance(record.get("text"), str):
            raise BertkitError(f"{path}: line {number}: no string field \"text\"",
                               hint="each line must be one JSON object such as {\"text\": \"...\"}")
        yield [p.strip() for p in record["text"].split("\n") if p.strip()]


def expand_inputs(patterns: list[str]) -> list[str]:
    """The files named by paths, glob patterns and directories (searched recursively), sorted within each."""
    files: list[str] = []
    seen: set[str] = set()
    for pattern in patterns:
        matches = [pattern] if os.path.exists(pattern) else sorted(glob.glob(pattern, recursive=True))
        found = []
        for match in matches:
            if os.path.isdir(match):  # hidden files (.DS_Store, editor swap files) are not corpus text
                for root, dirs, names in os.walk(match):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    found += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
            elif os.path.isfile(match):
                found.append(match)
        if not found:
            raise BertkitError(f"input {pattern!r} matches no files", hint="check the path or glob pattern")
        for f in found:  # a file named twice (a path and a glob that also matches it) is read once
            if f not in seen:
                seen.add(f)
                files.append(f)
    return files


def train_tokenizer(files: list[str], vocab_size: int, fmt: str = "text", lowercase: bool = True,
                    skip_bad_lines: bool = False, show_progress: bool = False):
    """Learn a WordPiece vocabulary from corpus files, read through the same readers as `prepare`
    (formats, strict UTF-8 with positions). Returns a `Tokenizer`."""
    from bertkit.tokenizer import Tokenizer

    stats: dict = {}

    def lines():
        for path in files:
            for document in iter_paragraphs(path, fmt, skip_bad_lines, stats):
                yield from document

    tokenizer = Tokenizer.train_from_iterator(lines(), vocab_size=vocab_size, lowercase=lowercase,
                                              show_progress=show_progress)
    if tokenizer.vocab_size <= 5:  # the special tokens alone
        raise BertkitError(f"{', '.join(files)}: no text to learn a vocabulary from", hint="check the input files")
    return tokenizer
