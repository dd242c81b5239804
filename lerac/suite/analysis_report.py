"""Tables 6, 7 and 8 of the paper's supplementary and Figure 3, from the probes of the
analysis experiment's runs (docs/analysis.md), beside the paper's values.

    python -m lerac.suite.analysis_report             # results/table6.md, 7, 8, figure 3
    python -m lerac.suite.analysis_report --tables 7  # one table
    python -m lerac.suite.analysis_report --block fashion_mnist   # results/analysis_<block>.md

Each run's probes.csv gives, for its first and its last conv layer (forward order; the
conv's own output, before its BN) and its last layer:

- Table 6: the distance between the maps at initialisation and after the final epoch
  (raw: the paper's numbers are raw; relative and SNR beside), conventional (LeRaC too);
- Table 7: the entropy of the maps after k epochs (the scale-free variant and the maps'
  std beside);
- Table 8: the relative distance between the maps after k epochs and after the final
  epoch (the raw and the unit-vector distance beside);
- the update pace in epoch 1 and in epoch k + 1 (the paper's claim measured on the
  weights: LeRaC holds the deep layers back during the curriculum).

Values are mean ± sample std over the seeds that completed. k is the run's
``model.table1.lerac_k`` (6 in the analysis experiment).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lerac.engine.io import write_text
from lerac.errors import ConfigError, LeRaCError
from lerac.suite.analysis_plots import figure3, plot_probe_heatmaps, read_probes
from lerac.suite.config import REPO, RESULTS_DIR
from lerac.suite.report import markdown_table, read_paper_table, write_table

LAYERS = {"first_conv": "first conv", "last_conv": "last conv", "last_layer": "last layer"}
# Per table: (column of probes.csv, the epoch it is read at, label); the first is the
# quantity the paper reports. "k": the curriculum's last epoch, "final": the run's last.
TABLES: dict[str, list[tuple[str, Any, str]]] = {
    "6": [
        ("distance_to_final", 0, "distance, epoch 0 to final"),
        ("relative_distance_to_final", 0, "relative distance"),
        ("snr_db", 0, "SNR of epoch 0 (dB)"),
    ],
    "7": [
        ("entropy", "k", "entropy at epoch k"),
        ("entropy_scale_free", "k", "scale-free entropy"),
        ("map_std", "k", "maps' std"),
    ],
    "8": [
        ("relative_distance_to_final", "k", "relative distance, epoch k to final"),
        ("distance_to_final", "k", "distance"),
        ("unit_distance_to_final", "k", "unit-vector distance"),
    ],
    "pace": [
        ("update_pace", 1, "update pace in epoch 1"),
        ("update_pace", "k+1", "update pace in epoch k + 1"),
        ("weight_distance_from_init", "k", "weights' distance from init at epoch k"),
    ],
}
TITLES = {
    "6": "Table 6: distance between the maps at initialisation and after the final epoch",
    "7": "Table 7: entropy of the maps after k epochs",
    "8": "Table 8: distance between the maps after k epochs and after the final epoch",
    "pace": "The training pace of the layers (not a table of the paper)",
}
FIELDS = ["table", "dataset", "model", "regime", "layer", "name", "quantity", "epoch",
          "ours_mean", "ours_std", "seeds", "paper"]  # fmt: skip


def roles(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The first conv, the last conv and the last layer of a run: layer index and name."""
    layers = {r["layer"]: r for r in rows if r["epoch"] == rows[0]["epoch"]}
    convs = sorted(i for i, r in layers.items() if "Conv" in r["module"])
    found = {"last_layer": layers[max(layers)]}
    if convs:
        found.update(first_conv=layers[convs[0]], last_conv=layers[convs[-1]])
    return found


def epoch_of(spec: Any, k: int, final: int) -> int:
    return {"k": k, "k+1": k + 1, "final": final}.get(spec, spec)


