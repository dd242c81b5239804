"""The one training entrypoint: ``python -m lerac.suite.train`` (or ``lerac-train``).

Composes conf/train.yaml (groups model, dataset, regime, optimizer, logger, paths),
builds each piece from its ``_target_``, trains, and leaves the run's files in
``paths.output_dir/<dataset>_<model>_<regime>[_<tag>]_seed<N>``. A run whose directory
already holds a completed metrics.json is skipped, so an interrupted sweep can simply be
started again (``overwrite=true`` retrains; other settings under the same key are an
error); a run stopped in the middle (killed,
preempted, SIGTERM) resumes from its last epoch's checkpoint. The config is validated
(lerac/suite/validate.py) before anything is built; a user error prints one ``error: ...`` line
and exits 2, an interruption exits 3.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lerac.engine.checkpoint import Checkpoint, StopSignals
from lerac.engine.io import DISK_FULL, remove_temporaries
from lerac.engine.loop import FitResult, NoLogger, Trainer
from lerac.engine.settings import TrainerSettings
from lerac.engine.store import (
    CONFIG,
    ERROR_LOG,
    RunLock,
    RunStore,
    read_metrics,
    run_group,
    run_key,
)
from lerac.errors import (
    ConfigError,
    CorruptDataError,
    LeRaCError,
    RunInterrupted,
    first_line,
    one_line,
)
from lerac.suite.build import build, build_data, build_model, named_parameters_of
from lerac.suite.compose import register_resolvers
from lerac.suite.config import CONF_DIR
from lerac.suite.identity import config_changes
from lerac.suite.overrides import check_command_line
from lerac.suite.protocol import ResolvedProtocol, resolve_protocol
from lerac.suite.validate import validate

# A launcher's job process imports this module to run a job (module docstring of config).
register_resolvers()
log = logging.getLogger("lerac")
EXIT_USER_ERROR = 2  # a config or data problem the user can fix (one `error:` line)
EXIT_INTERRUPTED = 3  # SIGTERM/SIGUSR1/SIGUSR2: checkpointed, the same command resumes


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """``trainer.deterministic``: PyTorch's deterministic algorithms (an error for an op
    that has none), no cuDNN autotuning; the previous settings come back afterwards."""
    if not enabled:
        yield
        return
    # cuBLAS needs a fixed workspace to be deterministic (PyTorch "Reproducibility" notes).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


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


def read_data(cfg: DictConfig, store: RunStore) -> Any:
    """Build the data set; a file that cannot be read becomes one clear error (families
    name the exact file with ``lerac.errors.reading``; this names the data set)."""
    try:
        return build_data(cfg)
    except LeRaCError:
        raise
    except Exception as err:
        root = err
        while root.__cause__ is not None:
            root = root.__cause__
        raise CorruptDataError(
            f"dataset={cfg.dataset.id} could not be read ({type(root).__name__}: "
            f"{first_line(root)}); a file of it is damaged, partial or not in the expected "
            "format: fetch it again "
            f"(paths.data_dir={cfg.paths.data_dir}; traceback in {store.dir / ERROR_LOG})"
        ) from err


def train(cfg: DictConfig, run_dir: str | Path, *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train one run described by ``cfg`` into ``run_dir``, resuming from its checkpoint
    when it holds one; return its metrics. ``overrides``: the overrides ``cfg`` was
    composed with (what the user set explicitly), which the protocol gives way to."""
    cfg, protocol = resolve_protocol(cfg, overrides)  # conf/protocol, resolved once
    protocol.warn()
    validate(cfg)  # one clear error before anything is built or read
    settings = TrainerSettings.from_config(OmegaConf.to_container(cfg.trainer, resolve=True))
    identity = describe(cfg)
    key = run_key(identity["dataset"], identity["model"], identity["regime"], cfg.seed, cfg.tag)
    previous = completed_run(cfg, run_dir, key)
    if previous is not None:
        return previous
    regime, schedule = build(cfg.regime), build(cfg.schedule)
    store = RunStore(run_dir)
    with RunLock(store.dir), deterministic(settings.deterministic), StopSignals() as stop:
        checkpoint = open_run(cfg, store)
        metrics: dict[str, Any] = {**identity, "key": key, "status": "running"}
        metrics["selected_on"] = protocol.selected_on  # "test" only under protocol.selection
        store.write_metrics(metrics)  # a killed run is listed, not invisible
        logger: NoLogger = build(cfg.logger)
        try:
            trainer = Trainer(
                settings,
                regime=regime,
                schedule=schedule,
                store=store,
                logger=logger,
                checkpoint=checkpoint,
                stop=stop,
                probes=build_probes(cfg, store),
                seed=cfg.seed,
                desc=key,
            )
            splits, result = build_and_fit(cfg, trainer, identity, key, protocol=protocol)
        except BaseException as err:
            record_failure(store, logger, metrics, err)
            raise
        finally:
            store.close()
        metrics.update(completed_metrics(result, splits))
        store.write_metrics(metrics)
        if not settings.keep_checkpoint:
            checkpoint.prune()  # a grid of thousands of runs must not fill the disk
    logger.finish(metrics)
    log.info(
        "%s: test acc %.2f%% (best val %.2f%% at epoch %d)",
        key,
        result.test_acc,
        result.val_acc,
        result.best_epoch,
    )
    return metrics


