"""Where the suite's configs and results live: ``conf/`` and ``results/`` of the checkout.

A wheel install has no checkout: its configs are the copy the build puts in the package
(``lerac/suite/conf``, setup.py), and CONF_DIR points there.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
CONF_DIR = REPO / "conf" if (REPO / "conf" / "train.yaml").is_file() else PACKAGED_CONF
RESULTS_DIR = REPO / "results"
