"""What a data set is, from the ``facts`` block of its config (conf/dataset/*.yaml):
training examples per epoch, classes and, for images, the shape of one example. The grid's
DRY estimate reads them (lerac/suite/grid.py, lerac/suite/flops.py); your own folder's
are null until set (``dataset.facts.train_examples=N``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lerac.errors import ConfigError


@dataclass(frozen=True)
class DatasetFacts:
    """``dataset.facts`` of one data set; None where it is not known."""

    dataset: str
    train_examples: int | None = None  # the training split, before the validation part
    classes: int | None = None
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) as the loader gives it

    def need(self, key: str) -> Any:
        """A fact the caller cannot do without; one clear error when it is not known."""
        value = getattr(self, key)
        if value is None:
            raise ConfigError(
                f"dataset={self.dataset} has no facts.{key}: set dataset.facts.{key}=... "
                "(conf/dataset/*.yaml hold them for the paper's data sets)"
            )
        return value


def dataset_facts(cfg: DictConfig) -> DatasetFacts:
    """The facts of a run config's data set."""
    node = cfg.dataset.get("facts")
    values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    shape = values.get("image_shape")
    known = shape is not None and all(side is not None for side in shape)
    return DatasetFacts(
        str(cfg.dataset.id),
        values.get("train_examples"),
        values.get("classes"),
        tuple(int(side) for side in shape) if known else None,
    )
