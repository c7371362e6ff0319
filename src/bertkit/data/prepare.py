"""`bertkit prepare`: tokenize a raw corpus once into flat binary files that pre-training memory-maps.

The output directory:

    manifest.json        {"kind": "bertkit-prepared-data", "version": 1, "tokenizer_fingerprint",
                          "vocab_size", "dtype", "lowercase", "sources": [{"path", "bytes"}],
                          "splits": {"train": {"documents", "sentences", "tokens"}, "validation": {...}},
                          "bad_lines", "created_by"}
    tokenizer/           the tokenizer used (save_pretrained), so that pre-training loads the same one
    train/               and validation/, each holding
        tokens.bin           every token id of the split, sentence after sentence, no [CLS]/[SEP];
                             "dtype" is uint16 when the vocabulary fits in it, else uint32
        sentence_starts.bin  int64 (n_sentences + 1,): token offset where each sentence starts, then the end
        document_starts.bin  int64 (n_documents + 1,): sentence index where each document starts, then the end

Read them back with `np.memmap` (see pretraining.PreparedCorpus). Sentences that tokenize to
nothing are dropped, and so are documents left with no sentences, so every sentence holds at
least one token.

The corpus is streamed: documents are read in batches, split into sentences and tokenized (in
worker processes with workers > 1) and appended to the files, so memory stays bounded by a few
batches whatever the corpus size. Which split a document goes to depends only on (seed, its
index), so the output is byte-identical for any number of workers. Everything is written to
`<out>.tmp-<pid>` and renamed to `<out>` at the end: a failed run leaves nothing at `<out>`.

Left out on purpose: deduplication and shuffling of documents (pre-training shuffles samples),
and building NSP/MLM samples, which happens on the fly in pretraining.py so that each epoch
gets fresh pairs and masks.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import multiprocessing
import multiprocessing.pool
import os
import shutil
import signal

import numpy as np
from tqdm import tqdm

from bertkit import __version__
from bertkit.data.corpus import FORMATS, expand_inputs, iter_paragraphs, split_sentences
from bertkit.errors import BertkitError
from bertkit.files import atomic_write_json, check_output_dir, read_text
from bertkit.tokenizer import Tokenizer

KIND, VERSION, MANIFEST = "bertkit-prepared-data", 1, "manifest.json"
SPLITS = ("train", "validation")
DOCUMENTS_PER_BATCH = 256  # large enough for encode_batch to use its threads, small enough to stream


def prepare(inputs: list[str], tokenizer_dir: str, out_dir: str, fmt: str = "text", workers: int = 1,
            validation_fraction: float = 0.01, seed: int = 0, skip_bad_lines: bool = False,
            show_progress: bool = True) -> dict:
    """Tokenize the files named by `inputs` into `out_dir` (layout above); returns the manifest."""
    out_dir = os.path.normpath(out_dir)  # "out/" would otherwise put the temporary directory inside it
    check_output_dir(out_dir)
    if fmt not in FORMATS:
        raise BertkitError(f"unknown --format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    if not 0 <= validation_fraction < 1:
        raise BertkitError(f"--validation-fraction {validation_fraction} is outside [0, 1)",
                           hint="e.g. 0.01 keeps 1% of the documents for validation")
    if workers < 1:
        raise BertkitError(f"--workers {workers}: must be at least 1")
    files = expand_inputs(inputs)
    tokenizer = _load_tokenizer(tokenizer_dir)
    dtype = "uint16" if tokenizer.vocab_size <= 65535 else "uint32"

    tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)  # left by an earlier crash of a process with our pid
    os.makedirs(tmp_dir)
    try:
        stats = {"bad_lines": 0, "bytes_read": 0}
        writers = {split: _SplitWriter(os.path.join(tmp_dir, split), dtype) for split in SPLITS}
        batches = _batches(files, fmt, skip_bad_lines, stats)
        with tqdm(total=sum(os.path.getsize(f) for f in files), unit="B", unit_scale=True,
                  desc="prepare", disable=not show_progress) as progress:
            encoded = _encode_batches(batches, tokenizer, tokenizer_dir, workers)
            documents = _documents(encoded, lambda: progress.update(stats["bytes_read"] - progress.n))
            _assign_splits(documents, writers, validation_fraction, seed)
        counts = {split: writer.close() for split, writer in writers.items()}
        if not sum(c["documents"] for c in counts.values()):
            raise BertkitError(f"no documents found in {', '.join(inputs)}",
                               hint=f"the inputs hold no text once read as --format {fmt}")
        tokenizer.save_pretrained(os.path.join(tmp_dir, "tokenizer"))
        manifest = {
            "kind": KIND, "version": VERSION,
            "tokenizer_fingerprint": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size,
            "dtype": dtype, "lowercase": tokenizer.lowercase,
            "sources": [{"path": os.path.abspath(f), "bytes": os.path.getsize(f)} for f in files],
            "splits": counts, "bad_lines": stats["bad_lines"], "created_by": f"bertkit {__version__}",
        }
        atomic_write_json(os.path.join(tmp_dir, MANIFEST), manifest)
        try:
            os.rename(tmp_dir, out_dir)  # replaces an empty directory; fails on a non-empty one
        except OSError as e:
            raise BertkitError(f"cannot move the result to --out {out_dir}: {e.strerror}",
                               hint="choose a new --out or delete it") from None
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return manifest


def _load_tokenizer(directory: str) -> Tokenizer:
    try:
        return Tokenizer.from_pretrained(directory)
    except BertkitError:
        raise
    except (OSError, ValueError) as e:
        raise BertkitError(f"--tokenizer {directory}: {e}",
                           hint="give a directory with tokenizer.json or vocab.txt") from None


# ---- reading and tokenizing ----

def _batches(files, fmt, skip_bad_lines, stats):
    """Lists of DOCUMENTS_PER_BATCH documents (each its lines), read in order from all files."""
    documents = itertools.chain.from_iterable(iter_paragraphs(f, fmt, skip_bad_lines, stats) for f in files)
    while batch := list(itertools.islice(documents, DOCUMENTS_PER_BATCH)):
        yield batch


_tokenizer: Tokenizer | None = None  # the tokenizer _encode uses: the parent's, or a worker's own copy


_WORKER_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _start_pool(workers: int, tokenizer_dir: str) -> multiprocessing.pool.Pool:
    """A pool of `workers` processes, each with its own tokenizer, that SIGTERM ends at any moment.

    A forked worker inherits the parent's Python signal handlers (the CLI's raises Interrupted; a run's records
    the signal and carries on). A SIGTERM from the pool's terminate() that reached a worker before _init_worker
    reset them was swallowed, and the pool then waited for that worker for ever (seen once in the tests: a
    bad input ended prepare while its workers were starting). So the signals stay blocked from the fork until
    each worker has put the defaults back (the mask is inherited; a signal sent meanwhile waits, then kills).
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)
    try:
        return multiprocessing.Pool(workers, initializer=_init_worker, initargs=(tokenizer_dir,))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _init_worker(tokenizer_dir: str) -> None:
    global _tokenizer
    # Workers end as the default says; Ctrl-C is the parent's to handle (it terminates the pool).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)  # blocked by _start_pool; one sent meanwhile lands now
    # The parent already runs one process per worker; threads inside each would only oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _tokenizer = Tokenizer.from_pretrained(tokenizer_dir)


