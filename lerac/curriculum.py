"""The learning rate curriculum (LeRaC) as a PyTorch LR scheduler.

Every param group of the optimizer is one layer, in input-to-output order. Each group
starts at its own rate (Eq. 6: highest at the input, lowest at the output, spaced evenly
in the exponent, paper 6.2) and rises to the group's base rate, the lr the optimizer was
built with (Eq. 7), over ``total_steps`` optimizer steps. After that every group stays at
its base rate and any other scheduler may take over.

Three update rules:
- ``exponential``: Eq. 8, eta_j(l) = eta_j(0) * c ** (l/k * (log_c eta(k) - log_c eta_j(0))).
- ``linear``: the linear variant of Table 5, eta_j(l) = eta_j(0) + l/k * (eta(k) - eta_j(0)).
- ``step``: the released code's rule (CroitoruAlin/LeRaC, train/resnet_train.py
  ``update_lr``): initial rates fall 10x per layer down to ``lr_last``; every
  ``step_every`` steps (or after each of the given ``update_points``) each rate is
  multiplied by 10 while the result stays at or below the base rate (below ``cap_ratio``
  x the base rate when given), so each layer stops rising at its own time. The curriculum
  ends when no rate can rise any more. ``regime=lerac_step`` (lerac/engine/released.py)
  runs this rule with the released code's start rates and update points.

Rates are a closed form of the step index, so ``state_dict``/``load_state_dict`` of the
plain ``LRScheduler`` restore a schedule anywhere in the middle.
"""

from __future__ import annotations

import bisect
import itertools
import math
import warnings
from collections.abc import Iterable, Sequence

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lerac.errors import ConfigError

UPDATES = ("exponential", "linear", "step")
SCOPES = ("all", "head")  # which layers start low under the released start rates
# A param group's layer rank (0 = input): groups sharing one are one layer with one rate.
RANK = "layer_rank"
# Settings a saved state must share with the scheduler it is loaded into.
CHOSEN = ("total_steps", "update", "c", "step_every", "update_points", "cap_ratio", "start_lrs")

# The released code caps a rising rate "just above" the base rate; this tolerance keeps
# 1e-8 * 10**7 == 1e-1 from failing the cap by a rounding error.
_CAP_TOLERANCE = 1e-6


def initial_rates(
    n_layers: int, lr_first: float, lr_last: float, c: float = 10.0, anti: bool = False
) -> list[float]:
    """The paper's initial rates: evenly spaced exponents (base c) from lr_first to lr_last.

    With 5 layers, lr_first=1e-1 and lr_last=1e-2 this gives 10^-1, 10^-1.25, ..., 10^-2
    (paper, section 6.2). ``anti`` reverses the order (anti-LeRaC, Table 11).
    """
    if n_layers == 1:
        return [lr_first]
    first, last = math.log(lr_first, c), math.log(lr_last, c)
    rates = [c ** (first + (last - first) * j / (n_layers - 1)) for j in range(n_layers)]
    return rates[::-1] if anti else rates


def released_start_rates(
    n_layers: int,
    lr_first: float,
    floor: float,
    head_lr: float | None = None,
    hold: int = 0,
    scope: str = "all",
) -> list[float]:
    """The released code's rates at step 0: the first layer at ``lr_first``, each next one
    10x lower, never below ``floor``; ``hold`` more layers keep ``lr_first`` before the
    steps start; the last layer (the head) at ``head_lr`` when given. ``scope="head"``:
    only the head starts low (at ``head_lr``, else ``floor``), every other layer at
    ``lr_first`` (CroitoruAlin/LeRaC, experiments/*_experiments.py ``add_optimizer_params_lr``).
    """
    if scope not in SCOPES:
        raise ConfigError(f"scope='{scope}' is not an option: choose one of {', '.join(SCOPES)}")
    if n_layers == 0:
        return []
    if scope == "head":
        return [lr_first] * (n_layers - 1) + [floor if head_lr is None else head_lr]
    rates = [max(lr_first * 10.0 ** -max(0, j - hold), floor) for j in range(n_layers)]
    return rates[:-1] + [rates[-1] if head_lr is None else head_lr]


