"""The one training entrypoint: ``python -m lerac.train`` (or ``lerac-train``).

Composes conf/train.yaml (groups model, dataset, regime, optimizer, logger, paths),
builds each piece from its ``_target_``, trains, and leaves the run's files in
``paths.output_dir/<dataset>_<model>_<regime>[_<tag>]_seed<N>``. A run whose directory
already holds a completed metrics.json is skipped, so an interrupted sweep can simply be
started again (``overwrite=true`` retrains).
"""

from __future__ import annotations

import logging
import random
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lerac.errors import ConfigError, LeRaCError
from lerac.loop import TrainerSettings, fit
from lerac.store import CONFIG, RunStore, read_metrics, run_group, run_key
from lerac.tracking import NoLogger

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Keys a group file carries for people, checks and reports, not for its constructor.
METADATA_KEYS = ("id", "table1", "modality", "modalities")
# Settings that do not change what a run computes.
BOOKKEEPING = ("overwrite", "trainer.progress", "logger", "paths", "hydra")

OmegaConf.register_new_resolver("run_key", run_key, replace=True)
log = logging.getLogger("lerac")


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate a group's ``_target_``, leaving out its metadata keys."""
    container = OmegaConf.to_container(node, resolve=True)
    for key in METADATA_KEYS:
        container.pop(key, None)
    return instantiate(container, **kwargs)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_changes(saved: Path, cfg: DictConfig) -> list[str]:
    """Settings that differ between a run's saved config and ``cfg`` (bookkeeping aside)."""
    if not saved.is_file():
        return []
    old = _flatten(OmegaConf.to_container(OmegaConf.load(saved), resolve=True))
    new = _flatten(OmegaConf.to_container(cfg, resolve=True))
    return sorted(
        key
        for key in old.keys() | new.keys()
        if old.get(key) != new.get(key) and not key.startswith(BOOKKEEPING)
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_modality(cfg: DictConfig) -> None:
    """A model and a data set of different kinds fail here, before any data is read."""
    kind = cfg.dataset.get("modality", "image")
    takes = list(cfg.model.get("modalities", ["image"]))
    if kind not in takes:
        raise ConfigError(
            f"model={cfg.model.id} takes {' or '.join(takes)} data but dataset={cfg.dataset.id} "
            f"is {kind} data; pick a {' or '.join(takes)} data set or a model for {kind} data "
            "(the README lists both)"
        )


def describe(cfg: DictConfig) -> dict[str, Any]:
    return {
        "dataset": cfg.dataset.id,
        "model": cfg.model.id,
        "regime": cfg.regime.id,
        "optimizer": cfg.optimizer.id,
        "schedule": cfg.schedule.id,
        "seed": cfg.seed,
        "tag": cfg.tag,
    }


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train one run described by ``cfg`` into ``run_dir``; return its metrics."""
    identity = describe(cfg)
    key = run_key(identity["dataset"], identity["model"], identity["regime"], cfg.seed, cfg.tag)
    previous = read_metrics(run_dir)
    if previous and previous.get("status") == "completed" and not cfg.overwrite:
        log.info("%s is already completed in %s; skipped (overwrite=true retrains)", key, run_dir)
        changed = config_changes(Path(run_dir) / CONFIG, cfg)
        if changed:
            warnings.warn(
                f"{key} was trained with other settings ({', '.join(changed)}); its results "
                "stand. Give the variant a tag=... or retrain with overwrite=true",
                stacklevel=2,
            )
        return previous

    settings = TrainerSettings(**OmegaConf.to_container(cfg.trainer, resolve=True))
    check_modality(cfg)
    regime = build(cfg.regime)  # config errors surface before any data is read
    schedule = build(cfg.schedule)
    k = cfg.regime.get("k")
    if k is not None and k >= settings.max_epochs:
        warnings.warn(
            f"regime.k={k} >= trainer.max_epochs={settings.max_epochs}: the curriculum never ends",
            stacklevel=2,
        )

    store = RunStore(run_dir)
    OmegaConf.save(cfg, store.dir / CONFIG, resolve=True)
    logger: NoLogger = build(cfg.logger)
    metrics: dict[str, Any] = {**identity, "key": key, "status": "failed"}
    try:
        seed_everything(cfg.seed)
        splits = build(cfg.dataset)
        model = build(cfg.model, num_classes=splits.num_classes, **splits.input_spec)
        make_optimizer = build(cfg.optimizer, _partial_=True)
        logger.start(
            OmegaConf.to_container(cfg, resolve=True),
            str(store.dir),
            key,
            group=run_group(identity["dataset"], identity["model"], identity["regime"], cfg.tag),
        )
        store.write_artifacts(splits.artifacts)
        result = fit(
            model,
            splits,
            make_optimizer,
            settings,
            regime,
            cfg.seed,
            store,
            logger,
            desc=key,
            schedule=schedule,
        )
        store.write_predictions(result.test_predictions, result.test_targets)
    except BaseException as err:
        metrics["error"] = f"{type(err).__name__}: {err}"
        store.write_error(traceback.format_exc())
        store.write_metrics(metrics)
        logger.finish(metrics, failed=True)
        raise
    finally:
        store.close()

    metrics.update(
        status="completed",
        test_acc=round(result.test_acc, 4),
        val_acc=round(result.val_acc, 4),
        test_loss=round(result.test_loss, 6),
        best_epoch=result.best_epoch,
        epochs=result.epochs,
        train_seconds=round(result.train_seconds, 3),
        layers=len(result.layers),
        params=sum(layer.numel for layer in result.layers),
        data_sizes=splits.sizes(),
    )
    store.write_metrics(metrics)
    logger.finish(metrics)
    log.info(
        "%s: test acc %.2f%% (best val %.2f%% at epoch %d)",
        key,
        result.test_acc,
        result.val_acc,
        result.best_epoch,
    )
    return metrics


_failed_runs: list[str] = []


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        train(cfg, HydraConfig.get().runtime.output_dir)
    except LeRaCError as err:
        # A problem the user can fix: one line, no traceback; a sweep goes on.
        print(f"error: {err}", file=sys.stderr)
        _failed_runs.append(str(err))


def main() -> None:
    _hydra_main()
    if _failed_runs:
        sys.exit(2)


if __name__ == "__main__":
    main()
