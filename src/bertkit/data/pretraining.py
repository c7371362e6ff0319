"""Pre-training samples from prepared data: sentence pairs (next-sentence and sentence-order prediction),
contiguous windows, and masking.

Follows the BERT paper (Devlin et al., 2018, section 3.1 and appendix A.1) and Google's
create_pretraining_data.py, with one difference: pairs and masks are made on the fly each epoch
(from a seed) instead of being written out `dupe_factor` times, so every epoch sees new pairs and
new masks at no disk cost, and a resumed run sees exactly the samples it would have seen.

  PreparedCorpus        one or more `bertkit prepare` directories, memory-mapped, as one corpus
  make_nsp_instances    [CLS] A [SEP] B [SEP] pairs as token ranges (create_instances_from_document)
  make_sop_instances    pairs of adjacent segments of one document, swapped half of the time (as ALBERT)
  make_packed_instances contiguous windows across documents, for --objective none (as RoBERTa)
  mask_tokens           choose 15% of the tokens (or mask_rate) with a masker (data/masking.py);
                        80% [MASK], 10% random, 10% unchanged
  PretrainingDataset    a torch Dataset of unpadded samples; `collate` pads a batch

Which instances a run uses, and which label its pairs carry, is its objective's (bertkit/objectives.py).

Instances are (N, 5) or (N, 2) int64 arrays of global token offsets, small enough to rebuild each
epoch; the tokens stay on disk. Left out on purpose: padding to a fixed length and packing
several short pairs into one sequence.
"""

from __future__ import annotations

import bisect
import os
import random

import numpy as np
import torch

from bertkit.data.masking import get_masker, replace_chosen
from bertkit.data.prepare import load_manifest
from bertkit.errors import BertkitError
from bertkit.model import IGNORE_INDEX
from bertkit.objectives import get_objective

MASK_PROB = 0.15  # share of tokens the model predicts (BERT paper, section 3.1); `pretrain --mask-rate` changes it
NSP_RANDOM_PROB = 0.5  # share of pairs whose B is a random sentence run (section 3.1, "Task #2")


def _check_offsets(path: str, offsets: np.ndarray, end: int | None = None) -> None:
    """Offsets start at 0, never decrease, and (document_starts) end at the sentence count: a damaged
    array would otherwise send sampling out of range or into an endless search."""
    bad = (len(offsets) == 0 or offsets[0] != 0 or bool(np.any(np.diff(offsets) < 0))
           or (end is not None and offsets[-1] != end))
    if bad:
        raise BertkitError(f"{path}: offsets are damaged (they must start at 0, never decrease"
                           f"{', and end at the sentence count' if end is not None else ''})",
                           hint="re-create the directory with `bertkit prepare`")


