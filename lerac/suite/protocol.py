"""The ``protocol`` group: the paper as written (``paper``, the default) or the authors'
released code (``released``), one key per difference (docs/fidelity.md lists them).

Each ``conf/protocol`` file builds a :class:`Protocol` (its ``_target_``), and
:func:`resolve_protocol` resolves it once for a run into a :class:`ResolvedProtocol`: the
config values it sets (each with where the released code sets it), how it adapts the
data splits and the model, and the split the best epoch is selected on. A ``released``
key takes the value of the released recipe of this model and data set
(lerac/suite/recipes.yaml, or the recipe named by ``protocol.recipe``); where there is
none every key keeps the paper's, and a start-up note says so.

    rate_units        regime.units = block (stem, each residual block, head)
    rates             regime=lerac runs the released rule (StepCurriculum) with the
                      recipe's start rates, floor, x10 rises and cap
    after_curriculum  the recipe's schedule (multistep /10 at its epochs, or constant
                      rates), its epochs, no early stopping
    selection         the best epoch is chosen on the test split (it stands in for the
                      validation split: plateau and early stopping would see it too)
    train_split       the held-out validation examples go back into training
    weight_decay      the optimizer's weight decay (LeRaC code 1e-4, CBS code 5e-4)
    init              images scaled to [-1, 1] (mean = std = 0.5), the released init
    text_length       tokens per example (BERT: 100)
    curriculum_scope  which units start low (BERT: only the pooler and the classifier)

A key the run's overrides set explicitly keeps the overridden value: the protocol gives
way, and its start-up note names the value it would have set. The overrides are the
command line's (Hydra's ``hydra.overrides.task``: lerac-train, a multirun, every grid
job), or the list passed to ``train(..., overrides=)`` beside ``compose_config``.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from lerac.engine.batches import Splits
from lerac.errors import ConfigError
from lerac.suite.build import METADATA_KEYS, build
from lerac.suite.recipes import CBS, Recipe, recipe_for

log = logging.getLogger("lerac")
CHOICES = ("paper", "released")
KEYS = (
    "rate_units",
    "rates",
    "after_curriculum",
    "selection",
    "train_split",
    "weight_decay",
    "init",
    "text_length",
    "curriculum_scope",
)
LERAC = "lerac.engine.regimes.LearningRateCurriculum"
RELEASED_RULE = "lerac.engine.released.StepCurriculum"
MULTISTEP = "lerac.engine.schedules.MultiStep"
CONSTANT = "lerac.engine.schedules.Schedule"
# The recipe values the released rule takes (conf/regime/lerac_step.yaml reads the same).
RULE_KEYS = (
    "lr_first",
    "floor",
    "head_lr",
    "hold",
    "updates_per_epoch",
    "rise_until",
    "end_rise_until",
    "cap_ratio",
)


class ProtocolWarning(UserWarning):
    """A start-up note of the protocol: a key that cannot act, selection on test, a value
    an override keeps."""


@dataclass(frozen=True)
class Change:
    """One config value the protocol sets: ``key`` (dotted; a dict value replaces the
    node), where the released code sets it, the protocol key that asks for it, and
    whether an explicit override of ``key`` wins (False: the change acts on the chosen
    option, as ``rates`` turns regime=lerac into the released rule)."""

    key: str
    value: Any
    where: str
    by: str
    yields: bool = True


@dataclass(frozen=True)
class Protocol:
    """The keys of a ``conf/protocol`` file, each ``paper`` or ``released``."""

    rate_units: str = "paper"
    rates: str = "paper"
    after_curriculum: str = "paper"
    selection: str = "paper"
    train_split: str = "paper"
    weight_decay: str = "paper"
    init: str = "paper"
    text_length: str = "paper"
    curriculum_scope: str = "paper"
    recipe: str = "auto"  # auto: this run's model/dataset; else "<model>/<dataset>"
    time_scale: float = 1.0  # x the recipe's epochs and milestones (short runs)

    def __post_init__(self) -> None:
        for key in KEYS:
            if getattr(self, key) not in CHOICES:
                raise ConfigError(
                    f"protocol.{key}={getattr(self, key)!r} is not an option: choose paper "
                    "or released (docs/fidelity.md lists what each key changes)"
                )
        if not self.time_scale > 0:
            raise ConfigError(f"protocol.time_scale must be positive, got {self.time_scale}")

    def released(self, key: str) -> bool:
        return getattr(self, key) == "released"

    def resolve(self, cfg: DictConfig, overrides: Sequence[str] = ()) -> ResolvedProtocol:
        """This protocol for the run ``cfg`` (as composed), giving way to ``overrides``."""
        switched = [key for key in KEYS if self.released(key)]
        recipe = recipe_for(cfg.model.id, cfg.dataset.id, self.recipe) if switched else None
        plan = Plan(self, recipe, cfg, explicit_keys(overrides))
        if switched and recipe is None:
            plan.note(
                f"the released code has no recipe for model={cfg.model.id} on "
                f"dataset={cfg.dataset.id}: every protocol key keeps the paper's"
            )
            for key in switched:
                plan.set(f"protocol.{key}", "paper", "no recipe", key, yields=False)
        elif recipe is not None:
            if self.released("train_split") and not self.released("selection"):
                raise ConfigError(
                    "protocol.train_split=released trains on all of train and leaves no "
                    "validation split to select on: add protocol.selection=released"
                )
            plan_changes(plan)
        return plan.resolved()


@dataclass(frozen=True)
class ResolvedProtocol:
    """The protocol of one run: the values it sets, the overrides it gave way to (each
    with the value it would have set), its notes, and what it does to data and model."""

    protocol: Protocol
    recipe: Recipe | None
    changes: tuple[Change, ...]
    kept: tuple[tuple[Change, Any], ...]  # (the protocol's change, the override's value)
    notes: tuple[str, ...]

    def released(self, key: str) -> bool:
        return self.recipe is not None and self.protocol.released(key)

    @property
    def selected_on(self) -> str:
        """The split the best epoch is chosen on (metrics.json ``selected_on``)."""
        return "test" if self.released("selection") else "val"

    def config(self, cfg: DictConfig) -> DictConfig:
        """``cfg`` with the changes (a copy; ``cfg`` itself when there are none)."""
        if not self.changes:
            return cfg
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            for change in self.changes:
                OmegaConf.update(cfg, change.key, change.value, merge=False)
        return cfg

    def warn(self) -> None:
        """The start-up notes as ProtocolWarnings; each change in the log with its source."""
        for change in self.changes:
            log.info("protocol.%s: %s=%s (%s)", change.by, change.key, change.value, change.where)
        for note in self.notes:
            warnings.warn(f"protocol: {note}", ProtocolWarning, stacklevel=2)

    def adapt_splits(self, splits: Splits) -> Splits:
        """The data-side keys: the full training split, selection on test, [-1, 1] scaling."""
        if self.released("train_split"):
            (x, y), (vx, vy) = splits.train, splits.val
            splits.train = (_concat(x, vx), torch.cat([y, vy]))
        if self.released("selection"):
            splits.val = splits.test
        if self.released("init") and self.recipe.normalize == "half" and splits.mean is not None:
            images = splits.train[0]
            top = 255.0 if images.dtype == torch.uint8 else float(images.max())
            splits.mean = torch.full_like(splits.mean, top / 2)
            splits.std = torch.full_like(splits.std, top / 2)
        return splits

    def adapt_model(self, model: nn.Module) -> nn.Module:
        """``init``: the released init where the recipe has one (ResNets)."""
        if self.released("init") and self.recipe.init == "resnet":
            released_init(model)
        return model


def explicit_keys(overrides: Sequence[str]) -> frozenset[str]:
    """The keys (or groups) that ``overrides`` set, through Hydra's override grammar."""
    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    return frozenset(o.key_or_group for o in parsed)


