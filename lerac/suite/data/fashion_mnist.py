"""Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 kinds of clothing, 60,000 for
training and 10,000 for test, in the IDX files of its release (gzipped or not).

Layout under ``root`` (what the release, Debian's ``dataset-fashion-mnist`` package in
/usr/share/datasets/fashion-mnist and ``lerac-fetch fashion_mnist`` give):
  train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]
  t10k-images-idx3-ubyte[.gz],  t10k-labels-idx1-ubyte[.gz]
Official train/test split; 10% of train held out for validation (as the paper does for
every data set, 4.1); ``train_examples`` keeps a seeded subset of the training split first
(a CPU budget), validation included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lerac.engine.batches import Splits
from lerac.errors import CorruptDataError, DataNotFoundError
from lerac.suite.data.base import image_splits
from lerac.suite.data.idx import read_idx

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = 10
SIDE = 28


def find_file(root: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` under ``root``."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's uint8 images (N, 1, 28, 28) and labels, checked against each other."""
    files = []
    for name in FILES[split]:
        found = find_file(root, name)
        if found is None:
            raise DataNotFoundError(
                f"fashion_mnist not found: {root / name}[.gz] is missing; run `lerac-fetch "
                f"fashion_mnist --data-dir DATA` (or `apt-get install dataset-fashion-mnist` "
                "and paths.data_dir=/usr/share/datasets) and point paths.data_dir at it"
            )
        files.append(found)
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.dtype != np.uint8 or images.shape[1:] != (SIDE, SIDE):
        raise CorruptDataError(
            f"{files[0]} holds {images.dtype} images of shape {images.shape[1:]}, not uint8 "
            f"{SIDE}x{SIDE}; fetch fashion_mnist again"
        )
    if labels.ndim != 1 or len(labels) != len(images) or labels.max(initial=0) >= CLASSES:
        raise CorruptDataError(
            f"{files[1]} does not hold one label in 0-{CLASSES - 1} per image of {files[0]} "
            f"({len(images)}); fetch fashion_mnist again"
        )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_fashion_mnist(
    root: str,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    train_examples: int | None = None,
) -> Splits:
    folder = Path(root)
    train_x, train_y = read_split(folder, "train")
    test_x, test_y = read_split(folder, "test")
    if train_examples is not None and train_examples < len(train_y):
        generator = torch.Generator().manual_seed(split_seed)
        keep = torch.randperm(len(train_y), generator=generator)[:train_examples].sort().values
        train_x, train_y = train_x[keep], train_y[keep]
    return image_splits(train_x, train_y, test_x, test_y, CLASSES, val_fraction, split_seed)