def run_values(run_dir: Path, k: int) -> dict[tuple[str, str, str], tuple[float, int, str]]:
    """(table, quantity label, layer role) -> (value, epoch, layer name) of one run."""
    rows = read_probes(run_dir)
    final = max(r["epoch"] for r in rows)
    at = {(r["epoch"], r["layer"]): r for r in rows}
    values = {}
    for role, layer in roles(rows).items():
        for table, measures in TABLES.items():
            for column, spec, label in measures:
                epoch = epoch_of(spec, k, final)
                row = at.get((epoch, layer["layer"]))
                if row is not None and not math.isnan(row[column]):
                    values[(table, label, role)] = (row[column], epoch, layer["name"])
    return values


def curriculum_epochs(run_dir: Path) -> int:
    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    return int(OmegaConf.select(cfg, "regime.k") or cfg.model.table1.lerac_k)


def roles_of(table: str) -> list[str]:
    return list(LAYERS) if table == "pace" else ["first_conv", "last_conv"]


def paper_values(table: str) -> dict[tuple[str, str, str, str], str]:
    """(model, dataset, regime, layer role) -> the paper's value, for tables 6-8."""
    file = REPO / "results" / "paper" / f"table{table}.csv"
    if not file.is_file():
        return {}
    return {
        (r["model"], r["dataset"], r["regime"], r["layer"]): r["value"]
        for r in read_paper_table(file)
    }


