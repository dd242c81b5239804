"""Layers of any nn.Module in input-to-output order, and optimizer param groups per layer.

A layer is a module that directly owns trainable parameters. Registration order is not
depth order (a model may define its head before its stem), so the order comes from a real
forward pass: a layer's position is when the pass first enters it. Parameters a container
owns itself (class tokens, positional embeddings, a temperature on the root) sit where the
pass first uses them, as do those of a module the pass never enters. Frozen parameters
are left out.
"""

from __future__ import annotations

import fnmatch
import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from lerac.curriculum import RANK


@dataclass(frozen=True)
class Layer:
    name: str
    params: tuple[nn.Parameter, ...]

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Run ``model`` on a batch's inputs: a tensor, a tuple of tensors or a dict of them
    (a dict goes in as keyword arguments; wrap it, ``(batch,)``, for a forward that takes
    the dict itself)."""
    if isinstance(inputs, dict):
        try:
            return model(**inputs)
        except TypeError as error:
            if _binds(model, inputs):
                raise
            raise TypeError(
                f"{type(model).__name__}.forward does not take the keys {sorted(inputs)} as "
                "keyword arguments: a dict of inputs is passed as model(**inputs); for a "
                "forward that takes the dict itself, pass it in a tuple: (batch,)"
            ) from error
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _binds(model: nn.Module, inputs: dict) -> bool:
    """Whether ``model.forward`` accepts ``inputs`` as keyword arguments."""
    try:
        inspect.signature(model.forward).bind(**inputs)
    except TypeError:
        return False
    except ValueError:  # no signature to read: assume it does
        return True
    return True


def find_layers(model: nn.Module, example_inputs: Any) -> list[Layer]:
    """The layers of ``model`` ordered by when a forward pass on ``example_inputs`` runs them.

    The pass runs in eval mode without gradients, so batch-norm statistics and dropout
    are untouched. A module's own parameters are one layer, placed where the pass enters
    the module. A container's own parameters and those of a module the pass never enters
    are placed where the pass first uses them (after the modules entered until then); a
    container whose parameters are used at several points gives one layer per point,
    named ``<container>.<first parameter>``. Parameters never used sit with their
    module's nearest entered ancestor; with none but the root they go last, with a
    warning.
    """
    owned = parameters_by_module(model)
    modules = dict(model.named_modules())
    entered, first_use = trace_forward(model, example_inputs)

    def position(name: str) -> tuple[int, int, int]:
        """Where an unused parameter of module ``name`` sits (module docstring)."""
        if name in entered:
            return entered[name], 0, registered[name]
        parent = name
        while "." in parent:
            parent = parent.rsplit(".", 1)[0]
            if parent in entered:
                return entered[parent], 1, registered[name]
        return len(entered), 1, registered[name]  # only the root ran around it

    registered = {name: i for i, name in enumerate(owned)}
    placed: list[tuple[tuple[int, int, int], str, tuple[nn.Parameter, ...]]] = []
    for name, params in owned.items():
        by_use = name not in entered or next(modules[name].children(), None) is not None
        points: dict[tuple[int, ...], list[nn.Parameter]] = {}
        for p in params:
            use = first_use.get(id(p)) if by_use else None
            points.setdefault(position(name) if use is None else (use[0] - 1, 2), []).append(p)
        for point, members in points.items():
            if len(point) == 2:  # placed by use: the earliest use orders it
                point = (*point, min(first_use[id(p)][1] for p in members))
            label = _label(name, members[0], model) if len(points) > 1 else name or "<root>"
            placed.append((point, label, tuple(members)))
    placed.sort(key=lambda item: item[0])
    unplaced = [label for point, label, _ in placed if point[:2] == (len(entered), 1)]
    if unplaced:
        warnings.warn(
            f"{len(unplaced)} module(s) with trainable parameters never ran in the forward "
            f"pass ({', '.join(unplaced[:5])}{', ...' if len(unplaced) > 5 else ''}); "
            "they are placed after the last layer",
            stacklevel=2,
        )
    return [Layer(label, members) for _point, label, members in placed]


def _label(module_name: str, param: nn.Parameter, model: nn.Module) -> str:
    """``<module>.<parameter>`` for one use point of a container's own parameters."""
    owner = model.get_submodule(module_name)
    local = next(n for n, q in owner.named_parameters(recurse=False) if q is param)
    return f"{module_name}.{local}" if module_name else local


def parameters_by_module(model: nn.Module) -> dict[str, tuple[nn.Parameter, ...]]:
    """Each module's own trainable parameters, by module name; a tied weight belongs to
    the first module that registers it."""
    seen: set[int] = set()
    owned: dict[str, tuple[nn.Parameter, ...]] = {}
    for name, module in model.named_modules():
        params = []
        for p in module.parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        if params:
            owned[name] = tuple(params)
    return owned