def build_probes(cfg: DictConfig, store: RunStore) -> Any:
    """The analysis group's probes (conf/analysis), writing into the run directory."""
    target = cfg.analysis._target_
    return build(cfg.analysis, **named_parameters_of(target, run_dir=str(store.dir)))


def completed_run(cfg: DictConfig, run_dir: str | Path, key: str) -> dict[str, Any] | None:
    """The metrics of the run if it is already completed (and not to be overwritten); a
    completed run of other settings under the same key is an error, so a sweep's report
    never mixes two experiments under one key."""
    previous = read_metrics(run_dir)
    if not (previous and previous.get("status") == "completed") or cfg.overwrite:
        return None
    changed = config_changes(Path(run_dir) / CONFIG, cfg)
    if changed:
        raise ConfigError(
            f"{key} is already completed in {run_dir} with other settings ({', '.join(changed)});"
            " give this variant its own key with tag=..., or retrain it there with overwrite=true"
        )
    log.info("%s is already completed in %s; skipped (overwrite=true retrains)", key, run_dir)
    return previous


def open_run(cfg: DictConfig, store: RunStore) -> Checkpoint:
    """The run's checkpoint, after refusing one made with other settings; the config the
    run trains with is written beside it."""
    checkpoint = Checkpoint(store.dir)
    remove_temporaries(store.dir)  # a killed process's; the run's lock is held
    if cfg.overwrite:
        checkpoint.prune()
    elif checkpoint.exists() and (changed := config_changes(store.dir / CONFIG, cfg)):
        raise ConfigError(
            f"{store.dir} holds a checkpoint of this run with other settings "
            f"({', '.join(changed)}); run again with overwrite=true to start afresh, or "
            "give the variant a tag=..."
        )
    store.write_artifacts({CONFIG: OmegaConf.to_yaml(cfg, resolve=True)})
    return checkpoint


def build_and_fit(
    cfg: DictConfig,
    trainer: Trainer,
    identity: dict[str, Any],
    key: str,
    *,
    protocol: ResolvedProtocol,
) -> tuple[Any, FitResult]:
    """Data, model and optimizer from the config, as the protocol adapts them; trained by
    ``trainer``."""
    store = trainer.store
    seed_everything(cfg.seed)
    splits = protocol.adapt_splits(read_data(cfg, store))
    model = protocol.adapt_model(build_model(cfg.model, splits.num_classes, splits.input_spec))
    make_optimizer = build(cfg.optimizer, _partial_=True)
    group = run_group(identity["dataset"], identity["model"], identity["regime"], cfg.tag)
    trainer.logger.start(OmegaConf.to_container(cfg, resolve=True), str(store.dir), key, group)
    store.write_artifacts(splits.artifacts)
    result = trainer.fit(model, splits, make_optimizer)
    store.write_predictions(result.test_predictions, result.test_targets)
    return splits, result


