"""The learning-rate schedule after the curriculum (group ``schedule``).

A schedule is told once where the curriculum ends (``start``), then gives the rates of
every step from there on (``rates_at``; None leaves the rates as they are) and sees each
later epoch's validation loss (``after_epoch``). It never runs during the curriculum:
:class:`lerac.engine.rates.LearningRates` hands over to it.

- :class:`ReduceOnPlateau` (``schedule=plateau``): lr x ``factor`` when the validation loss
  has not improved for ``patience`` epochs; the paper's conventional regime (4.2).
- :class:`WarmupCosine` (``schedule=warmup_cosine``): linear warmup then cosine annealing per
  step, CvT's own schedule (paper 6.2). A curriculum replaces the warmup and the cosine
  starts at its end, as the paper does for CvT.
- :class:`MultiStep` (``schedule=multistep``): the released code's division at fixed epochs.
- :class:`Schedule` (``schedule=constant``): the rates the curriculum ended on.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lerac.errors import ConfigError


class Schedule:
    """Constant rates after the curriculum; the base of every schedule."""

    def start(
        self, optimizer: Optimizer, *, steps_per_epoch: int, max_epochs: int, curriculum_steps: int
    ) -> None:
        self.optimizer = optimizer
        self.steps_per_epoch, self.max_epochs = steps_per_epoch, max_epochs
        self.curriculum_steps = curriculum_steps

    def rates_at(self, step: int) -> list[float] | None:
        """Each param group's rate at optimizer step ``step``; None: as they are."""
        return None

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

    def start(self, optimizer: Optimizer, **where: int) -> None:
        super().start(optimizer, **where)
        # Built at the hand-over's start: it counts only epochs after the curriculum.
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

    def start(self, optimizer: Optimizer, **where: int) -> None:
        super().start(optimizer, **where)
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.total_steps = self.max_epochs * self.steps_per_epoch
        warmup = round(self.warmup_epochs * self.steps_per_epoch)
        self.warmup_steps = 0 if self.curriculum_steps else warmup

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        begin = max(self.warmup_steps, self.curriculum_steps)
        progress = min(1.0, (step - begin) / max(1, self.total_steps - begin))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine

    def rates_at(self, step: int) -> list[float]:
        scale = self.factor(step)
        return [base * scale for base in self.base_lrs]


class MultiStep(Schedule):
    """At the start of each epoch in ``milestones`` (1-based) every rate above ``above`` is
    divided by ``divide_by``, from the rates the curriculum ended with (CroitoruAlin/LeRaC
    train/resnet_train.py: ``decay_epoch`` + k ``decay_step`` below ``stop_decay_epoch``,
    ``param['lr'] > 1e-4``). Those end rates are kept in the checkpoint."""

    def __init__(self, milestones: list[int], divide_by: float = 10.0, above: float = 0.0) -> None:
        if any(not isinstance(m, int) or m < 1 for m in milestones) or not divide_by > 1:
            raise ConfigError(
                f"schedule.milestones must be epochs >= 1 and schedule.divide_by above 1 "
                f"(got {list(milestones)}, {divide_by})"
            )
        self.milestones, self.divide_by, self.above = sorted(milestones), divide_by, above
        self.end_lrs: list[float] | None = None

    def rates_at(self, step: int) -> list[float]:
        if self.end_lrs is None:  # the first step after the curriculum
            self.end_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        epoch = step // self.steps_per_epoch + 1
        passed = sum(m <= epoch for m in self.milestones)
        return [self.divided(rate, passed) for rate in self.end_lrs]

    def divided(self, rate: float, times: int) -> float:
        for _ in range(times):
            if rate > self.above:
                rate = rate / self.divide_by
        return rate

    def state_dict(self) -> dict[str, Any]:
        return {"end_lrs": self.end_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.end_lrs = state["end_lrs"]
