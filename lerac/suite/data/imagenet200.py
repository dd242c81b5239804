"""ImageNet-200: ImageNet-1k (Russakovsky et al. 2015) restricted to 200 classes (paper 4.1).

The 200 classes are Tiny ImageNet's (Le & Yang 2015: the 200 wnids of its ``wnids.txt``),
kept sorted in ``imagenet200_wnids.txt`` next to this file; class index = position there.
``dataset.wnids=FILE`` picks another list. Layout under ``root``::

    train/<wnid>/*.JPEG     ImageNet-1k's training images (other wnids are ignored)
    val/<wnid>/*.JPEG       its validation images sorted into class folders (the usual
                            preparation; the labels are public) -> the test set

10% of train (seeded) is the validation set. ~260k images do not fit in memory, so the
files stream from disk through DataLoader workers (:mod:`lerac.suite.data.streaming`), each
resized so its shorter side is ``resize`` px and center-cropped to ``image_size``
(default 256 -> 224, the standard ImageNet evaluation crop, crop ratio 0.875). The paper
keeps "the original resolution" (4.1), which varies from image to image; a batch needs
one size, and 224 is the resolution ImageNet architectures (and CvT-13) are built for.
Normalization: the ImageNet-1k mean/std (the usual statistics for its subsets; computing
them over the streamed set would need a pass over all files).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lerac.errors import DataNotFoundError
from lerac.suite.data.augment import maybe_table13
from lerac.suite.data.base import hold_out, image_input
from lerac.suite.data.images import list_images
from lerac.suite.data.streaming import StreamingSplits

WNIDS = Path(__file__).with_name("imagenet200_wnids.txt")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # of ImageNet-1k's training images, in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_wnids(path: Path) -> list[str]:
    if not path.is_file():
        raise DataNotFoundError(f"the class list {path} does not exist (dataset.wnids)")
    return [w for w in path.read_text().split() if w]


def class_files(folder: Path, wnids: list[str]) -> tuple[list[Path], torch.Tensor]:
    files, labels = [], []
    for i, wnid in enumerate(wnids):
        found = list_images(folder / wnid) if (folder / wnid).is_dir() else []
        if not found:
            raise DataNotFoundError(
                f"ImageNet-200: {folder / wnid} is missing or empty; it needs ImageNet-1k's "
                f"{folder.name} images of class {wnid} (val sorted into class folders)"
            )
        files += found
        labels += [i] * len(found)
    return files, torch.tensor(labels, dtype=torch.long)


def load_imagenet200(
    root: str,
    image_size: int = 224,
    resize: int = 256,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    num_workers: int = 8,
    wnids: str | None = None,
    augment: bool = False,
) -> StreamingSplits:
    base = Path(root)
    for split in ("train", "val"):
        if not (base / split).is_dir():
            raise DataNotFoundError(
                f"ImageNet-200 not found: {base / split} is missing; point dataset.root at an "
                "ImageNet-1k folder with train/<wnid>/ and val/<wnid>/"
            )
    classes = read_wnids(Path(wnids) if wnids else WNIDS)
    train_files, train_labels = class_files(base / "train", classes)
    test_files, test_labels = class_files(base / "val", classes)
    # Hold out by index: the files stay a list of paths.
    (train_idx, train_y), (val_idx, val_y) = hold_out(
        torch.arange(len(train_files)), train_labels, val_fraction, split_seed
    )
    # Images are uint8 in [0, 255]: the statistics scaled to match.
    stat = lambda values: torch.tensor(values).view(1, 3, 1, 1) * 255  # noqa: E731
    return StreamingSplits(
        train=([train_files[i] for i in train_idx.tolist()], train_y),
        val=([train_files[i] for i in val_idx.tolist()], val_y),
        test=(test_files, test_labels),
        num_classes=len(classes),
        input_spec=image_input(3, image_size),
        mean=stat(IMAGENET_MEAN),
        std=stat(IMAGENET_STD),
        augment=maybe_table13(augment),
        channels=3,
        image_size=image_size,
        resize=resize,
        num_workers=num_workers,
    )
