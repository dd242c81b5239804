"""Aggregate run results: test accuracy mean ± std per (dataset, model, regime), and a
paper table's report beside the paper's numbers.

    python -m lerac.suite.report outputs/demo [--csv summary.csv]   # any folder of runs
    python -m lerac.suite.grid table2 --report-only                  # results/table2.md and .csv

The std is the sample standard deviation (ddof=1) over seeds; the paper reports
"mean and standard deviation" over 5 runs without saying which.

Significance (paper supplementary: McNemar's test against the baseline, threshold
0.001): for every pair of runs with the same seed (or fold), the exact McNemar test on
the test predictions, i.e. a two-sided binomial test of the discordant pairs
(``scipy.stats.binomtest(b, b + c, 0.5)``), with no large-sample approximation; the
report lists each pair's p-value and how many fall below 0.001. Over seeds, a paired
t-test (``scipy.stats.ttest_rel``) of the accuracies.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from scipy.stats import binomtest, ttest_rel

from lerac.engine.io import atomic_open, write_text
from lerac.engine.store import CONFIG, CORRUPT, HISTORY, METRICS, PREDICTIONS, read_metrics
from lerac.suite.config import REPO

GROUP_KEYS = ("dataset", "model", "regime", "tag")


def _seed(run: dict[str, Any]) -> Any:
    return run.get("seed", 0)


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4) if values else float("nan")


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof 1; 0 for one value) as the reports give them; None, None
    for no values."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, model, regime, tag): completed runs' accuracy mean and std."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[tuple(run.get(k, "") for k in GROUP_KEYS)].append(run)
    rows = []
    for key, members in sorted(groups.items()):
        done = [r for r in members if r.get("status") == "completed"]
        accs = [float(r["test_acc"]) for r in done]
        rows.append(
            {
                **dict(zip(GROUP_KEYS, key)),
                "runs": len(done),
                "failed": len(members) - len(done),
                "seeds": ",".join(str(r.get("seed")) for r in sorted(done, key=_seed)),
                "test_acc_mean": _mean(accs),
                "test_acc_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                "val_acc_mean": _mean([float(r["val_acc"]) for r in done]),
                "selected_on": selection_of(done),
            }
        )
    return rows


def selection_of(runs: list[dict[str, Any]]) -> str:
    """Where the runs chose their epoch: ``val``, ``test`` (protocol.selection=released)
    or ``val+test`` when they differ. Runs from before the key selected on validation."""
    return "+".join(sorted({str(r.get("selected_on", "val")) for r in runs})) or "val"


def _on_test(row: dict[str, Any]) -> str:
    on = row.get("selected_on") or "val"
    return "" if on == "val" else f" (selected on {on})"


def mark_selection(rows: list[dict[str, Any]], found: list[dict[str, Any]]) -> None:
    """Give every row of :func:`build_table` the ``selected_on`` of its completed runs."""
    runs: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in found:
        if run.get("status") == "completed":
            key = (run.get("model"), run.get("dataset"), run.get("regime"))
            runs[(*key, cell_tag(run.get("tag")))].append(run)
    for row in rows:
        row["selected_on"] = selection_of(
            runs.get((row["model"], row["dataset"], row["regime"], row["tag"]), [])
        )


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ["dataset", "model", "regime", "runs", "test accuracy (%)", "val accuracy (%)"]
    lines = [header]
    for r in rows:
        regime = r["regime"] + (f" [{r['tag']}]" if r["tag"] else "") + _on_test(r)
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        lines.append(
            [
                r["dataset"],
                r["model"],
                regime,
                f"{r['runs']}{failed}",
                f"{r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f}",
                f"{r['val_acc_mean']:.2f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


SIGNIFICANCE = 0.001  # the paper's threshold for McNemar's test (supplementary)
_FOLD = re.compile(r"(^|_)fold\d+($|_)")


# --- runs on disk, tolerating what a crash or a preemption leaves -------------------------


def scan_runs(root: str | Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Every readable run's metrics under ``root`` (each with ``run_dir``), and the run
    directories that could not be used with the reason (corrupt, partial)."""
    runs, problems = [], []
    seen = set()
    for file in sorted(Path(root).rglob(METRICS)):
        seen.add(file.parent)
        metrics = read_metrics(file.parent)
        if metrics is None:  # removed while we looked
            continue
        if metrics.get("status") == CORRUPT:
            problems.append((str(file.parent), f"corrupt {METRICS} ({metrics['error']})"))
            continue
        if metrics.get("status") == "completed" and "test_acc" not in metrics:
            problems.append((str(file.parent), f"corrupt {METRICS} (completed without test_acc)"))
            continue
        runs.append({**metrics, "run_dir": str(file.parent)})
    for config in sorted(Path(root).rglob(CONFIG)):
        run_dir = config.parent
        if run_dir not in seen and (run_dir / HISTORY).exists():
            problems.append((str(run_dir), f"partial (no {METRICS}: interrupted or running)"))
    return runs, problems


