"""The learning-rate schedule that runs after the curriculum (group ``schedule``).

A regime's curriculum owns the rates while it lasts (``regime.curriculum_steps`` optimizer
steps; 0 for the conventional regime). Then a schedule takes over:

- :class:`ReduceOnPlateau` (``schedule=plateau``): lr x ``factor`` when the validation
  loss has not improved for ``patience`` epochs; the paper's conventional regime (4.2).
- :class:`WarmupCosine` (``schedule=warmup_cosine``): linear warmup then cosine annealing
  per step, CvT's own schedule (paper 6.2). Under a curriculum the curriculum replaces the
  warmup and the cosine part starts at its end, as the paper does for CvT.

Both are closed forms of (step, validation losses seen), so a checkpoint restores them
exactly with ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lerac.errors import ConfigError


class Schedule:
    """Hooks the loop calls; the default changes nothing."""

    def start(
        self, optimizer: Optimizer, steps_per_epoch: int, max_epochs: int, curriculum_steps: int
    ) -> None:
        self.optimizer = optimizer
        self.curriculum_steps = curriculum_steps

    def before_step(self, step: int) -> None:
        """Set the rates of optimizer step ``step`` (only once the curriculum is over)."""

    def after_epoch(self, val_loss: float) -> None:
        """An epoch ended after the curriculum, with this validation loss."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ReduceOnPlateau(Schedule):
    """lr x ``factor`` after ``patience`` epochs without a lower validation loss.

    The paper reduces the rate "by a factor of 10 when the loss reaches a plateau" (4.2)
    without a patience; 5 epochs is the suite's choice (``schedule.patience``).
    """

    def __init__(self, factor: float = 0.1, patience: int = 5) -> None:
        if not 0 < factor < 1:
            raise ConfigError(
                f"schedule.factor must be in (0, 1), got {factor}; the paper uses 0.1"
            )
        if patience < 0:
            raise ConfigError(f"schedule.patience must be >= 0 epochs, got {patience}")
        self.factor, self.patience = factor, patience
        self.plateau: ReduceLROnPlateau | None = None

    def start(self, optimizer, steps_per_epoch, max_epochs, curriculum_steps) -> None:
        super().start(optimizer, steps_per_epoch, max_epochs, curriculum_steps)
        self.plateau = ReduceLROnPlateau(
            optimizer, mode="min", factor=self.factor, patience=self.patience
        )

    def after_epoch(self, val_loss: float) -> None:
        self.plateau.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        return self.plateau.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau.load_state_dict(state)


class WarmupCosine(Schedule):
    """Linear warmup over ``warmup_epochs``, then cosine annealing to ``min_lr_ratio`` x base
    at ``max_epochs``. Under a curriculum, the curriculum is the warmup."""

    def __init__(self, warmup_epochs: float = 5, min_lr_ratio: float = 0.0) -> None:
        if warmup_epochs < 0:
            raise ConfigError(f"schedule.warmup_epochs must be >= 0, got {warmup_epochs}")
        if not 0 <= min_lr_ratio < 1:
            raise ConfigError(f"schedule.min_lr_ratio must be in [0, 1), got {min_lr_ratio}")
        self.warmup_epochs, self.min_lr_ratio = warmup_epochs, min_lr_ratio

    def start(self, optimizer, steps_per_epoch, max_epochs, curriculum_steps) -> None:
        super().start(optimizer, steps_per_epoch, max_epochs, curriculum_steps)
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.total_steps = max_epochs * steps_per_epoch
        self.warmup_steps = 0 if curriculum_steps else round(self.warmup_epochs * steps_per_epoch)
        self.before_step(0)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        begin = max(self.warmup_steps, self.curriculum_steps)
        progress = min(1.0, (step - begin) / max(1, self.total_steps - begin))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine

    def before_step(self, step: int) -> None:
        if step < self.curriculum_steps:
            return
        scale = self.factor(step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * scale
