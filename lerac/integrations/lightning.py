"""LeRaC inside PyTorch Lightning (extra ``lightning``).

In ``configure_optimizers``::

    optimizer = torch.optim.SGD(layer_param_groups(self, example.to(self.device)), lr=0.1)
    lerac = LeRaC(optimizer, curriculum_steps(k, batches_per_epoch), 0.1, 1e-8)
    plateau = PlateauAfterCurriculum(lerac, mode="min", factor=0.1, patience=5)
    return [optimizer], [lerac_scheduler_config(lerac),
                         after_curriculum_config(plateau, monitor="val_loss")]

Lightning moves the module to its device before ``configure_optimizers``, so the example
batch must be moved there. :class:`LayerRateMonitor` (a ``LearningRateMonitor``) logs one
curve per layer.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lerac.curriculum import LeRaC
from lerac.errors import ConfigError
from lerac.layers import layer_rates
from lerac.plateau import PlateauAfterCurriculum


def lerac_scheduler_config(scheduler: LeRaC) -> dict[str, Any]:
    """LeRaC stepped after every optimizer step (Eq. 8 is per iteration)."""
    return {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lerac"}


def after_curriculum_config(scheduler: Any, monitor: str | None = None) -> dict[str, Any]:
    """A scheduler stepped once per epoch after LeRaC.

    A plateau scheduler must be a :class:`~lerac.plateau.PlateauAfterCurriculum`, which
    counts its patience from the end of the curriculum, with the logged metric it watches
    as ``monitor``; a plain ``ReduceLROnPlateau`` is refused (it would count the
    curriculum's epochs and cut right after the hand-over). Another scheduler stepped
    per epoch from the start changes the rates during the curriculum, which LeRaC
    overwrites at the next step (and warns about).
    """
    if isinstance(scheduler, ReduceLROnPlateau):
        if not isinstance(scheduler, PlateauAfterCurriculum):
            raise ConfigError(
                "after_curriculum_config got a plain ReduceLROnPlateau, which would count the "
                "curriculum's epochs into its patience: build "
                "PlateauAfterCurriculum(lerac, mode=..., factor=..., patience=...) instead"
            )
        if monitor is None:
            raise ConfigError(
                "after_curriculum_config(PlateauAfterCurriculum) needs monitor=<a logged metric>"
            )
    config = {"scheduler": scheduler, "interval": "epoch", "frequency": 1}
    return config if monitor is None else {**config, "monitor": monitor}


class LayerRateMonitor(LearningRateMonitor):
    """``LearningRateMonitor`` with one curve per layer.

    The stock monitor logs every param group once per scheduler config: LeRaC and the
    plateau after it share one optimizer, and a layer's decay and no-decay halves are two
    groups, so each layer got four identical curves. This one logs each optimizer once,
    one ``<name>/<layer>`` per layer (``name``: its first scheduler config's name, else
    ``lr-<optimizer class>``), with the stock monitor's intervals and options otherwise.
    """

    def _extract_stats(self, trainer, interval: str) -> dict[str, float]:
        stats: dict[str, float] = {}
        logged: list[torch.optim.Optimizer] = []
        optimizers = [config.scheduler.optimizer for config in trainer.lr_scheduler_configs]
        for config, optimizer in zip(trainer.lr_scheduler_configs, optimizers):
            if interval in (config.interval, "any") and not any(optimizer is o for o in logged):
                logged.append(optimizer)
                stats.update(self._layer_stats(trainer, optimizer))
        for optimizer in trainer.optimizers:
            if not any(optimizer is o for o in optimizers):
                stats.update(self._layer_stats(trainer, optimizer))
        for name, value in stats.items():
            self.lrs.setdefault(name, []).append(value)
        device = trainer.strategy.root_device
        trainer.callback_metrics.update(
            {name: torch.tensor(value, device=device) for name, value in stats.items()}
        )
        return stats

    @staticmethod
    def _layer_stats(trainer, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        names = [c.name for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer]
        prefix = next((n for n in names if n), f"lr-{type(optimizer).__name__}")
        return {f"{prefix}/{layer}": rate for layer, rate in layer_rates(optimizer).items()}