def start_rates(
    n_layers: int,
    lr_first: float,
    lr_last: float,
    c: float = 10.0,
    update: str = "exponential",
    anti: bool = False,
) -> list[float]:
    """Each layer's rate at step 0 for an update rule: Eq. 6 for ``exponential`` and
    ``linear``, the released code's 10x steps for ``step``."""
    if update == "step":
        rates = released_start_rates(n_layers, lr_first, lr_last)
        return rates[::-1] if anti else rates
    return initial_rates(n_layers, lr_first, lr_last, c, anti)


def check_curriculum(
    lr_first: float,
    lr_last: float,
    update: str = "exponential",
    c: float = 10.0,
    prefix: str = "",
) -> None:
    """Refuse settings the curriculum cannot run, with the fix in the message.

    Messages name the Python arguments (``lr_first``); the suite passes ``prefix="regime."``
    so that they name its config keys (``regime.lr_first``) instead.
    """
    p = prefix
    if update not in UPDATES:
        choices = ", ".join(UPDATES)
        raise ConfigError(f"{p}update='{update}' is not an option: choose one of {choices}")
    if c <= 1:
        raise ConfigError(f"{p}c must be above 1 (got {c}); the paper uses 10")
    if not (lr_first > 0 and lr_last > 0):
        raise ConfigError(
            f"LeRaC rates must be positive (got {p}lr_first={lr_first}, {p}lr_last={lr_last}); "
            f"set {p}lr_first and {p}lr_last to values like 1e-1 and 1e-8"
        )
    if lr_last > lr_first:
        anti = "use regime=anti_lerac" if p else "pass anti=True"
        raise ConfigError(
            f"{p}lr_last ({lr_last:g}) is above {p}lr_first ({lr_first:g}): the last "
            "layer must start lowest; swap the two values (for deeper layers starting "
            f"higher {anti})"
        )


def curriculum_steps(k_epochs: int, batches_per_epoch: int, grad_accumulation: int = 1) -> int:
    """``total_steps`` for a curriculum of ``k_epochs`` epochs: optimizer steps, not batches.

    With gradient accumulation an epoch of ``batches_per_epoch`` batches makes
    ceil(batches_per_epoch / grad_accumulation) optimizer steps (as the HF Trainer counts).
    """
    for name, value in (
        ("k_epochs", k_epochs),
        ("batches_per_epoch", batches_per_epoch),
        ("grad_accumulation", grad_accumulation),
    ):
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return k_epochs * math.ceil(batches_per_epoch / grad_accumulation)


def layer_positions(groups: list[dict]) -> list[int]:
    """Each param group's layer position (0 = input), from its ``layer_rank`` key.

    Groups that share a rank are one layer (e.g. the weight-decay and no-decay halves made by
    :func:`lerac.layers.layer_param_groups`) and get one rate. Without ``layer_rank`` keys
    every group is its own layer, in the optimizer's order.
    """
    ranked = [RANK in g for g in groups]
    if not any(ranked):
        return list(range(len(groups)))
    if not all(ranked):
        raise ConfigError(
            f"{ranked.count(False)} of {len(groups)} param groups have no '{RANK}' key: give "
            "every group its layer's rank (0 = input) or none of them"
        )
    order = {rank: i for i, rank in enumerate(sorted({g[RANK] for g in groups}))}
    return [order[g[RANK]] for g in groups]


