"""LeRaC as a timm scheduler for timm's own train loop (extra ``timm``).

    cosine, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=epochs - k_epochs,
                                    updates_per_epoch=updates_per_epoch)
    scheduler = LeRaCScheduler(optimizer, k_epochs * updates_per_epoch, lr_first=0.1,
                               lr_last=1e-8, updates_per_epoch=updates_per_epoch,
                               after=cosine)

timm's loop calls ``scheduler.step_update(num_updates, metric)`` after every optimizer
update, ``scheduler.step(epoch + 1, metric)`` at the end of every epoch, and on resume
``scheduler.step(start_epoch)`` (or ``step_update(start_epoch * updates_per_epoch)``).
timm saves no scheduler state, so the rates are a function of those counts alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.scheduler.scheduler import Scheduler

from lerac.curriculum import LeRaC
from lerac.errors import ConfigError


class LeRaCScheduler(Scheduler):
    """The LeRaC curriculum per optimizer update, then any timm scheduler.

    Args:
        optimizer: param groups are layers, as for :class:`lerac.LeRaC` (``lr_scale``, as
            timm's layer decay writes it, scales the rate a group rises to).
        total_steps, lr_first, lr_last, c, update, anti, step_every, start_lrs: the
            curriculum, as for :class:`lerac.LeRaC`; ``total_steps`` in optimizer updates.
        updates_per_epoch: optimizer updates in one epoch (timm's ``updates_per_epoch``),
            to read the epochs ``step`` gets.
        after: a timm scheduler on the same optimizer, built beforehand without a warm-up
            (the curriculum is the warm-up), e.g. from ``create_scheduler_v2``. It starts at
            its time 0 when the curriculum ends: at update ``total_steps`` if it counts
            updates, else at the first epoch that starts after the curriculum (size its
            length to the epochs left). None: the rates stay at their base values.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int | None,
        lr_first: float,
        lr_last: float,
        *,
        updates_per_epoch: int,
        after: Scheduler | None = None,
        **curriculum: Any,
    ) -> None:
        if not isinstance(updates_per_epoch, int) or updates_per_epoch <= 0:
            raise ConfigError(
                f"updates_per_epoch must be a positive integer (optimizer updates per epoch, "
                f"len(loader) // grad_accum_steps), got {updates_per_epoch!r}"
            )
        check_after(after, optimizer)
        super().__init__(optimizer, "lr", t_in_epochs=False)
        self.curriculum = LeRaC(optimizer, total_steps, lr_first, lr_last, **curriculum)
        self.updates_per_epoch = updates_per_epoch
        self.after = after
        self.handover_epoch = math.ceil(self.curriculum.total_steps / updates_per_epoch)

    @property
    def total_steps(self) -> int:
        return self.curriculum.total_steps

    def step(self, epoch: int, metric: float | None = None) -> None:
        """The rates for epoch ``epoch`` (timm calls it with ``epoch + 1`` at each epoch's end
        and with ``start_epoch`` on resume)."""
        self.metric = metric
        if self.after is not None and self.after.t_in_epochs:
            if epoch > self.handover_epoch:
                self.after.step(epoch - self.handover_epoch, metric)
            else:
                self._apply(self.curriculum.rates_at(epoch * self.updates_per_epoch))
            return
        self.step_update(epoch * self.updates_per_epoch, metric)

    def step_update(self, num_updates: int, metric: float | None = None) -> None:
        """The rates for the update after the ``num_updates``-th."""
        self.metric = metric
        if self.after is None or num_updates <= self.total_steps:
            self._apply(self.curriculum.rates_at(num_updates))
        elif not self.after.t_in_epochs:
            self.after.step_update(num_updates - self.total_steps, metric)

    def _get_lr(self, t: int) -> list[float]:
        return self.curriculum.rates_at(t)

    def _apply(self, rates: list[float]) -> None:
        """Set every group's rate (``lr_scale`` is in the curriculum's rates already)."""
        for group, rate in zip(self.optimizer.param_groups, rates):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(rate)
            else:
                group["lr"] = rate

    def state_dict(self) -> dict[str, Any]:
        """The scheduler after the curriculum's state (a plateau's best metric); the rest
        is a function of the counts timm passes."""
        return {"after": None if self.after is None else self.after.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.after is not None and state_dict.get("after") is not None:
            self.after.load_state_dict(state_dict["after"])


def check_after(after: Scheduler | None, optimizer: torch.optim.Optimizer) -> None:
    """Refuse a scheduler LeRaC cannot hand over to, with the fix."""
    if after is None:
        return
    if not isinstance(after, Scheduler):
        raise TypeError(
            f"after= takes a timm scheduler (timm.scheduler.Scheduler), got "
            f"{type(after).__name__}; for a torch scheduler use lerac.LeRaC with SequentialLR"
        )
    if after.optimizer is not optimizer:
        raise ConfigError("after= schedules another optimizer: build it on the same optimizer")
    if getattr(after, "warmup_t", 0):
        raise ConfigError(
            f"the scheduler after LeRaC has a warm-up (warmup_t={after.warmup_t}): the "
            "curriculum is the warm-up, build it with warmup_epochs=0 (--warmup-epochs 0)"
        )