def trace_forward(
    model: nn.Module, example_inputs: Any
) -> tuple[dict[str, int], dict[int, tuple[int, int]]]:
    """One forward pass (eval mode, no gradients): module name -> when the pass first
    entered it, and id(parameter) -> (modules entered before its first use by a torch
    function, the use's order). Every module's train/eval flag is restored afterwards."""
    modules = dict(model.named_modules())
    entered: dict[str, int] = {}
    uses = _FirstUses({id(p) for p in model.parameters()}, entered)

    def hook_for(name: str):
        def record(_module: nn.Module, _args: Any) -> None:  # must return None: keeps inputs
            entered.setdefault(name, len(entered))

        return record

    hooks = [module.register_forward_pre_hook(hook_for(name)) for name, module in modules.items()]
    training = {name: m.training for name, m in modules.items()}
    try:
        model.eval()
        with torch.no_grad(), uses:
            call_model(model, example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
        for name, m in modules.items():
            m.training = training[name]
    return entered, uses.first


class _FirstUses(TorchFunctionMode):
    """Records when each watched parameter first goes into a torch function."""

    def __init__(self, watched: set[int], entered: dict[str, int]) -> None:
        super().__init__()
        self.watched, self.entered = watched, entered
        self.first: dict[int, tuple[int, int]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for arg in (*args, *kwargs.values()):
            for item in arg if isinstance(arg, (list, tuple)) else (arg,):
                if id(item) in self.watched and id(item) not in self.first:
                    self.first[id(item)] = (len(self.entered), len(self.first))
        return func(*args, **kwargs)


# The suffix of a layer's second group, the parameters without weight decay.
NO_DECAY = ".no_decay"
# Modules whose weights get no weight decay (as HF and timm do), besides every bias.
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
if hasattr(nn, "RMSNorm"):  # torch >= 2.4
    NORMS = (*NORMS, nn.RMSNorm)


def decays(module: nn.Module, param: nn.Parameter) -> bool:
    """The usual weight-decay rule: not on biases or other 1-D parameters, not on norms."""
    return param.ndim > 1 and not isinstance(module, NORMS)


def exempt_by_name(model: nn.Module) -> set[int]:
    """ids of the parameters that ``model.no_weight_decay()`` names (timm's convention: a
    set of parameter names or fnmatch patterns, e.g. a ViT's ``cls_token``, ``pos_embed``)."""
    names = getattr(model, "no_weight_decay", None)
    if not callable(names):
        return set()
    patterns = set(names())
    return {
        id(p)
        for name, p in model.named_parameters()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    }


def layer_param_groups(
    model: nn.Module,
    example_inputs: Any,
    weight_decay: float | None = None,
    **group_options: Any,
) -> list[dict[str, Any]]:
    """One optimizer param group per layer, input to output, ready for :class:`LeRaC`.

    Each group carries ``name`` (the layer's name) and ``layer_rank`` (0 = input) beside
    ``params``; extra keyword arguments (e.g. ``momentum``) are copied into every group.
    With ``weight_decay`` a layer's biases, norm weights and the parameters the model's
    ``no_weight_decay()`` names (timm) go to a second group named ``<name>.no_decay`` with
    weight decay 0 and the same ``layer_rank``, so both halves start at the layer's one
    rate. ``example_inputs`` must be on the model's device.
    """
    modules = dict(model.named_modules())
    owner = {id(p): modules[name] for name, ps in parameters_by_module(model).items() for p in ps}
    exempt = exempt_by_name(model) if weight_decay is not None else set()
    groups = []
    for rank, layer in enumerate(find_layers(model, example_inputs)):
        base = {"name": layer.name, RANK: rank, **group_options}
        if weight_decay is None:
            groups.append({"params": list(layer.params), **base})
            continue
        rule = {id(p): decays(owner[id(p)], p) and id(p) not in exempt for p in layer.params}
        decay = [p for p in layer.params if rule[id(p)]]
        no_decay = [p for p in layer.params if not rule[id(p)]]
        if decay:
            groups.append({"params": decay, **base, "weight_decay": weight_decay})
        if no_decay:
            name = f"{layer.name}{NO_DECAY}"
            groups.append({"params": no_decay, **base, "name": name, "weight_decay": 0.0})
    return groups


def layer_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Each layer's rate, by layer name: one entry per ``layer_rank`` (a layer's decay and
    no-decay halves share one rate), named by its first group's ``name`` without the
    ``.no_decay`` suffix; each group is a layer where groups carry no rank, named by its
    ``name`` or its index."""
    rates: dict[str, float] = {}
    seen: set[object] = set()
    for index, group in enumerate(optimizer.param_groups):
        layer = group.get(RANK, ("group", index))
        if layer in seen:
            continue
        seen.add(layer)
        name = str(group.get("name", index)).removesuffix(NO_DECAY)
        rates[name] = float(group["lr"])
    return rates
