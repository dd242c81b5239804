"""Layers of any nn.Module in input-to-output order, and optimizer param groups per layer.

A layer is a module that directly owns trainable parameters. Registration order is not
depth order (a model may define its head before its stem), so the order comes from a real
forward pass: a layer's position is when the pass first enters it. Parameters owned by a
container (class tokens, positional embeddings) belong to that container. Frozen
parameters are left out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Layer:
    name: str
    params: tuple[nn.Parameter, ...]

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Run ``model`` on a batch's inputs: a tensor, a tuple of tensors or a dict of them."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def find_layers(model: nn.Module, example_inputs: Any) -> list[Layer]:
    """The layers of ``model`` ordered by when a forward pass on ``example_inputs`` runs them.

    The pass runs in eval mode without gradients, so batch-norm statistics and dropout
    are untouched. A layer the pass never enters sits just after its nearest ancestor
    that it did enter; one with no such ancestor (besides the root) goes last, with a
    warning.
    """
    owned = parameters_by_module(model)
    entered = order_of_entry(model, example_inputs)

    # A module whose parameters its parent uses directly (e.g. the output projection of
    # nn.MultiheadAttention) never enters; it takes its nearest entered ancestor's place.
    def position(name: str) -> tuple[int, int]:
        if name in entered:
            return entered[name], 0
        parent = name
        while "." in parent:
            parent = parent.rsplit(".", 1)[0]
            if parent in entered:
                return entered[parent], 1
        return len(entered), 1  # only the root ran around it: nothing tells its depth

    registered = {name: i for i, name in enumerate(owned)}
    ordered = sorted(owned, key=lambda n: (*position(n), registered[n]))
    unplaced = [n for n in ordered if position(n)[0] == len(entered)]
    if unplaced:
        warnings.warn(
            f"{len(unplaced)} module(s) with trainable parameters never ran in the forward "
            f"pass ({', '.join(unplaced[:5])}{', ...' if len(unplaced) > 5 else ''}); "
            "they are placed after the last layer",
            stacklevel=2,
        )
    return [Layer(name or "<root>", owned[name]) for name in ordered]


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


def order_of_entry(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """Module name -> when one forward pass (eval mode, no gradients) first entered it;
    every module's train/eval flag is restored afterwards."""
    modules = dict(model.named_modules())
    entered: dict[str, int] = {}

    def hook_for(name: str):
        def record(_module: nn.Module, _args: Any) -> None:  # must return None: keeps inputs
            entered.setdefault(name, len(entered))

        return record

    hooks = [module.register_forward_pre_hook(hook_for(name)) for name, module in modules.items()]
    training = {name: m.training for name, m in modules.items()}
    try:
        model.eval()
        with torch.no_grad():
            call_model(model, example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
        for name, m in modules.items():
            m.training = training[name]
    return entered


# Modules whose weights get no weight decay (as HF and timm do), besides every bias.
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
if hasattr(nn, "RMSNorm"):  # torch >= 2.4
    NORMS = (*NORMS, nn.RMSNorm)


def decays(module: nn.Module, param: nn.Parameter) -> bool:
    """The usual weight-decay rule: not on biases or other 1-D parameters, not on norms."""
    return param.ndim > 1 and not isinstance(module, NORMS)


def layer_param_groups(
    model: nn.Module,
    example_inputs: Any,
    weight_decay: float | None = None,
    **group_options: Any,
) -> list[dict[str, Any]]:
    """One optimizer param group per layer, input to output, ready for :class:`LeRaC`.

    Each group carries ``name`` (the module's name) and ``layer_rank`` (0 = input) beside
    ``params``; extra keyword arguments (e.g. ``momentum``) are copied into every group.
    With ``weight_decay`` a layer's biases and norm weights go to a second group named
    ``<name>.no_decay`` with weight decay 0 and the same ``layer_rank``, so both halves
    start at the layer's one rate. ``example_inputs`` must be on the model's device.
    """
    modules = dict(model.named_modules())
    groups = []
    for rank, layer in enumerate(find_layers(model, example_inputs)):
        base = {"name": layer.name, "layer_rank": rank, **group_options}
        if weight_decay is None:
            groups.append({"params": list(layer.params), **base})
            continue
        module = modules["" if layer.name == "<root>" else layer.name]
        decay = [p for p in layer.params if decays(module, p)]
        no_decay = [p for p in layer.params if not decays(module, p)]
        if decay:
            groups.append({"params": decay, **base, "weight_decay": weight_decay})
        if no_decay:
            name = f"{layer.name}.no_decay"
            groups.append({"params": no_decay, **base, "name": name, "weight_decay": 0.0})
    return groups
