"""Where the suite's configs and results live: ``conf/`` and ``results/`` of the checkout."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"
RESULTS_DIR = REPO / "results"