def _encode(documents: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split documents into sentences and tokenize them.

    Returns (token ids (n_tokens,), tokens per sentence (n_sentences,), sentences per document
    (n_documents,)), with empty sentences dropped; a document can be left with 0 sentences.
    """
    documents = [split_sentences(lines) for lines in documents]
    ids = _tokenizer.encode_batch([s for sentences in documents for s in sentences])
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    document_of = np.repeat(np.arange(len(documents)), [len(sentences) for sentences in documents])
    kept = lengths > 0
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.uint32, count=int(lengths.sum()))
    return tokens, lengths[kept], np.bincount(document_of[kept], minlength=len(documents))


def _encode_batches(batches, tokenizer: Tokenizer, tokenizer_dir: str, workers: int):
    """_encode of each batch, in order; with workers > 1 in a process pool."""
    global _tokenizer
    if workers == 1:
        _tokenizer = tokenizer
        yield from map(_encode, batches)
        return
    with _start_pool(workers, tokenizer_dir) as pool:
        # apply_async with a bounded queue rather than imap: imap reads its whole input ahead,
        # which would hold the corpus in memory. Taking results in submission order keeps the output
        # identical to workers=1.
        pending = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(_encode, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _documents(encoded, on_batch):
    """(token ids, tokens per sentence) of each non-empty document of the encoded batches."""
    for tokens, lengths, sentence_counts in encoded:
        token_ends = np.concatenate([[0], np.cumsum(lengths)])
        sentence_ends = np.concatenate([[0], np.cumsum(sentence_counts)])
        for first, end in zip(sentence_ends[:-1], sentence_ends[1:]):
            if end > first:
                yield tokens[token_ends[first]:token_ends[end]], lengths[first:end]
        on_batch()


# ---- writing ----

def _in_validation(seed: int, index: int, fraction: float) -> bool:
    """A coin of probability `fraction` that depends only on (seed, index)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2**64


# A held-out number needs more than a document or two (and NSP evaluation needs two): however small the
# fraction, at least this many documents are held out, but never more than a tenth of the corpus.
MIN_VALIDATION_DOCUMENTS = 10


def _assign_splits(documents, writers: dict, fraction: float, seed: int) -> None:
    # The latest MIN_VALIDATION_DOCUMENTS documents are held back until more arrive: when the corpus ends,
    # they top the validation split up to min(MIN_VALIDATION_DOCUMENTS, a tenth of the corpus), and to at
    # least one document, so any fraction > 0 gives a usable validation set.
    held: collections.deque = collections.deque()
    for index, document in enumerate(documents):
        held.append((index, document))
        if len(held) > MIN_VALIDATION_DOCUMENTS:
            i, doc = held.popleft()
            writers["validation" if _in_validation(seed, i, fraction) else "train"].add(*doc)
    total = writers["train"].documents + writers["validation"].documents + len(held)
    wanted = max(1, min(MIN_VALIDATION_DOCUMENTS, total // 10)) if fraction > 0 else 0
    while held:
        i, doc = held.popleft()
        slots = len(held) + 1  # this document and those after it
        need_train = int(writers["train"].documents == 0)
        need_validation = wanted - writers["validation"].documents
        if need_train and slots == 1:
            split = "train"  # training needs a document of its own before validation does
        elif need_validation > 0 and need_validation >= slots - need_train:
            split = "validation"
        else:
            split = "validation" if _in_validation(seed, i, fraction) else "train"
        writers[split].add(*doc)


class _SplitWriter:
    """Appends documents to one split's tokens.bin, sentence_starts.bin and document_starts.bin."""

    def __init__(self, directory: str, dtype: str):
        os.makedirs(directory)
        self.dtype = dtype
        self.files = {name: open(os.path.join(directory, name + ".bin"), "wb")
                      for name in ("tokens", "sentence_starts", "document_starts")}
        self.tokens = self.sentences = self.documents = 0
        self.files["sentence_starts"].write(np.int64(0).tobytes())
        self.files["document_starts"].write(np.int64(0).tobytes())

    def add(self, tokens: np.ndarray, sentence_lengths: np.ndarray) -> None:
        self.files["tokens"].write(tokens.astype(self.dtype).tobytes())
        self.files["sentence_starts"].write((self.tokens + np.cumsum(sentence_lengths)).astype(np.int64).tobytes())
        self.tokens += len(tokens)
        self.sentences += len(sentence_lengths)
        self.documents += 1
        self.files["document_starts"].write(np.int64(self.sentences).tobytes())

    def close(self) -> dict:
        for f in self.files.values():
            f.close()
        return {"documents": self.documents, "sentences": self.sentences, "tokens": self.tokens}


# ---- reading back ----

def load_manifest(directory: str) -> dict:
    """The manifest of a prepared-data directory, after checking that its files match it."""
    path = os.path.join(directory, MANIFEST)
    not_prepared = BertkitError(f"{directory} is not a bertkit prepared-data directory (no {MANIFEST})",
                                hint="create one with `bertkit prepare`")
    if not os.path.isfile(path):
        raise not_prepared
    try:
        manifest = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise BertkitError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})",
                           hint="the directory is damaged; re-create it with `bertkit prepare`") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise not_prepared
    if manifest.get("version") != VERSION:
        raise BertkitError(f"{path}: prepared-data version {manifest.get('version')}; "
                           f"this bertkit reads version {VERSION}",
                           hint="re-create it with this version's `bertkit prepare`")
    damaged = "the directory is damaged; re-create it with `bertkit prepare`"
    for name, kind in (("dtype", str), ("splits", dict), ("tokenizer_fingerprint", str), ("vocab_size", int)):
        if not isinstance(manifest.get(name), kind):
            raise BertkitError(f"{path}: field {name!r} is missing or not a {kind.__name__}", hint=damaged)
    if manifest["dtype"] not in ("uint16", "uint32"):
        raise BertkitError(f"{path}: unknown token dtype {manifest['dtype']!r} (expected uint16 or uint32)",
                           hint=damaged)
    for split, counts in manifest["splits"].items():
        if not (isinstance(counts, dict) and all(isinstance(counts.get(k), int) and counts[k] >= 0
                                                 for k in ("tokens", "sentences", "documents"))):
            raise BertkitError(f"{path}: split {split!r} lacks its token, sentence and document counts",
                               hint=damaged)
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for split, counts in manifest["splits"].items():
        for name, entries, size in (("tokens.bin", counts["tokens"], itemsize),
                                    ("sentence_starts.bin", counts["sentences"] + 1, 8),
                                    ("document_starts.bin", counts["documents"] + 1, 8)):
            file = os.path.join(directory, split, name)
            found = os.path.getsize(file) if os.path.isfile(file) else None
            if found != entries * size:
                raise BertkitError(
                    f"{file}: {'missing' if found is None else f'{found} bytes'}, but {MANIFEST} "
                    f"promises {entries} entries of {size} bytes",
                    hint="the directory is incomplete or damaged; re-create it with `bertkit prepare`")
    return manifest
