"""The result store: one directory per run, named by its key, holding plain files.

  metrics.json     status, test/val accuracy (%), best epoch, timing, the run's key
  history.csv      one row per epoch
  lr_schedule.csv  step,layer,lr: every step through the curriculum, then one per epoch
  layers.csv       layer,name,params,initial_lr: the layers in the order the curriculum
                   uses, and the rate each starts at (LeRaC's Eq. 6, a control's, ...)
  predictions.csv  index,target,prediction: the test set's predicted classes (McNemar)
  config.yaml      the resolved config the run was trained with
  error.log        the traceback of a failed run

A report finds runs by walking a directory for metrics.json; no database.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch.optim import Optimizer

from lerac.layers import Layer

METRICS = "metrics.json"
HISTORY = "history.csv"
LR_SCHEDULE = "lr_schedule.csv"
LAYERS = "layers.csv"
PREDICTIONS = "predictions.csv"
CONFIG = "config.yaml"
ERROR_LOG = "error.log"
HISTORY_FIELDS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr_min",
    "lr_max",
    "seconds",
    "cbs_sigma",  # empty for regimes without smoothing
]


def run_group(dataset: str, model: str, regime: str, tag: str = "") -> str:
    """``dataset_model_regime[_tag]``: the runs that differ only by seed."""
    return "_".join(str(p) for p in (dataset, model, regime, tag) if p)


def run_key(dataset: str, model: str, regime: str, seed: int, tag: str = "") -> str:
    """``dataset_model_regime[_tag]_seedN``: the run's directory name."""
    return f"{run_group(dataset, model, regime, tag)}_seed{seed}"


def read_metrics(path: str | Path) -> dict[str, Any] | None:
    file = Path(path) / METRICS
    if not file.is_file():
        return None
    return json.loads(file.read_text())


def find_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run's metrics under ``root``, each with its ``run_dir``."""
    return [
        {**read_metrics(file.parent), "run_dir": str(file.parent)}
        for file in sorted(Path(root).rglob(METRICS))
    ]


class RunStore:
    """Writes one run's files as training goes, so a crash keeps every finished epoch."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._files: list[Any] = []
        self._layer_index: dict[str, int] = {}

    def _open(self, name: str):
        f = open(self.dir / name, "w", newline="")
        self._files.append(f)
        return f

    def start(self, layers: Iterable[Layer], optimizer: Optimizer | None = None) -> None:
        """Write layers.csv (with each layer's rate at step 0 when given the optimizer) and
        open the files that grow during training."""
        (self.dir / ERROR_LOG).unlink(missing_ok=True)  # from an earlier failed attempt
        lrs = {
            name: f"{group['lr']:.6e}"
            for group in (optimizer.param_groups if optimizer else [])
            for name in group.get("layers", [])
        }
        with open(self.dir / LAYERS, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["layer", "name", "params", "initial_lr"])
            for i, layer in enumerate(layers):
                writer.writerow([i, layer.name, layer.numel, lrs.get(layer.name, "")])
                self._layer_index[layer.name] = i
        self._lr = csv.writer(self._open(LR_SCHEDULE))
        self._lr.writerow(["step", "layer", "lr"])
        self._history = csv.DictWriter(self._open(HISTORY), HISTORY_FIELDS)
        self._history.writeheader()

    def log_lrs(self, step: int, optimizer: Optimizer) -> None:
        """One row per layer with the lr its param group has now."""
        for g, group in enumerate(optimizer.param_groups):
            for name in group.get("layers", [g]):
                self._lr.writerow([step, self._layer_index.get(name, name), f"{group['lr']:.6e}"])

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
            _write_atomic(self.dir / name, text)

    def _write_csv(self, name: str, header: list[str], rows: Iterable) -> None:
        tmp = self.dir / (name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, self.dir / name)

    def write_error(self, traceback_text: str) -> None:
        (self.dir / ERROR_LOG).write_text(traceback_text)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        _write_atomic(self.dir / METRICS, json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()


def _write_atomic(path: Path, text: str) -> None:
    """Write then rename, so a reader (or a crash) never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