class LeRaC(LRScheduler):
    """Per-layer learning rates that rise to the optimizer's base rates (the LeRaC curriculum).

    Args:
        optimizer: any optimizer whose param groups are layers in input-to-output order
            (see :func:`lerac.layers.layer_param_groups`). Each group's ``lr`` at
            construction, times its ``lr_scale`` if it has one (timm's layer decay), is the
            rate it reaches at the end (eta^(k)). Groups with the same ``layer_rank`` key
            are one layer and start at one rate.
        total_steps: k, optimizer steps the curriculum lasts (exponential, linear);
            :func:`curriculum_steps` converts epochs.
        lr_first, lr_last: initial rates of the first and last layer (eta_1^(0), eta_n^(0)).
        c: base of the exponent (the paper fixes c = 10).
        update: ``exponential`` (Eq. 8), ``linear`` (Table 5) or ``step`` (released code).
        anti: deeper layers start higher (anti-LeRaC, Table 11).
        step_every: steps between two x10 updates (``step`` only).
        update_points: for ``step`` in place of ``step_every``: the step counts after which
            the rates rise (the released code's per-epoch and in-epoch points), any
            increasing iterable (an endless generator too: only the points needed are read).
        cap_ratio: for ``step``: a rate rises while the result stays below ``cap_ratio`` x
            its base rate (the released code's ``stop_lr``); None: at or below the base rate.
        start_lrs: each group's rate at step 0, in place of the rule's own (Eq. 6 or the
            released code's); the controls use it (one shared rate: warmup; LeRaC's rates
            in a shuffled order: lerac_shuffled). The rates still rise by ``update``.
            One rate per layer (distinct ``layer_rank``), or per group without ranks.

    After the curriculum ``step()`` counts the step and changes no rate, so a scheduler
    stepped beside it (ReduceLROnPlateau, ExponentialLR, MultiStepLR, ...) keeps its effect.
    A group whose ``lr`` is a tensor shared with another group gets its own copy (each
    layer needs its own rate); a group added to the optimizer later trains at its own lr,
    outside the curriculum (with a warning).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None,
        lr_first: float,
        lr_last: float,
        c: float = 10.0,
        update: str = "exponential",
        anti: bool = False,
        step_every: int | None = None,
        start_lrs: list[float] | None = None,
        last_epoch: int = -1,
        *,
        update_points: Iterable[int] | None = None,
        cap_ratio: float | None = None,
    ) -> None:
        groups = layer_groups(optimizer)
        check_curriculum(lr_first, lr_last, update, c)
        positions = layer_positions(groups)
        n = max(positions) + 1
        targets = [float(g.get("initial_lr", g["lr"])) * g.get("lr_scale", 1.0) for g in groups]
        if start_lrs is None:
            start_lrs = start_rates(n, lr_first, lr_last, c, update, anti)
        per_layer = checked_start(start_lrs, n)
        start = [per_layer[i] for i in positions]
        points: list[int] = []
        if update == "step":
            cap = 1 + _CAP_TOLERANCE if cap_ratio is None else cap_ratio
            rises = [x10_rises(r, t * cap) for r, t in zip(start, targets)]
            points = rise_points(step_every, update_points, max(rises, default=0))
            rises = [min(r, len(points)) for r in rises]  # a closed window stops the rise
            total_steps = points[max(rises) - 1] if max(rises, default=0) else 0
        else:
            if total_steps is None or total_steps <= 0 or int(total_steps) != total_steps:
                raise ConfigError(
                    f"total_steps must be a positive number of optimizer steps, got "
                    f"{total_steps!r}; curriculum_steps(k_epochs, batches_per_epoch) gives it "
                    "from epochs"
                )
            rises = []
        for rate, target in zip(start, targets):
            if rate > target * (1 + _CAP_TOLERANCE):
                raise ConfigError(
                    f"a layer would start at {rate:g}, above the base lr {target:g} it should "
                    "rise to (Eq. 6); lower lr_first or raise the optimizer's lr"
                )
        self.targets = targets
        self.start_lrs = start
        self.total_steps = int(total_steps)
        self.c = float(c)
        self.update = update
        self.anti = anti
        self.step_every = step_every
        self.update_points = points
        self.cap_ratio = cap_ratio
        self.max_rises = rises
        super().__init__(optimizer, last_epoch)

    @property
    def finished(self) -> bool:
        """True once every layer is at the rate it ends on (iteration k)."""
        return self.last_epoch >= self.total_steps

    def step(self, epoch: int | None = None) -> None:
        """Advance one optimizer step; past the curriculum, count it and leave every rate
        to whatever scheduler acts after it (the last curriculum step still sets eta^(k)).

        Torch's checks run at every step (``scheduler.step()`` before ``optimizer.step()``
        warns, also when resuming past the curriculum). During the curriculum a rate that
        changed since the last step (another scheduler in a ``ChainedScheduler``, one
        stepped beside LeRaC, a manual edit) is overwritten: that warns once.
        """
        groups = self.optimizer.param_groups
        if len(groups) < len(self.targets):
            raise ConfigError(
                f"the optimizer has {len(groups)} param groups but LeRaC was built on "
                f"{len(self.targets)}: build a new LeRaC after changing the groups"
            )
        if self._step_count > 0 and len(groups) > len(self._last_lr):
            self._adopt_added_groups(len(groups) - len(self._last_lr))
        elif self._step_count > 0 and epoch is None and not self.finished:
            self._warn_if_rates_changed()
        super().step(epoch)

    def _adopt_added_groups(self, added: int) -> None:
        """Groups added since the last step keep their own lr (their base rate); each gets
        its own lr tensor where it shares one."""
        own_lr_tensors(self.optimizer.param_groups, self.optimizer.defaults.get("lr"))
        warnings.warn(
            f"{added} param group(s) were added to the optimizer "
            f"after LeRaC was built: they train at their own lr, outside the curriculum; "
            "build LeRaC after adding every group to put them in it",
            UserWarning,
            stacklevel=3,
        )

    def get_last_lr(self) -> list[float | Tensor]:
        """Every group's rate after the last step: copies, so changing them changes neither
        training nor this scheduler."""
        return [_copy(lr) for lr in self._last_lr]

    def _warn_if_rates_changed(self) -> None:
        groups = self.optimizer.param_groups
        if any(float(g["lr"]) != float(last) for g, last in zip(groups, self._last_lr)):
            warnings.warn(
                "a param group's lr changed since LeRaC last set it, during the curriculum "
                "(another scheduler in a ChainedScheduler or stepped beside LeRaC?): LeRaC "
                "sets every rate at each step until total_steps, so that change lasted one "
                "step. Hand over with SequentialLR([lerac, other], milestones=[total_steps]) "
                "or PlateauAfterCurriculum(lerac, ...) instead",
                UserWarning,
                stacklevel=3,
            )

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a saved schedule; refuse one whose curriculum differs from this one's
        arguments (a new total_steps would otherwise be replaced without a word)."""
        for key in CHOSEN:
            saved, mine = state_dict.get(key, getattr(self, key)), getattr(self, key)
            if not _same(saved, mine):
                raise ConfigError(
                    f"the saved LeRaC state has {key}={saved!r} but this scheduler was built "
                    f"with {key}={mine!r}: build it with the saved arguments to resume that "
                    "curriculum, or do not load the state to start a new one"
                )
        super().load_state_dict(state_dict)

    def get_lr(self) -> list[float | Tensor]:
        """The curriculum's rates for this step; past the curriculum, the rates the groups
        have now (whatever acts after LeRaC set them)."""
        if self.last_epoch > self.total_steps:
            return self._with_added_groups([])
        return self._with_added_groups(self.rates_at(self.last_epoch))

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        """The curriculum's rates at ``last_epoch`` (``step(epoch)``, torch's closed form)."""
        return self._with_added_groups(self.rates_at(self.last_epoch))

    def _with_added_groups(self, rates: list[float]) -> list[float | Tensor]:
        """``rates`` for the first groups, then each other group's own current lr."""
        groups = self.optimizer.param_groups[len(rates) :]
        return [*rates, *(_copy(g["lr"]) for g in groups)]

    def rates_at(self, step: int) -> list[float]:
        """The rate of every layer at optimizer step ``step`` (0 = before any update)."""
        if self.update == "step":
            done = bisect.bisect_right(self.update_points, step)
            return [
                start * 10.0 ** min(done, rises)
                for start, rises in zip(self.start_lrs, self.max_rises)
            ]
        if step >= self.total_steps:
            return list(self.targets)
        t = max(step, 0) / self.total_steps
        if self.update == "linear":
            return [s + t * (b - s) for s, b in zip(self.start_lrs, self.targets)]
        log = lambda x: math.log(x, self.c)  # noqa: E731 - Eq. 8 reads in log_c
        return [s * self.c ** (t * (log(b) - log(s))) for s, b in zip(self.start_lrs, self.targets)]


