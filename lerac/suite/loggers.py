"""Experiment tracking: Weights & Biases (offline by default) or nothing.

Offline runs land in the run directory's wandb/ folder; ``wandb sync <folder>`` uploads
them later; ``logger.mode=online`` uploads as the run goes. Each run is grouped by
dataset_model_regime[_tag] (its seeds together) and named by its full key, with the
resolved config (seed included), the per-epoch metrics, every layer's lr during the
curriculum (the table ``lr_schedule`` and its chart), the test accuracy in the summary and,
with analysis=probes, the probes (the table ``probes`` and the image ``probes_heatmaps``:
layer x epoch update pace, relative distance to the final maps, entropy).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lerac.engine.loop import NoLogger
from lerac.engine.probes import PROBES_CSV

# At most this many (step, layer, lr) rows go to W&B per run: DenseNet-121 has ~240 layers
# and a curriculum of thousands of steps; the full schedule stays in lr_schedule.csv.
MAX_LR_ROWS = 50_000


def wandb_mode(mode: str) -> str:
    """offline | online | disabled; the WANDB_MODE variable wins over the config."""
    return os.environ.get("WANDB_MODE", mode)


def lr_schedule_rows(run_dir: str | Path, limit: int = MAX_LR_ROWS) -> list[list[float]]:
    """``[step, layer, lr]`` rows of a run's lr_schedule.csv, every step of the curriculum
    when they fit under ``limit``, else evenly thinned steps (the first and last kept)."""
    file = Path(run_dir) / "lr_schedule.csv"
    if not file.is_file():
        return []
    with open(file, newline="") as f:
        rows = [[int(r["step"]), int(r["layer"]), float(r["lr"])] for r in csv.DictReader(f)]
    steps = sorted({r[0] for r in rows})
    layers = max(1, len({r[1] for r in rows}))
    keep_steps = max(2, limit // layers)
    if len(steps) > keep_steps:
        stride = (len(steps) - 1) / (keep_steps - 1)
        kept = {steps[round(i * stride)] for i in range(keep_steps)}
        rows = [r for r in rows if r[0] in kept]
    return rows


def probe_table(run_dir: str | Path, limit: int = MAX_LR_ROWS) -> tuple[list[str], list[list]]:
    """probes.csv's columns and its first ``limit`` rows, numbers as numbers (None where
    empty); no rows without the file."""
    file = Path(run_dir) / PROBES_CSV
    if not file.is_file():
        return [], []
    with open(file, newline="") as f:
        rows = list(csv.reader(f))

    def cell(value: str) -> Any:
        try:
            return float(value) if value else None
        except ValueError:
            return value

    return rows[0], [[cell(v) for v in row] for row in rows[1 : limit + 1]]


class WandbLogger(NoLogger):
    """Weights & Biases; ``mode`` is offline, online or disabled (env WANDB_MODE wins)."""

    def __init__(self, project: str = "lerac", mode: str = "offline", entity: str | None = None):
        self.project, self.entity = project, entity
        self.mode = wandb_mode(mode)
        self.run = None
        self.run_dir: str | None = None

    def start(self, config: dict[str, Any], run_dir: str, name: str, group: str) -> None:
        import wandb  # imported here: it is slow to import and not needed with logger=none

        self.run_dir = run_dir
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=run_dir,
            name=name,
            group=group,
            job_type=config.get("regime", {}).get("id") if isinstance(config, dict) else None,
            config=config,
            reinit="finish_previous",  # one process runs many jobs in a Hydra multirun
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def _log_lr_schedule(self) -> None:
        import wandb

        rows = lr_schedule_rows(self.run_dir)
        if not rows:
            return
        table = wandb.Table(columns=["step", "layer", "lr"], data=rows)
        by_layer: dict[int, tuple[list, list]] = {}
        for step, layer, lr in rows:
            xs, ys = by_layer.setdefault(layer, ([], []))
            xs.append(step)
            ys.append(lr)
        self.run.log(
            {
                "lr_schedule": table,
                "lr_schedule_chart": wandb.plot.line_series(
                    xs=[xs for xs, _ in by_layer.values()],
                    ys=[ys for _, ys in by_layer.values()],
                    keys=[f"layer {layer}" for layer in by_layer],
                    title="lr of every layer (input to output) per optimizer step",
                    xname="step",
                ),
            }
        )

    def _log_probes(self) -> None:
        import wandb

        from lerac.suite.analysis_plots import plot_probe_heatmaps

        columns, rows = probe_table(self.run_dir)
        if not rows:
            return
        image = plot_probe_heatmaps(self.run_dir)
        table = wandb.Table(columns=columns, data=rows, allow_mixed_types=True)
        self.run.log({"probes": table, "probes_heatmaps": wandb.Image(str(image))})

    def finish(self, summary: dict[str, Any], failed: bool = False) -> None:
        if self.run is None:
            return
        try:
            self._log_lr_schedule()
            self._log_probes()
            self.run.summary.update(summary)
        finally:  # every job of a multirun ends its run, whatever happened
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None


def log_report_table(rows: list[dict[str, Any]], name: str, logger_cfg: Any) -> bool:
    """The report of an experiment as a W&B table (run ``report_<name>``), when the logger
    is online; offline or disabled, nothing (the report is in results/). True if logged."""
    if wandb_mode(logger_cfg.get("mode", "offline")) != "online" or not rows:
        return False
    import wandb

    columns = list(rows[0])
    run = wandb.init(
        project=logger_cfg.get("project", "lerac"),
        entity=logger_cfg.get("entity"),
        name=f"report_{name}",
        job_type="report",
        reinit="finish_previous",
    )
    try:
        data = [["" if row[c] is None else row[c] for c in columns] for row in rows]
        run.log({f"{name}_report": wandb.Table(columns=columns, data=data, allow_mixed_types=True)})
    finally:
        run.finish()
    return True