class Plan:
    """The changes of one resolution as they are decided, in order: a change to a key
    that an override set is kept back, and a node that replaces another keeps the
    override's values of its own keys."""

    def __init__(self, protocol: Protocol, recipe, cfg: DictConfig, explicit) -> None:
        self.protocol, self.recipe, self.cfg, self.explicit = protocol, recipe, cfg, explicit
        self.changes: list[Change] = []
        self.kept: list[tuple[Change, Any]] = []
        self.notes: list[str] = []
        self.regime = OmegaConf.to_container(cfg.regime, resolve=False)  # as it will be

    def note(self, message: str) -> None:
        self.notes.append(message)

    def set(self, key: str, value: Any, where: str, by: str, yields: bool = True) -> None:
        if yields and key in self.explicit:
            mine = OmegaConf.select(self.cfg, key)
            if _shown(mine) != _shown(value):
                self.kept.append((Change(key, value, where, by, yields), mine))
            return
        if isinstance(value, dict):
            value = self._keep_overridden(key, value, where, by)
        change = Change(key, value, where, by, yields)
        if key == "regime":
            self.regime = dict(value)
        elif key.startswith("regime."):
            self.regime[key.split(".", 1)[1]] = value
        self.changes.append(change)

    def _keep_overridden(self, key: str, node: dict, where: str, by: str) -> dict[str, Any]:
        node = dict(node)
        for name in sorted(self.explicit):
            if not name.startswith(f"{key}."):
                continue
            sub = name[len(key) + 1 :]
            mine = OmegaConf.select(self.cfg, name)
            if sub in node:
                if node[sub] != mine:
                    self.kept.append((Change(name, node[sub], where, by), mine))
                node[sub] = mine
            else:
                self.note(f"{name}={mine} is dropped: {node.get('_target_')} takes no {sub}")
        return node

    def resolved(self) -> ResolvedProtocol:
        for change, mine in self.kept:
            self.note(
                f"{change.key}={_shown(mine)} is set explicitly and stays; protocol."
                f"{change.by}=released would set {_shown(change.value)} ({change.where})"
            )
        return ResolvedProtocol(
            self.protocol, self.recipe, tuple(self.changes), tuple(self.kept), tuple(self.notes)
        )