def checked_start(start_lrs: Sequence[float], n_layers: int) -> list[float]:
    """Explicit start rates: one positive rate per layer."""
    if len(start_lrs) != n_layers or not all(rate > 0 for rate in start_lrs):
        raise ConfigError(
            f"start_lrs needs one positive rate per param group, or per layer_rank where "
            f"groups carry one ({n_layers}), got {list(start_lrs)}"
        )
    return [float(rate) for rate in start_lrs]


def rise_points(
    step_every: int | None, update_points: Iterable[int] | None, needed: int
) -> list[int]:
    """The first ``needed`` step counts after which the ``step`` update raises the rates:
    every ``step_every`` steps, or the given ``update_points`` (fewer when they end)."""
    if (step_every is None) == (update_points is None):
        raise ConfigError(
            "the 'step' update needs step_every > 0 (steps per x10 rise) or update_points "
            "(the steps after which the rates rise), not both"
        )
    if update_points is None:
        if not isinstance(step_every, int) or step_every <= 0:
            raise ConfigError(f"step_every must be a positive number of steps, got {step_every!r}")
        return [step_every * (i + 1) for i in range(needed)]
    points = list(itertools.islice(update_points, needed))
    if any(b <= a for a, b in zip([0, *points], points)):
        raise ConfigError(f"update_points must be increasing positive steps, got {points}")
    return points


