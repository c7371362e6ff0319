"""Why does a small BERT stay on the MLM plateau, and what breaks it? The probes behind BENCHMARKS.md's
"Breaking the plateau" (issue 13): one-core runs of a few thousand steps, each changing one thing.

    taskset -c 0 python benchmarks/plateau_probe.py --data DATA [options]   # DATA: a `bertkit prepare` directory

A research harness, not bertkit's training loop: MLM only, on contiguous windows drawn at random from the
training split (no NSP), masking as the paper (15%, 80/10/10), AdamW (bertkit's build_optimizer, betas 0.9/0.98),
warmup 6% then linear decay, gradients clipped at 1.0, bf16 autocast where bertkit's `auto` picks it (a CPU that runs bf16 natively;
--fp32 to turn off), one thread. Every
--eval-every steps it prints a JSON line (after a first line with the CPU model and flags): held-out MLM accuracy and loss (acc128/loss128) on 512 fixed windows
of 128 tokens of the validation split with fixed masks (and at --L too, when it differs).

  (no option)        bertkit's tiny BERT, the paper's initialisation: the plateau
  --L 32             shorter training windows (same tokens per step)
  --cbow             not a Transformer: the [MASK] position's own and its two neighbours' embeddings either side,
                     concatenated -> linear -> GELU -> LayerNorm -> vocabulary (--tie-cbow: tied output): what
                     reading the neighbours alone reaches on this data
  --untie            BERT with an output layer of its own instead of the tied word embeddings
  --local PEAK       positions in their own subspace and every head aimed at an offset (--offsets, per layer),
                     its peak logit PEAK above the median
  --vo STD           value and output projections drawn with this std (1/sqrt(hidden) = 0.088 for tiny)
  --freeze-pos       hold the position embeddings and the query/key projections at their start
                     (--pos-only: the positions alone; --unfreeze-at F: until that share of the steps)

bertkit's own implementation of the winning combination (--local 6 --vo 0.088 --freeze-pos --unfreeze-at 0.5)
is train/local_start.py (`pretrain --init-scheme local`); this script keeps its own copy so that each part can
be switched off alone.
"""
import argparse, json, time
import numpy as np, torch, torch.nn.functional as F
torch.set_num_threads(1)
from bertkit.config import preset
from bertkit.model import BertForMaskedLM, masked_lm_loss, IGNORE_INDEX
from bertkit.data.pretraining import PreparedCorpus
from bertkit.train.optim import build_optimizer, warmup_linear, set_lr
from bertkit.tokenizer import Tokenizer