def cell_tag(tag: str) -> str:
    """The tag of a table cell: ESC-50's folds (``fold3``) are its runs, like seeds."""
    return _FOLD.sub(lambda m: "_" if m[1] and m[2] else "", tag or "")


# --- significance -----------------------------------------------------------------------


def read_predictions(run_dir: str | Path) -> dict[int, tuple[int, int]] | None:
    """index -> (target, prediction) from a run's predictions.csv; None when absent."""
    file = Path(run_dir) / PREDICTIONS
    try:
        with open(file, newline="") as f:
            return {
                int(r["index"]): (int(r["target"]), int(r["prediction"])) for r in csv.DictReader(f)
            }
    except (OSError, ValueError, KeyError):
        return None


def mcnemar(
    targets: Sequence[int], predicted_a: Sequence[int], predicted_b: Sequence[int]
) -> tuple[int, int, float]:
    """Exact McNemar test of two classifiers on the same examples.

    b: examples A gets right and B wrong; c: the reverse. Under the null hypothesis the
    discordant examples split evenly, so p is the two-sided binomial test of b out of
    b + c at 0.5 (scipy.stats.binomtest); p = 1 when they never disagree."""
    b = sum(t == a and t != p for t, a, p in zip(targets, predicted_a, predicted_b))
    c = sum(t != a and t == p for t, a, p in zip(targets, predicted_a, predicted_b))
    if b + c == 0:
        return b, c, 1.0
    return b, c, float(binomtest(b, b + c, 0.5).pvalue)


def mcnemar_runs(run_a: dict[str, Any], run_b: dict[str, Any]) -> float | None:
    a, b = read_predictions(run_a["run_dir"]), read_predictions(run_b["run_dir"])
    if not a or not b or a.keys() != b.keys():
        return None
    indices = sorted(a)
    if any(a[i][0] != b[i][0] for i in indices):
        return None  # not the same test set
    return mcnemar(
        [a[i][0] for i in indices], [a[i][1] for i in indices], [b[i][1] for i in indices]
    )[2]


def paired_ttest(ours: Sequence[float], reference: Sequence[float]) -> float | None:
    """p of a paired t-test over seeds; None with fewer than two pairs or no spread."""
    if len(ours) < 2:
        return None
    diffs = [a - b for a, b in zip(ours, reference)]
    if max(diffs) == min(diffs):
        return None
    return float(ttest_rel(ours, reference).pvalue)


# --- a table beside the paper -----------------------------------------------------------


