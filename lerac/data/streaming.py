"""Image data sets that stay on disk: files decoded by DataLoader workers, batch by batch.

The second implementation of the loader interface (:class:`lerac.data.base.TensorLoader`
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

from lerac.data.base import BatchTransform, Splits
from lerac.data.images import read_image


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


class StreamingLoader:
    """Batches decoded by ``num_workers`` DataLoader workers, moved to ``device``.

    Same batching rules as :class:`TensorLoader`: a new seeded permutation per training
    epoch, a lone last training example dropped, ``max_batches`` caps an epoch.
    """

    def __init__(
        self,
        dataset: ImageFiles,
        batch_size: int,
        shuffle: bool,
        device: torch.device | str,
        seed: int = 0,
        transform=None,
        max_batches: int | None = None,
        augment: BatchTransform | None = None,
        num_workers: int = 0,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.transform = transform or (lambda x: x)
        self.augment = augment
        n = len(dataset)
        full, rest = divmod(n, batch_size)
        batches = full + (1 if rest > (1 if shuffle else 0) else 0)
        self.num_batches = min(batches, max_batches) if max_batches else batches
        self.order = torch.arange(n)
        self.loader = DataLoader(
            dataset,
            batch_sampler=_Batches(self),
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,  # no worker start-up every epoch
        )

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_examples(self) -> int:
        return min(len(self.dataset), self.num_batches * self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.dataset)
        self.order = (
            torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        )
        for images, targets in self.loader:
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            if self.augment is not None:
                images, targets = self.augment(images, targets)
            yield self.transform(images), targets


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
