"""The ``protocol`` group: the paper as written (``paper``, the default) or the authors'
released code (``released``), one key per difference (docs/fidelity.md lists them).

Every key is ``paper`` or ``released``; ``paper`` changes nothing, ``released`` applies the
released code's value for this model and data set from :data:`RECIPES` (or the recipe
named by ``protocol.recipe``). Where the released code has no recipe (LSTM, SepTr,
DenseNet-121, the audio sets) every key keeps the paper's and a start-up warning says so.

    rate_units        regime.units = block (stem, each residual block, head)
    rates             regime=lerac runs as regime=lerac_step: the released start rates,
                      floor, x10 rises and cap (lerac/engine/released.py)
    after_curriculum  schedule=multistep (/10 at the recipe's epochs), the recipe's
                      epochs, no early stopping
    selection         the best epoch is chosen on the test split (it stands in for the
                      validation split: plateau and early stopping would see it too)
    train_split       the held-out validation examples go back into training
    weight_decay      the optimizer's weight decay (LeRaC code 1e-4, CBS code 5e-4)
    init              images scaled to [-1, 1] (mean = std = 0.5), the released init
    text_length       tokens per example (BERT: 100)
    curriculum_scope  which units start low (BERT: only the pooler and the classifier)

:func:`apply_protocol` rewrites the composed config before it is validated (the saved
config.yaml shows what ran); :func:`prepare_splits` and :func:`prepare_model` change
what the config cannot say; :func:`selected_on` goes into metrics.json.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from lerac.engine.batches import Splits
from lerac.errors import ConfigError
from lerac.suite.config import CONF_DIR

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


@dataclass(frozen=True)
class Recipe:
    """What one function of the released code sets (its file in ``source``).

    Rates: ``lr_first`` (initial_learning_rate), ``floor`` (the lowest start rate, float
    effect of ``min_lr`` included), ``head_lr`` (initial_learning_rate x clf_lr),
    ``hold``, ``updates_per_epoch``, ``rise_until`` (stop_update_epoch),
    ``end_rise_until`` (None: every epoch), ``cap_ratio`` (stop_lr /
    initial_learning_rate), ``scope``. After the curriculum: ``schedule``,
    ``milestones``, ``above``, ``epochs`` (num_epochs). ``weight_decay``, ``init``
    ("resnet": kaiming fan_in convs, batch norm 1/0, linear N(0, 0.01) with zero bias),
    ``normalize`` ("half": mean = std = 0.5 of the range), ``max_length`` (tokens).
    """

    source: str
    lr_first: float
    floor: float
    head_lr: float | None
    updates_per_epoch: int
    rise_until: int
    cap_ratio: float
    epochs: int
    end_rise_until: int | None = 0  # 0: the same as rise_until
    hold: int = 0
    scope: str = "all"
    milestones: tuple[int, ...] | None = None
    above: float = 1e-4
    schedule: str = "multistep"  # multistep | constant (rates stay) | timm (CvT: not reproduced)
    weight_decay: float | None = None
    init: str | None = None
    normalize: str | None = None
    max_length: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def value(self, key: str) -> Any:
        if key == "end_rise_until" and self.end_rise_until == 0:
            return self.rise_until
        value = getattr(self, key)
        return list(value) if isinstance(value, tuple) else value


R18 = "CroitoruAlin/LeRaC, experiments/r18_experiments.py"
R18_COMMON = dict(
    lr_first=1e-1,  # initial_learning_rate; the stem (conv1, bn1) starts here
    cap_ratio=1.1,  # stop_lr 0.11 / 0.1
    rise_until=20,  # stop_update_epoch
    weight_decay=1e-4,  # build_optimizer_resnet
    init="resnet",  # models/resnet.py _initialize_weights
    normalize="half",  # data_handlers.py Normalize((0.5,)*3, (0.5,)*3)
)
R18_TINY = dict(
    source=f"{R18} train_tinyimagenet",
    # min_lr 1e-7: floor 1e-8; clf_lr 1e-7: head 1e-8; 4 updates per epoch.
    floor=1e-8,
    head_lr=1e-8,
    updates_per_epoch=4,
    milestones=(33, 63, 93),  # decay_epoch 33, decay_step 30, stop_decay_epoch 94
    epochs=100,
)
CVT = "CroitoruAlin/LeRaC, experiments/cvt_experiments.py"
CVT_PRE = "CroitoruAlin/LeRaC, experiments/cvt_pretrained_experiments.py"
BERT = "CroitoruAlin/LeRaC, experiments/bert_experiments.py"
CVT_NOTE = (
    "the released CvT code gives each stage's patch embedding its first block's rate; "
    "the suite's block units give it a unit of its own",
    "after the curriculum the released CvT code runs the timm scheduler of its "
    "configs/cvt_configs.yaml; the suite keeps schedule=warmup_cosine",
)
CVT_COMMON = dict(
    lr_first=2e-3,  # initial_learning_rate
    cap_ratio=1.05,  # stop_lr 0.0021 / 0.002
    schedule="timm",
    weight_decay=0.0,  # optim.Adamax defaults (build_optimizer_cvt)
    normalize="half",
    notes=CVT_NOTE,
)


def cvt(function: str, floor: float, head: float, updates: int, until: int, epochs: int):
    """A CvT-13 recipe of experiments/cvt_experiments.py."""
    return Recipe(
        source=f"{CVT} {function}",
        floor=floor,
        head_lr=head,
        updates_per_epoch=updates,
        rise_until=until,
        epochs=epochs,
        **CVT_COMMON,
    )


CVT_PRE_COMMON = dict(
    lr_first=5e-4,
    head_lr=5e-4,  # clf_lr 1
    updates_per_epoch=4,
    cap_ratio=10.0,  # stop_lr 5e-3 / 5e-4
    epochs=25,
    schedule="constant",  # args.scheduler = False
    weight_decay=0.0,
    normalize="half",
    notes=CVT_NOTE[:1],
)
BERT_COMMON = dict(
    lr_first=5e-5,  # initial_learning_rate: the body stays there
    floor=5e-8,
    head_lr=5e-8,  # clf_lr 1e-3: pooler and classifier start at 5e-8
    cap_ratio=9.8,  # stop_lr 4.9e-4 / 5e-5
    end_rise_until=None,  # train/bert_train.py: update_lr after every epoch
    scope="head",
    weight_decay=0.0,  # optim.Adamax defaults
    max_length=100,  # data_handlers.py BoolQDataset / EntailmentDataset max_length
    schedule="constant",  # train/bert_train.py: no scheduler
)

RECIPES: dict[tuple[str, str], Recipe] = {
    ("resnet18", "cifar10"): Recipe(
        source=f"{R18} train_cifar10",
        # min_lr 1e-5, but 1.0000000000000004e-05 > 1e-5 lets one more step through.
        floor=1e-6,
        head_lr=1e-4,  # clf_lr 1e-3 x 0.1
        updates_per_epoch=1,
        milestones=(35, 65, 95),  # decay_epoch 35, decay_step 30, stop_decay_epoch 96
        epochs=200,
        **R18_COMMON,
    ),
    ("resnet18", "cifar100"): Recipe(
        source=f"{R18} train_cifar100",
        floor=1e-7,  # min_lr 1e-6 plus the float step
        head_lr=1e-6,  # clf_lr 1e-5 x 0.1
        updates_per_epoch=1,
        milestones=(36, 66, 96),  # decay_epoch 36, decay_step 30, stop_decay_epoch 97
        epochs=200,
        **R18_COMMON,
    ),
    ("resnet18", "tiny_imagenet"): Recipe(**R18_TINY, **R18_COMMON),
    ("resnet18", "imagenet200"): Recipe(
        **{**R18_TINY, "source": f"{R18} train_imagenet"},
        **{**R18_COMMON, "normalize": None},  # ImageNet mean/std and augmentation there
        notes=("the released ImageNet loader augments (random resized crop, flip, jitter)",),
    ),
    # (function, floor, head = 2e-3 x clf_lr, update_per_epoch, stop_update_epoch, epochs)
    ("cvt13", "cifar10"): cvt("train_cifar10", 2e-7, 2e-6, 2, 5, 200),  # min_lr 2e-6 + float step
    # min_lr 2e-5: 2e-5 > 2e-5 is false, no extra step here
    ("cvt13", "cifar100"): cvt("train_cifar100", 2e-5, 2e-5, 2, 5, 200),
    ("cvt13", "tiny_imagenet"): cvt("train_tiny_imagenet", 2e-8, 2e-7, 4, 6, 150),  # min_lr 2e-7
    # min_lr 5e-5 with the test start_lr >= min_lr: one more step, floor 5e-6.
    ("cvt13_pretrained", "cifar10"): Recipe(
        source=f"{CVT_PRE} train_cifar10", floor=5e-6, rise_until=10, **CVT_PRE_COMMON
    ),
    ("cvt13_pretrained", "cifar100"): Recipe(
        source=f"{CVT_PRE} train_cifar100", floor=5e-6, rise_until=10, **CVT_PRE_COMMON
    ),
    # min_lr 5e-9 with the >= test: floor 5e-10.
    ("cvt13_pretrained", "tiny_imagenet"): Recipe(
        source=f"{CVT_PRE} train_tiny_imagenet", floor=5e-10, rise_until=5, **CVT_PRE_COMMON
    ),
    ("bert_large", "boolq"): Recipe(
        source=f"{BERT} train_boolq",
        updates_per_epoch=4,
        rise_until=3,
        epochs=10,
        **BERT_COMMON,
    ),
    ("bert_large", "qnli"): Recipe(
        source=f"{BERT} train_qnli", updates_per_epoch=1, rise_until=3, epochs=7, **BERT_COMMON
    ),
    ("bert_large", "rte"): Recipe(
        source=f"{BERT} train_rte", updates_per_epoch=1, rise_until=3, epochs=25, **BERT_COMMON
    ),
}
# Wide-ResNet-50-2 exists in the released code for ImageNet only (train_imagenet:
# models/resnet_official.wide_resnet50_2, the suite's layer names); on CIFAR and Tiny
# ImageNet it trains Wide_ResNet(52, 2, dropout 0.3), another network, so no recipe there.
RECIPES[("wide_resnet50", "imagenet200")] = Recipe(
    source="CroitoruAlin/LeRaC, experiments/wrn_experiments.py train_imagenet",
    lr_first=1e-1,
    hold=1,  # start_lr = initial_learning_rate: layer1.0 starts with the stem
    floor=1e-6,  # min_lr 1e-5 plus the float step
    head_lr=1e-6,  # clf_lr 1e-5
    updates_per_epoch=4,
    rise_until=10,  # stop_update_epoch
    cap_ratio=1.1,
    milestones=(32, 62, 92),  # decay_epoch 32, decay_step 30, stop_decay_epoch 93
    epochs=120,
    weight_decay=1e-4,  # build_optimizer_resnet
    notes=("the released ImageNet loader augments (random resized crop, flip, jitter)",),
)
# The released CBS code (pairlab/CBS, solver_base.py): SGD weight decay 5e-4; solver_cbs.py:
# every rate /10 at the start of epoch_count 30, 60, 90 (0-based; decay_epoch 30, stop 91),
# i.e. epochs 31, 61, 91 counted from 1.
CBS_WEIGHT_DECAY = 5e-4
CBS_MILESTONES = (31, 61, 91)


@dataclass(frozen=True)
class Protocol:
    """The keys of a ``conf/protocol`` file, each ``paper`` or ``released``."""

    id: str = "paper"
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


def read_protocol(cfg: DictConfig) -> Protocol:
    node = cfg.get("protocol")
    if node is None:
        return Protocol()
    values = OmegaConf.to_container(node, resolve=True)
    values.pop("_target_", None)
    known = {f.name for f in fields(Protocol)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"protocol.{unknown[0]} is not a protocol key; keys: {', '.join(sorted(known))}"
        )
    return Protocol(**values)


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
    """``${released:key,fallback}``: this run's recipe value, else ``fallback``."""
    node = _root_.get("protocol")
    name = str(node.get("recipe", "auto")) if node is not None else "auto"
    recipe = recipe_for(_root_.model.id, _root_.dataset.id, name)
    if recipe is None:
        return fallback
    if key not in {f.name for f in fields(Recipe)}:
        raise ConfigError(f"${{released:{key}}}: a recipe has no key {key}")
    return recipe.value(key)


