"""The protocol experiment's summary: what each difference between the paper and the
released code moves, per regime, and the LeRaC - conventional margin under each protocol.

    python -m lerac.suite.protocol_report                      # results/protocol.md and .csv
    python -m lerac.suite.protocol_report --block digits       # results/protocol_digits.md

Rows: one per (data set, protocol); ``protocol`` is the run's tag (conf/experiment/
protocol.yaml tags each run with its protocol). Each regime's mean ± std over seeds and
its shift from the same regime under ``paper``; the margin is the mean over seeds of the
per-seed LeRaC - conventional difference, with a paired t-test
(:func:`lerac.suite.report.paired_ttest`).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lerac.engine.io import write_text
from lerac.engine.store import read_metrics
from lerac.errors import ConfigError
from lerac.suite.config import RESULTS_DIR
from lerac.suite.report import (
    markdown_table,
    mean_std,
    paired_ttest,
    selection_of,
    write_table,
)

REGIMES = ("conventional", "lerac")
FIELDS = [
    "dataset", "protocol", "selected_on", "seeds",
    "conventional_mean", "conventional_std", "conventional_shift",
    "lerac_mean", "lerac_std", "lerac_shift",
    "margin_mean", "margin_std", "margin_t_p",
]  # fmt: skip


def summary_rows(runs: list[dict[str, Any]], protocols: Sequence[str]) -> list[dict[str, Any]]:
    """``runs``: completed metrics (dataset, regime, tag = protocol, seed, test_acc)."""
    acc: dict[tuple, dict[int, float]] = defaultdict(dict)
    chosen: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        key = (run["dataset"], run["tag"], run["regime"])
        acc[key][run["seed"]] = float(run["test_acc"])
        chosen[key[:2]].append(run)
    rows = []
    for dataset in sorted({r["dataset"] for r in runs}):
        for protocol in protocols:
            row: dict[str, Any] = {"dataset": dataset, "protocol": protocol}
            row["selected_on"] = selection_of(chosen[(dataset, protocol)])
            for regime in REGIMES:
                mean, std = mean_std(list(acc[(dataset, protocol, regime)].values()))
                base, _ = mean_std(list(acc[(dataset, "paper", regime)].values()))
                row[f"{regime}_mean"], row[f"{regime}_std"] = mean, std
                shift = None if mean is None or base is None else mean - base
                row[f"{regime}_shift"] = shift
            conv, lerac = (
                acc[(dataset, protocol, "conventional")],
                acc[(dataset, protocol, "lerac")],
            )
            seeds = sorted(conv.keys() & lerac.keys())
            diffs = [lerac[s] - conv[s] for s in seeds]
            row["seeds"] = len(seeds)
            row["margin_mean"], row["margin_std"] = mean_std(diffs)
            row["margin_t_p"] = paired_ttest([lerac[s] for s in seeds], [conv[s] for s in seeds])
            rows.append(row)
    return rows


def _f(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "–"
    value = round(value, 2) + 0.0  # no "-0.00"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def format_summary(rows: list[dict[str, Any]], title: str, source: str) -> str:
    head = [
        "data set", "protocol", "selected on", "seeds", "conventional", "shift",
        "LeRaC", "shift", "LeRaC − conventional", "paired t p",
    ]  # fmt: skip
    table = []
    for r in rows:
        cells = [r["dataset"], r["protocol"], r["selected_on"], r["seeds"]]
        for regime in REGIMES:
            cells += [
                f"{_f(r[f'{regime}_mean'])} ± {_f(r[f'{regime}_std'])}",
                _f(r[f"{regime}_shift"], sign=True),
            ]
        cells += [
            f"{_f(r['margin_mean'], sign=True)} ± {_f(r['margin_std'])}",
            "–" if r["margin_t_p"] is None else f"{r['margin_t_p']:.3g}",
        ]
        table.append(cells)
    lines = [f"# {title}", "", source, "", *markdown_table(head, table)]
    lines += [
        "",
        "Test accuracy in %, mean ± sample std over seeds. `protocol`: `paper` (the paper as "
        "written), `released` (every difference of the released code at once) or one key "
        "switched alone (docs/fidelity.md). `shift`: the regime's mean minus its mean under "
        "`paper`. `LeRaC − conventional`: mean ± std of the per-seed differences, paired "
        "t-test p. `selected on test`: the best epoch was chosen on the test set (as the "
        "released code), so those accuracies are optimistic.",
    ]
    return "\n".join(lines) + "\n"


def write_summary(block: str, out: Path, overrides: Sequence[str] = ()) -> list[Path]:
    from lerac.suite.grid import load_experiment

    experiment = load_experiment("protocol", overrides)
    if block not in experiment.blocks:
        raise ConfigError(f"--block {block}: experiment=protocol has {list(experiment.blocks)}")
    from lerac.suite.grid import enumerate_runs, expand

    runs = [r for r in enumerate_runs(experiment, overrides) if r.block == block]
    protocols = expand({"protocol": experiment.blocks[block]["protocol"]})
    protocols = [job[0].split("=", 1)[1] for job in protocols]
    found = []
    for run in runs:
        metrics = read_metrics(run.run_dir) if run.done else None
        if metrics and metrics.get("status") == "completed":
            found.append(metrics)
    rows = summary_rows(found, protocols)
    extra = "".join(f" {o}" for o in overrides)
    source = (
        f"Block `{block}` of experiment=protocol: {len(found)} of {len(runs)} runs completed "
        f"(under `{experiment.output_dir}`). Command: `lerac-grid protocol "
        f"--block {block}{extra}` then `python -m lerac.suite.protocol_report "
        f"--block {block}{extra}`."
    )
    md, table = out.with_suffix(".md"), out.with_suffix(".csv")
    title = experiment.grid.get("title") or "protocol"
    write_text(md, format_summary(rows, f"{title}: block {block}", source))
    write_table(rows, table, FIELDS)
    return [md, table]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="the overrides the grid ran with")
    parser.add_argument("--block", default="main", help="a block of experiment=protocol")
    parser.add_argument("--out", help="report path without suffix (results/protocol[_block])")
    args = parser.parse_args(argv)
    name = "protocol" if args.block == "main" else f"protocol_{args.block}"
    out = Path(args.out) if args.out else RESULTS_DIR / name
    try:
        paths = write_summary(args.block, out, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
