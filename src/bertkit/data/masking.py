"""Which tokens masked-LM pre-training predicts, and what the model is shown there.

One table, `MASKERS` (`bertkit pretrain --masking NAME`): a masker picks positions, and every masker shares
one 80/10/10 step (`replace_chosen`). A masker is

    choose(candidates, word_starts, n_predict, rng) -> (chosen, unit, n_units)

    candidates   (C,) ascending positions that may be chosen (not [CLS], [SEP] or padding)
    word_starts  (T,) True where a token starts a word (False for `##` continuations)
    n_predict    how many tokens to choose (a whole-word masker may end a little short of it)
    chosen       (K,) ascending positions chosen
    unit         (K,) which 80/10/10 decision each chosen position follows: positions of one unit (a word,
                 a span) are all [MASK]ed, all replaced by random tokens, or all kept
    n_units      how many decisions to draw (units may go unused: the whole-word masker draws one per word)

Each masker's docstring is its `bertkit pretrain --help` text. Numpy only, no torch: the
`bertkit` command lists the names before torch loads. The labels and the budget (`mask_tokens`) are in
data/pretraining.py. Left out on purpose: SpanBERT's span boundary objective (SBO), which predicts each
masked token from the span's two boundary tokens and its position; `span` is SpanBERT's masking alone.
"""

from __future__ import annotations

import numpy as np

from bertkit.errors import BertkitError

# SpanBERT (Joshi et al., 2020), section 3.1: span lengths in words ~ Geo(p = 0.2), clipped at 10, which the
# paper says gives a mean of 3.8 words. Clipped as SpanBERT's code does: the law restricted to 1..10 and
# renormalised (clamping longer draws to 10 instead would give a mean of 4.5).
SPAN_P = 0.2
SPAN_MAX_WORDS = 10
SPAN_LENGTHS = np.arange(1, SPAN_MAX_WORDS + 1)
SPAN_LENGTH_PROBS = SPAN_P * (1 - SPAN_P) ** (SPAN_LENGTHS - 1) / (1 - (1 - SPAN_P) ** SPAN_MAX_WORDS)


def choose_tokens(candidates, word_starts, n_predict, rng):
    """each token on its own, as the BERT paper"""
    del word_starts
    chosen = np.sort(rng.permutation(candidates)[:n_predict])
    return chosen, np.arange(len(chosen)), len(chosen)


def _words(candidates: np.ndarray, word_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates' words: word_of (C,) the word of each candidate, word_lengths (W,) in tokens, and
    run_of_word (W,): words of one run of adjacent candidates share a run (a special token ends a run).
    A word starts at a non-continuation token, or right after a special one."""
    breaks = np.diff(candidates, prepend=-2) > 1  # (C,): the first candidate, and any after a gap
    starts = word_starts[candidates] | breaks
    word_of = np.cumsum(starts) - 1
    run_of_word = (np.cumsum(breaks) - 1)[starts]
    return word_of, np.bincount(word_of, minlength=len(run_of_word)), run_of_word


def choose_whole_words(candidates, word_starts, n_predict, rng):
    """whole words (all pieces of a word or none), as Google's whole-word-masking models"""
    # Words in random order, each taken if it still fits in the budget. Unlike the original, which decides
    # 80/10/10 per token, a word's tokens share one decision, so a [MASK]ed word is hidden entirely.
    word_of, word_lengths, _ = _words(candidates, word_starts)
    taken, n_taken = np.zeros(len(word_lengths), bool), 0
    for w in rng.permutation(len(word_lengths)):
        if n_taken >= n_predict:
            break
        if n_taken + word_lengths[w] <= n_predict:
            taken[w], n_taken = True, n_taken + word_lengths[w]
    if n_taken == 0 and len(word_lengths):  # every word is longer than the budget: still predict one
        taken[np.argmin(word_lengths)] = True
    return candidates[taken[word_of]], word_of[taken[word_of]], len(word_lengths)


def choose_spans(candidates, word_starts, n_predict, rng):
    """spans of whole words, geometric lengths (p 0.2, at most 10 words), one 80/10/10 choice per span, as SpanBERT
    (without its span boundary objective)"""
    # As SpanBERT's masking: draw a length, then an anchor token, widened to its word; the span takes that word
    # and the ones after it, until it has its length. It also stops before a word that would not fit in the
    # budget, a word already taken, or a special token ([SEP] between the segments): spans never cut a word,
    # which SpanBERT's does to meet its budget exactly. Anchors are drawn among the words that still fit.
    word_of, word_lengths, run_of_word = _words(candidates, word_starts)
    n_words = len(word_lengths)
    taken, span_of_word = np.zeros(n_words, bool), np.full(n_words, -1)
    n_taken = n_spans = 0
    while n_taken < n_predict:
        fits = ~taken & (word_lengths <= n_predict - n_taken)  # (W,)
        anchors = np.flatnonzero(fits[word_of])  # (C',) candidates in a word that fits
        if not len(anchors):
            break
        length = rng.choice(SPAN_LENGTHS, p=SPAN_LENGTH_PROBS)
        first = word_of[anchors[rng.integers(len(anchors))]]
        for w in range(first, min(first + length, n_words)):
            if taken[w] or run_of_word[w] != run_of_word[first] or n_taken + word_lengths[w] > n_predict:
                break
            taken[w], span_of_word[w], n_taken = True, n_spans, n_taken + word_lengths[w]
        n_spans += 1
    if n_taken == 0 and n_words:  # every word is longer than the budget: still predict one
        shortest = np.argmin(word_lengths)
        taken[shortest], span_of_word[shortest], n_spans = True, 0, 1
    return candidates[taken[word_of]], span_of_word[word_of[taken[word_of]]], n_spans


MASKERS = {
    "token": choose_tokens,
    "whole-word": choose_whole_words,
    "span": choose_spans,
}


def get_masker(name: str):
    if name not in MASKERS:
        raise BertkitError(f"unknown masking {name!r}", hint=f"use one of {', '.join(MASKERS)}")
    return MASKERS[name]


def replace_chosen(input_ids: np.ndarray, chosen: np.ndarray, unit: np.ndarray, n_units: int,
                   rng: np.random.Generator, mask_id: int, random_token_ids: np.ndarray) -> np.ndarray:
    """The ids the model sees: each unit of chosen positions becomes [MASK] 80% of the time, random ids from
    random_token_ids 10%, and stays itself 10% (BERT paper, appendix A.1: the model cannot tell which inputs
    were replaced, so it keeps a representation of every token). input_ids (T,) -> (T,), a copy."""
    decision = rng.random(n_units)[unit]  # (K,)
    masked = input_ids.copy()
    to_mask, to_random = chosen[decision < 0.8], chosen[decision >= 0.9]
    masked[to_mask] = mask_id
    masked[to_random] = random_token_ids[rng.integers(0, len(random_token_ids), len(to_random))]
    return masked