def summary_rows(runs: list[Any], tables: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (table, cell, quantity, layer role): mean ± std over the runs' seeds.
    ``runs``: the grid's completed runs (dataset, model, regime, seed, run_dir)."""
    found: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        values = run_values(run.run_dir, curriculum_epochs(run.run_dir))
        for key, value in values.items():
            found[(run.dataset, run.model, run.regime)][key].append(value)
    rows = []
    for table in tables:
        paper = paper_values(table)
        for cell, values in sorted(found.items()):
            for i, (_, _, label) in enumerate(TABLES[table]):
                for role in roles_of(table):
                    seen = values.get((table, label, role), [])
                    numbers = [v for v, _, _ in seen]
                    dataset, model, regime = cell
                    rows.append(
                        {
                            "table": table,
                            "dataset": dataset,
                            "model": model,
                            "regime": regime,
                            "layer": role,
                            "name": seen[0][2] if seen else "",
                            "quantity": label,
                            "epoch": seen[0][1] if seen else "",
                            "ours_mean": statistics.fmean(numbers) if numbers else None,
                            "ours_std": statistics.stdev(numbers) if len(numbers) > 1 else 0.0,
                            "seeds": len(numbers),
                            "paper": paper.get((model, dataset, regime, role), "")
                            if i == 0
                            else "",
                        }
                    )
    return rows


def number(value: float | None, like: float | None = None) -> str:
    """``value`` with 4 decimals (2 from 10 on), or in scientific notation when tiny or
    huge; ``like``: format it as that value would be (a std as its mean)."""
    if value is None or math.isnan(value):
        return "–"
    scale = abs(value if like is None or math.isnan(like) else like)
    if scale == 0 or 0.01 <= scale < 1e4:
        return f"{value:.2f}" if scale >= 10 else f"{value:.4f}"
    return f"{value:.2e}"


def mean_std_text(row: dict[str, Any]) -> str:
    if not row["seeds"]:
        return "–"
    return f"{number(row['ours_mean'])} ± {number(row['ours_std'], row['ours_mean'])}"


def table_lines(rows: list[dict[str, Any]], table: str) -> list[str]:
    """One Markdown table: a line per (data set, regime, quantity), a column pair (ours,
    paper) per layer role; for the pace, a LeRaC ÷ conventional line per quantity."""
    mine = [r for r in rows if r["table"] == table]
    head = ["data set", "regime", "quantity"]
    for role in roles_of(table):
        head += [f"{LAYERS[role]}: ours", "paper"] if table != "pace" else [LAYERS[role]]
    lines, by = [], {}
    for r in mine:
        by[(r["dataset"], r["regime"], r["quantity"], r["layer"])] = r
    keys = dict.fromkeys((r["dataset"], r["regime"], r["quantity"]) for r in mine)
    for dataset, regime, quantity in keys:
        cells = [dataset, regime, quantity]
        for role in roles_of(table):
            r = by[(dataset, regime, quantity, role)]
            ours = mean_std_text(r)
            cells += [ours, r["paper"] or "–"] if table != "pace" else [ours]
        lines.append(cells)
    if table == "pace":
        lines += ratio_lines(by, keys)
    return markdown_table(head, lines)


def ratio_lines(by: dict, keys: dict) -> list[list[str]]:
    """LeRaC's mean over conventional's, per data set, quantity and layer role."""
    out = []
    for dataset, regime, quantity in keys:
        ref = (dataset, "conventional", quantity)
        if regime == "conventional" or ref not in keys:
            continue
        cells = [dataset, f"{regime} ÷ conventional", quantity]
        for role in roles_of("pace"):
            a, b = by[(*(dataset, regime, quantity), role)], by[(*ref, role)]
            ok = a["ours_mean"] is not None and b["ours_mean"]
            cells.append(number(a["ours_mean"] / b["ours_mean"]) if ok else "–")
        out.append(cells)
    return out


NOTES = (
    "Mean ± sample std over seeds. Layers in forward order: the first and the last "
    "convolution (their own output, before the batch norm after them) and the last layer "
    "(the classifier). k: the curriculum's epochs (model.table1.lerac_k). Distances: root "
    "mean square over the probe examples of the Euclidean distance between an example's "
    "maps (raw), ||F_e - F_final|| / ||F_final|| (relative); entropy: of the softmax over "
    "a map's positions, divided by ln(positions), averaged over channels and examples; "
    "update pace: ||W_e - W_e-1|| / ||W_e-1|| of the layer's weights in epoch e "
    "(docs/analysis.md)."
)


def accuracy_lines(runs: list[Any]) -> list[str]:
    """Test accuracy and best epoch, mean ± std over seeds, per (data set, regime)."""
    from lerac.engine.store import read_metrics
    from lerac.suite.report import mean_std

    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        cells[(run.dataset, run.regime)].append(read_metrics(run.run_dir) or {})
    table = []
    for (dataset, regime), metrics in sorted(cells.items()):
        acc = mean_std([float(m["test_acc"]) for m in metrics if "test_acc" in m])
        best = [str(m.get("best_epoch", "?")) for m in metrics]
        text = "–" if acc[0] is None else f"{acc[0]:.2f} ± {acc[1]:.2f}"
        table.append([dataset, regime, len(metrics), text, ", ".join(best)])
    head = ["data set", "regime", "seeds", "test accuracy (%)", "best epochs"]
    return markdown_table(head, table)


def write_tables(
    rows: list[dict[str, Any]], tables: Sequence[str], out: Path, source: str, one_file: bool
) -> list[Path]:
    """Markdown and CSV: one pair per table (results/tableN, results/analysis_pace), or
    all tables in one pair (``one_file``: a block's report, e.g. the CPU block)."""
    written: list[Path] = []
    groups = [list(tables)] if one_file else [[t] for t in tables]
    for group in groups:
        if one_file:
            md, title = out.with_suffix(".md"), f"Tables 6-8 and the training pace: {out.stem}"
        else:
            name = f"table{group[0]}" if group[0] != "pace" else "analysis_pace"
            md, title = out / f"{name}.md", TITLES[group[0]]
        lines = [f"# {title}", "", source, ""]
        for table in group:
            if one_file:
                lines += [f"## {TITLES[table]}", ""]
            lines += [*table_lines(rows, table), ""]
        lines.append(NOTES)
        write_text(md, "\n".join(lines) + "\n")
        write_table([r for r in rows if r["table"] in group], md.with_suffix(".csv"), FIELDS)
        written += [md, md.with_suffix(".csv")]
    return written


def figures(runs: list[Any], folder: Path, prefix: str, images: str | None) -> list[Path]:
    """The heatmaps of the first seed of every (data set, regime), and Figure 3 from the
    first seed both regimes completed."""
    made = []
    first: dict[tuple[str, str], Any] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        first.setdefault((run.dataset, run.regime), run)
    for (dataset, regime), run in sorted(first.items()):
        out = folder / f"{prefix}_probes_{dataset}_{regime}.png"
        made.append(plot_probe_heatmaps(run.run_dir, out))
    for dataset in sorted({d for d, _ in first}):
        by_seed = {(r.regime, r.seed): r.run_dir for r in runs if r.dataset == dataset}
        common = sorted(s for g, s in by_seed if g == "lerac" and ("conventional", s) in by_seed)
        if not common:
            continue
        pair = {g: by_seed[(g, common[0])] for g in ("conventional", "lerac")}
        k = curriculum_epochs(pair["lerac"])
        try:
            made.append(figure3(pair, k, folder / f"{prefix}_figure3_{dataset}.png", images))
        except LeRaCError as err:
            print(f"figure 3 of {dataset} not drawn: {err}", file=sys.stderr)
    return made


def write_report(
    block: str,
    tables: Sequence[str],
    overrides: Sequence[str] = (),
    images: str | None = None,
    smoke: bool = False,
) -> list[Path]:
    """The report of one block of experiment=analysis (module docstring); ``smoke``: of
    the grid's SMOKE runs, into their own folder's report/."""
    from lerac.suite.grid import SMOKE, enumerate_runs, load_experiment

    experiment = load_experiment("analysis", overrides)
    results = RESULTS_DIR
    if smoke:
        results = Path(f"{experiment.output_dir}_smoke") / "report"
        overrides = [*overrides, *SMOKE, f"paths.output_dir={experiment.output_dir}_smoke"]
        experiment = load_experiment("analysis", overrides)
    if block not in experiment.blocks:
        raise ConfigError(f"--block {block}: experiment=analysis has {list(experiment.blocks)}")
    runs = [r for r in enumerate_runs(experiment, overrides) if r.block == block]
    done = [r for r in runs if r.done]
    rows = summary_rows(done, tables)
    extra = "".join(f" {o}" for o in overrides)
    flag = "" if block == "main" else f" --block {block}"
    source = (
        f"Block `{block}` of experiment=analysis: {len(done)} of {len(runs)} runs completed "
        f"(under `{experiment.output_dir}`). Command: `python -m lerac.suite.grid analysis"
        f"{flag}{extra}` then `python -m lerac.suite.analysis_report{flag}{extra}`. Paper "
        "values: results/paper/table6.csv, table7.csv, table8.csv."
    )
    source += "\n\n" + "\n".join(accuracy_lines(done))
    one_file = block != "main"
    out = results / (f"analysis_{block}" if one_file else "")
    written = write_tables(rows, tables, out, source, one_file)
    prefix = f"analysis_{block}" if one_file else "analysis"
    return written + figures(done, results / "figures", prefix, images)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="the overrides the grid ran with")
    parser.add_argument("--block", default="main", help="a block of experiment=analysis")
    parser.add_argument(
        "--tables", nargs="+", default=list(TABLES), choices=list(TABLES), help="which tables"
    )
    parser.add_argument("--images", help="a folder of images for Figure 3 (default: test set)")
    parser.add_argument("--smoke", action="store_true", help="the grid's SMOKE runs")
    args = parser.parse_intermixed_args(argv)
    report = (args.block, args.tables, args.overrides, args.images, args.smoke)
    try:
        for path in write_report(*report):
            print(path)
    except LeRaCError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
