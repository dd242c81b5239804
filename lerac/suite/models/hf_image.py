"""HuggingFace image classifiers that hand the loop plain logits: CvT-13 and any
``AutoModelForImageClassification``.

- :func:`cvt13` (``model=cvt13``): transformers' default ``CvtConfig`` is CvT-13 (embed
  dims 64/192/384, depths 1/2/10, heads 1/3/6, ~20M parameters), randomly initialised by
  the library (truncated normal, std 0.02). It runs at the data set's own size (32 and 64
  px checked): its first token embedding is a 7x7 stride-4 conv, then two 3x3 stride-2.
- :func:`pretrained` (``model=cvt13_pretrained``, ``model=hf_image``): weights from a
  local directory written by ``save_pretrained`` or a hub id, through
  :func:`lerac.suite.models.hub.from_pretrained` (one clear error offline). A new head with
  ``num_classes`` outputs replaces the checkpoint's when their class counts differ
  (``ignore_mismatched_sizes``); the library initialises it with the model's own
  ``_init_weights`` (CvT: truncated normal weights, std 0.02, zero bias). Inputs are
  resized on the device, bilinearly, to ``resize_to`` (224 for CvT-13: its pre-training
  resolution) and 1-channel images are repeated to the checkpoint's 3 channels.

Normalization stays the data set's (its training mean/std, as for every other model), so
all models see the same inputs; for natural images those statistics are close to the
ImageNet mean/std the checkpoints were trained with, and fine-tuning absorbs the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from lerac.errors import ConfigError
from lerac.suite.models.hub import from_pretrained


class HFImageClassifier(nn.Module):
    """``model(pixel_values=...).logits`` after resizing and channel expansion.

    Args:
        model: a HuggingFace image classification model.
        resize_to: side in px the inputs are resized to on the device; None keeps them.
        channels: the channels the model takes; 1-channel inputs are repeated to it.
    """

    def __init__(self, model: nn.Module, resize_to: int | None = None, channels: int = 3) -> None:
        super().__init__()
        self.model = model
        self.resize_to = resize_to
        self.channels = channels

    def forward(self, pixel_values: Tensor) -> Tensor:
        x = pixel_values
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)  # grayscale -> RGB
        if self.resize_to and tuple(x.shape[-2:]) != (self.resize_to, self.resize_to):
            x = F.interpolate(x.float(), size=(self.resize_to,) * 2, mode="bilinear")
        return self.model(pixel_values=x).logits


class CvtClassifier(HFImageClassifier):
    """A CvT with the places where CBS smooths it."""

    def cbs_sites(self) -> list[tuple[nn.Module, str]]:
        """The token map after each stage's convolutional token embedding (conv + layer
        norm, then dropout), (B, C, H, W) as ``CvtEmbeddings`` returns it. These are
        CvT's only spatial convolutions over the token grid besides the attention
        projections, so blurring them is CBS's rule for CNNs (smooth after each conv)
        applied to the 2D token grid that every stage's transformer then reads.
        """
        return [(stage.embedding, "nchw") for stage in self.model.cvt.encoder.stages]


def wrap(model: nn.Module, resize_to: int | None, channels: int) -> HFImageClassifier:
    is_cvt = getattr(model.config, "model_type", "") == "cvt"
    return (CvtClassifier if is_cvt else HFImageClassifier)(model, resize_to, channels)


def cvt13(num_classes: int, in_channels: int = 3, **config: Any) -> CvtClassifier:
    """CvT-13 from scratch; ``config`` overrides ``CvtConfig`` fields (e.g. in tests)."""
    from transformers import CvtConfig, CvtForImageClassification

    # No image_size: CvT's convolutional token embeddings take any size.
    # Plain lists: Hydra hands list options over as ListConfig, which CvtConfig refuses.
    config = {
        key: list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
        for key, value in config.items()
    }
    cfg = CvtConfig(num_labels=num_classes, num_channels=in_channels, **config)
    return CvtClassifier(CvtForImageClassification(cfg), None, in_channels)


def pretrained(
    num_classes: int,
    pretrained: str,
    in_channels: int = 3,
    image_size: int = 32,
    resize_to: int | None = None,
) -> HFImageClassifier:
    """A pretrained ``AutoModelForImageClassification`` with a ``num_classes`` head.

    ``resize_to`` None: the checkpoint config's ``image_size`` when it has one (ViT-like
    models are tied to it), else the data set's own size.
    """
    from transformers import AutoModelForImageClassification

    if not pretrained:
        raise ConfigError(
            "model.pretrained is empty: set it to a hub id (e.g. microsoft/cvt-13) or a "
            "directory written by save_pretrained"
        )
    model = from_pretrained(
        AutoModelForImageClassification,
        pretrained,
        "image model",
        # num_classes labels (given as a label map: the checkpoint's own would clash),
        # and a new head when the class counts differ.
        id2label={i: str(i) for i in range(num_classes)},
        label2id={str(i): i for i in range(num_classes)},
        ignore_mismatched_sizes=True,
    )
    channels = getattr(model.config, "num_channels", 3)
    if in_channels not in (1, channels):
        raise ConfigError(
            f"model.pretrained={pretrained} takes {channels}-channel images but the data set "
            f"has {in_channels} channels; use dataset.channels={channels}"
        )
    size = resize_to or getattr(model.config, "image_size", None) or image_size
    return wrap(model, size if size != image_size else None, channels)
