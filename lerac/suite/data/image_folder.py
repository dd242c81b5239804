"""Anyone's labelled images, no code needed: ``dataset=image_folder dataset.path=DIR``::

    DIR/train/<class>/*     any format Pillow reads
    DIR/test/<class>/*
    DIR/val/<class>/*       optional; otherwise val_fraction of train (seeded)

Classes are the folder names, sorted (class index = position); every split must have the
same set. ``image_size`` null: the images' own size when they all share one square size,
else a clear error asking for ``dataset.image_size`` (images are then resized, shorter
side first, and center-cropped). ``channels`` 3 expands grayscale to RGB (1 makes RGB
gray). The decoded images are cached under ``paths.cache_dir`` and live on the device
like CIFAR, normalized with the training images' mean/std.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path

import torch

from lerac.engine.batches import Splits
from lerac.errors import ConfigError, DataNotFoundError
from lerac.suite.data.augment import maybe_table13
from lerac.suite.data.base import channel_stats, hold_out, image_input
from lerac.suite.data.images import (
    cached_images,
    check_channels,
    image_size_of,
    list_images,
    read_images,
)

LAYOUT = "DIR/train/<class>/*, DIR/test/<class>/* and optionally DIR/val/<class>/*"
log = logging.getLogger("lerac")


def class_folders(split: Path) -> list[str]:
    return sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_files(split: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for i, name in enumerate(classes):
        found = list_images(split / name)
        if not found:
            raise DataNotFoundError(f"{split / name} holds no image files")
        files += found
        labels += [i] * len(found)
    return files, labels


def common_size(files: list[Path]) -> int:
    """The side every image shares, or a clear error asking for dataset.image_size."""
    sizes = Counter(image_size_of(f) for f in files)
    if len(sizes) == 1:
        ((width, height),) = sizes
        if width == height:
            return width
    examples = ", ".join(f"{w}x{h} ({n} images)" for (w, h), n in sizes.most_common(3))
    raise ConfigError(
        f"the images do not share one square size ({examples}); set dataset.image_size=S to "
        "resize (shorter side) and center-crop them to S x S"
    )


def same_class_folders(root: Path, names: list[str]) -> list[str]:
    """The class folders of train, checked to be the same in every other split."""
    classes = {name: class_folders(root / name) for name in names}
    if not classes["train"]:
        raise DataNotFoundError(
            f"{root / 'train'} has no class folders; dataset.path needs {LAYOUT}"
        )
    for name in names[1:]:
        if classes[name] != classes["train"]:
            only_train = sorted(set(classes["train"]) - set(classes[name]))
            only_here = sorted(set(classes[name]) - set(classes["train"]))
            raise ConfigError(
                f"{root / name} and {root / 'train'} must have the same class folders: "
                f"missing in {name}: {only_train or 'none'}; not in train: {only_here or 'none'}"
            )
    if len(classes["train"]) == 1:
        message = (
            f"{root / 'train'} holds one class folder ({classes['train'][0]}): every prediction "
            "is that class, so accuracy is 100% by construction; add a folder per class"
        )
        log.warning(message)
        warnings.warn(message, stacklevel=2)
    return classes["train"]


def train_and_val(data: dict[str, torch.Tensor], root: Path, val_fraction: float, seed: int):
    """The val folder when there is one, else val_fraction of train (seeded)."""
    train = (data["train_x"], data["train_y"])
    if "val_x" in data:
        return train, (data["val_x"], data["val_y"])
    try:
        return hold_out(*train, val_fraction, seed)
    except ValueError as err:
        raise ConfigError(
            f"{err} for validation: add a {root / 'val'} folder or change dataset.val_fraction"
        ) from err


def load_image_folder(
    path: str,
    cache_dir: str,
    image_size: int | None = None,
    channels: int = 3,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    augment: bool = False,
) -> Splits:
    if not path:
        raise ConfigError(f"set dataset.path to a folder laid out as {LAYOUT}")
    root = Path(path).expanduser()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataNotFoundError(f"{root / split} does not exist; dataset.path needs {LAYOUT}")
    check_channels(channels)
    names = ["train", "test"] + (["val"] if (root / "val").is_dir() else [])
    classes = same_class_folders(root, names)
    listed = {name: split_files(root / name, classes) for name in names}
    every_file = [f for files, _ in listed.values() for f in files]
    size = image_size or common_size(every_file)

    def decode() -> dict[str, torch.Tensor]:
        data = {}
        for name, (files, labels) in listed.items():
            data[f"{name}_x"] = read_images(files, channels, size)
            data[f"{name}_y"] = torch.tensor(labels, dtype=torch.long)
        return data

    settings = {"channels": channels, "size": size, "classes": classes}
    data = cached_images(cache_dir, "image_folder", every_file, settings, decode)
    train, val = train_and_val(data, root, val_fraction, split_seed)
    mean, std = channel_stats(train[0])
    return Splits(
        train=train,
        val=val,
        test=(data["test_x"], data["test_y"]),
        num_classes=len(classes),
        input_spec=image_input(channels, size),
        mean=mean,
        std=std,
        augment=maybe_table13(augment),
    )
