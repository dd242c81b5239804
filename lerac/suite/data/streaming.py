"""Image data sets that stay on disk: files decoded by DataLoader workers, batch by batch.

The second implementation of the loader interface (:class:`lerac.suite.data.base.TensorLoader`
is the first): ``__len__``, ``__iter__`` yielding ``(inputs, targets)`` on the device,
``num_examples``, ``state_dict``/``load_state_dict``. The order is drawn in the main
process from a generator seeded once, exactly as the in-memory loader does, so a run's
batches depend on its seed only (not on the worker count). Workers decode (and resize)
the files of each batch; ``augment`` and normalization then run on the device on whole
batches, as for in-memory data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lerac.engine.batches import EpochBatches, Splits
from lerac.suite.data.images import read_image


class ImageFiles(Dataset):
    """Item i: (uint8 (C, size, size) image, label) decoded from ``files[i]``."""

    def __init__(
        self, files: Sequence[Path | str], labels: Tensor, channels: int, size: int, resize: int
    ) -> None:
        self.files, self.labels = [str(f) for f in files], labels.tolist()
        self.channels, self.size, self.resize = channels, size, resize

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return read_image(self.files[i], self.channels, self.size, self.resize), self.labels[i]


class _Batches:
    """The batch sampler: index lists cut from the order the loader drew for this epoch."""

    def __init__(self, loader: StreamingLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return self.loader.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        order, size = self.loader.order, self.loader.batch_size
        for b in range(self.loader.num_batches):
            yield order[b * size : (b + 1) * size].tolist()


class StreamingLoader(EpochBatches):
    """Batches decoded from files by ``num_workers`` DataLoader workers, moved to
    ``device``; the order and every batching rule are :class:`EpochBatches`'."""

    def __init__(
        self,
        dataset: ImageFiles,
        batch_size: int,
        shuffle: bool,
        device: torch.device | str,
        num_workers: int = 0,
        **rules: Any,
    ) -> None:
        super().__init__(len(dataset), batch_size, shuffle, **rules)
        self.dataset, self.device = dataset, torch.device(device)
        self.order = torch.arange(self.n)
        self.loader = DataLoader(
            dataset,
            batch_sampler=_Batches(self),
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,  # no worker start-up every epoch
        )

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.order = self.epoch_order()  # read by the batch sampler in this process
        for images, targets in self.loader:
            images = images.to(self.device, non_blocking=True)
            yield self.finish(images, targets.to(self.device, non_blocking=True))


@dataclass
class StreamingSplits(Splits):
    """Splits whose ``train``/``val``/``test`` are ``(list of files, labels)``; images are
    decoded to ``channels`` x ``image_size`` x ``image_size`` (shorter side resized to
    ``resize`` first) by ``num_workers`` workers per loader."""

    channels: int = 3
    image_size: int = 224
    resize: int = 256
    num_workers: int = 4

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)[1]) for name in ("train", "val", "test")}

    def loader(
        self, split: str, batch_size: int, device: torch.device | str, **options
    ) -> StreamingLoader:
        files, labels = getattr(self, split)
        return StreamingLoader(
            ImageFiles(files, labels, self.channels, self.image_size, self.resize),
            batch_size,
            device=device,
            num_workers=self.num_workers,
            **options,
        )
