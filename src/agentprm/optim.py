"""The optimiser every training stage uses: AdamW with linear warm-up, then cosine decay to a floor."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["adamw_warmup_cosine"]


def adamw_warmup_cosine(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.1,
) -> dict:
    """AdamW over the trainable ``params`` and a per-step schedule, in Lightning's optimizer dict form.

    The learning rate rises linearly over ``warmup_steps``, then follows a half cosine from ``lr``
    down to ``min_lr_ratio`` × ``lr`` at ``total_steps``.
    """
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay)
    total = max(1, total_steps)
    warmup = min(warmup_steps, total)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
