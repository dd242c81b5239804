"""Pictures of runs: the per-layer lr curriculum, training curves, regimes side by side.

    lerac-plots outputs/demo/digits_resnet18_lerac_seed0   # one run
    lerac-plots outputs/demo                               # a sweep

A run gets lr_schedule.png (every layer's rate over the steps, coloured from input to
output), history.png and, trained with analysis=probes, probes.png (layer x epoch heatmaps:
lerac/suite/analysis_plots.py); a sweep gets val_accuracy.png (mean ± std over seeds, per
regime).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from lerac.engine.probes import PROBES_CSV  # noqa: E402
from lerac.engine.store import HISTORY, LR_SCHEDULE, METRICS, find_runs, run_group  # noqa: E402
from lerac.suite.analysis_plots import plot_probe_heatmaps  # noqa: E402


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _finish(ax, **labels) -> None:
    ax.set(**labels)
    ax.grid(alpha=0.3)


def plot_lr_schedule(run_dir: Path, out: Path | None = None, curriculum_only=False) -> Path:
    """Every layer's rate over the steps; ``curriculum_only``: the paper's Figure 1, the
    steps up to where the rates meet (the file has every step until then, one per epoch
    after)."""
    rows = _rows(run_dir / LR_SCHEDULE)
    if curriculum_only:
        steps_logged = sorted({int(r["step"]) for r in rows})
        last = next((a for a, b in zip(steps_logged, steps_logged[1:]) if b != a + 1), None)
        rows = [r for r in rows if last is None or int(r["step"]) <= last]
    curves: dict[int, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for row in rows:
        steps, lrs = curves[int(row["layer"])]
        steps.append(int(row["step"]))
        lrs.append(float(row["lr"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    n = max(curves) + 1
    colors = plt.get_cmap("viridis")
    for layer, (steps, lrs) in sorted(curves.items()):
        ax.plot(steps, lrs, color=colors(layer / max(n - 1, 1)), linewidth=0.9)
    _finish(
        ax,
        yscale="log",
        xlabel="optimizer step",
        ylabel="learning rate",
        title=f"{run_dir.name}: {n} layers (dark = input, light = output)",
    )
    return _save(fig, out or run_dir / "lr_schedule.png")


def plot_history(run_dir: Path) -> Path:
    rows = _rows(run_dir / HISTORY)
    epochs = [int(r["epoch"]) for r in rows]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        loss_ax.plot(epochs, [float(r[f"{split}_loss"]) for r in rows], label=split)
        acc_ax.plot(epochs, [float(r[f"{split}_acc"]) for r in rows], label=split)
    _finish(loss_ax, xlabel="epoch", ylabel="cross-entropy", title="loss")
    _finish(acc_ax, xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    loss_ax.legend()
    acc_ax.legend()
    fig.suptitle(run_dir.name)
    return _save(fig, run_dir / "history.png")


def plot_sweep(root: Path) -> Path:
    """Validation accuracy per epoch, mean ± std over seeds, one line per regime."""
    curves: dict[str, list[list[float]]] = defaultdict(list)
    for run in find_runs(root):
        history = Path(run["run_dir"]) / HISTORY
        if history.is_file():
            label = run_group(run["dataset"], run["model"], run["regime"], run.get("tag", ""))
            curves[label].append([float(r["val_acc"]) for r in _rows(history)])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, runs in sorted(curves.items()):
        # Early stopping ends seeds at different epochs: average what each epoch has.
        length = max(len(r) for r in runs)
        per_epoch = [[r[e] for r in runs if e < len(r)] for e in range(length)]
        mean = [statistics.fmean(v) for v in per_epoch]
        std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_epoch]
        epochs = range(1, length + 1)
        ax.plot(epochs, mean, label=f"{label} (n={len(runs)})")
        ax.fill_between(
            epochs,
            [m - s for m, s in zip(mean, std)],
            [m + s for m, s in zip(mean, std)],
            alpha=0.2,
        )
    _finish(ax, xlabel="epoch", ylabel="validation accuracy (%)", title=str(root))
    ax.legend()
    return _save(fig, root / "val_accuracy.png")


def _panels(count: int):
    cols = min(count, 3)
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _by_cell(runs: list[dict]) -> dict[tuple[str, str], dict[str, list[list[dict]]]]:
    """(dataset, model) -> regime[_tag] -> the histories of its seeds."""
    cells: dict = defaultdict(lambda: defaultdict(list))
    for run in runs:
        history = Path(run["run_dir"]) / HISTORY
        if history.is_file():
            label = "_".join(p for p in (run.get("regime"), run.get("tag")) if p)
            cells[(run.get("dataset"), run.get("model"))][label].append(_rows(history))
    return cells


def _mean_curve(histories: list[list[dict]], x_key: str | None):
    length = max(len(h) for h in histories)
    xs, means, stds = [], [], []
    for e in range(length):
        rows = [h[e] for h in histories if e < len(h)]
        vals = [float(r["val_acc"]) for r in rows]
        if x_key is None:
            xs.append(e + 1)
        else:  # mean wall-clock time at the end of this epoch
            xs.append(
                statistics.fmean(
                    sum(float(r[x_key]) for r in h[: e + 1]) for h in histories if e < len(h)
                )
                / 3600
            )
        means.append(statistics.fmean(vals))
        stds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
    return xs, means, stds


def plot_cells(runs: list[dict], out: Path, regimes: Sequence[str] | None = None, time=False):
    """Validation accuracy (mean ± std over seeds) per epoch, or against wall-clock time,
    one panel per (dataset, model), one line per regime (only ``regimes`` when given)."""
    cells = {
        cell: {k: v for k, v in lines.items() if regimes is None or k in regimes}
        for cell, lines in sorted(_by_cell(runs).items())
    }
    cells = {cell: lines for cell, lines in cells.items() if lines}
    if not cells:
        return None
    fig, axes = _panels(len(cells))
    for ax, ((dataset, model), lines) in zip(axes, cells.items()):
        for label, histories in sorted(lines.items()):
            xs, mean, std = _mean_curve(histories, "seconds" if time else None)
            ax.plot(xs, mean, label=f"{label} (n={len(histories)})")
            low = [m - s for m, s in zip(mean, std)]
            ax.fill_between(xs, low, [m + s for m, s in zip(mean, std)], alpha=0.2)
        _finish(
            ax,
            xlabel="training time (hours)" if time else "epoch",
            ylabel="validation accuracy (%)",
            title=f"{model} on {dataset}",
        )
        ax.legend(fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, out)


def experiment_figures(name: str, runs: list[dict], folder: Path) -> list[Path]:
    """The figures of an experiment's completed runs, as PNG under ``folder``:
    <name>_val_accuracy.png (every regime per epoch), <name>_figure2.png (the paper's
    Figure 2: validation accuracy against wall-clock time for conventional, CBS and
    LeRaC) and <name>_figure1.png (the paper's Figure 1: every layer's lr over the
    curriculum, from the first LeRaC run) and, for runs trained with analysis=probes,
    <name>_probes_<group>.png (the probes' heatmaps of each group's first seed)."""
    folder = Path(folder)
    made = [
        plot_cells(runs, folder / f"{name}_val_accuracy.png"),
        plot_cells(runs, folder / f"{name}_figure2.png", ("conventional", "cbs", "lerac"), True),
    ]
    lerac = [r for r in runs if r.get("regime") == "lerac" and not r.get("tag")]
    lerac = sorted(
        lerac, key=lambda r: (str(r.get("dataset")), str(r.get("model")), r.get("seed", 0))
    )
    if lerac and (Path(lerac[0]["run_dir"]) / LR_SCHEDULE).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        made.append(
            plot_lr_schedule(Path(lerac[0]["run_dir"]), folder / f"{name}_figure1.png", True)
        )
    first: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: r.get("seed", 0)):
        if (Path(run["run_dir"]) / PROBES_CSV).is_file():
            group = run_group(run["dataset"], run["model"], run["regime"], run.get("tag", ""))
            first.setdefault(group, run)
    for group, run in sorted(first.items()):
        made.append(plot_probe_heatmaps(run["run_dir"], folder / f"{name}_probes_{group}.png"))
    return [m for m in made if m is not None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run directory or a folder of runs")
    path = parser.parse_args(argv).path
    if (path / METRICS).is_file():
        outputs = [plot_lr_schedule(path), plot_history(path)]
        if (path / PROBES_CSV).is_file():
            outputs.append(plot_probe_heatmaps(path))
    elif path.is_dir() and find_runs(path):
        outputs = [plot_sweep(path)]
    else:
        print(
            f"error: no run under {path}; give a run directory or the output folder of a sweep",
            file=sys.stderr,
        )
        return 2
    for out in outputs:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
