"""Training curves from metrics.jsonl: loss, the objective's accuracies (MLM, NSP, SOP, ...), learning rate and
throughput per step.

Several run directories are overlaid; held-out (validation) points are drawn as markers on the same axes.
"""

from __future__ import annotations

import json
import os

from bertkit.errors import BertkitError
from bertkit.files import atomic_write

# Between the loss and the learning rate, each pre-training statistic named *_accuracy gets a panel (mlm_accuracy:
# "MLM accuracy"), whatever the objective; fine-tuning's dev metrics get theirs at the end.
PANELS = [("loss", "loss"), ("lr", "learning rate"), ("tokens_per_s", "tokens / s"), ("samples_per_s", "samples / s")]
HELD_OUT = ("validation", "dev")  # pre-training's held-out split, fine-tuning's dev set
NOT_METRICS = ("step", "epoch", "split", "loss", "lr")


def read_metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl") if os.path.isdir(run_dir) else run_dir
    if not os.path.isfile(path):
        raise BertkitError(f"{path}: no metrics file", hint="pass a run directory written by bertkit pretrain/finetune")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise BertkitError(f"{path}: line {number} is not JSON", hint="the file is damaged") from None
    return rows


def run_labels(run_dirs: list[str]) -> list[str]:
    """Short names that tell runs apart: the last path part, with as many parents as it takes
    (a/run and b/run, not run and run)."""
    parts = [os.path.normpath(os.path.abspath(d)).split(os.sep) for d in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [os.path.normpath(d) for d in run_dirs]


X_AXES = {"step": ("step", 1.0), "minutes": ("time_s", 60.0)}  # --x: the field and its divisor


def plot_runs(run_dirs: list[str], out: str, x: str = "step", labels: list[str] | None = None) -> str:
    """Draw the panels that have data for any of the runs into a PNG; x "minutes" puts wall-clock minutes since
    the run started (metrics' time_s) on the horizontal axis instead of steps, for runs of unequal step cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in X_AXES:
        raise BertkitError(f"--x {x}: not one of {', '.join(X_AXES)}", hint="use --x step or --x minutes")
    if labels is not None and len(labels) != len(run_dirs):
        raise BertkitError(f"{len(labels)} labels for {len(run_dirs)} runs", hint="pass one --labels entry per run")
    x_key, x_div = X_AXES[x]
    runs = {d: read_metrics(d) for d in run_dirs}
    if x != "step":
        missing = [d for d, rows in runs.items() if not any(x_key in r for r in rows)]
        if missing:
            raise BertkitError(f"{', '.join(missing)}: the metrics record no wall-clock time ({x_key})",
                               hint="plot them with --x step (runs of bertkit before 2026-12 did not log time_s)")
    names = labels or run_labels(list(runs))
    accuracies = dict.fromkeys(k for rows in runs.values() for r in rows if r.get("split") != "dev" for k in r
                               if k.endswith("_accuracy"))
    known = PANELS[:1] + [(k, f"{k[:-len('_accuracy')].upper()} accuracy") for k in accuracies] + PANELS[1:]
    panels = [(k, title) for k, title in known if any(k in r for rows in runs.values() for r in rows)]
    # fine-tuning: each dev metric (accuracy, f1, exact_match, ...) gets a panel of its own
    dev_metrics = {k for rows in runs.values() for r in rows if r.get("split") == "dev" for k, v in r.items()
                   if k not in NOT_METRICS and isinstance(v, (int, float))}
    panels += [(k, f"dev {k}") for k in sorted(dev_metrics) if k not in dict(panels)]
    if not panels:
        raise BertkitError(f"{', '.join(run_dirs)}: no metrics to plot", hint="the run has not logged a step yet")
    columns = min(len(panels), 4)
    rows_n = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(4 * columns, 3.3 * rows_n), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    ylims = {}
    for ax, (key, title) in zip(axes.flat, panels):
        for i, ((run, rows), label) in enumerate(zip(runs.items(), names)):
            color = f"C{i}"
            rows = [r for r in rows if r.get(x_key) is not None]
            train = [(r[x_key] / x_div, r[key]) for r in rows if r.get(key) is not None and r.get("split") not in HELD_OUT]
            held = [(r[x_key] / x_div, r[key]) for r in rows if r.get(key) is not None and r.get("split") in HELD_OUT]
            if train:
                ax.plot(*zip(*train), color=color, label=f"{label} (train)", linewidth=1.2)
            if held:
                ax.plot(*zip(*held), "o--", color=color, label=f"{label} (held-out)", markersize=4)
        # An honest axis: non-negative quantities start at 0, and ticks show the values themselves (no
        # "+6.927e-1" offset), so a loss flat at 0.693 looks flat rather than like a fall across the panel.
        values = [r[key] for rows in runs.values() for r in rows if isinstance(r.get(key), (int, float))]
        if values and min(values) >= 0:
            ax.set_ylim(bottom=0, top=max(max(values) * 1.05, 1e-12))
        ax.ticklabel_format(axis="y", useOffset=False)
        ylims[title] = [float(v) for v in ax.get_ylim()]
        ax.set_title(title)
        ax.set_xlabel("wall-clock minutes" if x == "minutes" else "step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    description = json.dumps({"panels": [title for _, title in panels], "runs": len(runs),  # for tests and tools
                              "labels": names, "ylim": ylims, "x": x})
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Description": description}))
    plt.close(fig)
    return out
