"""Image trees in the real on-disk layouts, written as real JPEG/PNG files with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lerac.suite.data.imagenet200 import WNIDS, read_wnids


def write_image(path: Path, rng, size: tuple[int, int] = (64, 64), mode: str = "RGB") -> None:
    """Random pixels with a smooth ramp (so a JPEG keeps some structure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    channels = 1 if mode == "L" else 3
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode)
    image.save(path)


def tiny_imagenet_tree(root: Path, wnids: list[str], train_per_class: int = 10) -> Path:
    """``root/tiny-imagenet-200`` with ``wnids`` (in the order given), one grayscale train
    JPEG, and 2 val images per class listed in val_annotations.txt in a shuffled order."""
    rng = np.random.default_rng(0)
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in wnids))
    for wnid in wnids:
        for i in range(train_per_class):
            mode = "L" if (wnid, i) == (wnids[0], 0) else "RGB"  # a few are grayscale
            write_image(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", rng, mode=mode)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    lines = []
    order = [(w, j) for j in range(2) for w in reversed(wnids)]  # not grouped by class
    for n, (wnid, _) in enumerate(order):
        write_image(base / "val" / "images" / f"val_{n}.JPEG", rng)
        lines.append(f"val_{n}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    return base


def imagenet_tree(
    root: Path, kept: int = 3, others: int = 2, per_class: int = 4
) -> tuple[Path, list[str]]:
    """``root/imagenet`` with train/ and val/ class folders of varying image sizes: the
    first ``kept`` of the ImageNet-200 wnids and ``others`` ImageNet-1k wnids outside
    them. Returns the root and a wnids file listing the kept ones."""
    rng = np.random.default_rng(1)
    base = root / "imagenet"
    keep = read_wnids(WNIDS)[:kept]
    outside = ["n01440764", "n01484850", "n01491361"][:others]  # tench, great white, tiger shark
    assert not set(outside) & set(read_wnids(WNIDS))
    for split, count in (("train", per_class), ("val", 2)):
        for wnid in keep + outside:
            for i in range(count):
                size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
                write_image(base / split / wnid / f"{wnid}_{i}.JPEG", rng, size)
    listing = root / "wnids3.txt"
    listing.write_text("\n".join(keep) + "\n")
    return base, keep


def image_folder_tree(
    root: Path, classes=("cat", "dog", "fox"), per_class: int = 8, size=(16, 16), val: bool = False
) -> Path:
    """``root/folder`` with train/, test/ (and val/) class folders of PNGs and JPEGs."""
    rng = np.random.default_rng(2)
    base = root / "folder"
    splits = [("train", per_class), ("test", 3)] + ([("val", 2)] if val else [])
    for split, count in splits:
        for name in classes:
            for i in range(count):
                suffix = ".png" if i % 2 else ".jpg"
                mode = "L" if i == 1 else "RGB"
                write_image(base / split / name / f"{i}{suffix}", rng, size, mode)
    return base
