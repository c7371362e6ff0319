"""Fine-tuning tasks: reading labeled files into examples, and the table of tasks.

`TASKS` maps a task name to its `TaskSpec`: the kind of head it needs, the metrics it reports,
its reader and, for GLUE, its fixed label list. The readers:

    GLUE        the original GLUE-distribution TSV files (cola sst2 mrpc stsb qqp mnli qnli rte wnli):
                lines split on "\\t" with no CSV quoting (texts hold bare `"`), a UTF-8 BOM stripped,
                columns found by header name (CoLA's train/dev have no header: by position).
    classify    your own .csv / .tsv / .jsonl (.json is read as JSON Lines): a text column, an
    regress     optional second text column and a label column (a class name, or a number). With a
                label separator (multi-label classify), the label column holds several class names,
                `sports|politics`, or in JSON Lines a list of them; an empty one means no label.
    ner         CoNLL column files: token first, tag last; blank and -DOCSTART- lines end sentences.
    squad       the official SQuAD v1.1 / v2.0 JSON (data -> paragraphs -> qas).
    squad2
    multiple-choice  SWAG-style CSV (sent1, sent2, ending0..N, label) or JSONL (context, endings, label).
    seq2seq     .jsonl / .tsv / .csv with `source` and `target` fields (unlabeled input: `source` only).

Every example carries a `guid` of the form `file:line` (SQuAD: the question id), so any later
complaint about it (an unknown label, say) can point at the line. Reader errors are
`BertkitError`s naming the file and the line.

Left out on purpose: downloading data, caching parsed files (every reader here takes well under
a second on GLUE-sized files), and CSV dialect sniffing: the extension decides the format.
"""

from __future__ import annotations

import csv
import functools
import glob
import io
import json
import logging
import os
import re
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bertkit.errors import BertkitError, MissingFileError
from bertkit.files import json_object, read_text

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Examples


@dataclass
class Example:
    """One sentence (pair) to classify or score, or one sentence to tag."""

    text_a: str
    text_b: str | None = None
    label: str | float | list[str] | None = None  # class name, score, per-word tags (tagging: `words` set),
    # class names (multi-label), or None (unlabeled)
    guid: str = ""  # "file:line" of the (first) line it came from
    words: list[str] | None = None  # tagging only: the words that `label` tags one to one


