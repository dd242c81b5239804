"""Aggregate run results: test accuracy mean ± std per (dataset, model, regime).

    python -m lerac.report outputs/demo [--csv summary.csv]

The std is the sample standard deviation (ddof=1) over seeds; the paper reports
"mean and standard deviation" over 5 runs without saying which.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lerac.store import find_runs

GROUP_KEYS = ("dataset", "model", "regime", "tag")


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4) if values else float("nan")


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
                "seeds": ",".join(str(r["seed"]) for r in sorted(done, key=lambda r: r["seed"])),
                "test_acc_mean": _mean(accs),
                "test_acc_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                "val_acc_mean": _mean([float(r["val_acc"]) for r in done]),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ["dataset", "model", "regime", "runs", "test accuracy (%)", "val accuracy (%)"]
    lines = [header]
    for r in rows:
        regime = r["regime"] + (f" [{r['tag']}]" if r["tag"] else "")
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
    runs = find_runs(args.root)
    if not runs:
        print(
            f"error: no metrics.json under {args.root}; run a sweep first (e.g. make demo)",
            file=sys.stderr,
        )
        return 2
    rows = summarize(runs)
    print(format_table(rows))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
