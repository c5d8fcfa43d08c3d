"""Per-iteration learning rate: linear warm-up, then cosine decay."""
from __future__ import annotations

import math
from typing import Dict, List

import torch

__all__ = ["WarmupCosine"]


class WarmupCosine:
    """Sets every param group's lr (and SGD momentum) from the iteration count.

    Warm-up (``warmup_iters``) takes the lr linearly from 0 to its peak (biases from ``warmup_bias_lr``
    down to the peak, as YOLOv5 does, so the head's priors move early); then a cosine from the peak to
    ``peak * min_lr_ratio`` at ``total_iters``. The state is just the iteration count, so resuming a run
    continues at the same point of the schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, warmup_iters: int,
                 min_lr_ratio: float = 0.05, warmup_bias_lr: float = 0.1, warmup_momentum: float = 0.8):
        self.optimizer = optimizer
        self.total_iters = max(1, int(total_iters))
        self.warmup_iters = int(warmup_iters)
        self.min_lr_ratio = min_lr_ratio
        self.warmup_bias_lr = warmup_bias_lr
        self.warmup_momentum = warmup_momentum
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.base_momentum = [g.get("momentum", g.get("betas", (None,))[0]) for g in optimizer.param_groups]
        self.iteration = 0

    def lr_factor(self, it: int) -> float:
        """Multiplier of the peak lr at iteration ``it`` after warm-up (cosine part)."""
        span = max(1, self.total_iters - self.warmup_iters)
        progress = min(1.0, max(0.0, (it - self.warmup_iters) / span))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def step(self) -> None:
        """Apply the lr of the current iteration, then advance it."""
        it = self.iteration
        for g, base, mom in zip(self.optimizer.param_groups, self.base_lrs, self.base_momentum):
            if it < self.warmup_iters:
                frac = it / self.warmup_iters
                start = self.warmup_bias_lr if g.get("name") == "bias" else 0.0
                g["lr"] = start + (base * self.lr_factor(self.warmup_iters) - start) * frac
                if mom is not None:
                    self._set_momentum(g, self.warmup_momentum + (mom - self.warmup_momentum) * frac)
            else:
                g["lr"] = base * self.lr_factor(it)
                if mom is not None:
                    self._set_momentum(g, mom)
        self.iteration += 1

    @staticmethod
    def _set_momentum(group: Dict, value: float) -> None:
        if "betas" in group:
            group["betas"] = (value, group["betas"][1])
        elif "momentum" in group:
            group["momentum"] = value

    def set_total(self, total_iters: int) -> None:
        """Stretch or shrink the schedule (used when the epoch count is fitted to a time budget)."""
        self.total_iters = max(self.warmup_iters + 1, int(total_iters))

    @property
    def last_lrs(self) -> List[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> Dict:
        return {"iteration": self.iteration, "total_iters": self.total_iters, "warmup_iters": self.warmup_iters}

    def load_state_dict(self, state: Dict) -> None:
        self.iteration = int(state["iteration"])
        self.total_iters = int(state["total_iters"])
        self.warmup_iters = int(state["warmup_iters"])
