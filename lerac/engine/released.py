"""The authors' released LeRaC curriculum, exact (``regime=lerac_step``; after it
``schedule=multistep``, lerac.engine.schedules); which values each model and data set gets
is in :mod:`lerac.suite.protocol`. The rule itself is the core's ``step`` update
(:class:`lerac.LeRaC`); this regime gives it the released start rates and update points.

Rates (CroitoruAlin/LeRaC, experiments/r18_experiments.py ``add_optimizer_params_lr`` and
``build_optimizer_resnet``; train/resnet_train.py ``Trainer``):

- one rate per *unit* (:mod:`lerac.units`; the released code's are blocks);
- start: the first unit at ``lr_first``, each next one 10x lower, never below ``floor``
  (the released code's ``min_lr`` test ``start_lr > min_lr`` on floats lets one more 10x
  step through: ``min_lr`` 1e-5 gives the floor 1e-6); ``hold`` more units keep
  ``lr_first`` before the steps start (Wide-ResNet); the last unit (the head) starts at
  ``head_lr`` (``initial_learning_rate * clf_lr``) when given. ``scope=head``: only the
  head starts low, every other unit at ``lr_first`` (the released BERT code);
- rise: at each update point every rate is multiplied by 10 while the result stays
  below ``cap_ratio`` x the base rate (``stop_lr``), so each unit arrives at its own
  time. Update points: the end of every epoch before ``end_rise_until`` (null: every
  epoch, as the BERT trainer) and, with ``updates_per_epoch`` 2 or 4, after batches
  L//2 (2) or L//4, L//2, 3L//4 (4) of each epoch before ``rise_until`` (L = batches per
  epoch), as ``_train_epoch`` does.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.optim import Optimizer

from lerac.curriculum import SCOPES, LeRaC, released_start_rates
from lerac.engine.regimes import PerUnitRates, Regime
from lerac.errors import ConfigError
from lerac.units import check_units

# Update points inside an epoch of L batches, after that many batches (train/resnet_train.py
# ``_train_epoch``); the end of the epoch is one more point.
IN_EPOCH = {1: lambda n: [], 2: lambda n: [n // 2], 4: lambda n: [n // 4, n // 2, 3 * n // 4]}


def released_update_points(
    steps_per_epoch: int, updates_per_epoch: int, rise_until: int, end_rise_until: int | None
) -> Iterator[int]:
    """Every update point in order, as steps done (the next step runs at the new rates):
    the in-epoch points of epochs before ``rise_until``, and the end of every epoch before
    ``end_rise_until`` (None: every epoch)."""
    n = steps_per_epoch
    inside = sorted({p for p in IN_EPOCH[updates_per_epoch](n) if 0 < p < n})
    epoch = 0
    while True:
        epoch += 1
        ends = end_rise_until is None or epoch < end_rise_until
        if epoch >= rise_until and not ends:
            return
        if epoch < rise_until:
            yield from ((epoch - 1) * n + p for p in inside)
        if ends:
            yield epoch * n


class StepCurriculum(PerUnitRates, Regime):
    """The released code's LeRaC (module docstring). ``units``: ``block`` (released) or
    ``module`` (one rate per module owning parameters, the paper's reading)."""

    def __init__(
        self,
        lr_first: float,
        floor: float,
        head_lr: float | None = None,
        hold: int = 0,
        scope: str = "all",
        units: str = "block",
        updates_per_epoch: int = 1,
        rise_until: int = 20,
        end_rise_until: int | None = 20,
        cap_ratio: float = 1.1,
    ) -> None:
        check_released(lr_first, floor, head_lr, scope, updates_per_epoch)
        check_units(units, prefix="regime.")
        if not cap_ratio > 1 or hold < 0 or rise_until < 1:
            raise ConfigError(
                "regime.cap_ratio must be above 1, regime.hold >= 0 and regime.rise_until >= 1 "
                f"(got {cap_ratio}, {hold}, {rise_until})"
            )
        self.lr_first, self.floor, self.head_lr = lr_first, floor, head_lr
        self.hold, self.scope, self.unit_kind = hold, scope, units
        self.updates_per_epoch, self.cap_ratio = updates_per_epoch, cap_ratio
        self.rise_until, self.end_rise_until = rise_until, end_rise_until

    def curriculum(self, optimizer: Optimizer, steps_per_epoch: int) -> LeRaC:
        start = released_start_rates(
            len(optimizer.param_groups), self.lr_first, self.floor, self.head_lr, self.hold,
            self.scope,
        )  # fmt: skip
        points = released_update_points(
            steps_per_epoch, self.updates_per_epoch, self.rise_until, self.end_rise_until
        )
        return LeRaC(
            optimizer,
            None,
            lr_first=self.lr_first,
            lr_last=self.floor,
            update="step",
            start_lrs=start,
            update_points=points,
            cap_ratio=self.cap_ratio,
        )


def check_released(
    lr_first: float, floor: float, head_lr: float | None, scope: str, updates_per_epoch: int
) -> None:
    """Refuse released settings the rule cannot run, naming the config keys."""
    if not (lr_first > 0 and floor > 0 and (head_lr is None or head_lr > 0)):
        raise ConfigError(
            f"regime.lr_first, regime.floor and regime.head_lr must be positive rates "
            f"(got {lr_first}, {floor}, {head_lr})"
        )
    if floor > lr_first:
        raise ConfigError(f"regime.floor ({floor:g}) is above regime.lr_first ({lr_first:g})")
    if scope not in SCOPES:
        raise ConfigError(f"regime.scope='{scope}' is not an option: choose all or head")
    if updates_per_epoch not in IN_EPOCH:
        raise ConfigError(
            f"regime.updates_per_epoch={updates_per_epoch}: the released code has 1, 2 or 4"
        )
