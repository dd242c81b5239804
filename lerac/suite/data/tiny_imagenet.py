"""Tiny ImageNet (Le & Yang 2015): 200 classes, 64x64, the official ``tiny-imagenet-200``
layout (what extracting tiny-imagenet-200.zip gives)::

    tiny-imagenet-200/wnids.txt                        200 wnids; their order = class index
    tiny-imagenet-200/train/<wnid>/images/*.JPEG       500 a class
    tiny-imagenet-200/val/images/*.JPEG                10,000
    tiny-imagenet-200/val/val_annotations.txt          file TAB wnid TAB x0 TAB y0 TAB x1 TAB y1

The test split's labels are not public, so the labelled val split is the test set and
10% of train (seeded) is the validation set (paper 4.1). The ~110k JPEGs are decoded once
(grayscale ones expanded to RGB) into a uint8 tensor file under ``paths.cache_dir``;
after that the data set loads in seconds and lives on the device like CIFAR.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lerac.engine.batches import Splits
from lerac.errors import DataNotFoundError
from lerac.suite.data.augment import maybe_table13
from lerac.suite.data.base import image_splits
from lerac.suite.data.images import cached_images, list_images, read_images

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
SIZE = 64


def read_val_annotations(folder: Path, index: dict[str, int]) -> tuple[list[Path], list[int]]:
    """The val images and their class indices from ``val_annotations.txt``."""
    files, labels = [], []
    annotations = folder / "val_annotations.txt"
    for number, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        name, wnid = line.split("\t")[:2]
        if wnid not in index:
            raise DataNotFoundError(f"{annotations} line {number}: wnid {wnid} is not in wnids.txt")
        files.append(folder / "images" / name)
        labels.append(index[wnid])
    return files, labels


def list_files(
    base: Path,
) -> tuple[list[str], tuple[list[Path], list[int]], tuple[list[Path], list[int]]]:
    """The class ids (wnids.txt order is the class index), the training files with their
    labels, and the validation files (our test split) with theirs."""
    wnids = [w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    train_files, train_labels = [], []
    for wnid in wnids:
        images = base / "train" / wnid / "images"
        if not images.is_dir():
            raise DataNotFoundError(
                f"Tiny ImageNet: {images} is missing (wnid {wnid} of wnids.txt)"
            )
        found = list_images(images)
        train_files += found
        train_labels += [index[wnid]] * len(found)
    return wnids, (train_files, train_labels), read_val_annotations(base / "val", index)


def load_tiny_imagenet(
    root: str,
    cache_dir: str,
    folder: str = "tiny-imagenet-200",
    val_fraction: float = 0.1,
    split_seed: int = 0,
    augment: bool = False,
) -> Splits:
    base = Path(root) / folder
    needed = [base / "wnids.txt", base / "train", base / "val" / "val_annotations.txt"]
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise DataNotFoundError(
            f"Tiny ImageNet not found: {missing[0]} is missing; download {URL} and extract it "
            f"into {Path(root).resolve()} (or point paths.data_dir at the folder holding {folder})"
        )
    wnids, (train_files, train_labels), (test_files, test_labels) = list_files(base)

    def decode() -> dict[str, torch.Tensor]:
        return {
            "train_x": read_images(train_files, 3, SIZE),
            "train_y": torch.tensor(train_labels, dtype=torch.long),
            "test_x": read_images(test_files, 3, SIZE),
            "test_y": torch.tensor(test_labels, dtype=torch.long),
        }

    missing_val = next((p for p in test_files if not p.is_file()), None)
    if missing_val is not None:
        raise DataNotFoundError(
            f"Tiny ImageNet: {missing_val} (listed in val_annotations.txt) is missing"
        )
    data = cached_images(
        cache_dir,
        "tiny_imagenet",
        train_files + test_files,
        {"size": SIZE, "labels": wnids},
        decode,
    )
    splits = image_splits(
        data["train_x"],
        data["train_y"],
        data["test_x"],
        data["test_y"],
        len(wnids),
        val_fraction,
        split_seed,
    )
    splits.augment = maybe_table13(augment)
    return splits