class PreparedCorpus:
    """The `split` of one or more prepared directories, concatenated: documents, sentences, tokens.

    Offsets are global: directory k's tokens follow those of directories 0..k-1. The token ids
    stay memory-mapped; the offset arrays (8 bytes per sentence and per document) are in memory:
    sentence_starts (n_sentences + 1,) token offsets, document_starts (n_documents + 1,) sentence indices.
    """

    def __init__(self, dirs: str | list[str], split: str = "train"):
        self.dirs = [dirs] if isinstance(dirs, (str, os.PathLike)) else [str(d) for d in dirs]
        self.split = split
        manifests = [load_manifest(d) for d in self.dirs]
        for d, m in zip(self.dirs[1:], manifests[1:]):
            if m["tokenizer_fingerprint"] != manifests[0]["tokenizer_fingerprint"]:
                raise BertkitError(f"{self.dirs[0]} and {d} were prepared with different tokenizers",
                                   hint="prepare every directory with the same --tokenizer")
        if any(split not in m["splits"] for m in manifests):
            raise BertkitError(f"no split {split!r} in {', '.join(self.dirs)}", hint="use train or validation")
        self.fingerprint = manifests[0]["tokenizer_fingerprint"]
        self.vocab_size = manifests[0]["vocab_size"]
        self.tokenizer_dir = os.path.join(self.dirs[0], "tokenizer")
        self._dtypes = [m["dtype"] for m in manifests]
        self._open()

        sentence_starts, document_starts, tokens, sentences = [], [], 0, 0
        for d in self.dirs:
            starts = _read(os.path.join(d, split, "sentence_starts.bin"), np.int64)
            documents = _read(os.path.join(d, split, "document_starts.bin"), np.int64)
            _check_offsets(os.path.join(d, split, "sentence_starts.bin"), starts)
            _check_offsets(os.path.join(d, split, "document_starts.bin"), documents, end=len(starts) - 1)
            sentence_starts.append(starts[:-1] + tokens)
            document_starts.append(documents[:-1] + sentences)
            tokens += int(starts[-1])
            sentences += len(starts) - 1
        self.sentence_starts = np.concatenate(sentence_starts + [[tokens]])
        self.document_starts = np.concatenate(document_starts + [[sentences]])
        self._token_offsets = np.cumsum([0] + [len(t) for t in self._tokens]).tolist()
        if self._token_offsets[-1] != tokens:
            raise BertkitError(f"{', '.join(self.dirs)}: sentence_starts.bin does not end at the token count",
                               hint="the directory is damaged; re-create it with `bertkit prepare`")

    def _open(self) -> None:
        self._tokens = [_read(os.path.join(d, self.split, "tokens.bin"), dtype)
                        for d, dtype in zip(self.dirs, self._dtypes)]

    # DataLoader workers get the corpus pickled: send the paths and reopen the maps, not the tokens.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_tokens"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.sentence_starts[-1])

    def document_sentences(self, d: int) -> tuple[int, int]:
        """(first sentence, end sentence) of document d."""
        return int(self.document_starts[d]), int(self.document_starts[d + 1])

    def sentence_span(self, s: int) -> tuple[int, int]:
        """(first token, end token) of sentence s."""
        return int(self.sentence_starts[s]), int(self.sentence_starts[s + 1])

    def tokens(self, start: int, end: int) -> np.ndarray:
        """Token ids [start, end) as int64; a range may cross from one directory into the next."""
        pieces = []
        k = bisect.bisect_right(self._token_offsets, start) - 1
        while start < end:
            offset, stop = self._token_offsets[k], min(end, self._token_offsets[k + 1])
            pieces.append(self._tokens[k][start - offset:stop - offset])
            start, k = stop, k + 1
        return np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)


def _read(path: str, dtype) -> np.ndarray:
    # np.memmap refuses empty files, and an empty validation split is valid.
    return np.memmap(path, dtype=dtype, mode="r") if os.path.getsize(path) else np.zeros(0, dtype)


# ---- instances: which tokens form each sample ----

