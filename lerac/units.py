"""Rate units: which layers share one learning rate under a curriculum.

``module`` (the paper's reading, section 3): every module that owns parameters is a unit
of its own, as :func:`lerac.layers.find_layers` returns them.

``block`` (the authors' released code, e.g. CroitoruAlin/LeRaC,
experiments/r18_experiments.py ``add_optimizer_params_lr``): a *block* is an element of
a container (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``) that holds no
smaller blocks (no container of its own whose elements have submodules), outermost
first: a residual block (``layer1.0``; its shortcut ``Sequential`` of two leaves does
not split it), a transformer layer (``encoder.layer.5``; a CvT stage holding a list of
layers is opened up), a top-level leaf of a plain ``nn.Sequential`` model. Every layer
inside a block belongs to it, shortcut included. Layers outside any block that follow
each other in the forward pass form one unit (ResNet-18's stem ``conv1`` + ``bn1``); a
unit made of all the layers under one module is named by that module
(``bert.embeddings``), any other by its members joined with ``+`` (``conv1+bn1``).
ResNet-18 gets 10 units: the stem, its 8 blocks and the head ``fc``.

A unit is a :class:`~lerac.layers.Layer` (a name and its parameters), so the regimes,
layers.csv (one row per unit) and the store treat units as they treat layers.
"""

from __future__ import annotations

from torch import nn

from lerac.errors import ConfigError
from lerac.layers import Layer

UNITS = ("module", "block")
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def holds_blocks(module: nn.Module) -> bool:
    """Whether ``module`` (or a module under it) is a container with a non-leaf element."""
    return any(
        isinstance(m, CONTAINERS) and any(next(c.children(), None) for c in m.children())
        for m in module.modules()
    )


def block_names(model: nn.Module) -> set[str]:
    """The blocks of ``model`` (module docstring), by name."""
    blocks: set[str] = set()

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(module, CONTAINERS) and not holds_blocks(child):
                blocks.add(full)
            else:
                visit(child, full)

    visit(model, "")
    return blocks


def _block_of(name: str, blocks: set[str]) -> str | None:
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if prefix in blocks:
            return prefix
    return None


def _unit_name(members: list[Layer], layers: list[Layer]) -> str:
    """The module all of the members and nothing else live under, else ``a+b+...``."""
    names = [m.name for m in members]
    common = names[0].split(".")
    for name in names[1:]:
        parts = name.split(".")
        n = 0
        while n < min(len(common), len(parts)) and common[n] == parts[n]:
            n += 1
        common = common[:n]
    prefix = ".".join(common)
    if len(names) == 1:
        return names[0]
    under = [la.name for la in layers if la.name == prefix or la.name.startswith(prefix + ".")]
    return prefix if prefix and under == names else "+".join(names)


def check_units(units: str, prefix: str = "") -> None:
    """Refuse an unknown kind of rate unit (``prefix="regime."``: name the config key)."""
    if units not in UNITS:
        raise ConfigError(
            f"{prefix}units='{units}' is not an option: choose module (one rate per module "
            "owning parameters) or block (one per residual block / transformer layer)"
        )


def rate_units(model: nn.Module, layers: list[Layer], units: str = "module") -> list[Layer]:
    """``layers`` (input-to-output order) grouped into rate units (module docstring)."""
    check_units(units)
    if units == "module":
        return list(layers)
    blocks = block_names(model)
    groups: list[tuple[str | None, list[Layer]]] = []  # (block or None, members)
    index: dict[str, int] = {}
    for layer in layers:
        block = _block_of(layer.name, blocks)
        if block is not None and block in index:
            groups[index[block]][1].append(layer)
        elif block is None and groups and groups[-1][0] is None:
            groups[-1][1].append(layer)
        else:
            if block is not None:
                index[block] = len(groups)
            groups.append((block, [layer]))
    return [
        Layer(block or _unit_name(members, layers), tuple(p for m in members for p in m.params))
        for block, members in groups
    ]