class ProtocolWarning(UserWarning):
    """A start-up note of the protocol: a key that cannot act, selection on test."""


def _note(message: str) -> None:
    warnings.warn(f"protocol: {message}", ProtocolWarning, stacklevel=3)


def _regime_node(name: str) -> DictConfig:
    return OmegaConf.load(CONF_DIR / "regime" / f"{name}.yaml")


def _schedule_node(name: str) -> DictConfig:
    return OmegaConf.load(CONF_DIR / "schedule" / f"{name}.yaml")


def _rate_units(cfg: DictConfig, recipe: Recipe, proto: Protocol) -> None:
    if "units" in cfg.regime:
        cfg.regime.units = "block"


def _rates(cfg: DictConfig, recipe: Recipe, proto: Protocol) -> None:
    regime = cfg.regime
    plain = regime.get("update") == "exponential" and not regime.get("anti")  # regime=lerac
    if regime._target_ == "lerac.engine.regimes.LearningRateCurriculum" and plain:
        node = _regime_node("lerac_step")
        node.id = regime.id
        node.units = "block" if proto.released("rate_units") else "module"
        cfg.regime = node
    elif ("lr_first" in regime or "lr_start" in regime) and "released" not in regime._target_:
        _note(f"regime={regime.id} keeps its own rates (protocol.rates acts on regime=lerac)")


