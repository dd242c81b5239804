"""The result store: one directory per run, named by its key, holding plain files.

  metrics.json     status, test/val accuracy (%), best epoch, timing, the run's key
  history.csv      one row per epoch
  lr_schedule.csv  step,layer,lr: every step through the curriculum, then one per epoch
  layers.csv       layer,name,params,initial_lr: the layers in the order the curriculum
                   uses, and the rate each starts at (LeRaC's Eq. 6, a control's, ...)
  predictions.csv  index,target,prediction: the test set's predicted classes (McNemar)
  config.yaml      the resolved config the run was trained with
  error.log        the traceback of a failed run
  checkpoint.pt    the state after the last finished epoch (lerac/engine/checkpoint.py); pruned
                   once the run is complete unless trainer.keep_checkpoint=true
  .lock            held (flock) by the process training in the directory

metrics.json's ``status`` is running, completed, failed or interrupted. Whole files are
written under a temporary name and renamed; history.csv and lr_schedule.csv grow by
appending and are rewritten from the checkpoint on resume, so a crash never leaves a
half-written file behind for long. A report finds runs by walking a directory for
metrics.json; no database.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from torch.optim import Optimizer

from lerac.engine.io import atomic_open, write_json, write_text
from lerac.errors import RunLocked
from lerac.layers import Layer

METRICS = "metrics.json"
HISTORY = "history.csv"
LR_SCHEDULE = "lr_schedule.csv"
LAYERS = "layers.csv"
PREDICTIONS = "predictions.csv"
CONFIG = "config.yaml"
ERROR_LOG = "error.log"
LOCK = ".lock"
CORRUPT = "corrupt"  # metrics.json ``status`` read_metrics gives a file it cannot parse
# history.csv's columns; a regime's own per-epoch values (``Regime.epoch_log``, e.g.
# CBS's ``cbs_sigma``) follow them.
HISTORY_FIELDS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr_min",
    "lr_max",
    "seconds",
]


def run_group(dataset: str, model: str, regime: str, tag: str = "") -> str:
    """``dataset_model_regime[_tag]``: the runs that differ only by seed."""
    return "_".join(str(p) for p in (dataset, model, regime, tag) if p)


def run_key(dataset: str, model: str, regime: str, seed: int, tag: str = "") -> str:
    """``dataset_model_regime[_tag]_seedN``: the run's directory name."""
    return f"{run_group(dataset, model, regime, tag)}_seed{seed}"


def read_metrics(path: str | Path) -> dict[str, Any] | None:
    """The run's metrics; None without a metrics.json; ``{"status": "corrupt", "error":
    ...}`` when it cannot be parsed, so a report lists the run instead of failing."""
    file = Path(path) / METRICS
    if not file.is_file():
        return None
    try:
        metrics = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {
            **_identity(file.parent),
            "status": CORRUPT,
            "error": f"{file} cannot be read: {err}",
        }
    if not isinstance(metrics, dict):
        return {
            **_identity(file.parent),
            "status": CORRUPT,
            "error": f"{file} is not a JSON object",
        }
    return metrics


def _identity(run_dir: Path) -> dict[str, Any]:
    """dataset, model, regime, seed, tag from the run's config.yaml, where it is readable,
    so a run with a corrupt metrics.json is still listed in its group."""
    try:
        cfg = yaml.safe_load((run_dir / CONFIG).read_text())
        return {
            **{group: cfg[group]["id"] for group in ("dataset", "model", "regime")},
            "seed": cfg["seed"],
            "tag": cfg.get("tag", ""),
        }
    except Exception:  # no config or a damaged one: the marker alone
        return {}


def find_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run's metrics under ``root``, each with its ``run_dir``."""
    return [
        {**read_metrics(file.parent), "run_dir": str(file.parent)}
        for file in sorted(Path(root).rglob(METRICS))
    ]


def group_of_each_layer(layers: Iterable[Layer], optimizer: Optimizer) -> list[int]:
    """The index of the param group that trains each layer (found by parameter)."""
    group_of = {id(p): g for g, group in enumerate(optimizer.param_groups) for p in group["params"]}
    return [group_of[id(layer.params[0])] for layer in layers]


def rates_of(layers: Iterable[Layer], optimizer: Optimizer) -> list[float]:
    """The learning rate of each of ``layers`` now (the rate of the group training it)."""
    groups = optimizer.param_groups
    return [float(groups[g]["lr"]) for g in group_of_each_layer(layers, optimizer)]


