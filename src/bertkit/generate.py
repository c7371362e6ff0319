"""Text generation with a BERT fine-tuned as a UniLM sequence-to-sequence model (Dong et al. 2019).

The model reads `[CLS] source [SEP] y1 y2 ... ` with segments 0 / 1 under the seq2seq mask (model.seq2seq_mask)
and, as `bertkit finetune --task seq2seq` trains it (the shifted left-to-right loss), the MLM head's output at
the last position is the distribution of the next target token; `[SEP]` ends a target.

Decoding runs the source once, caching every layer's keys and values (model.KVCache); each new token then
costs one position's forward, attending to the cache. Rows of a batch have sources of different lengths: the
cache holds them right-padded to S, the generated tokens follow at cache index S + t, with position id
len(source) + t, so each row's positions are those it was trained with; a key mask hides the padding.
`use_cache=False` recomputes the whole sequence at each step: the reference the tests hold the cache to.
A model fine-tuned with UniLM's own masked target (`--target-masking unilm`, objective "unilm-masked") is read
differently: each step runs the newest token and a `[MASK]` after it, the next token is read off the [MASK],
and the [MASK]'s keys and values are cut from the cache again (KVCache.truncate).

Methods for such a model: greedy; beam (`beams` hypotheses, scored by summed log-probability /
length ** length_penalty, as transformers does, and its stopping rule); sample (temperature, then top-k, then
top-p (nucleus) filtering, a torch.Generator seeded per call, so a seed reproduces the output); gibbs (Wang &
Cho 2019: from any MLM, re-sample masked target positions one at a time for some sweeps; see gibbs_ids for why
it is not a proper sample).

mask-predict (Ghazvininejad et al. 2019) decodes a model fine-tuned as a conditional masked LM
(`finetune --task seq2seq --target-masking uniform`: 1..m random target tokens masked, the target seeing the
whole target, model.cmlm_mask). It needs the target length up front; instead of the paper's length predictor
it tries a few candidate lengths (by default the most frequent training target lengths, saved in
generation_config.json) and keeps the one with the best mean log-probability. generation_config.json names
the objective a model was trained with; OBJECTIVE_METHODS says which methods each may use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bertkit.errors import BertkitError
from bertkit.model import KVCache, cmlm_mask

METHODS = ("greedy", "beam", "sample", "gibbs", "mask-predict")
LEFT_TO_RIGHT = ("greedy", "beam", "sample")

# generation_config.json's bertkit "objective" (kinds.TARGET_MASKINGS) -> the methods its model decodes with.
# A conditional MLM never learnt to predict the next token at the last position, and a shifted model never saw
# a masked target, so each refuses the other's methods; gibbs works from any MLM. A model without the field
# (an MLM from elsewhere) is taken as left to right, as before mask-predict.
OBJECTIVE_METHODS = {
    "unilm-shifted": (*LEFT_TO_RIGHT, "gibbs"),
    "unilm-masked": (*LEFT_TO_RIGHT, "gibbs"),
    "cmlm": ("mask-predict", "gibbs"),
    None: (*LEFT_TO_RIGHT, "gibbs"),
}


@dataclass
class GenerateConfig:
    method: str = "greedy"
    beams: int = 4
    length_penalty: float = 1.0  # > 1 favours longer hypotheses, < 1 shorter (beam)
    max_new_tokens: int = 48
    top_k: int = 0  # sample: keep the k most probable tokens; 0 keeps all
    top_p: float = 1.0  # sample: keep the smallest set of tokens whose probability reaches p
    temperature: float = 1.0
    num_return: int = 1  # sequences per source: beam's n-best, or independent samples
    seed: int | None = None
    sweeps: int = 4  # gibbs: passes over the target positions
    no_repeat_ngram: int = 0  # greedy, beam, sample: never repeat an n-gram of this size in a sequence (0: off)
    iterations: int = 10  # mask-predict: passes (T in the paper, which used 10)
    lengths: tuple[int, ...] | None = None  # mask-predict: target lengths tried; None: the model's saved ones
    use_cache: bool = True

    def check(self) -> None:
        """Every option in range, before anything runs: a BertkitError that says which and why."""
        if self.method not in METHODS:
            raise BertkitError(f"--method {self.method!r}", hint=f"choose one of: {', '.join(METHODS)}")
        if self.beams < 1:
            raise BertkitError(f"--beams {self.beams}: must be at least 1", hint="e.g. --beams 4")
        if self.max_new_tokens < 1:
            raise BertkitError(f"--max-new-tokens {self.max_new_tokens}: must be at least 1", hint="e.g. 48")
        if self.top_k < 0:
            raise BertkitError(f"--top-k {self.top_k}: must be 0 (off) or more", hint="e.g. --top-k 40")
        if not 0 < self.top_p <= 1:
            raise BertkitError(f"--top-p {self.top_p}: must be above 0 and at most 1", hint="e.g. --top-p 0.9")
        if not self.temperature > 0 or not math.isfinite(self.temperature):
            raise BertkitError(f"--temperature {self.temperature}: must be a positive number", hint="e.g. 0.7")
        if self.sweeps < 1:
            raise BertkitError(f"--sweeps {self.sweeps}: must be at least 1", hint="e.g. --sweeps 4")
        if self.iterations < 1:
            raise BertkitError(f"--iterations {self.iterations}: must be at least 1", hint="e.g. --iterations 10")
        if self.lengths is not None and (not self.lengths or min(self.lengths) < 1):
            raise BertkitError(f"--length-candidates {self.lengths}: every length must be at least 1",
                               hint="e.g. --length-candidates 4,6,8")
        if self.no_repeat_ngram < 0:
            raise BertkitError(f"--no-repeat-ngram {self.no_repeat_ngram}: must be 0 (off) or more",
                               hint="e.g. --no-repeat-ngram 3")
        if self.no_repeat_ngram and self.method not in LEFT_TO_RIGHT:
            raise BertkitError(f"--no-repeat-ngram with --method {self.method}: it applies to left-to-right "
                               f"decoding ({', '.join(LEFT_TO_RIGHT)})", hint="drop --no-repeat-ngram")
        if self.num_return < 1:
            raise BertkitError(f"--num-return {self.num_return}: must be at least 1", hint="e.g. --num-return 3")
        if self.method == "greedy" and self.num_return > 1:
            raise BertkitError(f"--num-return {self.num_return} with greedy decoding: it has one answer",
                               hint="use --method beam or sample for several sequences per source")
        if self.method == "mask-predict" and self.lengths is not None and self.num_return > len(set(self.lengths)):
            raise BertkitError(f"--num-return {self.num_return} with {len(set(self.lengths))} length candidates: "
                               "mask-predict gives one sequence per length", hint="pass more --length-candidates")
        if self.method == "beam" and self.num_return > self.beams:
            raise BertkitError(f"--num-return {self.num_return} is more than --beams {self.beams}",
                               hint=f"raise --beams to {self.num_return} or more")


def check_objective(method: str, objective: str | None, model_name: str) -> None:
    """A BertkitError unless a model trained with `objective` (generation_config.json) decodes with `method`."""
    if objective not in OBJECTIVE_METHODS:
        raise BertkitError(f"{model_name}: generation_config.json names an unknown objective {objective!r}",
                           hint=f"expected one of: {', '.join(o for o in OBJECTIVE_METHODS if o)}")
    if method in OBJECTIVE_METHODS[objective]:
        return
    if method == "mask-predict":
        trained = f"was trained left to right ({objective})" if objective else "names no seq2seq objective"
        raise BertkitError(f"--method mask-predict: {model_name} {trained}; mask-predict needs a conditional "
                           "masked LM", hint="use --method greedy, beam or sample, or fine-tune with bertkit "
                                             "finetune --task seq2seq --target-masking uniform")
    raise BertkitError(f"--method {method}: {model_name} is a conditional masked LM (--target-masking uniform), "
                       "not trained to predict the next token", hint="use --method mask-predict")


# ----------------------------------------------------------------------------------------------
# One decoding step


class _Decoder:
    """The model's next-token log-probabilities for B rows, given their sources and the tokens so far.

    source_ids: (B, S) `[CLS] source [SEP]` right-padded; source_lengths: (B,). With the cache, `start`
    runs the sources once and `step` runs one new token per row; without it, each call recomputes all.
    mask_id: for a model trained with UniLM's masked target (--target-masking unilm): the next token is read
    off a `[MASK]` put after the tokens so far (run with them, never kept in the cache); None: off the last token."""

    def __init__(self, model, source_ids: torch.Tensor, source_lengths: torch.Tensor, use_cache: bool,
                 mask_id: int | None = None):
        self.model, self.use_cache, self.mask_id = model, use_cache, mask_id
        self.source_ids, self.lengths = source_ids, source_lengths
        S = source_ids.shape[1]
        self.source_keys = torch.arange(S, device=source_ids.device)[None, :] < source_lengths[:, None]  # (B, S)
        self.cache = KVCache(model.config.num_hidden_layers) if use_cache else None

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B, V) log-probabilities
        return self.model.mlm(hidden).float().log_softmax(-1)

    def start(self) -> torch.Tensor:
        """Log-probabilities of the first target token, (B, V): the output at each source's [SEP] (or at the
        [MASK] after it)."""
        ids = self.source_ids
        if self.mask_id is None or self.cache is not None:
            mask = self.source_keys[:, None, :].expand(-1, ids.shape[1], -1)  # (B, S, S): the source sees the source
            hidden = self.model.bert(ids, torch.zeros_like(ids), mask, cache=self.cache).last_hidden_state
            if self.mask_id is None:
                return self._logits(hidden[torch.arange(len(ids)), self.lengths - 1])  # (B, H)
        return self.step(ids.new_empty(len(ids), 0))  # the sources are cached, or recomputed with the [MASK]

    def step(self, generated: torch.Tensor) -> torch.Tensor:
        """generated: (B, t) the tokens so far -> log-probabilities of token t + 1, (B, V). t >= 1, or 0 with a
        mask_id (the first token, read off a [MASK])."""
        B, t = generated.shape
        S = self.source_ids.shape[1]
        device = generated.device
        if self.mask_id is not None:
            generated = torch.cat([generated, torch.full((B, 1), self.mask_id, device=device)], dim=1)
        n = generated.shape[1]  # target positions this step reads
        new_positions = self.lengths[:, None] + torch.arange(n, device=device)[None, :]  # (B, n)
        causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()  # (n, n) the target to the left
        if self.use_cache:
            cached = max(t - 1, 0)  # target positions already in the cache: all but the newest token
            if len(self.cache) != S + cached:
                raise RuntimeError(f"the cache holds {len(self.cache)} positions, expected {S + cached}")
            ids, positions = generated[:, cached:], new_positions[:, cached:]  # the newest token (and the [MASK])
            fresh = n - cached
            mask = torch.cat([self.source_keys[:, None, :].expand(-1, fresh, -1),
                              causal[cached:].expand(B, -1, -1)], dim=2)  # (B, fresh, S + n)
        else:
            ids = torch.cat([self.source_ids, generated], dim=1)  # (B, S + n)
            positions = torch.cat([torch.arange(S, device=device).expand(B, -1), new_positions], dim=1)
            source_rows = torch.cat([self.source_keys, torch.zeros(B, n, dtype=torch.bool, device=device)], dim=1)
            target_rows = torch.cat([self.source_keys[:, None, :].expand(-1, n, -1),
                                     causal.expand(B, -1, -1)], dim=2)  # (B, n, S + n)
            mask = torch.cat([source_rows[:, None, :].expand(-1, S, -1), target_rows], dim=1)  # (B, S + n, S + n)
        segments = torch.cat([torch.zeros(B, ids.shape[1] - min(n, ids.shape[1]), dtype=torch.long, device=device),
                              torch.ones(B, min(n, ids.shape[1]), dtype=torch.long, device=device)], dim=1)
        hidden = self.model.bert(ids, segments, mask, position_ids=positions, cache=self.cache).last_hidden_state
        if self.cache is not None and self.mask_id is not None:
            self.cache.truncate(S + t)  # the [MASK] was only read from
        return self._logits(hidden[:, -1])

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and repeat) batch rows: beams that survive, or a source repeated for several samples."""
        self.source_ids, self.lengths = self.source_ids[rows], self.lengths[rows]
        self.source_keys = self.source_keys[rows]
        if self.cache is not None:
            self.cache.select(rows)