def make_nsp_instances(corpus: PreparedCorpus, seq_len: int, seed: int, epoch: int,
                       short_seq_prob: float = 0.1) -> np.ndarray:
    """Sentence pairs: (N, 5) int64 rows [a_start, a_end, b_start, b_end, is_random_next], global token offsets.

    As create_instances_from_document: each document is cut into chunks of whole sentences of
    about `target` tokens; A is the first 1..n-1 sentences of a chunk; B is the rest of the chunk
    (is_random_next=0) or, half of the time, a run of sentences from another document
    (is_random_next=1), and then the chunk's unused sentences start the next chunk. The target is
    seq_len - 3 (room for [CLS] and two [SEP]), or with probability short_seq_prob a random shorter
    one, so that the model also sees short sequences (as fine-tuning will). The pair is then
    trimmed to seq_len - 3 tokens. Rows are shuffled; the result depends only on (seed, epoch).

    One departure: the original draws the target once per document, so a long document that
    draws a tiny target turns each of its sentences into a pair, all random-next (a one-sentence
    chunk has no B of its own); over a corpus that pulls IsNext well below 50% and over-weights
    those documents. Drawing it per chunk keeps 10% of pairs short and IsNext near 50%.
    """
    max_tokens = seq_len - 3
    if max_tokens < 2:
        raise BertkitError(f"--seq-len {seq_len} is too short for a sentence pair", hint="use at least 5")
    if corpus.num_documents < 2:
        raise BertkitError(f"{', '.join(corpus.dirs)} ({corpus.split}) holds {corpus.num_documents} document(s); "
                           "next-sentence prediction needs at least 2, to draw random sentences from another one",
                           hint="add documents, or use --objective none")
    rng = random.Random(f"nsp/{seed}/{epoch}")
    starts = corpus.sentence_starts.tolist()  # Python ints: this loop runs once per sentence
    doc_starts = corpus.document_starts.tolist()
    n_docs = len(doc_starts) - 1
    rows = []
    for d in range(n_docs):
        doc_end = doc_starts[d + 1]
        chunk_start = i = doc_starts[d]
        target = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
        while i < doc_end:
            if i == doc_end - 1 or starts[i + 1] - starts[chunk_start] >= target:
                n_chunk = i + 1 - chunk_start
                a_end = chunk_start + (rng.randint(1, n_chunk - 1) if n_chunk >= 2 else 1)
                if n_chunk == 1 or rng.random() < NSP_RANDOM_PROB:
                    other = rng.randrange(n_docs - 1)
                    other += other >= d  # any document but this one
                    first = rng.randint(doc_starts[other], doc_starts[other + 1] - 1)
                    # B takes whole sentences until it reaches the target (at least one sentence).
                    b_target = starts[first] + target - (starts[a_end] - starts[chunk_start])
                    last = bisect.bisect_left(starts, b_target, first + 1, doc_starts[other + 1])
                    b = [starts[first], starts[last]]
                    is_random_next = 1
                    i = a_end - 1  # put the chunk's unused sentences back for the next chunk
                else:
                    b = [starts[a_end], starts[i + 1]]
                    is_random_next = 0
                a = [starts[chunk_start], starts[a_end]]
                _truncate_pair(a, b, max_tokens, rng)
                rows.append((a[0], a[1], b[0], b[1], is_random_next))
                chunk_start = i + 1
                target = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
            i += 1
    rng.shuffle(rows)
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    """Trim the ranges a and b in place to max_tokens together, as truncate_seq_pair: one token at
    a time from the longer one, from its front or back at random (to add noise, as the original says)."""
    while (a[1] - a[0]) + (b[1] - b[0]) > max_tokens:
        longer = a if a[1] - a[0] > b[1] - b[0] else b
        if rng.random() < 0.5:
            longer[0] += 1
        else:
            longer[1] -= 1


def make_sop_instances(corpus: PreparedCorpus, seq_len: int, seed: int, epoch: int,
                       short_seq_prob: float = 0.1) -> np.ndarray:
    """Sentence-order pairs (ALBERT, Lan et al., 2020, section 3.1): (N, 5) int64 rows [first_start, first_end,
    second_start, second_end, is_swapped], global token offsets.

    Chunks of whole sentences as make_nsp_instances (same targets, short_seq_prob included), but of at least
    two sentences: A is the chunk's first 1..n-1 sentences and B the rest, so B is A's true next segment, from
    the same document; half of the pairs are shown swapped, B first (is_swapped=1). ALBERT's code gives a
    one-sentence chunk a B from another document; here a document of one sentence gives no pair, nor does a
    last sentence left alone after a full chunk. The pair is trimmed to seq_len - 3 tokens from its outer
    ends only (A's front, B's back), so the two segments stay adjacent to the token.
    """
    max_tokens = seq_len - 3
    if max_tokens < 2:
        raise BertkitError(f"--seq-len {seq_len} is too short for a sentence pair", hint="use at least 5")
    rng = random.Random(f"sop/{seed}/{epoch}")
    starts = corpus.sentence_starts.tolist()  # Python ints: this loop runs once per sentence
    doc_starts = corpus.document_starts.tolist()
    rows = []
    for d in range(len(doc_starts) - 1):
        chunk_start, doc_end = doc_starts[d], doc_starts[d + 1]
        target = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
        i = chunk_start + 1  # the chunk's last sentence: at least its second
        while i < doc_end:
            if i < doc_end - 1 and starts[i + 1] - starts[chunk_start] < target:
                i += 1
                continue
            a_end = chunk_start + rng.randint(1, i - chunk_start)
            a, b = [starts[chunk_start], starts[a_end]], [starts[a_end], starts[i + 1]]
            while (a[1] - a[0]) + (b[1] - b[0]) > max_tokens:
                if a[1] - a[0] > b[1] - b[0]:
                    a[0] += 1
                else:
                    b[1] -= 1
            if rng.random() < 0.5:  # ALBERT: swapped half of the time
                rows.append((b[0], b[1], a[0], a[1], 1))
            else:
                rows.append((a[0], a[1], b[0], b[1], 0))
            chunk_start = i + 1
            i = chunk_start + 1
            target = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
    if not rows:
        raise BertkitError(f"{', '.join(corpus.dirs)} ({corpus.split}): no document has two or more sentences, and "
                           "sentence-order prediction pairs a segment with the next one of the same document",
                           hint="use --objective none, or prepare text whose documents hold several sentences "
                                "(blank lines between documents)")
    rng.shuffle(rows)
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def make_packed_instances(corpus: PreparedCorpus, seq_len: int) -> np.ndarray:
    """Windows of seq_len - 2 consecutive tokens (room for [CLS] and [SEP]), running across
    document boundaries as RoBERTa's FULL-SENTENCES input does: (N, 2) rows [start, end); the
    last may be shorter."""
    window = seq_len - 2
    if window < 1:
        raise BertkitError(f"--seq-len {seq_len} is too short", hint="use at least 3")
    starts = np.arange(0, corpus.num_tokens, window, dtype=np.int64)
    return np.stack([starts, np.minimum(starts + window, corpus.num_tokens)], axis=1)


