"""CIFAR-10 and CIFAR-100 from the python-pickle batches torchvision and the authors ship.

Layout under ``root`` (what extracting the official archives gives):
  cifar-10-batches-py/data_batch_1..5, test_batch     (key ``labels``)
  cifar-100-python/train, test                        (key ``fine_labels``)
Official train/test split; 10% of train held out for validation (paper 4.1); normalize
only, no augmentation (paper 4.2).

A batch is a pickle, and unpickling can call any function a file names. The batches are
read by :class:`BatchUnpickler`, which gives a file only what the format uses (numpy's
array and dtype reconstruction, and the codec Python 3 writes bytes with in protocol 2);
lists, dicts, strings, bytes and numbers need no function. A file that asks for anything
else (``os.system``, ``builtins.eval``, ...) is refused before it is called.
"""

from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lerac.engine.batches import Splits
from lerac.errors import ConfigError, DataNotFoundError, LeRaCError, first_line, reading
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
            f"could not download {url} ({first_line(err)}); fetch it on a machine with network "
            "access "
            f"and extract it into {Path(root).resolve()}"
        ) from err
    return Path(root) / spec.folder


class UnsafePickle(LeRaCError):
    """A pickle that asks for a function its format never needs."""


def _allowed() -> dict[tuple[str, str], object]:
    """The functions a CIFAR batch may name, under every module name numpy has used for
    them (numpy.core in the official Python 2 files, numpy._core in numpy 2)."""
    reconstruct = np.ndarray(0).__reduce__()[0]
    from_buffer = np.ndarray(0).__reduce_ex__(5)[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = from_buffer
    return allowed


class BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, strings, bytes and numbers, nothing else."""

    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path, self.allowed = path, _allowed()

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.allowed:
            raise UnsafePickle(
                f"{self.path} asks to run {module}.{name} when read; a CIFAR batch holds only "
                "arrays, lists, strings and numbers, so it was not read: replace it with the "
                "official file (lerac-fetch cifar10 --force, or cifar100)"
            )
        return self.allowed[(module, name)]


def read_batch(path: Path) -> dict:
    """One CIFAR batch file, unpickled by :class:`BatchUnpickler`."""
    with open(path, "rb") as f:
        batch = BatchUnpickler(f, path).load()
    if not isinstance(batch, dict):
        raise UnsafePickle(f"{path} is not a CIFAR batch (it holds a {type(batch).__name__})")
    return batch


def _read_batches(
    folder: Path, files: tuple[str, ...], label_key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in files:
        with reading(folder / name):  # names a bad file
            batch = read_batch(folder / name)
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
            f"{variant} not found: {folder / missing[0]} is missing; run `lerac-fetch "
            f"{variant} --data-dir {root}` (or `make data DATASETS={variant}`), or download "
            f"{spec.url}, extract it into {Path(root).resolve()} (or point paths.data_dir at "
            "its parent)"
        )
    train_x, train_y = _read_batches(folder, spec.train_files, spec.label_key)
    test_x, test_y = _read_batches(folder, spec.test_files, spec.label_key)
    splits = image_splits(
        train_x, train_y, test_x, test_y, spec.num_classes, val_fraction, split_seed
    )
    splits.augment = maybe_table13(augment)  # Table 13 (CIFAR-100); off as in paper 4.2
    return splits
