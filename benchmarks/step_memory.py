"""Peak memory of a pre-training step, bertkit vs `transformers.BertForPreTraining`, for `base`.

    python benchmarks/step_memory.py [--seq-lens 128,512] [--batch-size 8] [--json PATH]

Each (library, seq_len, precision) runs in a fresh process: build `base` (L12/H768), AdamW, then two
steps (forward with MLM labels at 15% of positions and an NSP label, backward, clip, AdamW step) on
random tokens. Reported: the process's peak resident memory (CPU: ru_maxrss; CUDA: max allocated), and
the part of it the steps added beyond the model and optimizer state (the activations and temporaries).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, resource, sys
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch
library, seq_len, batch_size, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
if library == "bertkit":
    from bertkit.config import preset
    from bertkit.model import BertForPreTraining
    model = BertForPreTraining(preset("base"))
else:
    import transformers
    model = transformers.BertForPreTraining(transformers.BertConfig())
model.to(device).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
ids = torch.randint(1000, 30000, (batch_size, seq_len), device=device)
labels = torch.full_like(ids, -100)
chosen = torch.rand(ids.shape, device=device) < 0.15
labels[chosen] = ids[chosen]
batch = dict(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids), labels=labels,
             next_sentence_label=torch.zeros(batch_size, dtype=torch.long, device=device))
# the optimizer state exists before the measured steps
for p in model.parameters():
    optimizer.state[p]["step"] = torch.tensor(0.0)
    optimizer.state[p]["exp_avg"] = torch.zeros_like(p)
    optimizer.state[p]["exp_avg_sq"] = torch.zeros_like(p)
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / 2**20
else:
    before = rss_mb()
for _ in range(2):
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(**batch)
    loss = out.loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
if device.type == "cuda":
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_mb": peak, "state_mb": before, "step_mb": peak - before}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-lens", default="128,512")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "step_memory.json"))
    args = parser.parse_args()
    rows = []
    for seq_len in map(int, args.seq_lens.split(",")):
        for precision in args.precisions.split(","):
            for library in ("bertkit", "transformers"):
                proc = subprocess.run([sys.executable, "-c", CHILD, library, str(seq_len), str(args.batch_size),
                                       precision], capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(proc.stderr[-3000:])
                rows.append({"library": library, "seq_len": seq_len, "precision": precision,
                             **json.loads(proc.stdout.strip().splitlines()[-1])})
                print(rows[-1], file=sys.stderr, flush=True)
    from bertkit.device import machine_summary

    print(f"\nbase (L12/H768), batch {args.batch_size}, 2 steps, AdamW state allocated before the steps; "
          f"{machine_summary()}\n")
    print("| seq | precision | bertkit peak | transformers peak | bertkit step | transformers step | step ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        print(f"| {a['seq_len']} | {a['precision']} | {a['peak_mb']:,.0f} MB | {b['peak_mb']:,.0f} MB | "
              f"{a['step_mb']:,.0f} MB | {b['step_mb']:,.0f} MB | {a['step_mb'] / b['step_mb']:.2f} |")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"command": " ".join(sys.argv), "batch_size": args.batch_size, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
