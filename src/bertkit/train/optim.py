"""AdamW with BERT's weight-decay exclusions, and the linear warmup / linear decay schedule."""

from __future__ import annotations

import torch


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.01, eps: float = 1e-6,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights get no weight decay, as in the original optimization.py.
    The paper's settings: beta1 0.9, beta2 0.999, eps 1e-6, L2 weight decay 0.01."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 else decay).append(param)  # biases, LayerNorm gains and the MLM bias
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # PyTorch's fused kernel (CPU and CUDA): one pass over each tensor instead of several foreach ops
    fused = all(p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate: linear from 0 to 1 over warmup, then linear to 0 at the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