def _scope(cfg: DictConfig, recipe: Recipe, proto: Protocol) -> None:
    if cfg.regime._target_ == "lerac.engine.released.StepCurriculum":
        cfg.regime.scope = recipe.scope
    elif recipe.scope != "all" and "lr_first" in cfg.regime:
        raise ConfigError(
            "protocol.curriculum_scope=released (only the head starts low) needs the "
            "released rates: add protocol.rates=released or use regime=lerac_step"
        )


def _after(cfg: DictConfig, recipe: Recipe, proto: Protocol) -> None:
    epochs = max(1, int(recipe.epochs * proto.time_scale + 0.5))  # half up
    cfg.trainer.max_epochs = epochs
    cfg.trainer.early_stopping_patience = epochs  # never reached: no early stopping
    milestones, above = recipe.milestones, recipe.above
    if cfg.regime.id == "cbs":
        milestones, above = CBS_MILESTONES, 0.0
    if recipe.schedule == "multistep":
        node = _schedule_node("multistep")
        node.milestones = [max(1, int(m * proto.time_scale + 0.5)) for m in milestones]
        node.above = above
        cfg.schedule = node
    elif recipe.schedule == "constant":
        cfg.schedule = OmegaConf.create(
            {"id": "constant", "_target_": "lerac.engine.schedules.Schedule"}
        )
    else:
        _note(
            f"the released code for model={cfg.model.id} runs timm's scheduler after the "
            f"curriculum; schedule={cfg.schedule.id} stays"
        )