@dataclass
class QAExample:
    """One SQuAD question about one context."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)  # (text, start character in context)
    is_impossible: bool = False  # SQuAD 2.0: no answer in the context


@dataclass
class ChoiceExample:
    """A context and the endings to choose from; `label` is the index of the right ending."""

    context: str
    endings: list[str]
    label: int | None = None
    guid: str = ""


@dataclass
class PairExample:
    """A source text and the target text to generate from it (None: unlabeled, generation input)."""

    source: str
    target: str | None = None
    guid: str = ""


# ----------------------------------------------------------------------------------------------
# Locations and labels


def _location(guid: str, path: str | None, word: int = 0) -> str:
    """Where an example came from, as "file: line n" when its guid is "file:line".

    `word` counts lines into a tagged sentence, whose words sit on consecutive lines.
    """
    file, _, line = guid.rpartition(":")
    if not (file and line.isdigit()):
        return f"{path}: example {guid!r}" if path else f"example {guid!r}"
    return f"{path or file}: line {int(line) + word}"


def check_labels(examples: Sequence[Example], label_list: Sequence[str], path: str | None = None,
                 known_from: str = "the training data") -> None:
    """Raise, naming the file, line and label, if an example has a label outside `label_list`.

    Use it on dev/test examples against the label list built from training data: a label the
    model never saw cannot be predicted, and would otherwise fail later as a bare KeyError.
    `path` defaults to the file named in each example's guid.
    """
    known = set(label_list)
    for example in examples:
        labels = example.label if isinstance(example.label, list) else [example.label]
        for index, label in enumerate(labels):
            if label is None or label in known:
                continue
            shown = ", ".join(label_list) if len(label_list) <= 20 else f"{len(label_list)} labels"
            word = index if example.words is not None else 0  # a tagged word is a line; a label set is one line
            raise BertkitError(
                f"{_location(example.guid, path, word)}: label {label!r} does not occur in {known_from}",
                hint=f"the known labels are: {shown}")


def make_label_list(task: str, train_examples: Sequence[Example]) -> list[str] | None:
    """The label list a model for `task` is trained with; None for regression.

    GLUE tasks use their fixed list (so label ids do not depend on which labels a file happens
    to hold). Otherwise the sorted set of training labels (multi-label: of every example's labels);
    for tagging "O" comes first and every B-X brings its I-X along, which
    encode_tagging(label_all_subtokens=True) may need.
    """
    from bertkit.kinds import KINDS

    spec = TASKS[task]
    if not KINDS[spec.kind].named_labels:  # scores, spans, choice indices, target texts
        return None
    if spec.labels is not None:
        return list(spec.labels)
    if spec.kind == "tagging":
        tags = {tag for example in train_examples for tag in example.label or ()}
        tags |= {"I-" + tag[2:] for tag in tags if tag.startswith("B-")}
        return ["O"] + sorted(tags - {"O"})
    return sorted({label for example in train_examples if example.label is not None
                   for label in (example.label if isinstance(example.label, list) else [example.label])})


# ----------------------------------------------------------------------------------------------
# GLUE


@dataclass(frozen=True)
class _GlueFormat:
    text_a: str | int  # header name, or column index for CoLA's headerless files
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None  # None: regression (STS-B)


_GLUE = {
    "cola": _GlueFormat(3, None, 1, ("0", "1")),  # source, label, author_mark, sentence
    "sst2": _GlueFormat("sentence", None, "label", ("0", "1")),
    "mrpc": _GlueFormat("#1 String", "#2 String", "Quality", ("0", "1")),
    "stsb": _GlueFormat("sentence1", "sentence2", "score", None),
    "qqp": _GlueFormat("question1", "question2", "is_duplicate", ("0", "1")),
    "mnli": _GlueFormat("sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral")),
    "qnli": _GlueFormat("question", "sentence", "label", ("entailment", "not_entailment")),
    "rte": _GlueFormat("sentence1", "sentence2", "label", ("entailment", "not_entailment")),
    "wnli": _GlueFormat("sentence1", "sentence2", "label", ("0", "1")),
}
_COLA_FIELDS = 4
_COLA_TEST_HEADER = ["index", "sentence"]  # CoLA's test.tsv, unlike train/dev, has a header

_TAB_HINT = ("GLUE files are split on tabs with no quoting; a tab inside a text, or a line broken "
             "in two, causes this: fix or remove that line")


def _tsv_lines(path: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty line; read_text has already dropped a BOM."""
    rows = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        line = line.removesuffix("\r")
        if line:
            rows.append((number, line.split("\t")))
    return rows


def _check_field_count(path: str, number: int, fields: list[str], expected: int) -> None:
    if len(fields) != expected:
        raise BertkitError(
            f"{path}: line {number}: expected {expected} tab-separated fields, found {len(fields)}",
            hint=_TAB_HINT)


def _column_index(path: str, header: list[str], name: str) -> int:
    if name not in header:
        raise BertkitError(f"{path}: line 1: the header has no column {reprlib.repr(name)}; found "
                           f"{reprlib.repr(header)}",  # (a shortened echo: a header can be a 10 MB line)
                           hint="is this the right file for the task?")
    return header.index(name)


def read_glue(task: str, path: str) -> list[Example]:
    """Examples of a GLUE task's train/dev/test TSV; test files (no label column) give label=None."""
    spec = _GLUE[task]
    rows = _tsv_lines(path)
    if not rows:
        raise BertkitError(f"{path}: file is empty", hint=f"expected a {task} TSV file")

    if isinstance(spec.text_a, int) and rows[0][1] != _COLA_TEST_HEADER:
        columns = (spec.text_a, spec.text_b, spec.label)
        n_fields = _COLA_FIELDS
    else:
        (_, header), rows = rows[0], rows[1:]
        text_a = "sentence" if isinstance(spec.text_a, int) else spec.text_a
        columns = (
            _column_index(path, header, text_a),
            None if spec.text_b is None else _column_index(path, header, spec.text_b),
            header.index(spec.label) if spec.label in header else None,  # absent in test files
        )
        n_fields = len(header)

    a, b, y = columns
    examples = []
    for number, fields in rows:
        _check_field_count(path, number, fields, n_fields)
        label: str | float | None = None if y is None else fields[y]
        if label is not None and spec.labels is None:
            label = _parse_score(path, number, label)
        examples.append(Example(text_a=fields[a], text_b=None if b is None else fields[b],
                                label=label, guid=f"{path}:{number}"))
    if spec.labels is not None:
        check_labels(examples, spec.labels, path, known_from=f"the {task} label set")
    return examples


def _parse_score(path: str, number: int, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BertkitError(f"{path}: line {number}: label {value!r} is not a number",
                           hint="a regression label must be a number such as 3.8") from None


# ----------------------------------------------------------------------------------------------
# Your own files: CSV, TSV, JSON Lines


def _records(path: str) -> list[tuple[int, dict]]:
    """(line number, {column: value}) of each record of a .csv, .tsv, .jsonl or .json file."""
    extension = os.path.splitext(path)[1].lower()
    if extension in (".jsonl", ".json"):
        return _json_lines(path)
    if extension == ".csv":
        reader_options = {"strict": True}
    elif extension == ".tsv":
        reader_options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    else:
        raise BertkitError(f"{path}: unknown file type {extension!r}",
                           hint="use .csv, .tsv (tabs, no quoting) or .jsonl / .json (one JSON object per line)")
    kind = "comma" if extension == ".csv" else "tab"
    reader = csv.reader(io.StringIO(read_text(path), newline=""), **reader_options)
    records, header, last_line = [], None, 0
    try:
        for row in reader:
            number, last_line = last_line + 1, reader.line_num  # a quoted CSV field may span lines
            if not row:
                continue
            if header is None:
                header = row
                continue
            if len(row) != len(header):
                raise BertkitError(
                    f"{path}: line {number}: expected {len(header)} {kind}-separated fields, found {len(row)}",
                    hint=f"the header line has {len(header)} columns: {header}")
            records.append((number, dict(zip(header, row))))
    except csv.Error as err:
        raise BertkitError(f"{path}: line {reader.line_num}: malformed CSV: {err}",
                           hint="check the quoting on that line") from None
    if header is None:
        raise BertkitError(f"{path}: file is empty", hint="the first line must name the columns")
    return records


def _json_lines(path: str) -> list[tuple[int, dict]]:
    records = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        records.append((number, json_object(path, number, line)))
    if not records:
        raise BertkitError(f"{path}: file is empty", hint="write one JSON object per line")
    return records


def _field(path: str, number: int, record: dict, column: str, kind: type = str):
    if column not in record:
        raise BertkitError(f"{path}: line {number}: no {column!r} field; found {sorted(record)}",
                           hint="name the column with the task's column options")
    value = record[column]
    if kind is str and not isinstance(value, str):
        raise BertkitError(f"{path}: line {number}: field {column!r} is {value!r}, expected a string")
    return value


def _label_set(path: str, number: int, raw, separator: str) -> list[str]:
    """The class names of a multi-label field: a string split on `separator`, or a JSON list; no repeats."""
    if isinstance(raw, list):
        if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in raw):
            raise BertkitError(f"{path}: line {number}: label {reprlib.repr(raw)} is not a list of class names",
                               hint='write e.g. "label": ["sports", "politics"]')
        labels = [str(x) for x in raw]
    else:
        labels = [part.strip() for part in str(raw).split(separator)]
    return list(dict.fromkeys(label for label in labels if label))  # "" (or "a|") holds no (empty) label


def read_table(path: str, text_column: str = "text", text_pair_column: str | None = None,
               label_column: str = "label", regression: bool = False, labeled: bool = True,
               label_separator: str | None = None) -> list[Example]:
    """Examples from your own .csv / .tsv / .jsonl file; labeled=False reads files without labels.

    Class labels are kept as strings (JSON numbers too: 1 -> "1"); regression labels as floats. With a
    label_separator (multi-label) each label is the list of class names in the field, split on it.
    """
    records = _records(path)
    if records and not path.lower().endswith((".jsonl", ".json")):  # a table: its header names the columns
        header = list(records[0][1])
        needed = [("--text-column", text_column), ("--text-pair-column", text_pair_column)]
        needed += [("--label-column", label_column)] if labeled else []
        for option, column in needed:
            if column is not None and column not in header:
                raise BertkitError(f"{path}: the header has no {column!r} column; its columns are "
                                   f"{reprlib.repr(header)}",  # (shortened: a header can be a 10 MB line)
                                   hint=f"name the column with {option}")
    examples = []
    for number, record in records:
        label = None
        if labeled:
            raw = _field(path, number, record, label_column, kind=object)
            if label_separator is not None:
                label = _label_set(path, number, raw, label_separator)
            elif isinstance(raw, list):
                raise BertkitError(f"{path}: line {number}: label {reprlib.repr(raw)} is a list",
                                   hint="for several labels per example (multi-label) pass --label-separator")
            else:
                label = _parse_score(path, number, raw) if regression else str(raw)
        examples.append(Example(
            text_a=_field(path, number, record, text_column),
            text_b=None if text_pair_column is None else _field(path, number, record, text_pair_column),
            label=label, guid=f"{path}:{number}"))
    return examples


# ----------------------------------------------------------------------------------------------
# CoNLL named entities

_TAG = re.compile(r"O|[BIES]-.+")  # IOB1, IOB2 and IOBES


def read_conll(path: str, labeled: bool = True) -> list[Example]:
    """Sentences of a CoNLL column file: token in the first column, tag in the last.

    Each example has `words`, `label` (the tags) and `text_a` (the words joined by spaces).
    Unlabeled input (labeled=False, for prediction) is one token per line; `label` is None.
    """
    examples = []
    words: list[str] = []
    tags: list[str] = []
    first_line = 0

    def end_sentence():
        if words:
            examples.append(Example(text_a=" ".join(words), label=list(tags) if labeled else None, words=list(words),
                                    guid=f"{path}:{first_line}"))
        words.clear()
        tags.clear()

    for number, line in enumerate(read_text(path).split("\n"), start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            end_sentence()
            continue
        if not labeled:
            if not words:
                first_line = number
            words.append(fields[0])
            continue
        if len(fields) < 2:
            raise BertkitError(f"{path}: line {number}: expected a token and a tag, found {line.strip()!r}",
                               hint="each line holds a token first and its tag last, separated by spaces")
        tag = fields[-1]
        if not _TAG.fullmatch(tag):
            raise BertkitError(f"{path}: line {number}: tag {tag!r} is not in the IOB or IOBES scheme",
                               hint="tags must be O or B-TYPE / I-TYPE (or E-TYPE / S-TYPE for IOBES)")
        if not words:
            first_line = number
        words.append(fields[0])
        tags.append(tag)
    end_sentence()
    if not examples:
        raise BertkitError(f"{path}: no sentences found", hint="expected CoNLL lines: token ... tag")
    return examples


# ----------------------------------------------------------------------------------------------
# SQuAD


def read_squad(path: str, version_2: bool = False, training: bool = True,
               labeled: bool = True) -> tuple[list[QAExample], int]:
    """Questions of an official SQuAD JSON file, and how many training questions were skipped.

    With training=True a question whose answer text is not found at its answer_start in the
    context is logged and skipped (its answer could not be located in tokens): the count is
    returned. Evaluation files keep every question, since only the answer texts are scored.
    labeled=False (input to predict) accepts questions without answers.
    """
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise BertkitError(f"{path}: line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise BertkitError(f"{path}: no top-level \"data\" list",
                           hint="expected the official SQuAD format: {\"data\": [{\"paragraphs\": [...]}]}")
    try:
        return _squad_examples(path, data["data"], version_2, training, labeled)
    except BertkitError:
        raise
    except (KeyError, TypeError, ValueError) as err:  # a missing field, a list where a dict belongs, ...
        raise BertkitError(f"{path}: not in the SQuAD format: {type(err).__name__}: {err}",
                           hint="each paragraph needs context and qas; each question an id, "
                                "a question and answers") from None


def _squad_examples(path: str, articles: list, version_2: bool, training: bool,
                    labeled: bool = True) -> tuple[list[QAExample], int]:
    examples, skipped = [], 0
    for article in articles:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                is_impossible = bool(qa.get("is_impossible", False))
                answers = [(a["text"], int(a["answer_start"])) for a in qa.get("answers", [])]
                if labeled and not version_2 and (is_impossible or not answers):
                    raise BertkitError(
                        f"{path}: question {qa['id']} has no answer, which SQuAD 1.1 does not allow",
                        hint="for SQuAD 2.0 files use the task squad2")
                if training and not is_impossible:
                    if not answers:
                        raise BertkitError(f"{path}: question {qa['id']} has no answers and no is_impossible flag")
                    bad = [(text, start) for text, start in answers
                           if context[start:start + len(text)] != text]
                    if bad:
                        log.warning("%s: question %s: answer %r is not found at character %d of the "
                                    "context; skipped", path, qa["id"], *bad[0])
                        skipped += 1
                        continue
                examples.append(QAExample(id=qa["id"], question=qa["question"], context=context,
                                          answers=[] if is_impossible else answers,
                                          is_impossible=is_impossible))
    if skipped:
        log.warning("%s: skipped %d of %d questions whose answer does not match its answer_start",
                    path, skipped, skipped + len(examples))
    return examples, skipped


def _read_squad_examples(path: str, version_2: bool, training: bool = True) -> list[QAExample]:
    return read_squad(path, version_2=version_2, training=training)[0]


# ----------------------------------------------------------------------------------------------
# Multiple choice


def read_choices(path: str, labeled: bool = True) -> list[ChoiceExample]:
    """SWAG-style .csv (context = sent1, ending i = sent2 + " " + ending<i>) or .jsonl (context, endings, label)."""
    examples = []
    for number, record in _records(path):
        if "endings" in record:
            context = _field(path, number, record, "context")
            endings = record["endings"]
            if not (isinstance(endings, list) and all(isinstance(e, str) for e in endings)):
                raise BertkitError(f"{path}: line {number}: \"endings\" must be a list of strings")
        else:
            context = _field(path, number, record, "sent1")
            start = _field(path, number, record, "sent2")
            ending_columns = sorted((c for c in record if re.fullmatch(r"ending\d+", c)), key=lambda c: int(c[6:]))
            if not ending_columns:
                raise BertkitError(f"{path}: line {number}: no ending0, ending1, ... columns",
                                   hint="expected SWAG columns sent1, sent2, ending0..ending3, label")
            endings = [f"{start} {record[c]}" for c in ending_columns]
        label = None
        if labeled:
            raw = _field(path, number, record, "label", kind=object)
            label = int(raw) if re.fullmatch(r"\d+", str(raw)) else None
            if label is None or label >= len(endings):
                raise BertkitError(f"{path}: line {number}: label {raw!r} is not an ending index 0..{len(endings) - 1}")
        if examples and len(endings) != len(examples[0].endings):
            raise BertkitError(
                f"{path}: line {number}: {len(endings)} endings, but the first example has {len(examples[0].endings)}",
                hint="every example needs the same number of endings")
        examples.append(ChoiceExample(context=context, endings=endings, label=label, guid=f"{path}:{number}"))
    return examples


def read_pairs(path: str, labeled: bool = True) -> list[PairExample]:
    """Source/target pairs of a .jsonl/.json, .tsv or .csv file with `source` and `target` fields; a source
    must hold some text (an empty one has nothing to generate from)."""
    examples = []
    for number, record in _records(path):
        source = _field(path, number, record, "source")
        if not source.strip():
            raise BertkitError(f"{path}: line {number}: the source is empty",
                               hint="every line needs some source text to generate from; remove the line")
        target = _field(path, number, record, "target") if labeled else None
        examples.append(PairExample(source, target, guid=f"{path}:{number}"))
    return examples


def reads_pairs(task: str | None, text_pair_column: str | None = None) -> bool:
    """Whether a task's examples are text pairs (RTE's two sentences, a classify file's --text-pair-column)."""
    return bool(text_pair_column) or (task in _GLUE and _GLUE[task].text_b is not None)


# ----------------------------------------------------------------------------------------------
# The task table


@dataclass(frozen=True)
class TaskSpec:
    kind: str  # a key of kinds.KINDS: "classification", "regression", "tagging", "span", "seq2seq", ...
    metric: str  # the main metric: the headline number and what model selection maximises
    metrics: tuple[str, ...]  # every metric reported
    read: Callable[..., list]  # read(path, **options) -> examples
    labels: tuple[str, ...] | None = None  # a fixed label list (GLUE); else learned from training data


def _glue_spec(task: str, metric: str, metrics: tuple[str, ...]) -> TaskSpec:
    labels = _GLUE[task].labels
    return TaskSpec("regression" if labels is None else "classification", metric, metrics,
                    functools.partial(read_glue, task), labels)


TASKS: dict[str, TaskSpec] = {
    "cola": _glue_spec("cola", "matthews_corr", ("matthews_corr",)),
    "sst2": _glue_spec("sst2", "accuracy", ("accuracy",)),
    "mrpc": _glue_spec("mrpc", "f1", ("accuracy", "f1")),
    "stsb": _glue_spec("stsb", "spearmanr", ("pearson", "spearmanr")),
    "qqp": _glue_spec("qqp", "f1", ("accuracy", "f1")),
    "mnli": _glue_spec("mnli", "accuracy", ("accuracy",)),
    "qnli": _glue_spec("qnli", "accuracy", ("accuracy",)),
    "rte": _glue_spec("rte", "accuracy", ("accuracy",)),
    "wnli": _glue_spec("wnli", "accuracy", ("accuracy",)),
    "classify": TaskSpec("classification", "accuracy", ("accuracy",), read_table),
    "regress": TaskSpec("regression", "spearmanr", ("pearson", "spearmanr"),
                        functools.partial(read_table, regression=True)),
    "ner": TaskSpec("tagging", "f1", ("precision", "recall", "f1"), read_conll),
    "squad": TaskSpec("span", "f1", ("exact_match", "f1"),
                      functools.partial(_read_squad_examples, version_2=False)),
    "squad2": TaskSpec("span", "f1", ("exact_match", "f1"),
                       functools.partial(_read_squad_examples, version_2=True)),
    "multiple-choice": TaskSpec("choice", "accuracy", ("accuracy",), read_choices),
    # teacher-forced next-token accuracy on dev (cheap, every epoch); generation is `bertkit generate`'s
    "seq2seq": TaskSpec("seq2seq", "token_accuracy", ("token_accuracy", "perplexity"), read_pairs),
}
# classify with a label separator: any number of labels per example, each a yes/no of its own.
# Micro-F1 (over every (example, label) decision) leads, as it weighs frequent labels by their frequency;
# macro-F1 shows the rare labels, subset accuracy the share of examples with exactly the right label set.
MULTI_LABEL = TaskSpec("multi_label", "micro_f1", ("micro_f1", "macro_f1", "subset_accuracy"), read_table)


def task_spec(task: str, label_separator: str | None = None) -> TaskSpec:
    """TASKS[task], or MULTI_LABEL for classify with a label separator (the switch to multi-label)."""
    if label_separator is not None:
        if task != "classify":
            raise BertkitError(f"--label-separator is for --task classify, not {task}",
                               hint="drop --label-separator, or use --task classify for multi-label data")
        if not label_separator:
            raise BertkitError("--label-separator is empty", hint="e.g. --label-separator '|' for sports|politics")
        return MULTI_LABEL
    if task not in TASKS:
        raise BertkitError(f"unknown task {task!r}", hint=f"choose one of: {', '.join(TASKS)}")
    return TASKS[task]


# ----------------------------------------------------------------------------------------------
# Finding the files in a data directory

_TABLE_EXTENSIONS = ("csv", "tsv", "jsonl", "json")


def _file_names(task: str) -> dict[str, list[str]]:
    """For each split, the file names (glob patterns) looked for, in order of preference."""
    if task == "mnli":
        return {"train": ["train.tsv"], "dev": ["dev_matched.tsv"], "dev_mismatched": ["dev_mismatched.tsv"],
                "test": ["test_matched.tsv"], "test_mismatched": ["test_mismatched.tsv"]}
    if task in _GLUE:
        return {"train": ["train.tsv"], "dev": ["dev.tsv"], "test": ["test.tsv"]}
    if task == "ner":
        return {"train": ["train.txt"], "dev": ["dev.txt", "valid.txt"], "test": ["test.txt"]}
    if task in ("squad", "squad2"):
        return {"train": ["train*.json"], "dev": ["dev*.json"], "test": ["test*.json"]}
    return {split: [f"{stem}.{ext}" for stem in stems for ext in _TABLE_EXTENSIONS]
            for split, stems in (("train", ["train"]), ("dev", ["dev", "valid", "validation", "val"]),
                                 ("test", ["test"]))}


def find_task_files(task: str, data_dir: str) -> dict[str, str | None]:
    """The train/dev/test files of `task` in `data_dir` (test and mnli's *_mismatched may be None)."""
    if task not in TASKS:
        raise BertkitError(f"unknown task {task!r}", hint=f"choose one of: {', '.join(TASKS)}")
    if not os.path.isdir(data_dir):
        raise MissingFileError(f"data directory {data_dir} does not exist")
    found: dict[str, str | None] = {}
    for split, patterns in _file_names(task).items():
        for pattern in patterns:
            matches = sorted(glob.glob(os.path.join(glob.escape(data_dir), pattern)))
            if len(matches) > 1:
                raise BertkitError(f"{data_dir}: several {split} files for {task}: {', '.join(matches)}",
                                   hint="keep one, or name the files explicitly")
            if matches:
                found[split] = matches[0]
                break
        else:
            if split in ("train", "dev"):
                raise MissingFileError(
                    f"{data_dir}: no {split} file for task {task}; looked for {', '.join(patterns)}",
                    hint="rename your file to one of these, or point to the directory that holds them")
            found[split] = None
    return found