def record_failure(
    store: RunStore, logger: NoLogger, metrics: dict[str, Any], err: BaseException
) -> None:
    """metrics.json says how the run ended: interrupted (resumable) or failed (with the
    traceback in error.log); every finished epoch stays on disk."""
    interrupted = isinstance(err, (RunInterrupted, KeyboardInterrupt))
    metrics.update(
        status="interrupted" if interrupted else "failed", error=f"{type(err).__name__}: {err}"
    )
    try:  # on a full disk these writes fail too: the run's own error is the one to report
        if not interrupted:
            store.write_error(traceback.format_exc())
        store.write_metrics(metrics)
    except OSError as write_err:
        if write_err.errno not in DISK_FULL:
            raise
    logger.finish(metrics, failed=True)


def completed_metrics(result: FitResult, splits: Any) -> dict[str, Any]:
    return dict(
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
        resumed_from_epoch=result.resumed_from_epoch,
    )


_failed_runs: list[str] = []


def disk_full(err: OSError, run_dir: str | Path) -> str:
    where = f" while writing {err.filename}" if err.filename else ""
    return (
        f"no space left on the device{where}; the run keeps its last finished epoch's "
        f"checkpoint in {run_dir}: free space and run the same command to resume"
    )


def inside_output_dir(cfg: DictConfig, run_dir: str | Path) -> None:
    """A run's folder lies inside ``paths.output_dir``, whatever the overrides say."""
    output = Path(cfg.paths.output_dir).resolve()
    if not Path(run_dir).resolve().is_relative_to(output):
        raise ConfigError(
            f"the run's folder {run_dir} lies outside paths.output_dir={cfg.paths.output_dir}; "
            "choose where runs go with paths.output_dir, not hydra.run.dir or hydra.sweep.dir"
        )


def job(cfg: DictConfig) -> None:
    """One run as a Hydra launcher calls it (``lerac-train``, a multirun, ``lerac.suite.grid``).

    A module-level function of an imported module: a launcher that pickles its task
    (submitit) sends a reference to ``lerac.suite.train.job``, never the function's globals."""
    hydra = HydraConfig.get()
    run_dir = hydra.runtime.output_dir
    try:
        inside_output_dir(cfg, run_dir)
        # The job's own overrides (command line, sweep or grid cell): the protocol gives way.
        train(cfg, run_dir, overrides=list(hydra.overrides.task))
    except (LeRaCError, OSError) as err:
        if isinstance(err, OSError) and err.errno not in DISK_FULL:
            raise
        # A problem the user can fix: one line, no traceback; a sweep goes on.
        message = one_line(disk_full(err, run_dir) if isinstance(err, OSError) else err)
        print(f"error: {message}", file=sys.stderr)
        _failed_runs.append(message)
    except RunInterrupted as err:
        # Preempted: the sweep stops here; the same command resumes where it stopped.
        print(
            f"interrupted: {err}; the run keeps its last epoch's checkpoint, run the same "
            "command again to resume",
            file=sys.stderr,
        )
        sys.exit(EXIT_INTERRUPTED)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    job(cfg)


def main() -> None:
    _failed_runs.clear()  # main() may be called more than once in a process (tests)
    try:
        check_command_line(sys.argv[1:])  # a typo: one line, not Hydra's several
    except LeRaCError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    _hydra_main()
    if _failed_runs:
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    # `python -m lerac.suite.train` runs this file as __main__, whose functions a pickling
    # launcher would send by value (with torch modules that cannot be pickled): train
    # through the imported module instead, so every task is lerac.suite.train.job by name.
    from lerac.suite.train import main as imported_main

    imported_main()
