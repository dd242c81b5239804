"""The vision augmentations of the paper's Table 13 (``dataset.augment=true``).

Horizontal flip, rotation, solarization, blur, sharpening and auto-contrast, with
torchvision's transforms v2, drawn independently for every image of a training batch.
They act on the stored uint8 images on the device, before normalization. The paper names the six
augmentations without their parameters; the suite's choices are the defaults of
:func:`table13`. Off by default: the paper's main experiments use no augmentation (4.2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lerac.engine.batches import BatchTransform
from lerac.errors import ConfigError


def table13(
    flip: float = 0.5,
    rotation_degrees: float = 15.0,
    rotation: float = 0.5,
    solarize: float = 0.2,
    blur: float = 0.2,
    sharpen: float = 0.2,
    autocontrast: float = 0.2,
) -> BatchTransform:
    """A per-sample batch augmentation; each argument but ``rotation_degrees`` is the
    probability that an image gets that transform. Solarization inverts pixels at or
    above 128; blur is a 3x3 Gaussian with sigma in [0.1, 2]; sharpening doubles the
    sharpness; rotation is uniform in +-``rotation_degrees``, corners filled with 0."""
    from torchvision.transforms import v2

    # (transform, probability, draws its own parameters per image). Each image takes
    # each step with its own coin flip; parameter-free steps run once on the chosen
    # images together, rotation and blur once per chosen image (v2 draws one angle or
    # sigma per call).
    steps = [
        (v2.RandomHorizontalFlip(1.0), flip, False),
        (v2.RandomRotation(rotation_degrees), rotation, True),
        (v2.RandomSolarize(threshold=128, p=1.0), solarize, False),
        (v2.GaussianBlur(3, sigma=(0.1, 2.0)), blur, True),
        (v2.RandomAdjustSharpness(2.0, p=1.0), sharpen, False),
        (v2.RandomAutocontrast(p=1.0), autocontrast, False),  # per image and channel
    ]

    def augment(images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if images.dtype != torch.uint8:
            raise ConfigError(
                f"dataset.augment=true needs uint8 images (stored {images.dtype}); the Table 13 "
                "augmentations are for image files and CIFAR, not this data set"
            )
        images = images.clone()
        for transform, p, per_image in steps:
            chosen = (torch.rand(len(images), device=images.device) < p).nonzero().flatten()
            if len(chosen) == 0:
                continue
            if per_image:
                images[chosen] = torch.stack([transform(images[i]) for i in chosen.tolist()])
            else:
                images[chosen] = transform(images[chosen])
        return images, targets

    return augment


def maybe_table13(augment: bool) -> BatchTransform | None:
    """What a data family stores in ``Splits.augment`` for ``dataset.augment``."""
    return table13() if augment else None