def layer_groups(optimizer: Optimizer) -> list[dict]:
    """The optimizer's param groups, each with an lr of its own (:func:`own_lr_tensors`);
    anything but an optimizer is a TypeError."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"LeRaC needs a torch.optim.Optimizer, got {type(optimizer).__name__}: build "
            "the optimizer on the layer groups first (layer_param_groups(model, inputs))"
        )
    own_lr_tensors(optimizer.param_groups, optimizer.defaults.get("lr"))
    return optimizer.param_groups


def own_lr_tensors(groups: list[dict], default_lr: object = None) -> None:
    """Give each group whose ``lr`` tensor is also another group's (or the optimizer's
    default, which ``add_param_group`` hands out) a copy of its own, of the same type.

    An optimizer built with ``lr=torch.tensor(...)`` puts one tensor in every group;
    schedulers fill lr tensors in place, so one rate would end up in all the groups.
    """
    taken = {id(default_lr)} if isinstance(default_lr, Tensor) else set()
    for group in groups:
        lr = group["lr"]
        if isinstance(lr, Tensor):
            if id(lr) in taken:
                group["lr"] = lr = lr.clone()
            taken.add(id(lr))


def _copy(lr: float | Tensor) -> float | Tensor:
    return lr.clone() if isinstance(lr, Tensor) else lr


def x10_rises(rate: float, cap: float) -> int:
    """How many x10 rises keep ``rate`` below ``cap`` (the released code's ``update_lr``:
    a rate is multiplied by 10 while the result stays below its stop rate)."""
    rises = 0
    while rate * 10.0 ** (rises + 1) < cap:
        rises += 1
    return rises


def _same(a: object, b: object) -> bool:
    """Equal, with floats (alone or in lists) compared to a relative 1e-9."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b)
    return a == b