def _shown(value: Any) -> Any:
    """A value as a note shows it: a config node by its option id."""
    if isinstance(value, (dict, DictConfig)):
        return value.get("id", "...")
    return value


def plan_changes(plan: Plan) -> None:
    """The released keys' changes, in an order where the regime exists before its keys."""
    for key, decide in (
        ("rates", _rates),
        ("rate_units", _rate_units),
        ("curriculum_scope", _scope),
        ("after_curriculum", _after),
        ("weight_decay", _weight_decay),
        ("text_length", _text_length),
    ):
        if plan.protocol.released(key):
            decide(plan, plan.recipe, plan.cfg)
    if plan.protocol.released("selection"):
        plan.note(
            "the best epoch is selected on the TEST split (released code); metrics.json "
            'says "selected_on": "test"'
        )
    for caveat in plan.recipe.caveats:
        plan.note(caveat)


def _rates(plan: Plan, recipe: Recipe, cfg: DictConfig) -> None:
    regime = cfg.regime
    plain = regime.get("update") == "exponential" and not regime.get("anti")  # regime=lerac
    if regime._target_ == LERAC and plain:
        node = {"id": regime.id, "_target_": RELEASED_RULE}
        node.update({key: recipe.value(key) for key in RULE_KEYS})
        node.update(scope="all", units=regime.get("units", "module"))  # switched below
        plan.set("regime", node, f"{recipe.code}, {recipe.source}", "rates", yields=False)
    elif ("lr_first" in regime or "lr_start" in regime) and "released" not in regime._target_:
        plan.note(f"regime={regime.id} keeps its own rates (protocol.rates acts on regime=lerac)")


