"""The console scripts (``lerac-train``, ``lerac-grid``, ...), usable on the core install.

Installing lerac alone (``pip install .`` in a checkout, or its wheel) brings torch and
numpy only; the suite's commands need the ``suite`` extra. Each script imports its module
on call, so a missing suite package becomes one ``error:`` line naming the extra instead
of a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

EXIT_USER_ERROR = 2
# The suite's packages (pyproject.toml, extra "suite") that a command may need.
SUITE_PACKAGES = {
    "hydra",
    "omegaconf",
    "wandb",
    "transformers",
    "tokenizers",
    "timm",
    "datasets",
    "torchvision",
    "torchaudio",
    "soundfile",
    "scipy",
    "yaml",
    "matplotlib",
    "sklearn",
    "tqdm",
    "submitit",
}


def run_command(module: str) -> Any:
    """``module.main()``, or one error line when the suite's packages are not installed."""
    try:
        main = importlib.import_module(module).main
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if missing not in SUITE_PACKAGES:
            raise
        command = "lerac-" + module.rsplit(".", 1)[-1]
        print(
            f"error: {command} needs the suite's packages ({missing} is not installed): "
            "install lerac with its suite extra, pip install '.[suite]' in a checkout of lerac "
            "(or '<lerac wheel>[suite]'); the library alone needs only torch",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    return main()


def train() -> Any:
    return run_command("lerac.suite.train")


def grid() -> Any:
    return run_command("lerac.suite.grid")


def report() -> Any:
    return run_command("lerac.suite.report")


def plots() -> Any:
    return run_command("lerac.suite.plots")


def fetch() -> Any:
    return run_command("lerac.suite.fetch")
