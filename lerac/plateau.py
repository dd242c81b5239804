"""Reduce-on-plateau after the curriculum: the paper's conventional schedule (section 4.2)
handed over from LeRaC.

A ``ReduceLROnPlateau`` stepped from epoch 0 counts the curriculum's epochs into its
patience (and the loss is often flat while the deep layers still start near 1e-8), so it
cuts the rate right after the hand-over. :class:`PlateauAfterCurriculum` is stepped every
epoch like any plateau scheduler but starts afresh until the curriculum has ended: it acts
as a ``ReduceLROnPlateau`` built when ``lerac.finished`` first turns true.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

from torch.optim.lr_scheduler import ReduceLROnPlateau

from lerac.curriculum import LeRaC


class PlateauAfterCurriculum(ReduceLROnPlateau):
    """``ReduceLROnPlateau(lerac.optimizer, **plateau_options)`` that counts epochs only
    once ``lerac`` has finished.

    ``step(metric)`` at the end of each epoch. While the curriculum runs, a step forgets
    the best metric, the bad epochs and the cooldown; the first step after it (the end of
    the epoch in which the curriculum finished) sets the best metric the patience is
    measured against. The state dict carries the curriculum's too, so a trainer that saves
    this scheduler alone (the HF Trainer's ``scheduler.pt``) resumes both.
    """

    def __init__(self, lerac: LeRaC, **plateau_options: Any) -> None:
        if not isinstance(lerac, LeRaC):
            raise TypeError(
                f"PlateauAfterCurriculum needs the LeRaC scheduler it follows, got "
                f"{type(lerac).__name__}: PlateauAfterCurriculum(lerac, patience=..., ...)"
            )
        self.curriculum = lerac
        super().__init__(lerac.optimizer, **plateau_options)

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
        if self.curriculum.finished:
            super().step(metrics, epoch)
            return
        self.best, self.num_bad_epochs, self.cooldown_counter = self.mode_worse, 0, 0
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        self._last_lr = self.curriculum.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        state = {key: value for key, value in super().state_dict().items() if key != "curriculum"}
        return {**state, "curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        curriculum = state.pop("curriculum", None)
        super().load_state_dict(state)
        if curriculum is not None:
            self.curriculum.load_state_dict(curriculum)
