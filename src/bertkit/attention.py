"""Attention maps: what each head of each layer attends to, for one text (or pair).

The probabilities come from the model's reference attention path (an explicit softmax), switched on
by `output_attentions=True`; training and inference keep the fused kernel.

    tokens, probs = attention_maps(model, tokenizer, "the cat sat", pair=None)   # probs: (layers, heads, T, T)
    draw_png(tokens, probs, "attention.png", layer=-1, head=0)   # layers x heads grid + one head enlarged
    write_html(tokens, probs, "attention.html")                  # pick the layer and head in the page
"""

from __future__ import annotations

import json

import numpy as np
import torch

from bertkit.device import resolve_precision, to_device
from bertkit.errors import BertkitError
from bertkit.files import atomic_write, atomic_write_text


@torch.inference_mode()
def attention_maps(model, tokenizer, text: str, pair: str | None = None,
                   precision: str = "auto") -> tuple[list[str], np.ndarray]:
    """The tokens of `[CLS] text [SEP] (pair [SEP])` and the attention probabilities, (layers, heads, T, T):
    row i is where token i looks, each row sums to 1."""
    positions = model.config.max_position_embeddings
    batch = tokenizer([text], None if pair is None else [pair], max_length=positions + 1)
    if batch["input_ids"].shape[1] > positions:
        raise BertkitError(f"the text is longer than the model's {positions} positions", hint="shorten it")
    model.eval()
    device = next(model.parameters()).device
    with resolve_precision(precision, device).autocast(device):
        out = model(**to_device(batch, device), output_attentions=True)
    probs = torch.stack([a[0] for a in out.attentions]).float().cpu().numpy()  # (L, H, T, T)
    return tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()), probs


def pick_head(n_layers: int, n_heads: int, layer: int, head: int) -> tuple[int, int]:
    """(layer, head) as non-negative indices, or a clear error when the model has no such layer or head."""
    if not -n_layers <= layer < n_layers:
        raise BertkitError(f"--layer {layer}: the model has {n_layers} layers", hint=f"use 0 to {n_layers - 1} or -1")
    if not -n_heads <= head < n_heads:
        raise BertkitError(f"--head {head}: the model has {n_heads} heads per layer",
                           hint=f"use 0 to {n_heads - 1}")
    return layer % n_layers, head % n_heads


def draw_png(tokens: list[str], probs: np.ndarray, out: str, layer: int = -1, head: int = 0) -> dict:
    """A grid of every layer's every head (rows: layers, columns: heads) beside one head enlarged with
    its tokens labelled. Returns what was drawn: layers, heads, panels (layers x heads) and the enlarged one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer, head = pick_head(*probs.shape[:2], layer, head)
    n_layers, n_heads, n = probs.shape[:3]
    cell = 0.9
    big = max(4.0, 0.28 * n)
    fig = plt.figure(figsize=(cell * n_heads + big + 1.5, max(cell * n_layers, big) + 1.0))
    grid = fig.add_gridspec(1, 2, width_ratios=[cell * n_heads, big], wspace=0.15)
    small = grid[0].subgridspec(n_layers, n_heads, wspace=0.05, hspace=0.05)
    panels = 0
    for i in range(n_layers):
        for j in range(n_heads):
            ax = fig.add_subplot(small[i, j])
            ax.imshow(probs[i, j], cmap="viridis", vmin=0, vmax=1)
            panels += 1
            ax.set_xticks([])
            ax.set_yticks([])
            if (i, j) == (layer, head):
                for spine in ax.spines.values():
                    spine.set_edgecolor("red")
                    spine.set_linewidth(2)
            if j == 0:
                ax.set_ylabel(f"L{i}", fontsize=7, rotation=0, labelpad=10)
            if i == 0:
                ax.set_title(f"H{j}", fontsize=7)
    ax = fig.add_subplot(grid[1])
    image = ax.imshow(probs[layer, head], cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n), tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(n), tokens, fontsize=7)
    ax.set_title(f"layer {layer}, head {head} (row: query token, column: attended token)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    drawn = {"layers": n_layers, "heads": n_heads, "panels": panels, "tokens": n,
             "enlarged": [layer, head]}
    description = json.dumps(drawn)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight", metadata={"Description": description}))
    plt.close(fig)
    return drawn


_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>attention: __TITLE__</title>
<style>
body { font-family: sans-serif; margin: 1.5em; }
table.map { border-collapse: collapse; font-size: 12px; }
table.map td { width: 22px; height: 22px; border: 1px solid #eee; }
table.map th { font-weight: normal; padding: 2px 4px; white-space: nowrap; }
table.map th.col { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
#value { margin-left: 1em; color: #555; }
</style></head><body>
<h3>Attention weights</h3>
<p>Row: the token that looks; column: the token it attends to. Each row sums to 1.</p>
<label>layer <select id="layer"></select></label>
<label>head <select id="head"></select></label>
<span id="value"></span>
<div id="map"></div>
<script>
const data = __DATA__;
const layerSel = document.getElementById("layer"), headSel = document.getElementById("head");
for (let i = 0; i < data.layers; i++) layerSel.add(new Option(i, i));
for (let j = 0; j < data.heads; j++) headSel.add(new Option(j, j));
layerSel.value = data.layer; headSel.value = data.head;
function esc(s) { return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;"); }
function draw() {
  const m = data.attentions[layerSel.value][headSel.value], t = data.tokens;
  let html = '<table class="map"><tr><th></th>' + t.map(x => '<th class="col">' + esc(x) + '</th>').join("") + '</tr>';
  for (let i = 0; i < t.length; i++) {
    html += '<tr><th>' + esc(t[i]) + '</th>';
    for (let j = 0; j < t.length; j++) {
      const v = m[i][j];
      html += '<td style="background: rgba(40, 80, 200, ' + v + ')" data-v="' + esc(t[i] + ' → ' + t[j] + ': ' + v) + '"></td>';
    }
    html += '</tr>';
  }
  document.getElementById("map").innerHTML = html + '</table>';
}
document.getElementById("map").addEventListener("mouseover", e => {
  if (e.target.dataset.v) document.getElementById("value").textContent = e.target.dataset.v; });
layerSel.onchange = headSel.onchange = draw;
draw();
</script></body></html>
"""


def write_html(tokens: list[str], probs: np.ndarray, out: str, layer: int = -1, head: int = 0) -> dict:
    """A self-contained page (no network) with the maps of every layer and head, chosen in two menus."""
    layer, head = pick_head(*probs.shape[:2], layer, head)
    data = {"tokens": tokens, "layers": probs.shape[0], "heads": probs.shape[1], "layer": layer, "head": head,
            "attentions": np.round(probs, 4).tolist()}
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")  # no "</script>" inside the script
    title = " ".join(tokens).replace("&", "&amp;").replace("<", "&lt;")
    atomic_write_text(out, _HTML.replace("__TITLE__", title).replace("__DATA__", payload))
    return {"layers": probs.shape[0], "heads": probs.shape[1], "panels": probs.shape[0] * probs.shape[1],
            "tokens": len(tokens), "enlarged": [layer, head]}
