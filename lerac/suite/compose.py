"""Composing ``conf/`` as a run sees it, with the OmegaConf resolvers its files use
registered in one place: ``${run_key:...}`` (a run's folder, lerac.engine.store),
``${released:...}`` (the released code's recipe value, lerac.suite.recipes) and
``${lerac_gpu:...}`` (a local multirun job's GPU, lerac.suite.gpus).

Everything that composes ``conf/`` calls :func:`register_resolvers` first; the training
entrypoint calls it when imported, because a launcher's job process imports it to run a
job and resolves ``hydra.job.env_set`` (``${lerac_gpu:...}``) before the job starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from lerac.engine.store import run_key
from lerac.suite.config import CONF_DIR
from lerac.suite.gpus import gpu_for_job
from lerac.suite.recipes import released_value
from lerac.suite.validate import check_key_part


def checked_run_key(dataset: str, model: str, regime: str, seed: int, tag: str = "") -> str:
    """``run_key`` for Hydra's run folder, refusing a part that would make it a path
    (``tag=../../x``) before Hydra creates the folder."""
    for key, value in (("dataset.id", dataset), ("model.id", model), ("regime.id", regime)):
        check_key_part(key, value)
    check_key_part("tag", tag)
    return run_key(dataset, model, regime, seed, tag)


def register_resolvers() -> None:
    """Register the suite's resolvers (idempotent)."""
    for name, resolver in (
        ("run_key", checked_run_key),
        ("released", released_value),
        ("lerac_gpu", gpu_for_job),
    ):
        OmegaConf.register_new_resolver(name, resolver, replace=True)


def compose_config(overrides: Sequence[str] = (), hydra_config: bool = False) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` through Hydra's compose API, as a
    run would see it (``hydra_config``: with the ``hydra`` node, as a multirun needs)."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra_config)