# ---- masking ----

def mask_tokens(input_ids: np.ndarray, special: np.ndarray, rng: np.random.Generator, *, mask_id: int,
                vocab_size: int, random_token_ids: np.ndarray, max_predictions: int, mask_prob: float = MASK_PROB,
                word_starts: np.ndarray | None = None, masking: str = "token") -> tuple[np.ndarray, np.ndarray]:
    """Masked-LM inputs and labels for one sequence, as create_masked_lm_predictions.

    input_ids, special, word_starts: (T,); word_starts (False for `##` continuations) is needed by the maskers
    that choose whole words. Chooses min(max_predictions, max(1, round(mask_prob * candidates))) of the
    non-special positions (the original counts [CLS]/[SEP] among the tokens; we count only candidates) with
    the masker named `masking` (data/masking.py's MASKERS), then shows them 80/10/10 ([MASK], random, unchanged).
    Returns (masked ids, labels): labels hold the original id at chosen positions, IGNORE_INDEX elsewhere.
    """
    del vocab_size  # random replacements come from random_token_ids, which excludes special ids
    candidates = np.flatnonzero(~special)
    n_predict = min(max_predictions, max(1, round(len(candidates) * mask_prob))) if len(candidates) else 0
    chosen, unit, n_units = get_masker(masking)(candidates, word_starts, n_predict, rng)
    labels = np.full_like(input_ids, IGNORE_INDEX)
    labels[chosen] = input_ids[chosen]
    masked = replace_chosen(input_ids, chosen, unit, n_units, rng, mask_id, random_token_ids)
    return masked, labels


# ---- the dataset ----

