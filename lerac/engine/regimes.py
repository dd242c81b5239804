"""Training regimes: what each one changes in the training loop, and nothing else.

The loop (lerac/engine/loop.py) calls a regime at fixed points:
  prepare(model)                once, on the device, before layers are found and a
                                checkpoint is loaded (CBS attaches its kernels here)
  units(layers, model)          which layers share a rate (lerac/units.py; default: each
                                layer its own); layers.csv has one row per unit
  param_groups(layers)          how the optimizer groups parameters
  curriculum(optimizer, steps)  once, before the first step: the curriculum of rates
                                (lerac.LeRaC), or None; lerac/engine/rates.py sets its
                                rates while it lasts, then hands over to the schedule
  on_epoch_start(epoch, model)  at the start of every epoch, counted from 0 (CBS changes
                                the model here)
  epoch_log()                   the regime's own values for this epoch's history row
                                (CBS: its sigma); the loop writes them without knowing them
  state_dict() / load_state_dict(state)   what a checkpoint keeps of the regime
Adding a regime means one class here (or in its own module) and one conf/regime/ file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from lerac.curriculum import LeRaC, check_curriculum, start_rates
from lerac.errors import ConfigError
from lerac.layers import Layer
from lerac.smoothing import DEFAULT_KERNEL_SIZE, SmoothingCurriculum, check_smoothing
from lerac.units import check_units, rate_units


class Regime:
    """The hooks the loop calls, with plain training as the default behaviour: one param
    group at the base rate and no curriculum."""

    def units(self, layers: list[Layer], model: nn.Module) -> list[Layer]:
        return layers

    def param_groups(self, layers: list[Layer]) -> list[dict[str, Any]]:
        return [{"params": [p for layer in layers for p in layer.params], "name": "all"}]

    def prepare(self, model: nn.Module) -> None:
        pass

    def curriculum(self, optimizer: Optimizer, steps_per_epoch: int) -> LeRaC | None:
        return None

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        pass

    def epoch_log(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Conventional(Regime):
    """The paper's baseline: plain training; reduce-on-plateau and early stopping act
    from the first epoch (they belong to the loop)."""


class PerUnitRates:
    """What every curriculum of rates shares: layers merged into rate units
    (:mod:`lerac.units`, ``unit_kind``) and one param group per unit."""

    unit_kind: str

    def units(self, layers: list[Layer], model: nn.Module) -> list[Layer]:
        return rate_units(model, layers, self.unit_kind)

    def param_groups(self, layers: list[Layer]) -> list[dict[str, Any]]:
        return [{"params": list(layer.params), "name": layer.name} for layer in layers]


class LearningRateCurriculum(PerUnitRates, Regime):
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
        units: ``module`` (one rate per module owning parameters) or ``block`` (one per
            residual block / transformer layer, as the released code; lerac/units.py).
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
        units: str = "module",
    ) -> None:
        check_curriculum(lr_first, lr_last, update, c, prefix="regime.")  # before data is read
        check_units(units, prefix="regime.")
        if not isinstance(k, int) or k <= 0:
            raise ConfigError(f"regime.k must be a positive number of epochs, got {k!r}")
        if updates_per_epoch <= 0:
            raise ConfigError(f"regime.updates_per_epoch must be positive, got {updates_per_epoch}")
        self.k, self.lr_first, self.lr_last, self.c = k, lr_first, lr_last, c
        self.update, self.anti, self.updates_per_epoch = update, anti, updates_per_epoch
        self.unit_kind = units

    def start_lrs(self, n_layers: int) -> list[float] | None:
        """Each layer's rate at step 0; None: the update rule's own (Eq. 6 or the released
        code's). The controls below override it."""
        return None

    def curriculum(self, optimizer: Optimizer, steps_per_epoch: int) -> LeRaC:
        return LeRaC(
            optimizer,
            total_steps=self.k * steps_per_epoch,
            lr_first=self.lr_first,
            lr_last=self.lr_last,
            c=self.c,
            update=self.update,
            anti=self.anti,
            step_every=max(1, steps_per_epoch // self.updates_per_epoch),
            start_lrs=self.start_lrs(len(optimizer.param_groups)),
        )


class Smoothed:
    """What CBS adds to a regime: kernels attached once, sigma set per epoch."""

    smoothing: SmoothingCurriculum

    def smooth(self, sigma: float, decay: float, decay_every: int, kernel_size: int | None):
        """The smoothing schedule, its settings checked under the suite's config keys."""
        check_smoothing(sigma, decay, decay_every, kernel_size, prefix="regime.")
        self.smoothing = SmoothingCurriculum(sigma, decay, decay_every, kernel_size)

    def prepare(self, model: nn.Module) -> None:
        # Kernels exist before a checkpoint's model state (which holds them) is loaded.
        self.smoothing.apply(0, model)

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        self.smoothing.apply(epoch, model)

    @property
    def cbs_sigma(self) -> float | None:
        """The smoothing sigma in force this epoch."""
        return self.smoothing.current

    def epoch_log(self) -> dict[str, Any]:
        return {**super().epoch_log(), "cbs_sigma": self.cbs_sigma}


class CurriculumBySmoothing(Smoothed, Regime):
    """CBS (Sinha et al. 2020): plain training of a model whose activations are blurred by a
    Gaussian whose sigma decays per epoch (see :mod:`lerac.smoothing`).

    Args:
        sigma, decay, decay_every: sigma_0, d and u of Table 1.
        kernel_size: odd taps per axis (3, the released CBS code's); None sizes the kernel
            from sigma_0.
    """

    def __init__(
        self,
        sigma: float,
        decay: float,
        decay_every: int,
        kernel_size: int | None = DEFAULT_KERNEL_SIZE,
    ) -> None:
        self.smooth(sigma, decay, decay_every, kernel_size)


class SmoothedLearningRateCurriculum(Smoothed, LearningRateCurriculum):
    """CBS + LeRaC (Table 5): both curricula at once. Takes LeRaC's arguments and CBS's
    ``sigma``, ``decay``, ``decay_every`` and ``kernel_size``; the smoothing owns no
    trainable parameter, so the layers LeRaC orders are the same as under ``lerac``."""

    def __init__(
        self,
        sigma: float,
        decay: float,
        decay_every: int,
        kernel_size: int | None = DEFAULT_KERNEL_SIZE,
        **lerac: Any,
    ) -> None:
        super().__init__(**lerac)
        self.smooth(sigma, decay, decay_every, kernel_size)


class Warmup(LearningRateCurriculum):
    """Control: every layer starts at the same ``lr_start`` and rises to the base rate over
    the same k epochs by the same curve as LeRaC (``update``); then the conventional
    schedule, as after LeRaC. The only difference from ``lerac``: no layer is ahead.
    Param groups stay one per layer, so the optimizer is the same as under ``lerac``."""

    def __init__(
        self,
        k: int,
        lr_start: float,
        c: float = 10.0,
        update: str = "exponential",
        updates_per_epoch: int = 1,
    ) -> None:
        super().__init__(k, lr_start, lr_start, c, update, False, updates_per_epoch)

    def start_lrs(self, n_layers: int) -> list[float]:
        return [self.lr_first] * n_layers


class ShuffledLearningRateCurriculum(LearningRateCurriculum):
    """Control: LeRaC's initial rates given to the layers in a random order fixed by
    ``order_seed``: the same set of rates without the input-to-output structure. A draw
    that leaves the rates in LeRaC's order is drawn again (unless every order is LeRaC's:
    one layer, or all rates equal). layers.csv shows the rate each layer got."""

    def __init__(self, order_seed: int = 0, **lerac: Any) -> None:
        super().__init__(**lerac)
        self.order_seed = order_seed

    def start_lrs(self, n_layers: int) -> list[float]:
        rates = start_rates(n_layers, self.lr_first, self.lr_last, self.c, self.update, self.anti)
        if len(set(rates)) == 1:
            return rates
        generator = torch.Generator().manual_seed(self.order_seed)
        shuffled = rates
        while shuffled == rates:
            shuffled = [rates[i] for i in torch.randperm(n_layers, generator=generator).tolist()]
        return shuffled
