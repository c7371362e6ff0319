"""The metrics of a run: one JSON object per line in OUT/metrics.jsonl, and with --tensorboard the same
numbers as TensorBoard scalars in OUT/tensorboard (training rows as train/NAME, held-out rows as
SPLIT/NAME), for users who already watch their runs there."""

from __future__ import annotations

import json
import os

from bertkit.errors import BertkitError
from bertkit.files import atomic_write_text


def require_tensorboard():
    """torch's SummaryWriter class, or a clear error when the tensorboard package is not installed
    (called before a run writes anything)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise BertkitError("--tensorboard needs the tensorboard package",
                           hint="pip install 'bertkit[tensorboard]' (or pip install tensorboard)") from None
    return SummaryWriter


def tensorboard_writer(log_dir: str, purge_step: int | None = None):
    return require_tensorboard()(log_dir=log_dir, purge_step=purge_step)


class MetricsLog:
    def __init__(self, out: str, tensorboard: bool = False, start_step: int = 0):
        self.path = os.path.join(out, "metrics.jsonl")
        # on resume, events after the checkpoint's step are dropped, as metrics.jsonl's lines are
        self.writer = tensorboard_writer(os.path.join(out, "tensorboard"), start_step or None) if tensorboard else None

    def write(self, line: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        if self.writer is not None:
            prefix = line.get("split", "train")
            for name, value in line.items():
                if name not in ("step", "epoch", "split") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{name}", value, line["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def truncate_metrics(path: str, last_step: int) -> None:
    """On resume, drop metric lines past the checkpoint so the file reads as one uninterrupted run
    (a line cut short by a crash is dropped too)."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                if json.loads(line).get("step", 0) <= last_step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except json.JSONDecodeError:
                continue
    atomic_write_text(path, "".join(kept))