class PretrainingDataset(torch.utils.data.Dataset):
    """Unpadded samples of a PreparedCorpus, as the objective's instances make them (bertkit/objectives.py):
    [CLS] A [SEP] B [SEP] pairs ("nsp", "sop") or [CLS] window [SEP] ("none").

    Each sample is a dict of int64 numpy arrays: input_ids, token_type_ids (0 through the first
    [SEP], 1 after), labels (IGNORE_INDEX where not masked), and for pairs the objective's pair label
    (next_sentence_label: 0 IsNext, 1 NotNext, as transformers; sentence_order_label: 0 in order, 1 swapped).
    Sample i of epoch e is masked with the generator seeded by (seed, e, i), so it is the same whichever
    worker, batch or resumed run asks for it.
    """

    def __init__(self, corpus: PreparedCorpus, *, cls_id: int, sep_id: int, pad_id: int, mask_id: int,
                 special_ids, vocab_size: int, continuation_mask: np.ndarray, seq_len: int,
                 objective: str = "nsp", masking: str = "token", mask_rate: float = MASK_PROB,
                 max_predictions: int | None = None, seed: int = 0):
        entry = get_objective(objective)
        self.make_instances, self.pair_label = entry.instances, entry.pair_label
        get_masker(masking)  # an unknown name fails here, not at the first sample
        if not 0.0 < mask_rate < 1.0:
            raise BertkitError(f"mask rate {mask_rate}: must be between 0 and 1 (exclusive)", hint="e.g. 0.15 or 0.3")
        if vocab_size != corpus.vocab_size:
            raise BertkitError(f"the tokenizer has {vocab_size} tokens but {corpus.dirs[0]} was prepared "
                               f"with {corpus.vocab_size}", hint="use the tokenizer saved in the prepared directory")
        self.corpus, self.seq_len, self.objective, self.masking, self.seed = corpus, seq_len, objective, masking, seed
        self.cls_id, self.sep_id, self.pad_id, self.mask_id = cls_id, sep_id, pad_id, mask_id
        self.vocab_size = vocab_size
        self.is_special = np.zeros(vocab_size, bool)  # (V,): never masked, never a random replacement
        self.is_special[list(special_ids)] = True
        self.random_token_ids = np.flatnonzero(~self.is_special)
        self.word_start = ~np.asarray(continuation_mask, bool)  # (V,)
        self.mask_rate = mask_rate
        self.max_predictions = max_predictions or max(1, round(mask_rate * seq_len))
        self.epoch = None
        self.set_epoch(0)

    @classmethod
    def from_tokenizer(cls, corpus: PreparedCorpus, tokenizer, **kw) -> PretrainingDataset:
        if tokenizer.fingerprint != corpus.fingerprint:
            raise BertkitError(f"the tokenizer differs from the one {corpus.dirs[0]} was prepared with",
                               hint=f"use the tokenizer saved in {corpus.tokenizer_dir}")
        vocab = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
        return cls(corpus, cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                   pad_id=tokenizer.pad_token_id, mask_id=tokenizer.mask_token_id,
                   special_ids=tokenizer.special_ids, vocab_size=tokenizer.vocab_size,
                   continuation_mask=np.array([t.startswith("##") for t in vocab]), **kw)

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return
        self.instances = self.make_instances(self.corpus, self.seq_len, self.seed, epoch)
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, i: int) -> dict:
        row = self.instances[i]
        cls, sep = np.array([self.cls_id]), np.array([self.sep_id])
        first = self.corpus.tokens(row[0], row[1])
        if self.pair_label is None:
            input_ids = np.concatenate([cls, first, sep])
        else:
            input_ids = np.concatenate([cls, first, sep, self.corpus.tokens(row[2], row[3]), sep])
        token_type_ids = np.zeros_like(input_ids)
        token_type_ids[len(first) + 2:] = 1
        rng = np.random.default_rng([self.seed, self.epoch, i])
        input_ids, labels = mask_tokens(
            input_ids, self.is_special[input_ids], rng, mask_id=self.mask_id, vocab_size=self.vocab_size,
            random_token_ids=self.random_token_ids, max_predictions=self.max_predictions, mask_prob=self.mask_rate,
            word_starts=self.word_start[input_ids], masking=self.masking)
        sample = {"input_ids": input_ids, "token_type_ids": token_type_ids, "labels": labels}
        if self.pair_label is not None:
            sample[self.pair_label] = np.int64(row[4])
        return sample


def collate(samples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of samples to the longest: input_ids (B, T) with pad_id, token_type_ids 0,
    attention_mask (B, T) 1 on real tokens, labels IGNORE_INDEX; a pair label (next_sentence_label,
    sentence_order_label) as (B,)."""
    length = max(len(s["input_ids"]) for s in samples)
    fills = {"input_ids": pad_id, "token_type_ids": 0, "labels": IGNORE_INDEX}
    batch = {name: torch.full((len(samples), length), fill, dtype=torch.long) for name, fill in fills.items()}
    batch["attention_mask"] = torch.zeros(len(samples), length, dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample["input_ids"])
        for name in fills:
            batch[name][row, :n] = torch.from_numpy(np.asarray(sample[name], dtype=np.int64))
        batch["attention_mask"][row, :n] = 1
    for name in samples[0].keys() - fills.keys():  # one label per sample
        batch[name] = torch.tensor([int(s[name]) for s in samples], dtype=torch.long)
    return batch
