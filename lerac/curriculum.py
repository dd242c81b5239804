"""The learning rate curriculum (LeRaC) as a PyTorch LR scheduler.

Every param group of the optimizer is one layer, in input-to-output order. Each group
starts at its own rate (Eq. 6: highest at the input, lowest at the output, spaced evenly
in the exponent, paper 6.2) and rises to the group's base rate, the lr the optimizer was
built with (Eq. 7), over ``total_steps`` optimizer steps. After that every group stays at
its base rate and any other scheduler may take over.

Three update rules:
- ``exponential``: Eq. 8, eta_j(l) = eta_j(0) * c ** (l/k * (log_c eta(k) - log_c eta_j(0))).
- ``linear``: the linear variant of Table 5, eta_j(l) = eta_j(0) + l/k * (eta(k) - eta_j(0)).
- ``step``: the released code's rule in short (CroitoruAlin/LeRaC, train/resnet_train.py
  ``update_lr``; the exact recipe is regime=lerac_step, lerac/released.py): initial rates
  fall 10x per layer down to ``lr_last``; every ``step_every`` steps each rate is
  multiplied by 10 while the result stays at or below the base rate, so each layer stops
  rising at its own time. The curriculum ends when no rate can rise any more.

Rates are a closed form of the step index, so ``state_dict``/``load_state_dict`` of the
plain ``LRScheduler`` restore a schedule anywhere in the middle.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lerac.errors import ConfigError

UPDATES = ("exponential", "linear", "step")

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


def released_code_rates(
    n_layers: int, lr_first: float, lr_last: float, anti: bool = False
) -> list[float]:
    """The released code's initial rates: 10x lower per layer until the floor lr_last."""
    rates = [max(lr_first * 10.0**-j, lr_last) for j in range(n_layers)]
    return rates[::-1] if anti else rates


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
        return released_code_rates(n_layers, lr_first, lr_last, anti)
    return initial_rates(n_layers, lr_first, lr_last, c, anti)


def check_settings(
    lr_first: float, lr_last: float, update: str = "exponential", c: float = 10.0
) -> None:
    """Refuse settings the curriculum cannot run, with the fix in the message."""
    if update not in UPDATES:
        raise ConfigError(
            f"regime.update='{update}' is not an option: choose one of {', '.join(UPDATES)}"
        )
    if c <= 1:
        raise ConfigError(f"regime.c must be above 1 (got {c}); the paper uses 10")
    if not (lr_first > 0 and lr_last > 0):
        raise ConfigError(
            f"LeRaC rates must be positive (got lr_first={lr_first}, lr_last={lr_last}); "
            "set regime.lr_first and regime.lr_last to values like 1e-1 and 1e-8"
        )
    if lr_last > lr_first:
        raise ConfigError(
            f"regime.lr_last ({lr_last:g}) is above regime.lr_first ({lr_first:g}): the last "
            "layer must start lowest; swap the two values (for deeper layers starting "
            "higher use regime=anti_lerac)"
        )


class LeRaC(LRScheduler):
    """Per-layer learning rates that rise to the optimizer's base rates (the LeRaC curriculum).

    Args:
        optimizer: any optimizer whose param groups are layers in input-to-output order
            (see :func:`lerac.layers.layer_param_groups`). Each group's ``lr`` at
            construction is the rate it reaches at the end (eta^(k)).
        total_steps: k, optimizer steps the curriculum lasts (exponential, linear).
        lr_first, lr_last: initial rates of the first and last layer (eta_1^(0), eta_n^(0)).
        c: base of the exponent (the paper fixes c = 10).
        update: ``exponential`` (Eq. 8), ``linear`` (Table 5) or ``step`` (released code).
        anti: deeper layers start higher (anti-LeRaC, Table 11).
        step_every: steps between two x10 updates (``step`` only).
        start_lrs: each group's rate at step 0, in place of the rule's own (Eq. 6 or the
            released code's); the controls use it (one shared rate: warmup; LeRaC's rates
            in a shuffled order: lerac_shuffled). The rates still rise by ``update``.
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
    ) -> None:
        check_settings(lr_first, lr_last, update, c)
        n = len(optimizer.param_groups)
        targets = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        if start_lrs is None:
            start = start_rates(n, lr_first, lr_last, c, update, anti)
        elif len(start_lrs) == n and all(rate > 0 for rate in start_lrs):
            start = [float(rate) for rate in start_lrs]
        else:
            raise ConfigError(
                f"start_lrs needs one positive rate per param group ({n}), got {start_lrs}"
            )
        if update == "step":
            if not step_every or step_every <= 0:
                raise ConfigError("the 'step' update needs step_every > 0 (steps per x10 rise)")
            rises = [_rises_below_cap(rate, target) for rate, target in zip(start, targets)]
            total_steps = max(rises) * step_every
        else:
            if total_steps is None or total_steps <= 0:
                raise ConfigError(
                    f"the curriculum needs at least one step (got total_steps={total_steps}); "
                    "set regime.k to a positive number of epochs"
                )
            rises = []
        for rate, target in zip(start, targets):
            if rate > target * (1 + _CAP_TOLERANCE):
                raise ConfigError(
                    f"a layer would start at {rate:g}, above the base lr {target:g} it should "
                    "rise to (Eq. 6); lower regime.lr_first or raise optimizer.lr"
                )
        self.start_lrs = start
        self.total_steps = int(total_steps)
        self.c = float(c)
        self.update = update
        self.anti = anti
        self.step_every = step_every
        self.max_rises = rises
        super().__init__(optimizer, last_epoch)

    @property
    def finished(self) -> bool:
        """True once every layer is at the rate it ends on (iteration k)."""
        return self.last_epoch >= self.total_steps

    def get_lr(self) -> list[float]:
        return self.rates_at(self.last_epoch)

    def rates_at(self, step: int) -> list[float]:
        """The rate of every layer at optimizer step ``step`` (0 = before any update)."""
        if self.update == "step":
            done = step // self.step_every
            return [
                start * 10.0 ** min(done, rises)
                for start, rises in zip(self.start_lrs, self.max_rises)
            ]
        if step >= self.total_steps:
            return list(self.base_lrs)
        t = max(step, 0) / self.total_steps
        if self.update == "linear":
            return [s + t * (b - s) for s, b in zip(self.start_lrs, self.base_lrs)]
        log = lambda x: math.log(x, self.c)  # noqa: E731 - Eq. 8 reads in log_c
        return [
            s * self.c ** (t * (log(b) - log(s))) for s, b in zip(self.start_lrs, self.base_lrs)
        ]


def _rises_below_cap(rate: float, cap: float) -> int:
    """How many x10 rises keep ``rate`` at or below ``cap`` (the released code's rule)."""
    rises = 0
    while rate * 10.0 ** (rises + 1) <= cap * (1 + _CAP_TOLERANCE):
        rises += 1
    return rises