def read_paper_table(path: str | Path) -> list[dict[str, str]]:
    """A table of the paper as transcribed under results/paper/ (``#`` lines cite it)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    for row in rows:
        row["tag"] = row.get("tag") or ""
    return rows


CellKey = tuple[str, str, str, str]  # model, dataset, regime, tag


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _reference_key(key: CellKey, reference: str, cells: dict) -> CellKey | None:
    model, dataset, regime, tag = key
    if regime == reference:
        return None
    for candidate in ((model, dataset, reference, tag), (model, dataset, reference, "")):
        if candidate in cells:
            return candidate
    return None


def _fmt(mean: float | None, std: float | None) -> str:
    return "" if mean is None else f"{mean:.2f} ± {std:.2f}"


def _yes(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "no")


def build_table(
    paper: list[dict[str, str]],
    expected: list[Any],
    found: list[dict[str, Any]],
    reference: str = "conventional",
) -> list[dict[str, Any]]:
    """One row per cell (the paper's cells first, then any other cell of the grid): our
    mean ± std over completed seeds, the paper's, the difference, whether the regime beat
    ``reference`` in the paper and here, and the significance tests against it.

    ``expected`` are the grid's runs (``lerac.suite.grid.GridRun``); ``found`` the metrics read
    from disk (``scan_runs``)."""
    cells = collect_cells(paper, expected, found)
    rows = []
    for key, cell in cells.items():
        row = cell_row(key, cell)
        ref_key = _reference_key(key, reference, cells)
        if ref_key is not None:
            row.update(compare_with_reference(cell, cells[ref_key], reference, ref_key[3], key[3]))
        rows.append(row)
    return rows


def collect_cells(
    paper: list[dict[str, str]], expected: list[Any], found: list[dict[str, Any]]
) -> dict[CellKey, dict[str, Any]]:
    """Cells keyed by (model, dataset, regime, tag): the paper's row, the grid's run keys,
    the completed runs by (seed, tag) and the number of runs that did not complete."""
    cells: dict[CellKey, dict[str, Any]] = {}

    def cell(key: CellKey) -> dict[str, Any]:
        return cells.setdefault(key, {"paper": None, "expected": set(), "runs": {}, "failed": 0})

    for row in paper:
        cell((row["model"], row["dataset"], row["regime"], row["tag"]))["paper"] = row
    by_key = {r.key: r for r in expected}
    for run in expected:
        cell((run.model, run.dataset, run.regime, cell_tag(run.tag)))["expected"].add(run.key)
    for run in found:
        key = (run.get("model"), run.get("dataset"), run.get("regime"), cell_tag(run.get("tag")))
        name = Path(run["run_dir"]).name
        if key not in cells or (by_key and name not in by_key and cells[key]["expected"]):
            continue  # a run of another table in the shared folder
        if run.get("status") == "completed":
            # Pair by seed and fold: the run's tag minus the cell's tag.
            cells[key]["runs"][(run.get("seed"), run.get("tag"))] = run
        else:
            cells[key]["failed"] += 1
    return cells


def _accuracies(cell: dict[str, Any]) -> list[float]:
    return [float(r["test_acc"]) for r in cell["runs"].values()]


def cell_row(key: CellKey, cell: dict[str, Any]) -> dict[str, Any]:
    """A cell's own columns (ours beside the paper's); the reference columns left empty."""
    model, dataset, regime, tag = key
    accs = _accuracies(cell)
    mean, std = mean_std(accs)
    p_row = cell["paper"] or {}
    p_mean = _num(p_row.get("mean"))
    return {
        "model": model,
        "dataset": dataset,
        "regime": regime,
        "tag": tag,
        "paper_row": p_row.get("paper_row", ""),
        "ours_mean": None if mean is None else round(mean, 2),
        "ours_std": None if std is None else round(std, 2),
        "seeds_done": len(accs),
        "seeds_expected": len(cell["expected"]) or (5 if p_row else len(accs)),
        "failed": cell["failed"],
        "paper_mean": p_row.get("mean", ""),
        "paper_std": p_row.get("std", ""),
        "diff": None if mean is None or p_mean is None else round(mean - p_mean, 2),
        "reference": "",
        "diff_reference": None,
        "paper_beats_reference": None,
        "ours_beats_reference": None,
        "agrees": None,
        "paired_t_p": None,
        "mcnemar_p": "",
        "mcnemar_significant": "",
    }


def compare_with_reference(
    cell: dict[str, Any], ref: dict[str, Any], reference: str, ref_tag: str, tag: str
) -> dict[str, Any]:
    """The reference columns: who beats whom in the paper and here, and the paired tests."""
    out: dict[str, Any] = {"reference": "_".join(p for p in (reference, ref_tag) if p)}
    p_mean, ref_paper = (
        _num((cell["paper"] or {}).get("mean")),
        _num((ref["paper"] or {}).get("mean")),
    )
    if p_mean is not None and ref_paper is not None:
        out["paper_beats_reference"] = p_mean > ref_paper
    accs, ref_accs = _accuracies(cell), _accuracies(ref)
    if accs and ref_accs:
        out["ours_beats_reference"] = statistics.fmean(accs) > statistics.fmean(ref_accs)
        out["diff_reference"] = round(statistics.fmean(accs) - statistics.fmean(ref_accs), 2)
    if out.get("paper_beats_reference") is not None and out.get("ours_beats_reference") is not None:
        out["agrees"] = out["paper_beats_reference"] == out["ours_beats_reference"]
    pairs = _pairs(cell["runs"], ref["runs"], tag)
    if pairs:
        t = paired_ttest(*zip(*[(float(a["test_acc"]), float(b["test_acc"])) for a, b in pairs]))
        out["paired_t_p"] = None if t is None else float(f"{t:.3g}")
    ps = [p for p in (mcnemar_runs(a, b) for a, b in pairs) if p is not None]
    out["mcnemar_p"] = ";".join(f"{p:.2g}" for p in ps)
    out["mcnemar_significant"] = f"{sum(p < SIGNIFICANCE for p in ps)}/{len(ps)}" if ps else ""
    return out


def _pairs(runs: dict, reference_runs: dict, tag: str) -> list[tuple[dict, dict]]:
    """Runs of a cell and of its reference with the same seed and fold."""

    def unit(seed_tag: tuple) -> tuple:
        seed, run_tag = seed_tag
        folds = _FOLD.search(run_tag or "")
        return seed, folds[0].strip("_") if folds else ""

    ref = {unit(k): v for k, v in reference_runs.items()}
    return [(run, ref[unit(k)]) for k, run in sorted(runs.items(), key=str) if unit(k) in ref]


CSV_FIELDS = [
    "model", "dataset", "regime", "tag", "paper_row", "ours_mean", "ours_std", "seeds_done",
    "seeds_expected", "failed", "paper_mean", "paper_std", "diff", "reference", "diff_reference",
    "paper_beats_reference", "ours_beats_reference", "agrees", "paired_t_p", "mcnemar_p",
    "mcnemar_significant", "selected_on",
]  # fmt: skip


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table: the header, its rule, one line per row."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def markdown_cells(r: dict[str, Any], has_paper: bool) -> list[Any]:
    """One table row as the Markdown table shows it."""
    regime = r["regime"] + (f" [{r['tag']}]" if r["tag"] else "") + _on_test(r)
    ours = _fmt(r["ours_mean"], r["ours_std"]) or "missing"
    seeds = f"{r['seeds_done']}/{r['seeds_expected']}" + (
        f" ({r['failed']} failed)" if r["failed"] else ""
    )
    cells = [r["model"], r["dataset"], regime, ours, seeds]
    if has_paper:
        paper = f"{r['paper_mean']} ± {r['paper_std']}" if r["paper_mean"] != "" else ""
        cells += [paper, "" if r["diff"] is None else f"{r['diff']:+.2f}"]
        paper_says = _yes(r["paper_beats_reference"]) or "–"
        beats = f"{paper_says} / {_yes(r['ours_beats_reference']) or '–'}" if r["reference"] else ""
    else:
        beats = _yes(r["ours_beats_reference"])
    return cells + [
        "" if r["diff_reference"] is None else f"{r['diff_reference']:+.2f}",
        beats,
        "" if r["paired_t_p"] is None else f"{r['paired_t_p']:.3g}",
        r["mcnemar_significant"] + (f" (p: {r['mcnemar_p']})" if r["mcnemar_p"] else ""),
    ]


def format_markdown(
    title: str,
    rows: list[dict[str, Any]],
    reference: str,
    missing: list[str],
    problems: list[tuple[str, str]],
    source: str,
) -> str:
    has_paper = any(r["paper_mean"] != "" for r in rows)
    head = ["model", "data set", "regime", "ours (mean ± std)", "seeds"]
    if has_paper:
        head += ["paper (mean ± std)", "ours − paper"]
    head += [
        f"ours − {reference}",
        f"beats {reference}" + (": paper / ours" if has_paper else ""),
        "paired t p",
        f"McNemar p < {SIGNIFICANCE:g} (pairs)",
    ]
    lines = [f"# {title}", "", source, ""]
    lines += markdown_table(head, [markdown_cells(r, has_paper) for r in rows])
    lines += [
        "",
        f"Accuracy in %, test set, the epoch chosen on validation accuracy (rows marked "
        f"'selected on test' chose it on the test set, as the released code); std = sample std "
        f"(ddof 1) over the completed seeds. Tests against `{reference}` pair runs by seed "
        f"(ESC-50: by fold): paired t-test on accuracies; exact McNemar test "
        f"(scipy.stats.binomtest on the discordant test predictions), threshold "
        f"{SIGNIFICANCE:g} as in the paper's supplementary.",
    ]
    if missing:
        lines += ["", f"## Missing runs ({len(missing)})", ""]
        lines += [f"- {m}" for m in missing]
    if problems:
        lines += ["", f"## Run directories that could not be read ({len(problems)})", ""]
        lines += [f"- `{d}`: {reason}" for d, reason in problems]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict[str, Any]], path: Path, fields: Sequence[str] = CSV_FIELDS) -> None:
    """``rows`` as a CSV file with the columns ``fields`` (None: an empty cell)."""
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})


def write_experiment_report(experiment: Any, runs: list[Any], smoke: bool = False) -> list[Path]:
    """results/<table>.md and .csv (a smoke run: inside its own output folder), the
    figures, and the table as a W&B table when the logger is online."""
    from lerac.suite import loggers, plots  # matplotlib, wandb: only when reporting

    grid = experiment.grid
    root = experiment.output_dir
    report = Path(grid.get("report") or root / "report" / experiment.name)
    figures = Path(grid.get("figures") or report.parent / "figures")
    if smoke:
        report, figures = root / "report" / experiment.name, root / "report" / "figures"
    report.parent.mkdir(parents=True, exist_ok=True)
    paper_file = grid.get("paper")
    paper = read_paper_table(REPO / paper_file) if paper_file else []
    reference = grid.get("reference") or "conventional"
    found, problems = scan_runs(root) if root.is_dir() else ([], [])
    keys = {r.key for r in runs}
    problems = [p for p in problems if Path(p[0]).name in keys]
    rows = build_table(paper, runs, found, reference)
    mark_selection(rows, found)
    missing = [f"{r.key} ({r.status}{': ' + r.note if r.note else ''})" for r in runs if not r.done]
    done = len(runs) - len(missing)
    source = (
        f"Runs under `{root}`: {len(runs)} in the grid, {done} completed, {len(missing)} "
        f"missing or failed. Paper values: `{paper_file}`."
        if paper_file
        else f"Runs under `{root}`: {len(runs)} in the grid, {done} completed, "
        f"{len(missing)} missing or failed. No paper table (not in the paper)."
    )
    title = grid.get("title") or experiment.name
    md, table = report.with_suffix(".md"), report.with_suffix(".csv")
    write_text(md, format_markdown(title, rows, reference, missing, problems, source))
    write_table(rows, table)
    outputs = [md, table]
    completed = [
        r for r in found if Path(r["run_dir"]).name in keys and r.get("status") == "completed"
    ]
    outputs += plots.experiment_figures(experiment.name, completed, figures)
    if experiment.cfg.logger.id == "wandb":
        loggers.log_report_table(rows, experiment.name, experiment.cfg.logger)
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder holding run directories (searched recursively)")
    parser.add_argument("--csv", help="also write the summary to this CSV file")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(
            f"error: {args.root} is not a folder; give the output folder of a sweep",
            file=sys.stderr,
        )
        return 2
    runs, problems = scan_runs(args.root)
    for run_dir, reason in problems:
        print(f"skipped {run_dir}: {reason}", file=sys.stderr)
    if not runs:
        print(
            f"error: no metrics.json under {args.root}; run a sweep first (e.g. make demo)",
            file=sys.stderr,
        )
        return 2
    rows = summarize(runs)
    print(format_table(rows))
    if args.csv:
        with atomic_open(args.csv, newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