class NoStore:
    """Keeps nothing: what the trainer records when it has no run directory."""

    def start(
        self,
        layers: list[Layer],
        optimizer: Optimizer,
        initial_lrs: list[float],
        extra_fields: list[str] = (),
        history: list[dict[str, Any]] | None = None,
        step: int = 0,
    ) -> None:
        pass

    def log_lrs(self, step: int, optimizer: Optimizer) -> None:
        pass

    def log_epoch(self, row: dict[str, Any]) -> None:
        pass


class RunStore(NoStore):
    """Writes one run's files as training goes, so a crash keeps every finished epoch."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._files: list[Any] = []
        self._groups: list[int] = []  # the param group of each layer

    def _append(self, name: str):
        f = open(self.dir / name, "a", newline="")
        self._files.append(f)
        return f

    def start(
        self,
        layers: list[Layer],
        optimizer: Optimizer,
        initial_lrs: list[float],
        extra_fields: list[str] = (),
        history: list[dict[str, Any]] | None = None,
        step: int = 0,
    ) -> None:
        """Write layers.csv (with each layer's rate at step 0) and open the files that grow
        during training; ``extra_fields`` are the regime's own history columns. Resuming
        (``history``: the checkpoint's rows), history.csv is rewritten from those rows and
        lr_schedule.csv keeps its rows before ``step``, dropping what the interrupted epoch
        had logged (and a line cut short by a crash)."""
        (self.dir / ERROR_LOG).unlink(missing_ok=True)  # from an earlier failed attempt
        self._groups = group_of_each_layer(layers, optimizer)
        self._write_csv(
            LAYERS,
            ["layer", "name", "params", "initial_lr"],
            (
                [i, layer.name, layer.numel, f"{lr:.6e}"]
                for i, (layer, lr) in enumerate(zip(layers, initial_lrs))
            ),
        )
        kept = _read_rows(self.dir / LR_SCHEDULE, 3, lambda r: int(r[0]) < step) if history else []
        self._write_csv(LR_SCHEDULE, ["step", "layer", "lr"], kept)
        fields = HISTORY_FIELDS + [f for f in extra_fields if f not in HISTORY_FIELDS]
        rows = ([row.get(f, "") for f in fields] for row in history or [])
        self._write_csv(HISTORY, fields, rows)
        self._lr = csv.writer(self._append(LR_SCHEDULE))
        self._history = csv.DictWriter(self._append(HISTORY), fields)

    def log_lrs(self, step: int, optimizer: Optimizer) -> None:
        """One row per layer with the lr its param group has now."""
        groups = optimizer.param_groups
        for layer, g in enumerate(self._groups):
            self._lr.writerow([step, layer, f"{groups[g]['lr']:.6e}"])

    def log_epoch(self, row: dict[str, Any]) -> None:
        self._history.writerow(row)
        for f in self._files:
            f.flush()

    def write_predictions(self, predicted: Any, targets: Any) -> None:
        """The test set's predictions, in test order, for paired tests between regimes."""
        rows = zip(range(len(targets)), targets.tolist(), predicted.tolist())
        self._write_csv(PREDICTIONS, ["index", "target", "prediction"], rows)

    def write_artifacts(self, artifacts: dict[str, str]) -> None:
        """Files a data family asks the run to keep (e.g. a vocabulary)."""
        for name, text in artifacts.items():
            write_text(self.dir / name, text)

    def _write_csv(self, name: str, header: list[str], rows: Iterable) -> None:
        with atomic_open(self.dir / name, newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    def write_error(self, traceback_text: str) -> None:
        write_text(self.dir / ERROR_LOG, traceback_text)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.dir / METRICS, metrics)

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()


def _read_rows(path: Path, width: int, keep: Any) -> list[list[str]]:
    """Data rows of a CSV file that are whole (``width`` cells) and pass ``keep``."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    kept = []
    for row in rows:
        try:
            if len(row) == width and keep(row):
                kept.append(row)
        except ValueError:  # a line a crash cut short
            continue
    return kept


class RunLock:
    """One process per run directory: an exclusive ``flock`` on ``<run_dir>/.lock``.

    The kernel drops the lock when its process dies (even by SIGKILL), so a stale lock
    never blocks a resume; the file records pid and host for the message.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._file = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunLocked(
                f"{self.path.parent} is in use by {holder}; wait for it to finish (or stop "
                "it), or give this run another tag=... or paths.output_dir=..."
            ) from None
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
