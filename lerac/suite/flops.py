"""Training FLOPs per example of a model at its data set's input size, for the grid's plan.

:func:`training_flops` builds the model of a composed run config the way training does
(``model._target_`` with the data set's classes and input size), on the meta device (no
memory, no weights), runs one forward pass of one example at the real input size under
``torch.utils.flop_counter.FlopCounterMode``, and counts a training step as 3 forward
passes (the backward pass costs about twice the forward: a gradient for the inputs and
one for the weights of each matmul and conv). A model that loads pre-trained weights is
built from its architecture's configuration instead (the fetched checkpoint's
config.json when it is there, else the published configuration below), so no weights
are needed. Text models are counted at their tokenizer's ``max_length`` (an upper bound:
batches are trimmed to their longest text), the spectrogram models at the data set's
(mel bins, frames), vision models at the data set's image size (and at ``resize_to``
where the model resizes its inputs, as the pre-trained CvT-13 does to 224 px).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lerac.errors import ConfigError

BACKWARD_FACTOR = 3  # forward + backward = 3 forward passes
# Image data sets: (channels, side) as their loaders produce them (paper 4.1).
IMAGE_INPUTS = {
    "digits": (1, 8),
    "cifar10": (3, 32),
    "cifar100": (3, 32),
    "tiny_imagenet": (3, 64),
    "fashion_mnist": (1, 28),
}
CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "tiny_imagenet": 200,
           "imagenet200": 200, "boolq": 2, "rte": 2, "qnli": 2, "crema_d": 6,
           "esc50": 50, "fashion_mnist": 10}  # fmt: skip
# Published architectures of the pre-trained checkpoints (their config.json on the hub):
# CvT-13 is transformers' default CvtConfig; BERT-large has 24 layers of width 1024.
ARCHITECTURES = {
    "microsoft/cvt-13": ("cvt", {}),
    "bert-large-uncased": (
        "bert",
        {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
        },
    ),  # fmt: skip
}


@dataclass(frozen=True)
class Inputs:
    """What one example looks like to the model."""

    modality: str
    shape: tuple[int, ...]  # (C, H, W) for images and spectrograms, (L,) for text
    num_classes: int

    def spec(self) -> dict[str, Any]:
        """The ``input_spec`` a data set hands the model builder."""
        if self.modality == "text":
            return {"vocab_size": 30_522, "max_length": self.shape[0]}
        side = self.shape[1] if self.shape[1] == self.shape[2] else self.shape[1:]
        return {"in_channels": self.shape[0], "image_size": side}

    def example(self, device: str | torch.device) -> dict[str, torch.Tensor] | torch.Tensor:
        if self.modality == "text":
            ids = torch.ones((1, *self.shape), dtype=torch.long, device=device)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return torch.zeros((1, *self.shape), device=device)


def inputs_of(cfg: DictConfig) -> Inputs:
    """One example's shape for the run config's data set and model."""
    data, name = cfg.dataset, str(cfg.dataset.id)
    classes = CLASSES.get(name, 2)
    if data.modality == "text":
        length = OmegaConf.select(cfg, "model.tokenizer.max_length")
        if not length:
            raise ConfigError(f"model={cfg.model.id} has no tokenizer.max_length to count at")
        return Inputs("text", (int(length),), classes)
    if data.modality == "audio":
        from lerac.suite.data.spectrogram import SpectrogramSettings

        fields = SpectrogramSettings.__dataclass_fields__
        settings = SpectrogramSettings(**{k: data[k] for k in fields if k in data})
        return Inputs("audio", (1, settings.n_mels, settings.frames), classes)
    channels, side = IMAGE_INPUTS.get(name, (data.get("channels", 3), data.get("image_size")))
    if not side:
        raise ConfigError(f"dataset={name} has no fixed image size to count FLOPs at")
    return Inputs("image", (int(channels), int(side), int(side)), classes)


def architecture(source: str) -> Any:
    """A transformers config for a checkpoint: its fetched config.json, else the table."""
    from transformers import AutoConfig

    from lerac.suite.models.hub import fetched_copy

    for folder in (Path(source).expanduser(), fetched_copy(source)):
        if (folder / "config.json").is_file():
            return AutoConfig.from_pretrained(str(folder))
    if source not in ARCHITECTURES:
        raise ConfigError(f"no architecture known for {source}: fetch it (lerac-fetch) first")
    kind, fields = ARCHITECTURES[source]
    return AutoConfig.for_model(kind, **fields)


def pretrained_model(node: Mapping[str, Any], inputs: Inputs) -> nn.Module:
    """The architecture of a model that loads ``node['pretrained']``, without weights."""
    import transformers

    from lerac.suite.models.hf_image import wrap

    config = architecture(str(node["pretrained"]))
    config.num_labels = inputs.num_classes
    if inputs.modality == "text":
        model = transformers.AutoModelForSequenceClassification.from_config(config)
        return _Logits(model)
    model = transformers.AutoModelForImageClassification.from_config(config)
    size = node.get("resize_to") or getattr(config, "image_size", None)
    return wrap(model, size if size != inputs.shape[-1] else None, config.num_channels)


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        # No attention mask: all ones (as counted) masks nothing, and building one reads
        # values, which the meta device has none of.
        return self.model(input_ids=input_ids).logits


def _rnn_layer_flops(x, w_ih, w_hh, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # CPU LSTMs run as one oneDNN op the counter has no formula for: two matmuls a step.
    return 2 * x[0] * x[1] * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])


def forward_flops(model: nn.Module, example: Any) -> int:
    """FLOPs of one forward pass (``FlopCounterMode`` counts a multiply-add as 2)."""
    extra = {}
    if hasattr(torch.ops.aten, "mkldnn_rnn_layer"):
        extra[torch.ops.aten.mkldnn_rnn_layer] = _rnn_layer_flops
    counter = FlopCounterMode(display=False, custom_mapping=extra)
    with counter:  # with autograd on: the counter's module hooks need grad functions
        model(**example) if isinstance(example, dict) else model(example)
    return counter.get_total_flops()


def build_model(cfg: DictConfig, inputs: Inputs) -> nn.Module:
    from lerac.suite.build import build

    node = OmegaConf.to_container(cfg.model, resolve=True)
    if node.get("pretrained"):
        return pretrained_model(node, inputs)
    return build(cfg.model, num_classes=inputs.num_classes, **inputs.spec())


def training_flops(cfg: DictConfig) -> float:
    """FLOPs of one training example (forward and backward) for a composed run config."""
    inputs = inputs_of(cfg)
    try:  # the meta device: shapes only, no memory
        with torch.device("meta"):
            model = build_model(cfg, inputs).eval()
            flops = forward_flops(model, inputs.example("meta"))
    except (NotImplementedError, RuntimeError):  # needs real values (packed sequences)
        model = build_model(cfg, inputs).eval()
        flops = forward_flops(model, inputs.example("cpu"))
    return float(BACKWARD_FACTOR * flops)
