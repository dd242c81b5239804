"""Experiment tracking: Weights & Biases (offline by default) or nothing.

Offline runs land in the run directory's wandb/ folder; ``wandb sync <folder>`` uploads
them later. Runs are grouped by dataset_model_regime, named by their full key.
"""

from __future__ import annotations

import os
from typing import Any


class NoLogger:
    """Logs nothing (logger=none)."""

    def start(self, config: dict[str, Any], run_dir: str, name: str, group: str) -> None:
        pass

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def finish(self, summary: dict[str, Any], failed: bool = False) -> None:
        pass


class WandbLogger(NoLogger):
    """Weights & Biases; ``mode`` is offline, online or disabled (env WANDB_MODE wins)."""

    def __init__(self, project: str = "lerac", mode: str = "offline", entity: str | None = None):
        self.project, self.entity = project, entity
        self.mode = os.environ.get("WANDB_MODE", mode)
        self.run = None

    def start(self, config: dict[str, Any], run_dir: str, name: str, group: str) -> None:
        import wandb  # imported here: it is slow to import and not needed with logger=none

        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=run_dir,
            name=name,
            group=group,
            config=config,
            reinit="finish_previous",  # one process runs many jobs in a Hydra multirun
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self, summary: dict[str, Any], failed: bool = False) -> None:
        if self.run is not None:
            self.run.summary.update(summary)
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
