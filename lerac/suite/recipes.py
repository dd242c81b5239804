"""The released code's recipes, read from ``recipes.yaml``: for each model and data set the
released code trains, the values of its training function, each with where the released
code sets it. The protocol group takes them (:mod:`lerac.suite.protocol`), and a config
file reads one through ``${released:key,fallback}`` (regime=lerac_step,
schedule=multistep)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from lerac.errors import ConfigError

RECIPES_FILE = Path(__file__).with_name("recipes.yaml")
LERAC_CODE = "CroitoruAlin/LeRaC"
CBS_CODE = "pairlab/CBS"
# What every recipe sets (recipes.yaml ``defaults`` fill the ones a recipe leaves out).
KEYS = (
    "lr_first",  # initial_learning_rate: the first unit's start rate
    "floor",  # the lowest start rate (min_lr with the float step of its test)
    "head_lr",  # the head's start rate (initial_learning_rate x clf_lr)
    "units",  # block: one rate per block
    "hold",  # units after the first that keep lr_first
    "scope",  # all | head: which units start low
    "updates_per_epoch",  # x10 rises per epoch (update_per_epoch)
    "rise_until",  # updates inside epochs before it (stop_update_epoch)
    "end_rise_until",  # end-of-epoch updates before it; null: every epoch
    "cap_ratio",  # a rate rises while below cap_ratio x the base rate (stop_lr)
    "schedule",  # after the curriculum: multistep | constant | timm (not reproduced)
    "milestones",  # multistep: epochs (from 1) at whose start rates are divided
    "above",  # multistep: only rates above it are divided
    "divide_by",  # multistep: the divisor
    "epochs",  # num_epochs
    "weight_decay",  # null: the optimizer's own
    "init",  # resnet: the released init of models/resnet.py; null: the model's
    "normalize",  # half: mean = std = half the range; null: the loader's statistics
    "max_length",  # tokens per example; null: not a text model
)


@dataclass(frozen=True)
class Sourced:
    """One value of the released code and where it is set."""

    value: Any
    source: str


@dataclass(frozen=True)
class Recipe:
    """The values of one released training function (``recipe.epochs`` reads one), with
    their sources and the caveats the suite cannot reproduce."""

    name: str  # "<model>/<dataset>", or "cbs"
    code: str  # the repository
    source: str  # the file and function
    values: dict[str, Sourced]
    caveats: tuple[str, ...] = field(default_factory=tuple)

    def __getattr__(self, key: str) -> Any:
        values = self.__dict__.get("values", {})
        if key not in values:
            raise AttributeError(key)
        value = values[key].value
        return list(value) if isinstance(value, (list, tuple)) else value

    def value(self, key: str) -> Any:
        if key not in self.values:
            keys = ", ".join(KEYS)
            raise ConfigError(f"${{released:{key}}}: a recipe has no key {key}; keys: {keys}")
        return getattr(self, key)

    def where(self, key: str) -> str:
        """Where the released code sets ``key``: the value's own file, else the recipe's
        file and function."""
        note = self.values[key].source
        place = note if ".py" in note.split(" ")[0] else f"{self.source}: {note}"
        return f"{self.code}, {place}"


def _recipe(name: str, entry: dict[str, Any], defaults: dict, code: str, caveats=()) -> Recipe:
    entry = dict(entry)
    source = entry.pop("source")
    values = {**defaults, **entry}
    if defaults:  # a full recipe: exactly the KEYS
        unknown, missing = set(values) - set(KEYS), set(KEYS) - set(values)
        if unknown or missing:
            raise ValueError(f"{RECIPES_FILE.name} {name}: unknown {unknown}, missing {missing}")
    sourced = {key: Sourced(v["value"], v["source"]) for key, v in values.items()}
    return Recipe(name, code, source, sourced, tuple(caveats))


def _load() -> tuple[dict[tuple[str, str], Recipe], Recipe]:
    data = yaml.safe_load(RECIPES_FILE.read_text())
    caveats = data.get("caveats") or {}
    recipes = {}
    for name, entry in data["recipes"].items():
        model, dataset = name.split("/")
        recipe = _recipe(name, entry, data["defaults"], LERAC_CODE, caveats.get(name, ()))
        recipes[(model, dataset)] = recipe
    return recipes, _recipe("cbs", data["cbs"], {}, CBS_CODE)


RECIPES, CBS = _load()


def recipe_for(model: str, dataset: str, name: str = "auto") -> Recipe | None:
    """The released recipe of (model, dataset), or of ``name`` = "<model>/<dataset>"."""
    if name != "auto":
        key = tuple(name.split("/", 1))
        if key not in RECIPES:
            options = ", ".join(f"{m}/{d}" for m, d in RECIPES)
            raise ConfigError(f"protocol.recipe={name!r} is not a recipe; choose auto or {options}")
        return RECIPES[key]
    return RECIPES.get((model, dataset))


def released_value(key: str, fallback: Any = None, *, _root_: DictConfig) -> Any:
    """``${released:key,fallback}``: this run's recipe value (``protocol.recipe`` names
    another's), else ``fallback``."""
    node = _root_.get("protocol")
    name = str(node.get("recipe", "auto")) if node is not None else "auto"
    recipe = recipe_for(_root_.model.id, _root_.dataset.id, name)
    return fallback if recipe is None else recipe.value(key)
