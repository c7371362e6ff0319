"""Which device runs the model, and how batches get there.

CPU and CUDA run the same code. On CUDA, fp32 matrix multiplies use TF32 tensor cores (10-bit mantissa
inputs, fp32 accumulation: the precision PyTorch calls "high"), and batches are copied from pinned host
memory without blocking, so the copy overlaps the previous step's kernels.
"""

from __future__ import annotations

import torch


def default_device(name: str | None = None) -> torch.device:
    """`name` if given, else CUDA when available; prepares the device for fast matmuls."""
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def to_device(batch: dict, device: torch.device, keys=None) -> dict:
    """The batch's tensors (those named in `keys`, or all) on `device`; via pinned memory for CUDA."""
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=pin)
            for k, v in batch.items() if keys is None or k in keys}
