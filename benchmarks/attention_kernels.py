"""Which attention kernel is faster on this CPU: PyTorch's fused `scaled_dot_product_attention` or the explicit
softmax (two batched matmuls), by precision and length. bertkit's encoder picks the explicit one where
`bertkit.model.explicit_is_faster` says so (a CPU, bf16, at most EXPLICIT_MAX_KEYS keys); this checks the rule.

    python benchmarks/attention_kernels.py [--repeats 10]

Part 1, the kernels alone: random q, k, v of the presets' shapes (batch x heads x length x 64), a padding mask,
forward, and forward + backward; milliseconds per call (median of --repeats). Part 2, the whole encoder: one
forward + backward of `BertForMaskedLM` (tiny / mini / base, dropout off, labels at 15% of the positions) under
bf16 autocast, with bertkit's rule and with the fused kernel forced (EXPLICIT_MAX_KEYS = 0). bf16 is timed only
where the CPU runs it natively: emulated bf16 is ~100x slower and bertkit never picks it there.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

import bertkit.model as bk
from bertkit.config import preset
from bertkit.device import cpu_native_bf16, machine_summary

KERNEL_SHAPES = [  # (name, batch, heads, length)
    ("tiny, 32 x 128", 32, 2, 128), ("mini, 32 x 128", 32, 4, 128), ("base, 32 x 128", 32, 12, 128),
    ("tiny, 32 x 256", 32, 2, 256), ("base, 8 x 512", 8, 12, 512)]
ENCODER_RUNS = [("tiny", 32, 128), ("mini", 32, 128), ("base", 8, 128), ("base", 8, 512)]


def explicit(q, k, v, mask):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(-1) @ v


def fused(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def kernel_row(batch, heads, length, dtype, repeats):
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, 64, dtype=dtype, requires_grad=True) for _ in range(3))
    mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    mask[: batch // 2, ..., length - length // 8:] = False  # half the rows padded by an eighth
    out = []
    for kernel in (fused, explicit):
        out.append(median_ms(lambda: kernel(q, k, v, mask), repeats))
        out.append(median_ms(lambda: kernel(q, k, v, mask).float().sum().backward(), repeats))
    return out  # fused fwd, fused fwd+bwd, explicit fwd, explicit fwd+bwd


def encoder_ms(name, batch, length, max_keys, repeats):
    torch.manual_seed(0)
    config = preset(name)
    model = bk.BertForMaskedLM(config)
    bk.set_dropout(model, 0.0)
    ids = torch.randint(1000, config.vocab_size, (batch, length))
    labels = torch.where(torch.rand(ids.shape) < 0.15, ids, -100)
    saved, bk.EXPLICIT_MAX_KEYS = bk.EXPLICIT_MAX_KEYS, max_keys

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
    try:
        return median_ms(step, repeats)
    finally:
        bk.EXPLICIT_MAX_KEYS = saved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    native = cpu_native_bf16()
    print(f"- machine: {machine_summary()}; {torch.get_num_threads()} threads; "
          f"bf16 {'native' if native else 'emulated: not timed'}\n")
    print("Kernels alone (ms per call, median; fwd = forward, f+b = forward + backward):\n")
    print("| shape (head size 64) | dtype | fused fwd | fused f+b | explicit fwd | explicit f+b | f+b: explicit faster by |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, batch, heads, length in KERNEL_SHAPES:
        for dtype in (torch.float32, torch.bfloat16) if native else (torch.float32,):
            f_fwd, f_both, e_fwd, e_both = kernel_row(batch, heads, length, dtype, args.repeats)
            print(f"| {label} | {str(dtype)[6:]} | {f_fwd:.1f} | {f_both:.1f} | {e_fwd:.1f} | {e_both:.1f} | "
                  f"{f_both / e_both:.2f}x |")
    if not native:
        return
    print(f"\nThe encoder, one forward + backward of BertForMaskedLM under bf16 autocast (ms, median); bertkit's "
          f"rule takes the explicit kernel up to {bk.EXPLICIT_MAX_KEYS} keys:\n")
    print("| preset, batch x length | fused forced | bertkit's rule | speed-up |")
    print("|---|---:|---:|---:|")
    for name, batch, length in ENCODER_RUNS:
        forced = encoder_ms(name, batch, length, 0, args.repeats)
        rule = encoder_ms(name, batch, length, bk.EXPLICIT_MAX_KEYS, args.repeats)
        print(f"| {name}, {batch} x {length} | {forced:.1f} | {rule:.1f} | {forced / rule:.2f}x |")


if __name__ == "__main__":
    main()
