"""Training regimes: what each one changes in the training loop, and nothing else.

The loop (lerac/loop.py) calls a regime at fixed points:
  param_groups(layers)          how the optimizer groups parameters
  start(optimizer, steps)       once, before the first step
  on_epoch_start(epoch, model)  at the start of every epoch, counted from 0 (CBS changes
                                the model here)
  before_step(step)             before every optimizer step (LeRaC sets the rates here)
  in_curriculum(step)           while True, the schedule (reduce-on-plateau, cosine) and
                                early stopping wait; they take over after
  curriculum_steps              optimizer steps the curriculum lasts (0: none)
Adding a regime means one class here (or in its own module) and one conf/regime/ file.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim import Optimizer

from lerac.curriculum import LeRaC, check_settings
from lerac.errors import ConfigError
from lerac.layers import Layer


class Regime:
    """The hooks the loop calls, with plain training as the default behaviour: one param
    group at the base rate and no curriculum."""

    def param_groups(self, layers: list[Layer]) -> list[dict[str, Any]]:
        return [
            {
                "params": [p for layer in layers for p in layer.params],
                "layers": [layer.name for layer in layers],
            }
        ]

    def start(self, optimizer: Optimizer, steps_per_epoch: int) -> None:
        pass

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        pass

    def before_step(self, step: int) -> None:
        pass

    def in_curriculum(self, step: int) -> bool:
        return False

    @property
    def curriculum_steps(self) -> int:
        return 0


class Conventional(Regime):
    """The paper's baseline: plain training; reduce-on-plateau and early stopping act
    from the first epoch (they belong to the loop)."""


class LearningRateCurriculum(Regime):
    """LeRaC: one param group per layer, rates set by :class:`lerac.curriculum.LeRaC`.

    Args:
        k: epochs the curriculum lasts (Table 1); the rates meet the base rate after
            k * steps_per_epoch optimizer steps.
        lr_first, lr_last: initial rates of the first and last layer.
        c: exponent base of Eq. 8 (10 in the paper).
        update: exponential (Eq. 8) | linear (Table 5) | step (authors' released code).
        anti: deeper layers start higher (anti-LeRaC, Table 11).
        updates_per_epoch: x10 rises per epoch for the ``step`` update (released code: 1,
            optionally 2 or 4).
    """

    def __init__(
        self,
        k: int,
        lr_first: float,
        lr_last: float,
        c: float = 10.0,
        update: str = "exponential",
        anti: bool = False,
        updates_per_epoch: int = 1,
    ) -> None:
        check_settings(lr_first, lr_last, update, c)  # before any data is read
        if not isinstance(k, int) or k <= 0:
            raise ConfigError(f"regime.k must be a positive number of epochs, got {k!r}")
        if updates_per_epoch <= 0:
            raise ConfigError(f"regime.updates_per_epoch must be positive, got {updates_per_epoch}")
        self.k, self.lr_first, self.lr_last, self.c = k, lr_first, lr_last, c
        self.update, self.anti, self.updates_per_epoch = update, anti, updates_per_epoch
        self.scheduler: LeRaC | None = None

    def param_groups(self, layers: list[Layer]) -> list[dict[str, Any]]:
        return [{"params": list(layer.params), "layers": [layer.name]} for layer in layers]

    def start(self, optimizer: Optimizer, steps_per_epoch: int) -> None:
        self.scheduler = LeRaC(
            optimizer,
            total_steps=self.k * steps_per_epoch,
            lr_first=self.lr_first,
            lr_last=self.lr_last,
            c=self.c,
            update=self.update,
            anti=self.anti,
            step_every=max(1, steps_per_epoch // self.updates_per_epoch),
        )

    def before_step(self, step: int) -> None:
        # The scheduler set step 0's rates when it was built; advance it to ``step``.
        assert self.scheduler is not None, "start() must run before the first step"
        while self.scheduler.last_epoch < min(step, self.scheduler.total_steps):
            self.scheduler.step()

    def in_curriculum(self, step: int) -> bool:
        return self.scheduler is not None and step < self.scheduler.total_steps

    @property
    def curriculum_steps(self) -> int:
        return self.scheduler.total_steps if self.scheduler is not None else 0
