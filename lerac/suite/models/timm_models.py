"""Any timm image model by name (``model=timm model.name=convnext_tiny``).

Randomly initialised by default. ``model.pretrained=true`` loads timm's weights for the
name from its cache (the hub on a machine with network access), or from a local file
given as ``model.checkpoint`` (a state dict timm can read: .pth, .bin, .safetensors).
Weights that cannot be loaded end the run with one clear error.

Input channels and size come from the data set: ``in_chans`` for every timm model (with
pretrained weights timm adapts the first conv), ``img_size`` for the models that take it
(ViT-like models; CNNs take any size). A model that cannot run at that size fails before
training, with the size named.

CBS uses its generic CNN rule on these (after every conv with kernel > 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lerac.errors import ConfigError
from lerac.suite.models.hub import PretrainedUnavailable, building_architecture_only


def timm_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int | Sequence[int] = 32,
    pretrained: bool = False,
    checkpoint: str | None = None,
    **options: Any,
) -> nn.Module:
    import timm

    if not name:
        raise ConfigError(
            "set model.name to a timm model, e.g. resnet50, convnext_tiny, vit_small_patch16_224"
        )
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        raise ConfigError(
            f"timm has no model '{name}'"
            + (f"; close names: {', '.join(close)}" if close else "")
            + " (timm.list_models() lists them all)"
        )
    pretrained = pretrained and not building_architecture_only()  # the FLOP estimate
    kwargs: dict[str, Any] = dict(num_classes=num_classes, in_chans=in_channels, **options)
    if pretrained and checkpoint:
        kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint)}

    def create(**extra: Any) -> nn.Module:
        try:
            return timm.create_model(name, pretrained=pretrained, **kwargs, **extra)
        except TypeError:
            raise
        except Exception as err:
            if not pretrained:
                raise
            where = f"the file {checkpoint}" if checkpoint else "timm's cache or the hub"
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            weights = f"timm.create_model('{name}', pretrained=True).state_dict()"
            save = f"torch.save({weights}, '{name}.pth')"
            raise PretrainedUnavailable(
                f"pretrained weights for timm model '{name}' could not be loaded from {where} "
                f"({type(err).__name__}: {reason}). On a machine with network access run: "
                f'python -c "import timm, torch; {save}", copy the file here and set '
                f"model.checkpoint={name}.pth (or model.pretrained=false)"
            ) from err

    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    try:
        model = create(img_size=size)  # ViT-like models are built for one size
    except TypeError:
        model = create()  # the model takes no img_size: CNNs run at any size
    check_input_size(model, name, in_channels, size)
    return model


def check_input_size(model: nn.Module, name: str, in_channels: int, size: tuple[int, int]) -> None:
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *size))
    except (RuntimeError, ValueError, AssertionError) as err:
        raise ConfigError(
            f"timm model '{name}' cannot take {in_channels}x{size[0]}x{size[1]} inputs "
            f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}); "
            "choose another model.name or set dataset.image_size where the data set has it"
        ) from err
    finally:
        model.train(training)
