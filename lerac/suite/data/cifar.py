"""CIFAR-10 and CIFAR-100 from the python-pickle batches torchvision and the authors ship.

Layout under ``root`` (what extracting the official archives gives):
  cifar-10-batches-py/data_batch_1..5, test_batch     (key ``labels``)
  cifar-100-python/train, test                        (key ``fine_labels``)
Official train/test split; 10% of train held out for validation (paper 4.1); normalize
only, no augmentation (paper 4.2).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lerac.engine.batches import Splits
from lerac.errors import ConfigError, DataNotFoundError, reading
from lerac.suite.data.augment import maybe_table13
from lerac.suite.data.base import image_splits


@dataclass(frozen=True)
class Variant:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    url: str
    md5: str  # of the archive at url


VARIANTS = {
    "cifar10": Variant(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": Variant(
        "cifar-100-python",
        ("train",),
        ("test",),
        "fine_labels",
        100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


def variant_of(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConfigError(f"unknown CIFAR variant '{name}': choose {' or '.join(VARIANTS)}")
    return VARIANTS[name]


def download_cifar(root: str, variant: str = "cifar10", url: str | None = None) -> Path:
    """Fetch and extract the official archive into ``root`` (needs network access)."""
    from torchvision.datasets.utils import download_and_extract_archive

    spec = variant_of(variant)
    url = url or spec.url
    try:
        download_and_extract_archive(url, root, filename=Path(spec.url).name, md5=spec.md5)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise DataNotFoundError(
            f"could not download {url} ({err}); fetch it on a machine with network access "
            f"and extract it into {Path(root).resolve()}"
        ) from err
    return Path(root) / spec.folder


def _read_batches(
    folder: Path, files: tuple[str, ...], label_key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in files:
        with reading(folder / name), open(folder / name, "rb") as f:  # names a bad file
            batch = pickle.load(f, encoding="latin1")
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(batch[label_key])
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)


def load_cifar(
    root: str,
    variant: str = "cifar10",
    val_fraction: float = 0.1,
    split_seed: int = 0,
    augment: bool = False,
) -> Splits:
    spec = variant_of(variant)
    folder = Path(root) / spec.folder
    missing = [f for f in spec.train_files + spec.test_files if not (folder / f).is_file()]
    if missing:
        raise DataNotFoundError(
            f"{variant} not found: {folder / missing[0]} is missing; run "
            f"`python scripts/fetch_data.py {variant} --data-dir {root}` or download {spec.url} "
            f"and extract it into {Path(root).resolve()} (or point paths.data_dir at its parent)"
        )
    train_x, train_y = _read_batches(folder, spec.train_files, spec.label_key)
    test_x, test_y = _read_batches(folder, spec.test_files, spec.label_key)
    splits = image_splits(
        train_x, train_y, test_x, test_y, spec.num_classes, val_fraction, split_seed
    )
    splits.augment = maybe_table13(augment)  # Table 13 (CIFAR-100); off as in paper 4.2
    return splits
