"""Training FLOPs per example of a model at its data set's input size, for the grid's plan.

:func:`training_flops` builds the model of a composed run config the one way training
builds it (:func:`lerac.suite.build.build_model`, given the data set's classes and input
spec), on the meta device (no memory, no weights) and with pre-trained checkpoints built
from their architecture alone (:func:`lerac.suite.models.hub.architecture_only`: the
fetched config.json, else the published configuration). It runs one forward pass of one
example at the real input size under ``torch.utils.flop_counter.FlopCounterMode`` and
counts a training step as 3 forward passes (the backward pass costs about twice the
forward: a gradient for the inputs and one for the weights of each matmul and conv).
Text models are counted at their tokenizer's ``max_length`` (an upper bound: batches are
trimmed to their longest text), the spectrogram models at the data set's (mel bins,
frames), vision models at the data set's image shape (``dataset.facts``; a model that
resizes its inputs, as the pre-trained CvT-13 does to 224 px, counts at its own size).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lerac.errors import ConfigError
from lerac.suite.build import build_model
from lerac.suite.data.facts import dataset_facts
from lerac.suite.models.hub import architecture_only

BACKWARD_FACTOR = 3  # forward + backward = 3 forward passes
# A word vocabulary is built from the training split; an embedding lookup costs no FLOPs,
# so any size counts the same.
NOMINAL_VOCABULARY = 30_522


@dataclass(frozen=True)
class Inputs:
    """What one example looks like to the model."""

    modality: str
    shape: tuple[int, ...]  # (C, H, W) for images and spectrograms, (L,) for text
    num_classes: int
    vocab_size: int | None = None  # text: the tokenizer's (None: the pre-trained model's own)

    def spec(self) -> dict[str, Any]:
        """The ``input_spec`` a data set hands the model builder."""
        if self.modality == "text":
            return {"vocab_size": self.vocab_size, "max_length": self.shape[0]}
        side = self.shape[1] if self.shape[1] == self.shape[2] else list(self.shape[1:])
        return {"in_channels": self.shape[0], "image_size": side}

    def example(self, model: nn.Module, device: str | torch.device) -> Any:
        if self.modality != "text":
            return torch.zeros((1, *self.shape), device=device)
        ids = torch.ones((1, *self.shape), dtype=torch.long, device=device)
        example = {"input_ids": ids}
        # A mask of ones masks nothing: given only to a model that requires it, since a
        # transformer builds its extended mask by reading values the meta device lacks.
        required = inspect.signature(model.forward).parameters.get("attention_mask")
        if required is not None and required.default is inspect.Parameter.empty:
            example["attention_mask"] = torch.ones_like(ids)
        return example


def inputs_of(cfg: DictConfig) -> Inputs:
    """One example's shape for the run config's data set and model."""
    data, facts = cfg.dataset, dataset_facts(cfg)
    classes = facts.need("classes")
    if data.modality == "text":
        tokenizer = OmegaConf.select(cfg, "model.tokenizer") or {}
        if not tokenizer.get("max_length"):
            raise ConfigError(f"model={cfg.model.id} has no tokenizer.max_length to count at")
        vocab = tokenizer.get("vocab_size")
        if tokenizer.get("kind") != "pretrained":
            vocab = vocab or NOMINAL_VOCABULARY
        return Inputs("text", (int(tokenizer.max_length),), classes, vocab)
    if data.modality == "audio":
        from lerac.suite.data.spectrogram import SpectrogramSettings

        fields = SpectrogramSettings.__dataclass_fields__
        settings = SpectrogramSettings(**{k: data[k] for k in fields if k in data})
        return Inputs("audio", (1, settings.n_mels, settings.frames), classes)
    return Inputs("image", facts.need("image_shape"), classes)


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


def flops_on(cfg: DictConfig, device: str) -> float:
    """Training FLOPs of one example with the model and the example on ``device``."""
    inputs = inputs_of(cfg)
    with torch.device(device), architecture_only():  # checkpoints: architecture, no weights
        model = build_model(cfg.model, inputs.num_classes, inputs.spec()).eval()
        return float(BACKWARD_FACTOR * forward_flops(model, inputs.example(model, device)))


def training_flops(cfg: DictConfig) -> float:
    """FLOPs of one training example (forward and backward) for a composed run config:
    on the meta device (shapes only, no memory), else on the CPU for a model whose
    forward pass needs real values (the LSTM's packed sequences)."""
    try:
        return flops_on(cfg, "meta")
    except (NotImplementedError, RuntimeError):
        return flops_on(cfg, "cpu")
