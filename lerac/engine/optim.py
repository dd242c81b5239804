"""One multi-tensor optimizer update across all param groups (``trainer.fused_groups``).

PyTorch optimizers update group by group: their foreach kernels batch the tensors of one
group only. LeRaC gives every layer a group of its own (~240 for DenseNet-121), so a plain
step launches ~240x the kernels of conventional training. :func:`fuse_groups` rebuilds the
optimizer as a subclass (``FusedSGD``, ...) whose step makes one update per *bucket*:
groups that share every hyperparameter but the learning rate. Inside a bucket the rate is
a per-tensor list, so one set of foreach ops updates every layer at its own rate.

It is the optimizer's own update: the same state entries (``momentum_buffer``; ``step``,
``exp_avg``, ``exp_avg_sq``; ``exp_inf``) and the operations of PyTorch's foreach
implementation in the same order, so ``state_dict``/``load_state_dict``, checkpoints and
LR schedulers (which only write ``group["lr"]``) work unchanged. Adam, AdamW and Adamax
give the same numbers as PyTorch's step; so does SGD on the CPU (there it runs PyTorch's
per-tensor arithmetic); SGD's foreach form (CUDA, compiled) differs by rounding (PyTorch
adds ``-lr * grad`` in one fused multiply-add, here it is a multiply, then an add, which
is what PyTorch itself does under torch.compile). A step that meets a parameter without
state yet (the first one) is left to the optimizer's own step, which creates the state.

With ``compile_backend`` the update is compiled (torch.compile). Per-tensor scalars
(rates, bias corrections) are computed in Python and handed over as one tensor refilled
before every step, so a rate that moves every step (LeRaC) or a float rate written by
ReduceLROnPlateau never becomes a compile-time constant: no recompiles.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import SGD, Adam, Adamax, Optimizer

from lerac.engine.counters import on_host


def _add_scaled_quotient_(params, numerators, denominators, scalars) -> None:
    """params += scalars * numerators / denominators, per tensor."""
    if isinstance(scalars[0], Tensor):  # compiled path: scalars are 0-d tensors
        torch._foreach_add_(
            params, torch._foreach_mul(torch._foreach_div(numerators, denominators), scalars)
        )
    else:
        torch._foreach_addcdiv_(params, numerators, denominators, scalars)


def sgd_update(params, grads, bufs, scalars, *, momentum, dampening, weight_decay, nesterov):
    (neg_lrs,) = scalars
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if momentum != 0:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads, alpha=1 - dampening)
        grads = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
    torch._foreach_add_(params, torch._foreach_mul(grads, neg_lrs))


def sgd_update_per_tensor(
    params, grads, bufs, scalars, *, momentum, dampening, weight_decay, nesterov
):
    """The CPU form: PyTorch's own per-tensor SGD arithmetic (bit-identical to its CPU
    step), without its per-group overhead; foreach ops buy nothing on the CPU."""
    (neg_lrs,) = scalars
    for param, grad, buf, neg_lr in zip(params, grads, bufs, neg_lrs):
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        param.add_(grad, alpha=neg_lr)


def adam_update(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    scalars,
    *,
    beta1,
    beta2,
    eps,
    weight_decay,
    decoupled_weight_decay,
):
    step_sizes, bias_correction2_sqrt, decay = scalars
    if weight_decay != 0:
        if decoupled_weight_decay:  # AdamW
            torch._foreach_mul_(params, decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    _add_scaled_quotient_(params, exp_avgs, denom, step_sizes)


def adamax_update(params, grads, exp_avgs, exp_infs, scalars, *, beta1, beta2, eps, weight_decay):
    (step_sizes,) = scalars
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_infs, beta2)
    norms = torch._foreach_abs(grads)
    torch._foreach_add_(norms, eps)
    torch._foreach_maximum_(exp_infs, norms)
    _add_scaled_quotient_(params, exp_avgs, exp_infs, step_sizes)


def count_steps(counters: list[Tensor]) -> list[float]:
    """Adam's per-parameter step counters advanced by one, as floats. PyTorch keeps them
    in CPU memory (unless ``capturable``), so reading them waits for no GPU."""
    if not counters:
        return []
    torch._foreach_add_(counters, 1)
    with on_host():
        return [float(s) for s in counters]


def scalar_table(scalars: list[list[float]], device: torch.device) -> Tensor:
    """The per-tensor scalars as one float32 tensor on ``device``. For a GPU it is built in
    pinned memory, so the copy runs asynchronously (a pageable source makes the host wait);
    the caching host allocator keeps that memory until the copy has read it."""
    pinned = device.type == "cuda"
    table = torch.tensor(scalars, dtype=torch.float32, pin_memory=pinned)
    return table.to(device, non_blocking=pinned)


class _Kind:
    """How one optimizer class maps onto its update: state keys, options, per-tensor scalars."""

    def __init__(
        self,
        update: Callable,
        state_keys: tuple[str, ...],
        options: tuple[str, ...] = (),
        n_scalars: int = 1,
        counts_steps: bool = True,
    ) -> None:
        self.update, self.state_keys, self.options = update, state_keys, options
        self.n_scalars, self.counts_steps = n_scalars, counts_steps

    def keeps_state(self, group: dict) -> bool:
        return True

    def scalars(self, group: dict, steps: list[float]) -> list[list[float]]:
        raise NotImplementedError

    def hyper(self, group: dict) -> dict[str, Any]:
        return {name: group[name] for name in self.options}


class _SGDKind(_Kind):
    def keeps_state(self, group):
        return group["momentum"] != 0

    def scalars(self, group, steps):
        return [[-group["lr"]] * len(steps)]


class _AdamKind(_Kind):
    def scalars(self, group, steps):
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        # The same float arithmetic as torch.optim.adam._multi_tensor_adam.
        step_sizes = [(lr / (1 - beta1**s)) * -1 for s in steps]
        bias2 = [(1 - beta2**s) ** 0.5 for s in steps]
        return [step_sizes, bias2, [1 - lr * wd] * len(steps)]

    def hyper(self, group):
        beta1, beta2 = group["betas"]
        return {
            "beta1": beta1,
            "beta2": beta2,
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
            "decoupled_weight_decay": group.get("decoupled_weight_decay", False),
        }


class _AdamaxKind(_AdamKind):
    def scalars(self, group, steps):
        beta1 = group["betas"][0]
        return [[(group["lr"] / (1 - beta1**s)) * -1 for s in steps]]

    def hyper(self, group):
        hyper = super().hyper(group)
        del hyper["decoupled_weight_decay"]  # Adamax has no decoupled decay
        return hyper


_KINDS: dict[type, _Kind] = {
    SGD: _SGDKind(
        sgd_update,
        ("momentum_buffer",),
        ("momentum", "dampening", "weight_decay", "nesterov"),
        counts_steps=False,
    ),
    Adam: _AdamKind(adam_update, ("exp_avg", "exp_avg_sq"), n_scalars=3),  # AdamW is an Adam
    Adamax: _AdamaxKind(adamax_update, ("exp_avg", "exp_inf")),
}


def _kind_of(optimizer: Optimizer) -> _Kind | None:
    for cls in type(optimizer).__mro__:
        if cls in _KINDS:
            return _KINDS[cls]
    return None


def unsupported(optimizer: Optimizer) -> str | None:
    """Why ``optimizer`` cannot take the fused update, or None when it can."""
    if _kind_of(optimizer) is None:
        return f"{type(optimizer).__name__} has no fused update (SGD, Adam, AdamW, Adamax do)"
    for group in optimizer.param_groups:
        for option in ("maximize", "amsgrad", "capturable", "differentiable", "fused"):
            if group.get(option):
                return f"{type(optimizer).__name__} with {option}=True has no fused update"
        if isinstance(group["lr"], Tensor):
            return "a tensor lr has no fused update (rates are read as floats each step)"
    return None


class FusedUpdate:
    """The update behind the ``step`` of a :func:`fuse_groups` optimizer."""

    def __init__(
        self, optimizer: Optimizer, compile_backend: Any = None, plain_step: Any = None
    ) -> None:
        self.kind = _kind_of(optimizer)
        self.plain_step = plain_step or type(optimizer).step  # creates the state
        self.compiled = None
        if compile_backend is not None:
            self.compiled = torch.compile(self._run_packed, backend=compile_backend, dynamic=False)
        self.steps_taken = 0

    @staticmethod
    def buckets(optimizer: Optimizer) -> list[list[dict]]:
        """Param groups that agree on every hyperparameter but ``lr``."""
        names = sorted(k for k in optimizer.defaults if k != "lr")
        buckets: dict[tuple, list[dict]] = {}
        for group in optimizer.param_groups:
            key = tuple(repr(group.get(name)) for name in names)
            buckets.setdefault(key, []).append(group)
        return list(buckets.values())

    @torch.no_grad()
    def __call__(self, optimizer: Optimizer) -> None:
        kind, state = self.kind, optimizer.state
        for group in optimizer.param_groups:
            if kind.keeps_state(group) and any(
                not state[p] for p in group["params"] if p.grad is not None
            ):
                self.plain_step(optimizer)  # a first step: the optimizer creates its state
                return
        for groups in self.buckets(optimizer):
            params: list[Tensor] = []
            grads: list[Tensor] = []
            states: list[list] = [[] for _ in kind.state_keys]
            scalars: list[list[float]] = [[] for _ in range(kind.n_scalars)]
            for group in groups:
                live = [p for p in group["params"] if p.grad is not None]
                params += live
                grads += [p.grad for p in live]
                for column, key in zip(states, kind.state_keys):
                    column += [state[p].get(key) for p in live]
                steps = [1.0] * len(live)
                if kind.counts_steps:  # Adam family: count this step on CPU, as torch does
                    steps = count_steps([state[p]["step"] for p in live])
                for column, values in zip(scalars, kind.scalars(group, steps)):
                    column += values
            if not params:
                continue
            hyper = kind.hyper(groups[0])
            if self.compiled is not None:
                self.compiled(params, grads, states, scalar_table(scalars, params[0].device), hyper)
            elif kind.update is sgd_update and params[0].device.type == "cpu":
                sgd_update_per_tensor(params, grads, *states, scalars, **hyper)
            else:
                kind.update(params, grads, *states, scalars, **hyper)
        self.steps_taken += 1

    def _run_packed(self, params, grads, states, table, hyper) -> None:
        # One tensor of scalars: refilling it changes no guard, so nothing recompiles.
        scalars = [list(row.unbind()) for row in table]
        self.kind.update(params, grads, *states, scalars, **hyper)


@functools.cache
def fused_class(base: type[Optimizer]) -> type[Optimizer]:
    """``base`` whose ``step`` is one :class:`FusedUpdate` across all param groups."""

    def step(self: Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.fused_update(self)
        return loss

    name = f"Fused{base.__name__}"
    return type(name, (base,), {"step": step, "__qualname__": name, "__doc__": base.__doc__})


def fuse_groups(optimizer: Optimizer, compile_backend: Any = None) -> Optimizer:
    """The same optimizer (its groups and hyperparameters) as an instance of
    :func:`fused_class`: its ``step`` is one multi-tensor update across all param groups.

    Call it before the optimizer has taken a step and before an LR scheduler is attached,
    and use the optimizer it returns. Raises ValueError naming the reason when the update
    is not supported (see :func:`unsupported`).
    """
    reason = unsupported(optimizer)
    if reason:
        raise ValueError(reason)
    if optimizer.state:
        raise ValueError("fuse_groups takes an optimizer that has not stepped yet")
    base = type(optimizer)
    accepted = inspect.signature(base.__init__).parameters  # AdamW fixes some of Adam's
    options = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    fused = fused_class(base)(optimizer.param_groups, **options)
    fused.fused_update = FusedUpdate(fused, compile_backend, plain_step=base.step)
    return fused
