"""The training rules of the authors' released LeRaC code, exact (``regime=lerac_step``,
``schedule=multistep``); which values each model and data set gets is in
:mod:`lerac.suite.protocol`.

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

After the curriculum (``Trainer.train``): at the start of each epoch in ``milestones``
every rate above ``above`` is divided by 10; there is no early stopping. Both are closed
forms of the step index, so a resumed run gets the same rates.
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer

from lerac.curriculum import x10_rises
from lerac.engine.regimes import PerUnitRates, Regime
from lerac.engine.schedules import Schedule
from lerac.errors import ConfigError

SCOPES = ("all", "head")
# Update points inside an epoch of L batches, after that many batches (train/resnet_train.py
# ``_train_epoch``); the end of the epoch is one more point.
IN_EPOCH = {1: lambda n: [], 2: lambda n: [n // 2], 4: lambda n: [n // 4, n // 2, 3 * n // 4]}
_TOLERANCE = 1e-9  # start rates at the base rate up to rounding


def released_start_rates(
    n_units: int,
    lr_first: float,
    floor: float,
    head_lr: float | None = None,
    hold: int = 0,
    scope: str = "all",
) -> list[float]:
    """Each unit's rate at step 0 (module docstring)."""
    if scope == "head":
        body = [lr_first] * (n_units - 1)
    else:
        body = [max(lr_first * 10.0 ** -max(0, j - hold), floor) for j in range(n_units - 1)]
    if head_lr is None:
        head_lr = (
            floor if scope == "head" else max(lr_first * 10.0 ** -max(0, n_units - 1 - hold), floor)
        )
    return body + [head_lr] if n_units > 0 else []


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
        if not cap_ratio > 1 or hold < 0 or rise_until < 1:
            raise ConfigError(
                "regime.cap_ratio must be above 1, regime.hold >= 0 and regime.rise_until >= 1 "
                f"(got {cap_ratio}, {hold}, {rise_until})"
            )
        self.lr_first, self.floor, self.head_lr = lr_first, floor, head_lr
        self.hold, self.scope, self.unit_kind = hold, scope, units
        self.updates_per_epoch, self.cap_ratio = updates_per_epoch, cap_ratio
        self.rise_until, self.end_rise_until = rise_until, end_rise_until
        self.optimizer: Optimizer | None = None
        self.total = 0

    def start(self, optimizer: Optimizer, steps_per_epoch: int) -> None:
        groups = optimizer.param_groups
        base = [g.setdefault("initial_lr", g["lr"]) for g in groups]
        self.start_lrs = released_start_rates(
            len(groups), self.lr_first, self.floor, self.head_lr, self.hold, self.scope
        )
        for rate, target in zip(self.start_lrs, base):
            if rate > target * (1 + _TOLERANCE):
                raise ConfigError(
                    f"a unit would start at {rate:g}, above the base lr {target:g}; lower "
                    "regime.lr_first or raise optimizer.lr"
                )
        self.rises = [x10_rises(r, self.cap_ratio * b) for r, b in zip(self.start_lrs, base)]
        self.optimizer, self.steps_per_epoch = optimizer, steps_per_epoch
        self.in_epoch = sorted(
            {
                p
                for p in IN_EPOCH[self.updates_per_epoch](steps_per_epoch)
                if 0 < p < steps_per_epoch
            }
        )
        self.total = self._last_update_step(max(self.rises, default=0))
        self.before_step(0)

    def updates_before(self, step: int) -> int:
        """Update points passed before optimizer step ``step`` (0-based) runs."""
        n = self.steps_per_epoch
        epochs, batch = divmod(step, n)  # complete epochs, batches done in the current one
        ends = epochs if self.end_rise_until is None else min(epochs, self.end_rise_until - 1)
        inside = min(epochs, self.rise_until - 1) * len(self.in_epoch)
        if epochs + 1 < self.rise_until:
            inside += sum(p <= batch for p in self.in_epoch)
        return ends + inside

    def update_points(self):
        """Every update point in order, as steps done (the next step runs at the new rate)."""
        n, epoch = self.steps_per_epoch, 0
        while True:
            epoch += 1
            ends = self.end_rise_until is None or epoch < self.end_rise_until
            if epoch >= self.rise_until and not ends:
                return
            if epoch < self.rise_until:
                yield from ((epoch - 1) * n + p for p in self.in_epoch)
            if ends:
                yield epoch * n

    def _last_update_step(self, updates: int) -> int:
        """The step after the ``updates``-th update point (0: none needed), or after the
        last point when the rise window closes first."""
        last = 0
        for count, point in enumerate(self.update_points(), start=1):
            last = point
            if count >= updates:
                break
        return last if updates else 0

    def rates_at(self, step: int) -> list[float]:
        done = self.updates_before(step)
        return [s * 10.0 ** min(done, r) for s, r in zip(self.start_lrs, self.rises)]

    def before_step(self, step: int) -> None:
        if step > self.total:
            return  # the curriculum is over: the schedule owns the rates
        for group, rate in zip(self.optimizer.param_groups, self.rates_at(step)):
            group["lr"] = rate

    def in_curriculum(self, step: int) -> bool:
        return step < self.total

    @property
    def curriculum_steps(self) -> int:
        return self.total


class MultiStep(Schedule):
    """After the curriculum: at the start of each epoch in ``milestones`` (1-based) every
    rate above ``above`` is divided by ``divide_by`` (train/resnet_train.py: ``decay_epoch``
    + k ``decay_step`` below ``stop_decay_epoch``; ``param['lr'] > 1e-4``). The rates the
    curriculum ended with are kept in the checkpoint."""

    def __init__(self, milestones: list[int], divide_by: float = 10.0, above: float = 0.0) -> None:
        if any(not isinstance(m, int) or m < 1 for m in milestones) or not divide_by > 1:
            raise ConfigError(
                f"schedule.milestones must be epochs >= 1 and schedule.divide_by above 1 "
                f"(got {list(milestones)}, {divide_by})"
            )
        self.milestones, self.divide_by, self.above = sorted(milestones), divide_by, above
        self.end_lrs: list[float] | None = None

    def start(self, optimizer, steps_per_epoch, max_epochs, curriculum_steps) -> None:
        super().start(optimizer, steps_per_epoch, max_epochs, curriculum_steps)
        self.steps_per_epoch = steps_per_epoch

    def before_step(self, step: int) -> None:
        if step < self.curriculum_steps:
            return
        groups = self.optimizer.param_groups
        if self.end_lrs is None:
            self.end_lrs = [float(g["lr"]) for g in groups]
        epoch = step // self.steps_per_epoch + 1
        passed = sum(m <= epoch for m in self.milestones)
        for group, rate in zip(groups, self.end_lrs):
            for _ in range(passed):
                if rate > self.above:
                    rate = rate / self.divide_by
            group["lr"] = rate

    def state_dict(self) -> dict[str, Any]:
        return {"end_lrs": self.end_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.end_lrs = state["end_lrs"]