def _weight_decay(cfg: DictConfig, recipe: Recipe, proto: Protocol) -> None:
    decay = CBS_WEIGHT_DECAY if cfg.regime.id == "cbs" else recipe.weight_decay
    if decay is not None:
        cfg.optimizer.weight_decay = decay


def _text_length(cfg: DictConfig, recipe: Recipe, proto: Protocol) -> None:
    if recipe.max_length is not None and "tokenizer" in cfg.model:
        cfg.model.tokenizer.max_length = recipe.max_length


def _nothing(cfg: DictConfig, recipe: Recipe, proto: Protocol) -> None:
    """Keys that act on the data and the model (prepare_splits, prepare_model)."""


APPLY = {
    "rate_units": _rate_units,
    "rates": _rates,
    "curriculum_scope": _scope,
    "after_curriculum": _after,
    "weight_decay": _weight_decay,
    "text_length": _text_length,
    "selection": _nothing,
    "train_split": _nothing,
    "init": _nothing,
}


def apply_protocol(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the released values of the keys set to ``released`` (a copy; ``cfg``
    itself when every key is ``paper``)."""
    proto = read_protocol(cfg)
    switched = [key for key in KEYS if proto.released(key)]
    if not switched:
        return cfg
    cfg = copy.deepcopy(cfg)
    recipe = recipe_for(cfg.model.id, cfg.dataset.id, proto.recipe)
    with open_dict(cfg):
        if recipe is None:
            _note(
                f"the released code has no recipe for model={cfg.model.id} on "
                f"dataset={cfg.dataset.id}: every protocol key keeps the paper's"
            )
            for key in switched:
                cfg.protocol[key] = "paper"
            return cfg
        if proto.released("train_split") and not proto.released("selection"):
            raise ConfigError(
                "protocol.train_split=released trains on all of train and leaves no "
                "validation split to select on: add protocol.selection=released"
            )
        for key in KEYS:  # in KEYS order: the rates before their scope
            if key in switched:
                APPLY[key](cfg, recipe, proto)
    if proto.released("selection"):
        _note(
            "the best epoch is selected on the TEST split (released code); metrics.json "
            'says "selected_on": "test"'
        )
    for note in recipe.notes:
        _note(note)
    return cfg


def selected_on(cfg: DictConfig) -> str:
    return "test" if read_protocol(cfg).released("selection") else "val"


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {k: torch.cat([a[k], b[k]]) for k in a}
    return torch.cat([a, b])


def prepare_splits(splits: Splits, cfg: DictConfig) -> Splits:
    """The data-side keys: the full training split, selection on test, [-1, 1] scaling."""
    proto = read_protocol(cfg)
    recipe = recipe_for(cfg.model.id, cfg.dataset.id, proto.recipe)
    if recipe is None:
        return splits
    if proto.released("train_split"):
        (x, y), (vx, vy) = splits.train, splits.val
        splits.train = (_concat(x, vx), torch.cat([y, vy]))
    if proto.released("selection"):
        splits.val = splits.test
    if proto.released("init") and recipe.normalize == "half" and splits.mean is not None:
        images = splits.train[0]
        top = 255.0 if images.dtype == torch.uint8 else float(images.max())
        splits.mean = torch.full_like(splits.mean, top / 2)
        splits.std = torch.full_like(splits.std, top / 2)
    return splits


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


def prepare_model(model: nn.Module, cfg: DictConfig) -> nn.Module:
    proto = read_protocol(cfg)
    recipe = recipe_for(cfg.model.id, cfg.dataset.id, proto.recipe)
    if recipe is not None and proto.released("init") and recipe.init == "resnet":
        released_init(model)
    return model