# ----------------------------------------------------------------------------------------------
# Methods


def _ban_repeats(logprobs: torch.Tensor, tokens: torch.Tensor, n: int) -> torch.Tensor:
    """logprobs (R, V) with -inf, per row, at every token that would complete an n-gram the row's tokens so far
    (R, t) already hold (transformers' no_repeat_ngram_size); unchanged for n = 0."""
    if n < 1 or tokens.shape[1] < n - 1:
        return logprobs
    logprobs = logprobs.clone()
    for r, seq in enumerate(tokens.tolist()):
        last = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
        banned = [seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == last]
        if banned:
            logprobs[r, banned] = -math.inf
    return logprobs


def _greedy_or_sample(decoder: _Decoder, cfg: GenerateConfig, sep_id: int, pad_id: int, B: int,
                      generator: torch.Generator | None) -> list[list[dict]]:
    """Per row, one sequence: the argmax token at each step, or a sample (neither completing a repeated n-gram
    under no_repeat_ngram). Rows run until [SEP] or the limit."""
    logprobs = decoder.start()  # (B, V)
    device = logprobs.device
    tokens = torch.empty(B, 0, dtype=torch.long, device=device)
    scores = torch.zeros(B, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(cfg.max_new_tokens):
        logprobs = _ban_repeats(logprobs, tokens, cfg.no_repeat_ngram)
        if cfg.method == "sample":
            chosen = _sample(logprobs, cfg, generator)
        else:
            chosen = logprobs.argmax(-1)  # (B,)
        scores = scores + torch.where(done, 0.0, logprobs.gather(1, chosen[:, None]).squeeze(1))
        chosen = torch.where(done, pad_id, chosen)
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        done = done | (chosen == sep_id)
        if bool(done.all()) or step == cfg.max_new_tokens - 1:
            break
        logprobs = decoder.step(tokens)
    results = []
    for row, score in zip(tokens.tolist(), scores.tolist()):
        ids = row[:row.index(sep_id)] if sep_id in row else [i for i in row if i != pad_id]
        results.append([{"ids": ids, "score": score, "finished": sep_id in row}])
    return results


def _sample(logprobs: torch.Tensor, cfg: GenerateConfig, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row: softmax(logits / temperature) restricted to the top-k, then to the top-p mass."""
    logits = logprobs / cfg.temperature  # (B, V)
    if cfg.top_k:
        kth = logits.topk(min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    if cfg.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the more probable tokens: keep a token while it is < p
        sorted_logits = sorted_logits.masked_fill(before >= cfg.top_p, -math.inf)
        logits = torch.full_like(logits, -math.inf).scatter(1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logprobs.device)


def _beam(decoder: _Decoder, cfg: GenerateConfig, sep_id: int, B: int) -> list[list[dict]]:
    """Beam search: `beams` hypotheses per source; each step extends every live one by its best tokens and
    keeps the `beams` best by summed log-probability. A hypothesis that emits [SEP] is finished, scored by
    its log-probability / length ** length_penalty (length counting the [SEP]). A source is done when it has
    `beams` finished hypotheses and the best live one, normalised by its length now, is no better than the
    worst of them: transformers' rule (early_stopping=False). With one beam this is greedy decoding.
    At max_new_tokens a source short of `beams` finished hypotheses is topped up with its live
    ones, scored as they stand."""
    K = cfg.beams
    logprobs = decoder.start()  # (B, V)
    V, device = logprobs.shape[1], logprobs.device
    decoder.select(torch.arange(B, device=device).repeat_interleave(K))  # (B*K) rows: source b's beams at b*K..
    # At the start the K beams of a source are the same: only the first may extend, or they would all agree.
    running = torch.full((B, K), -math.inf, device=device)
    running[:, 0] = 0.0
    tokens = torch.empty(B * K, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]  # (score, ids), best first, <= K
    done = [False] * B
    logprobs = logprobs.repeat_interleave(K, dim=0)  # (B*K, V)

    def normalized(logprob: float, length: int) -> float:
        return logprob / (max(length, 1) ** cfg.length_penalty)

    for step in range(cfg.max_new_tokens):
        logprobs = _ban_repeats(logprobs, tokens, cfg.no_repeat_ngram)
        total = (running.view(B * K, 1) + logprobs).view(B, K * V)  # (B, K*V)
        best, index = total.topk(2 * K, dim=-1)  # 2K: even if K of them end here, K stay alive
        beam_of, token_of = index // V, index % V  # (B, 2K)
        next_rows, next_tokens, next_running = [], [], []
        for b in range(B):
            kept = 0
            for score, beam, token in zip(best[b].tolist(), beam_of[b].tolist(), token_of[b].tolist()):
                if done[b] or kept == K or score == -math.inf:
                    break
                if token == sep_id:
                    finished[b].append((normalized(score, step + 1), tokens[b * K + beam].tolist()))
                    finished[b] = sorted(finished[b], key=lambda h: -h[0])[:K]
                    continue
                next_rows.append(b * K + beam)
                next_tokens.append(token)
                next_running.append(score)
                kept += 1
            for _ in range(K - kept):  # done, or fewer than K live candidates: dead rows, never extended
                next_rows.append(b * K)
                next_tokens.append(sep_id)
                next_running.append(-math.inf)
        rows = torch.tensor(next_rows, device=device)
        tokens = torch.cat([tokens[rows], torch.tensor(next_tokens, device=device)[:, None]], dim=1)
        running = torch.tensor(next_running, device=device).view(B, K)
        for b in range(B):
            best_live = float(running[b].max())
            done[b] = done[b] or best_live == -math.inf or (
                len(finished[b]) == K and finished[b][-1][0] >= normalized(best_live, step + 1))
        if all(done) or step == cfg.max_new_tokens - 1:
            break
        decoder.select(rows)
        logprobs = decoder.step(tokens)
    results = []
    for b in range(B):
        hypotheses = [(score, ids, True) for score, ids in finished[b]]
        if len(hypotheses) < K:  # out of steps: the live ones, unfinished
            for k in range(K):
                if running[b, k] > -math.inf:
                    ids = tokens[b * K + k].tolist()
                    hypotheses.append((normalized(float(running[b, k]), len(ids)), ids, False))
        hypotheses.sort(key=lambda h: -h[0])
        results.append([{"ids": ids, "score": score, "finished": ended} for score, ids, ended in hypotheses])
    return results


@torch.no_grad()
def gibbs_ids(model, sources: list[list[int]], cfg: GenerateConfig, sep_id: int, pad_id: int,
              mask_id: int, prompts: list[list[int]] | None = None,
              word_pieces: list[int] | None = None) -> list[list[dict]]:
    """Gibbs-style sampling from an MLM (Wang & Cho 2019): `[CLS] source [SEP] [MASK] x n [SEP]`, n =
    max_new_tokens, with full (bidirectional) attention, as the MLM was pre-trained; each of cfg.sweeps sweeps
    visits the target positions left to right, masks the position, and samples it from the MLM's distribution
    there (temperature, then top-k). Works from any model with an MLM head. A source's prompt (token ids,
    `prompts`) starts its target: `[CLS] source [SEP] prompt [MASK] x n [SEP]`, the prompt held fixed and
    returned at the head of the ids (its tokens score nothing). `word_pieces` (ids of the tokens that continue
    a word, WordPiece's "##x") are never sampled at the first sampled position: a target, or what follows a
    prompt, starts with a whole word.

    Not a proper sample from a joint distribution: an MLM's conditionals need not be those of any joint
    distribution, so this chain has no guarantee to converge to one (Wang & Cho's own correction of their
    paper's title; Goyal et al. 2021 make it a Metropolis-Hastings sampler). Special tokens are never sampled.
    Score: the summed log-probability of each final token when it was last sampled."""
    cfg.check()
    model.eval()
    device = next(model.parameters()).device
    n, B = cfg.max_new_tokens, len(sources)
    prompts = prompts or [[] for _ in sources]
    rows = [s + p + [mask_id] * n + [sep_id] for s, p in zip(sources, prompts)]
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (T - len(r)) for r in rows], device=device)  # (B, T)
    types = torch.tensor([[0] * len(s) + [1] * (len(r) - len(s)) + [0] * (T - len(r)) for s, r in zip(sources, rows)],
                         device=device)
    attention = (torch.arange(T, device=device)[None, :] < torch.tensor([len(r) for r in rows], device=device)[:, None])
    heads = [len(s) for s in sources]  # where each target (its prompt first) begins
    starts = torch.tensor([len(s) + len(p) for s, p in zip(sources, prompts)], device=device)  # the first sampled one
    batch = torch.arange(B, device=device)
    special = torch.tensor(sorted({sep_id, pad_id, mask_id, sources[0][0]}), device=device)  # [CLS] starts a source
    first_banned = torch.cat([special, torch.tensor(word_pieces or [], dtype=torch.long, device=device)])
    generator = torch.Generator().manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    scores = torch.zeros(B, n, device=device)
    for _ in range(cfg.sweeps):
        for j in range(n):
            ids[batch, starts + j] = mask_id
            hidden = model.bert(ids, types, attention.long()).last_hidden_state[batch, starts + j]  # (B, H)
            logprobs = model.mlm(hidden).float().log_softmax(-1)
            logprobs[:, first_banned if j == 0 else special] = -math.inf
            chosen = _sample(logprobs, cfg, generator)
            ids[batch, starts + j] = chosen
            scores[:, j] = logprobs.gather(1, chosen[:, None]).squeeze(1)
    return [[{"ids": ids[b, heads[b]:starts[b] + n].tolist(), "score": float(scores[b].sum()), "finished": True}]
            for b in range(B)]


@torch.no_grad()
def mask_predict_ids(model, sources: list[list[int]], cfg: GenerateConfig, sep_id: int, pad_id: int,
                     mask_id: int) -> list[list[dict]]:
    """Mask-predict (Ghazvininejad et al. 2019) from a conditional masked LM. Per source and candidate length
    L (cfg.lengths): `[CLS] source [SEP] [MASK] x L [SEP]` under model.cmlm_mask; the first pass predicts every
    target token at once (argmax, keeping its log-probability); pass t = 1 .. T-1 (T = cfg.iterations)
    re-masks the floor(L (T - t) / T) least confident tokens and predicts those again, updating their tokens
    and log-probabilities. A source's hypotheses are its lengths, best mean log-probability first (the score).

    The final [SEP] is fixed, not predicted: the length candidate decides where the target ends (training
    masks it like any target token, so the model also learns where a target of that length ends). Special
    tokens ([CLS], [SEP], [PAD], [MASK]) are never predicted inside the target. All sources and lengths run
    as one batch of B * K rows."""
    if not cfg.lengths:
        raise BertkitError("mask-predict: no target lengths to try", hint="pass --length-candidates, e.g. 4,6,8")
    device = next(model.parameters()).device
    lengths = sorted(set(cfg.lengths))
    rows = [(source, n) for source in sources for n in lengths]  # row b * K + k: source b, length k
    T = max(len(source) + n + 1 for source, n in rows)
    N = max(lengths)
    ids = torch.tensor([s + [mask_id] * n + [sep_id] + [pad_id] * (T - len(s) - n - 1) for s, n in rows],
                       device=device)  # (R, T)
    types = torch.tensor([[0] * len(s) + [1] * (n + 1) + [0] * (T - len(s) - n - 1) for s, n in rows], device=device)
    attention = torch.tensor([[1] * (len(s) + n + 1) + [0] * (T - len(s) - n - 1) for s, n in rows], device=device)
    mask = cmlm_mask(types, attention)  # (R, T, T)
    target_len = torch.tensor([n for _, n in rows], device=device)  # (R,)
    starts = torch.tensor([len(s) for s, _ in rows], device=device)  # (R,) the first target position
    valid = torch.arange(N, device=device)[None, :] < target_len[:, None]  # (R, N): the row's target, no further
    index = torch.where(valid, starts[:, None] + torch.arange(N, device=device)[None, :], 0)  # (R, N) into T
    special = torch.tensor(sorted({sep_id, pad_id, mask_id, sources[0][0]}), device=device)  # [CLS] starts a source

    def predict() -> tuple[torch.Tensor, torch.Tensor]:
        """The argmax token at every target position and its log-probability, (R, N) each."""
        hidden = model.bert(ids, types, mask).last_hidden_state  # (R, T, H)
        hidden = hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))  # (R, N, H)
        logprobs = model.mlm(hidden).float().log_softmax(-1)  # (R, N, V)
        logprobs[..., special] = -math.inf
        best, chosen = logprobs.max(-1)
        return chosen, best

    def write(chosen: torch.Tensor, values: torch.Tensor) -> None:  # chosen: (R, N) bool; values: (R, N)
        r, c = chosen.nonzero(as_tuple=True)
        ids[r, index[r, c]] = values[r, c]

    tokens, scores = predict()  # pass 1: every target token at once
    write(valid, tokens)
    scores = scores.masked_fill(~valid, math.inf)  # beyond a row's length: never re-masked
    for t in range(1, cfg.iterations):
        n = target_len * (cfg.iterations - t) // cfg.iterations  # (R,) tokens re-masked this pass
        if not bool(n.any()):
            break  # n only shrinks: nothing is left to re-mask
        rank = scores.argsort(dim=1, stable=True).argsort(dim=1)  # (R, N): 0 = the least confident
        remask = rank < n[:, None]
        write(remask, torch.full_like(tokens, mask_id))
        new_tokens, new_scores = predict()
        tokens, scores = torch.where(remask, new_tokens, tokens), torch.where(remask, new_scores, scores)
        write(remask, tokens)
    means = (torch.where(valid, scores, 0.0).sum(1) / target_len).tolist()  # (R,) mean log-probability
    K, results = len(lengths), []
    for b in range(len(sources)):
        hypotheses = [{"ids": tokens[row, :lengths[row - b * K]].tolist(), "score": means[row], "finished": True}
                      for row in range(b * K, (b + 1) * K)]
        results.append(sorted(hypotheses, key=lambda h: -h["score"])[:cfg.num_return])
    return results


# ----------------------------------------------------------------------------------------------
# Entry points


@torch.no_grad()
def generate_ids(model, sources: list[list[int]], cfg: GenerateConfig, sep_id: int, pad_id: int,
                 mask_id: int | None = None, objective: str | None = None,
                 prompts: list[list[int]] | None = None, word_pieces: list[int] | None = None) -> list[list[dict]]:
    """Per source (`[CLS] source [SEP]` ids), cfg.num_return sequences, best first: {"ids" (without the final
    [SEP]), "score" (summed log-probability; beam: / length ** length_penalty), "finished" (ended in [SEP])}.
    mask_id: the [MASK] token, for gibbs and mask-predict (whose score is the mean log-probability), and for
    left-to-right decoding of a model whose objective (generation_config.json) is "unilm-masked".
    prompts: gibbs only, each source's fixed start of its target (token ids; see gibbs_ids); word_pieces:
    gibbs, the ids never sampled first."""
    cfg.check()
    model.eval()
    if prompts is not None and cfg.method != "gibbs":
        raise BertkitError(f"a prompt is for --method gibbs, not {cfg.method}",
                           hint="use --method gibbs, or leave the prompt out")
    if cfg.method == "mask-predict":
        return mask_predict_ids(model, sources, cfg, sep_id, pad_id, mask_id)
    if cfg.method == "gibbs":
        repeated = [s for s in sources for _ in range(cfg.num_return)]
        repeated_prompts = None if prompts is None else [p for p in prompts for _ in range(cfg.num_return)]
        rows = gibbs_ids(model, repeated, cfg, sep_id, pad_id, mask_id, repeated_prompts, word_pieces)
        return [sorted((r[0] for r in rows[i * cfg.num_return:(i + 1) * cfg.num_return]), key=lambda h: -h["score"])
                for i in range(len(sources))]
    device = next(model.parameters()).device
    S = max(len(s) for s in sources)
    source_ids = torch.tensor([s + [pad_id] * (S - len(s)) for s in sources], device=device)
    lengths = torch.tensor([len(s) for s in sources], device=device)
    next_mask = mask_id if objective == "unilm-masked" else None
    if objective == "unilm-masked" and mask_id is None:
        raise BertkitError("a model trained with --target-masking unilm reads each next token off a [MASK]",
                           hint="use a tokenizer with a [MASK] token")
    if cfg.method == "beam":
        decoder = _Decoder(model, source_ids, lengths, cfg.use_cache, next_mask)
        return [hyps[:cfg.num_return] for hyps in _beam(decoder, cfg, sep_id, len(sources))]
    repeat = cfg.num_return
    decoder = _Decoder(model, source_ids.repeat_interleave(repeat, 0), lengths.repeat_interleave(repeat, 0),
                       cfg.use_cache, next_mask)
    generator = None
    if cfg.method == "sample":
        generator = torch.Generator().manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    rows = _greedy_or_sample(decoder, cfg, sep_id, pad_id, len(sources) * repeat, generator)
    grouped = [[r[0] for r in rows[i * repeat:(i + 1) * repeat]] for i in range(len(sources))]
    return [sorted(g, key=lambda h: -h["score"]) for g in grouped]


def generate(model, tokenizer, texts: list[str], cfg: GenerateConfig, max_source_len: int,
             batch_size: int = 32, objective: str | None = None,
             prompts: list[list[int]] | None = None) -> tuple[list[list[dict]], int]:
    """Generated texts per source text, cfg.num_return each ({"text", "score"}), and the number of sources cut
    to max_source_len tokens. Sources are batched by length. objective: generation_config.json's. prompts
    (gibbs): per source, the token ids its target starts with, returned in its text."""
    from bertkit.inference import length_grouped_batches

    cfg.check()
    if max_source_len < 3:
        raise BertkitError(f"a source may hold {max_source_len} tokens: no room for a text between [CLS] and [SEP]",
                           hint="lower --max-new-tokens, or use a model with more positions")
    encoded = tokenizer.encode_batch(list(texts))
    cut = sum(len(ids) > max_source_len - 2 for ids in encoded)
    sources = [[tokenizer.cls_token_id, *ids[:max_source_len - 2], tokenizer.sep_token_id] for ids in encoded]
    out: list = [None] * len(sources)
    word_pieces = None
    if cfg.method == "gibbs":  # a target starts with a whole word, not "##s"
        word_pieces = sorted(i for token, i in tokenizer.get_vocab().items() if token.startswith("##"))
    for indices in length_grouped_batches([len(s) for s in sources], batch_size):
        for i, hypotheses in zip(indices, generate_ids(model, [sources[i] for i in indices], cfg,
                                                       tokenizer.sep_token_id, tokenizer.pad_token_id,
                                                       tokenizer.mask_token_id, objective,
                                                       None if prompts is None else [prompts[i] for i in indices],
                                                       word_pieces)):
            out[i] = [{"text": tokenizer.decode(h["ids"]), "score": h["score"], "finished": h["finished"]}
                      for h in hypotheses]
    return out, cut