p = argparse.ArgumentParser()
p.add_argument("--L", type=int, default=128)          # training window (with [CLS] and [SEP])
p.add_argument("--L2", type=int, default=0)           # length after the switch
p.add_argument("--switch", type=float, default=1.0)   # fraction of steps at L
p.add_argument("--batch", type=int, default=8)
p.add_argument("--steps", type=int, default=5000)
p.add_argument("--lr", type=float, default=1.5e-3)
p.add_argument("--offset", action="store_true")      # random position offsets
p.add_argument("--eval-every", type=int, default=1000)
p.add_argument("--rate", type=float, default=0.15)
p.add_argument("--fp32", action="store_true")
p.add_argument("--preset", default="tiny")
p.add_argument("--data", required=True)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--cbow", action="store_true")
p.add_argument("--untie", action="store_true")
p.add_argument("--freeze-pos", action="store_true")
p.add_argument("--pos-only", action="store_true")
p.add_argument("--unfreeze-at", type=float, default=1.0)
p.add_argument("--vo", type=float, default=0.0)  # std of W_v and W_o at init (0: the config's)
p.add_argument("--tie-cbow", action="store_true")
p.add_argument("--local", type=float, default=0.0)  # peak attention logit of a local-attention init (0: off)
p.add_argument("--offsets", default="1,-1;2,-2")
a = p.parse_args()
from bertkit.device import machine_summary
print(machine_summary(), flush=True)  # the CPU model and flags beside every probe's numbers
from bertkit.device import resolve_precision
BF16 = not a.fp32 and resolve_precision("auto", torch.device("cpu"), announce=False).name == "bf16"  # native only
tok = Tokenizer.from_pretrained(a.data + "/tokenizer")
train, val = PreparedCorpus(a.data, "train"), PreparedCorpus(a.data, "validation")
V = train.vocab_size
special = sorted(tok.special_ids) 
CLS, SEP, MASK = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
is_special = np.zeros(V, bool); is_special[special] = True
rand_ids = torch.from_numpy(np.flatnonzero(~is_special))
cfg = preset(a.preset, vocab_size=V, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
torch.manual_seed(a.seed)
model = BertForMaskedLM(cfg)
class CBOW(torch.nn.Module):
    def __init__(self, V, H, K=(-2, -1, 0, 1, 2)):
        super().__init__()
        self.K = K; self.E = torch.nn.Embedding(V, H); self.W = torch.nn.Linear(H * len(K), H)
        self.norm = torch.nn.LayerNorm(H); self.out = torch.nn.Linear(H, V)
        torch.nn.init.normal_(self.E.weight, std=0.02)
    def forward(self, ids, labels):
        e = self.E(ids); T = ids.shape[1]
        parts = [torch.roll(e, -k, 1) * ((torch.arange(T) + k >= 0) & (torch.arange(T) + k < T))[None, :, None] for k in self.K]
        h = self.norm(F.gelu(self.W(torch.cat(parts, -1))))
        ch = labels != IGNORE_INDEX
        logits = self.out(h[ch]); t = labels[ch]
        return F.cross_entropy(logits.float(), t), logits, t
if a.cbow:
    model = CBOW(V, 128)

@torch.no_grad()
def local_init(bert, peak, offsets):
    H = bert.config.hidden_size; half = H // 2; nh = bert.config.num_attention_heads; hs = H // nh
    emb = bert.embeddings; npos = emb.position.weight.shape[0]
    emb.word.weight[:, half:] = 0; emb.segment.weight[:, half:] = 0
    nf = half // 2
    omega = torch.linspace(0.03, 3.1, nf) * (1 + 0.05 * torch.sin(torch.arange(nf) * 1.7))  # spread, no aliasing
    pos = torch.arange(npos, dtype=torch.float32)[:, None]
    P = torch.zeros(npos, H)
    P[:, half::2] = torch.sin(pos * omega); P[:, half + 1::2] = torch.cos(pos * omega)
    P *= 0.02 * (64 ** 0.5) / (nf ** 0.5)
    emb.position.weight.copy_(P)
    assert hs == half, "sketch: head size = half the width"
    for li, layer in enumerate(bert.layers):
        W = layer.attention.qkv.weight  # (3H, H)
        for h, d in enumerate(offsets[li % len(offsets)]):
            q = torch.zeros(hs, H); k = torch.zeros(hs, H)
            for f in range(nf):
                c, s_ = torch.cos(omega[f] * d), torch.sin(omega[f] * d)
                i0, i1 = half + 2 * f, half + 2 * f + 1
                q[2 * f, i0] = 1; q[2 * f + 1, i1] = 1
                k[2 * f, i0] = c; k[2 * f, i1] = s_; k[2 * f + 1, i0] = -s_; k[2 * f + 1, i1] = c
            W[h * hs:(h + 1) * hs] = q; W[H + h * hs:H + (h + 1) * hs] = k
            W[2 * H + h * hs:2 * H + (h + 1) * hs, half:] = 0
        layer.attention.qkv.bias.zero_()
    # scale q and k so the peak logit is `peak`, measured on a batch
    ids = torch.randint(1000, V, (4, 128))
    for li, layer in enumerate(bert.layers):
        for it in range(3):
            out = bert(ids, output_attentions=True)
            probs = out.attentions[li]  # (B, nh, T, T)
            d = offsets[li % len(offsets)][0]
            T = 128; rows = torch.arange(max(0, d), min(T, T + d))
            pk = probs[:, 0, rows, rows - d]
            ratio = (pk.log() - probs[:, 0].median(-1).values[:, rows].log()).mean().item()
            scale = (peak / max(ratio, 1e-3)) ** 0.5
            W = layer.attention.qkv.weight; W[:2 * H] *= scale
        print(f"layer {li}: peak-vs-median logit {ratio:.2f} -> peak weight {pk.mean().item():.3f}", flush=True)

if a.untie:
    model.untied = torch.nn.Embedding(V, cfg.hidden_size)
    torch.nn.init.normal_(model.untied.weight, std=0.02)
    model.mlm.word_embeddings = [model.untied]
if a.cbow and a.tie_cbow:
    model.out.weight = model.E.weight
if a.vo:
    with torch.no_grad():
        for layer in model.bert.layers:
            H = cfg.hidden_size
            layer.attention.qkv.weight[2 * H:].normal_(0, a.vo)
            layer.attention.out.weight.normal_(0, a.vo)
if a.local:
    local_init(model.bert, a.local, [tuple(int(v) for v in g.split(",")) for g in a.offsets.split(";")])
rng = np.random.default_rng(a.seed)

def windows(corpus, n, L, rng):
    starts = rng.integers(0, corpus.num_tokens - L, n)
    ids = np.stack([np.concatenate([[CLS], corpus.tokens(s, s + L - 2), [SEP]]) for s in starts]).astype(np.int64)
    return torch.from_numpy(ids)

def mask(ids, g, rate):
    cand = ~torch.from_numpy(is_special)[ids]
    chosen = (torch.rand(ids.shape, generator=g) < rate) & cand
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    r = torch.rand(ids.shape, generator=g)
    out = ids.clone()
    out[chosen & (r < 0.8)] = MASK
    rnd = chosen & (r >= 0.8) & (r < 0.9)
    out[rnd] = rand_ids[torch.randint(len(rand_ids), (int(rnd.sum()),), generator=g)]
    return out, labels

eg = torch.Generator().manual_seed(123)
erng = np.random.default_rng(123)
EV = {}
for L in sorted({128, a.L}):
    ids = windows(val, 512, L, erng)
    EV[L] = mask(ids, eg, 0.15)

def run(ids, labels, pos=None):
    with torch.autocast("cpu", torch.bfloat16, enabled=BF16):
        if a.cbow:
            return model(ids, labels)
        h = model.bert(ids, position_ids=pos).last_hidden_state
        return masked_lm_loss(model.mlm, h, labels)

@torch.no_grad()
def evaluate():
    model.eval(); res = {}
    for L, (ids, labels) in EV.items():
        c = n = 0; ls = 0
        for i in range(0, len(ids), 64):
            loss, logits, t = run(ids[i:i+64], labels[i:i+64])
            c += (logits.argmax(-1) == t).sum().item(); n += len(t); ls += loss.item() * len(t)
        res[f"acc{L}"] = round(100 * c / n, 2); res[f"loss{L}"] = round(ls / n, 3)
    model.train(); return res

FROZEN = [True]
saved = []
if a.freeze_pos:
    Hh = cfg.hidden_size
    saved.append((model.bert.embeddings.position.weight, slice(None), model.bert.embeddings.position.weight.detach().clone()))
    for layer in model.bert.layers:
        for prm in (layer.attention.qkv.weight, layer.attention.qkv.bias):
            saved.append((prm, slice(0, 2 * Hh), prm.detach()[:2 * Hh].clone()))
def freeze_grads():
    if FROZEN[0]:
        for prm, sl, _ in saved:
            if prm.grad is not None: prm.grad[sl] = 0
def restore():
    if FROZEN[0]:
        with torch.no_grad():
            for prm, sl, val in saved: prm[sl] = val
opt = build_optimizer(model, a.lr, betas=(0.9, 0.98))
g = torch.Generator().manual_seed(a.seed)
warm = int(0.06 * a.steps); t0 = time.time(); tl = tc = tn = 0
for step in range(a.steps):
    L = a.L if step < a.switch * a.steps else a.L2
    B = a.batch * a.L // L
    ids, labels = mask(windows(train, B, L, rng), g, a.rate)
    pos = None
    if a.offset and L < 128:
        off = torch.from_numpy(rng.integers(0, 128 - L + 1, (B, 1)))
        pos = off + torch.arange(L)
    set_lr(opt, a.lr * warmup_linear(step, warm, a.steps))
    loss, logits, t = run(ids, labels, pos)
    opt.zero_grad(set_to_none=True); loss.backward()
    freeze_grads(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); restore()
    if step + 1 >= a.unfreeze_at * a.steps: FROZEN[0] = False
    tl += loss.item() * len(t); tc += (logits.argmax(-1) == t).sum().item(); tn += len(t)
    if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
        r = dict(step=step + 1, min=round((time.time() - t0) / 60, 2), L=L, train_loss=round(tl / tn, 3),
                 train_acc=round(100 * tc / tn, 2), **evaluate())
        print(json.dumps(r), flush=True); tl = tc = tn = 0
