"""The one owner of the optimizer's learning rates during training.

Before every optimizer step the loop makes one call, :meth:`LearningRates.before_step`:
while the regime's curriculum lasts (``curriculum.total_steps`` steps; none for the
conventional regime) its closed form ``rates_at(step)`` sets every param group's rate; the
step where it arrives sets the rates it ends on, and from there the schedule's
``rates_at(step)`` takes over (:mod:`lerac.engine.schedules`). After each epoch
:meth:`LearningRates.after_epoch` hands the validation loss to the schedule once the
curriculum is over. Both sides are closed forms of the step (plus the schedule's state),
so a resumed run gets the same rates.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor
from torch.optim import Optimizer

from lerac.engine.schedules import Schedule


class Curriculum(Protocol):
    """Rates that move for ``total_steps`` steps, e.g. :class:`lerac.LeRaC`."""

    total_steps: int

    def rates_at(self, step: int) -> list[float]: ...


class LearningRates:
    """The curriculum's rates while it lasts, then the schedule's."""

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        curriculum: Curriculum | None = None,
        schedule: Schedule | None = None,
        steps_per_epoch: int,
        max_epochs: int,
    ) -> None:
        self.optimizer, self.curriculum = optimizer, curriculum
        self.schedule = schedule or Schedule()
        self.schedule.start(
            optimizer,
            steps_per_epoch=steps_per_epoch,
            max_epochs=max_epochs,
            curriculum_steps=self.curriculum_steps,
        )

    @property
    def curriculum_steps(self) -> int:
        """Optimizer steps the curriculum lasts (0: none)."""
        return self.curriculum.total_steps if self.curriculum is not None else 0

    def in_curriculum(self, step: int) -> bool:
        return step < self.curriculum_steps

    def before_step(self, step: int) -> None:
        """Set the rates optimizer step ``step`` (0-based) trains with."""
        if self.curriculum is not None and step <= self.curriculum_steps:
            self.write(self.curriculum.rates_at(step))
        if step >= self.curriculum_steps:
            rates = self.schedule.rates_at(step)
            if rates is not None:
                self.write(rates)

    def after_epoch(self, step: int, val_loss: float) -> bool:
        """An epoch ended after ``step`` steps: past the curriculum the schedule sees its
        validation loss. True when it did (early stopping counts from then on too)."""
        if self.in_curriculum(step):
            return False
        self.schedule.after_epoch(val_loss)
        return True

    def write(self, rates: list[float]) -> None:
        for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(rate)  # a tensor lr stays the same tensor (compiled steps)
            else:
                group["lr"] = rate

    def state_dict(self) -> dict[str, Any]:
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state)
