"""Whether a run directory's saved config describes the run a command asks for: the
settings that differ, bookkeeping aside. A config saved by an older version of the suite
counts as the same run: classes that moved are read under their present names, and a
group added since is read at its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lerac.engine.settings import flatten

# Settings that do not change what a run computes.
BOOKKEEPING = (
    "overwrite",
    "trainer.progress",
    "trainer.keep_checkpoint",
    "logger",
    "paths",
    "hydra",
    "grid",  # an experiment's grid blocks: a run shared by two tables is the same run
    "dataset.facts",  # what the data set is (for estimates), not how it is read
)

# Where the classes a run's config names moved (the first match wins): a config.yaml saved
# before names the old module, and is the same run.
MOVED_MODULES = {
    "lerac.released.MultiStep": "lerac.engine.schedules.MultiStep",
    "lerac.engine.released.MultiStep": "lerac.engine.schedules.MultiStep",
    "lerac.regimes.": "lerac.engine.regimes.",
    "lerac.released.": "lerac.engine.released.",
    "lerac.schedules.": "lerac.engine.schedules.",
    "lerac.protocol.": "lerac.suite.protocol.",
    "lerac.data.": "lerac.suite.data.",
    "lerac.models.": "lerac.suite.models.",
}
# Groups added after runs were saved: a saved config without one had its default.
ADDED_GROUPS = {"analysis.id": "none", "analysis._target_": "lerac.engine.probes.NoProbes"}


def moved_target(value: Any) -> Any:
    """A saved ``_target_`` under its module's present name."""
    if isinstance(value, str):
        for old, new in MOVED_MODULES.items():
            if value.startswith(old):
                return new + value[len(old) :]
    return value


def config_changes(saved: Path, cfg: DictConfig) -> list[str]:
    """Settings that differ between a run's saved config and ``cfg`` (bookkeeping aside)."""
    if not saved.is_file():
        return []
    old = flatten(OmegaConf.to_container(OmegaConf.load(saved), resolve=True))
    old = {key: moved_target(value) for key, value in old.items()}
    old = {**ADDED_GROUPS, **old}
    new = flatten(OmegaConf.to_container(cfg, resolve=True))
    return sorted(
        key
        for key in old.keys() | new.keys()
        if old.get(key) != new.get(key) and not key.startswith(BOOKKEEPING)
    )
