"""Check a composed config against a typed schema with ranges, before anything is built.

Every problem becomes one :class:`ConfigError` naming the key, the value and the fix, so
``python -m lerac.suite.train`` prints one ``error: ...`` line and exits 2 before any data is
read. Rules apply to the keys a config has (a regime without ``k`` has no ``k`` rule);
the keys every run needs are marked required. Constructors keep their own checks for
callers that build them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lerac.curriculum import UPDATES
from lerac.engine.probes import PROBE_RULES
from lerac.engine.settings import (
    TRAINER_RULES,
    Rule,
    check_values,
    flatten,
    non_negative,
    open_unit,
    positive,
)
from lerac.errors import ConfigError

NUMPY_SEEDS = 2**32  # np.random.seed takes 0 .. 2**32 - 1
# A model's sizes (conf/model/*.yaml): zero or less builds a model that fails in its first step.
MODEL_SIZES = ("width", "width_per_group", "num_layers", "hidden_size", "embedding_dim",
               "fc_size", "dim", "dim_head", "heads", "mlp_dim")  # fmt: skip


RULES = (
    Rule("seed", int, lambda v: 0 <= v < NUMPY_SEEDS, "an integer from 0 to 2**32 - 1", "0", True),
    *TRAINER_RULES,
    Rule("optimizer.lr", float, positive, "a positive learning rate", "0.1", True),
    Rule("optimizer.momentum", float, lambda v: 0 <= v < 1, "in [0, 1)", "0.9"),
    Rule("optimizer.weight_decay", float, non_negative, "zero or positive", "5e-4"),
    Rule("regime.k", int, positive, "a positive number of epochs (Table 1: 5-7)", "5"),
    Rule("regime.lr_first", float, positive, "a positive learning rate", "0.1"),
    Rule("regime.lr_last", float, positive, "a positive learning rate", "1e-8"),
    Rule("regime.c", float, lambda v: v > 1, "above 1 (the paper uses 10)", "10"),
    Rule("regime.update", str, lambda v: v in UPDATES, "one of " + ", ".join(UPDATES), "step"),
    Rule("regime.updates_per_epoch", int, positive, "a positive integer", "1"),
    Rule("schedule.factor", float, open_unit, "in (0, 1) (the paper uses 0.1)", "0.1"),
    Rule("schedule.patience", int, non_negative, "zero or more epochs", "5"),
    Rule("schedule.warmup_epochs", float, non_negative, "zero or more epochs", "5"),
    Rule("schedule.min_lr_ratio", float, lambda v: 0 <= v < 1, "in [0, 1)", "0.0"),
    Rule("dataset.*_fraction", float, open_unit, "a fraction in (0, 1)", "0.1"),
    Rule("dataset.split_seed", int, lambda v: 0 <= v < NUMPY_SEEDS, "from 0 to 2**32 - 1", "0"),
    *(Rule(f"model.{key}", int, positive, "a positive integer", "64") for key in MODEL_SIZES),
    Rule(
        "dataset.train_examples", int, positive, "a positive count or null", "20000", nullable=True
    ),
    *PROBE_RULES,
)


def check_key_part(key: str, value: Any) -> None:
    """A part of a run's folder name (``tag``, a group's ``id``) must not make it a path:
    no ``/``, ``\\``, ``..`` alone or control characters, so a run never lands outside
    ``paths.output_dir``."""
    text = str(value)
    if "/" in text or "\\" in text or text in (".", "..") or any(ord(c) < 32 for c in text):
        raise ConfigError(
            f"{key}={text!r} is not valid: it becomes part of the run's folder name, so it may "
            f"not hold / or \\ (e.g. {key}=adam_lr0.01)"
        )


def check_relations(values: dict[str, Any]) -> None:
    """Settings that are fine alone but not together."""
    first, last, lr = values.get("regime.lr_first"), values.get("regime.lr_last"), None
    if first is not None and last is not None and last > first:
        raise ConfigError(
            f"regime.lr_last={last:g} is above regime.lr_first={first:g}: the last layer must "
            "start lowest; swap the two values (for deeper layers starting higher use "
            "regime=anti_lerac)"
        )
    lr = values["optimizer.lr"]
    if first is not None and first > lr * (1 + 1e-6):
        raise ConfigError(
            f"regime.lr_first={first:g} is above the base lr optimizer.lr={lr:g} every layer "
            "rises to (Eq. 6); lower regime.lr_first or raise optimizer.lr"
        )
    k, epochs = values.get("regime.k"), values["trainer.max_epochs"]
    if k is not None and k >= epochs:
        raise ConfigError(
            f"regime.k={k} is not below trainer.max_epochs={epochs}: the curriculum would "
            f"never end; lower regime.k or raise trainer.max_epochs above {k}"
        )


def check_modality(cfg: DictConfig) -> None:
    """A model and a data set of different kinds fail here, before any data is read."""
    kind = cfg.dataset.get("modality", "image")
    takes = list(cfg.model.get("modalities", ["image"]))
    if kind not in takes:
        raise ConfigError(
            f"model={cfg.model.id} takes {' or '.join(takes)} data but dataset={cfg.dataset.id} "
            f"is {kind} data; pick a {' or '.join(takes)} data set or a model for {kind} data "
            "(docs/training.md lists both)"
        )


def check_data_dir(cfg: DictConfig) -> None:
    """A data set key taken from ``paths.data_dir`` must name an existing folder."""
    raw = OmegaConf.to_container(cfg.dataset, resolve=False)
    for key, value in raw.items():
        if isinstance(value, str) and "paths.data_dir" in value:
            folder = Path(str(cfg.dataset[key]))
            if not folder.is_dir():
                raise ConfigError(
                    f"dataset={cfg.dataset.id} not found: dataset.{key}={str(folder)!r} "
                    f"(paths.data_dir={cfg.paths.data_dir!r}) is not a folder; point "
                    "paths.data_dir (or LERAC_DATA_DIR) at the folder holding the data, or "
                    f"fetch it: lerac-fetch {cfg.dataset.id} --data-dir {cfg.paths.data_dir} "
                    f"(or make data DATASETS={cfg.dataset.id})"
                )


def check_pretrained(cfg: DictConfig) -> None:
    """``model.pretrained``: a local folder, a hub id lerac-fetch fetched, or a hub id the
    cache holds when offline."""
    from lerac.suite.models.hub import (
        PretrainedUnavailable,
        how_to_get,
        hub_offline,
        local_copy,
        looks_like_hub_id,
    )

    source = cfg.model.get("pretrained")
    if not source or not isinstance(source, str) or local_copy(source):
        return

    if not looks_like_hub_id(source):
        raise PretrainedUnavailable(
            f"model.pretrained={source!r}: the directory does not exist; point it at a "
            "directory written by save_pretrained, or at a hub id such as microsoft/cvt-13"
        )
    if not hub_offline():
        return  # the hub may answer; from_pretrained says so if it does not
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(source, "config.json"), str):
        raise PretrainedUnavailable(
            f"model.pretrained={source!r} is neither fetched nor in the HuggingFace cache and "
            f"HF_HUB_OFFLINE is set; {how_to_get(source)}"
        )


def validate(cfg: DictConfig) -> None:
    """Refuse a config that cannot run, with one message naming key, value and fix."""
    run_keys = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        values = flatten(OmegaConf.to_container(run_keys, resolve=True))
    except OmegaConfBaseException as err:
        raise ConfigError(f"the config does not resolve: {err}".replace("\n", "; ")) from None
    check_values(values, RULES)
    for key in ("dataset.id", "model.id", "regime.id", "tag"):
        check_key_part(key, values.get(key, ""))
    check_relations(values)
    check_modality(cfg)
    check_data_dir(cfg)
    check_pretrained(cfg)