def _rate_units(plan: Plan, recipe: Recipe, cfg: DictConfig) -> None:
    if "units" in plan.regime:
        plan.set("regime.units", recipe.units, recipe.where("units"), "rate_units")


def _scope(plan: Plan, recipe: Recipe, cfg: DictConfig) -> None:
    if plan.regime["_target_"] == RELEASED_RULE:
        plan.set("regime.scope", recipe.scope, recipe.where("scope"), "curriculum_scope")
    elif recipe.scope != "all" and "lr_first" in plan.regime:
        raise ConfigError(
            "protocol.curriculum_scope=released (only the head starts low) needs the "
            "released rates: add protocol.rates=released or use regime=lerac_step"
        )


def scaled(epochs: int, time_scale: float) -> int:
    """``epochs`` x ``protocol.time_scale``, rounded half up, at least 1."""
    return max(1, int(epochs * time_scale + 0.5))


def _after(plan: Plan, recipe: Recipe, cfg: DictConfig) -> None:
    scale = plan.protocol.time_scale
    times = "" if scale == 1 else f" x protocol.time_scale {scale:g}"
    epochs = scaled(recipe.epochs, scale)
    plan.set("trainer.max_epochs", epochs, recipe.where("epochs") + times, "after_curriculum")
    # Never reached: the released code has no early stopping.
    where = f"{recipe.where('epochs')}: no early stopping"
    plan.set("trainer.early_stopping_patience", epochs, where, "after_curriculum")
    source = CBS if cfg.regime.id == "cbs" else recipe
    if recipe.schedule == "multistep":
        node = {
            "id": "multistep",
            "_target_": MULTISTEP,
            "milestones": [scaled(m, scale) for m in source.milestones],
            "divide_by": recipe.divide_by,
            "above": source.above,
        }
        plan.set("schedule", node, source.where("milestones") + times, "after_curriculum")
    elif recipe.schedule == "constant":
        node = {"id": "constant", "_target_": CONSTANT}
        plan.set("schedule", node, recipe.where("schedule"), "after_curriculum")
    else:
        plan.note(
            f"the released code for model={cfg.model.id} runs timm's scheduler after the "
            f"curriculum; schedule={cfg.schedule.id} stays"
        )


def _weight_decay(plan: Plan, recipe: Recipe, cfg: DictConfig) -> None:
    source = CBS if cfg.regime.id == "cbs" else recipe
    if source.weight_decay is not None:
        plan.set(
            "optimizer.weight_decay",
            source.weight_decay,
            source.where("weight_decay"),
            "weight_decay",
        )


def _text_length(plan: Plan, recipe: Recipe, cfg: DictConfig) -> None:
    if recipe.max_length is not None and "tokenizer" in cfg.model:
        where = recipe.where("max_length")
        plan.set("model.tokenizer.max_length", recipe.max_length, where, "text_length")


def build_protocol(cfg: DictConfig) -> Protocol:
    """The run's ``protocol`` node built through its ``_target_`` (no node: the paper)."""
    node = cfg.get("protocol")
    if node is None:
        return Protocol()
    known = {f.name for f in fields(Protocol)} | {"_target_", *METADATA_KEYS}
    unknown = sorted(set(node) - known)
    if unknown:
        keys = ", ".join(sorted(f.name for f in fields(Protocol)))
        raise ConfigError(f"protocol.{unknown[0]} is not a protocol key; keys: {keys}")
    return build(node)


def resolve_protocol(
    cfg: DictConfig, overrides: Sequence[str] = ()
) -> tuple[DictConfig, ResolvedProtocol]:
    """The run's config with its protocol's changes, and the resolved protocol."""
    resolved = build_protocol(cfg).resolve(cfg, overrides)
    return resolved.config(cfg), resolved


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {k: torch.cat([a[k], b[k]]) for k in a}
    return torch.cat([a, b])


def released_init(model: nn.Module) -> None:
    """CroitoruAlin/LeRaC, models/resnet.py ``_initialize_weights``."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)
