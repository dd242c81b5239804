"""What the probes measure on one layer's output: its feature maps, their entropy over
positions, distances between two epochs' maps and the weights' relative change.

A layer's output is read as maps of shape (examples, channels, positions):

- a convolution, batch/instance/group norm: channels are dim 1, the positions the dims
  after it (H x W for a 2-D conv; the output of a conv is its own, before the BN after it);
- any other layer with an output of 3 or more dims: the dim matching the layer's width
  (a size of one of its parameters) is the channel dim, the last one when both ends match;
  the positions are the dims between batch and channels (tokens of a transformer, H x W
  of a channels-last layer);
- an output of 2 dims (a classifier head), or a single position: no maps, no entropy.

Entropy of one map (paper supplementary, Table 7; the paper gives no formula, the
choice is explained in docs/analysis.md): the softmax over the map's P positions, its Shannon
entropy divided by ln P, so a constant map has 1 and a map with one dominant position
tends to 0. The softmax depends on the activations' scale, so a scale-free variant takes
the softmax of the map standardised over its positions (mean 0, std 1); the maps' std
over positions is reported beside both.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

CHANNELS_FIRST = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)


def first_tensor(output: Any) -> Tensor | None:
    """The floating-point tensor a module returned (the first one of a tuple, list, dict or
    HF ModelOutput: an LSTM's sequence, an attention block's hidden states)."""
    if isinstance(output, Tensor):
        return output if output.is_floating_point() else None
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def channel_dim(module: nn.Module, params: tuple[Tensor, ...], output: Tensor) -> int | None:
    """Which dim of ``output`` holds the channels (module docstring); None without maps."""
    if output.ndim < 3:
        return None
    if isinstance(module, CHANNELS_FIRST):
        return 1
    widths = {size for p in params for size in p.shape}
    if output.shape[-1] in widths or output.shape[1] not in widths:
        return output.ndim - 1
    return 1


def feature_maps(output: Tensor, channels: int) -> Tensor:
    """``output`` as (examples, channels, positions), float32."""
    if channels != 1:  # channels last: the positions are the dims in between
        output = output.movedim(channels, 1)
    return output.float().flatten(2)


def map_entropy(maps: Tensor) -> Tensor:
    """Normalised entropy of the softmax over the last dim (positions), one per map, in
    [0, 1]; NaN for a single position."""
    positions = maps.shape[-1]
    log_p = torch.log_softmax(maps.float(), dim=-1)
    entropy = -(log_p.exp() * log_p).sum(dim=-1)
    return entropy / math.log(positions) if positions > 1 else torch.full_like(entropy, math.nan)


def standardised(maps: Tensor) -> Tensor:
    """Each map with mean 0 and std 1 over its positions; a constant map becomes zeros."""
    maps = maps.float()
    centred = maps - maps.mean(dim=-1, keepdim=True)
    std = centred.pow(2).mean(dim=-1, keepdim=True).sqrt()
    return torch.where(std > 0, centred / std.clamp_min(1e-30), torch.zeros_like(centred))


def sample_index(numel: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` distinct positions of ``numel``, one drawn uniformly from each of
    ``count`` equal strata (all positions when ``count >= numel``), in increasing order."""
    if count >= numel:
        return torch.arange(numel)
    stride = numel // count
    offsets = torch.randint(0, stride, (count,), generator=generator)
    return torch.arange(count) * stride + offsets


def distances(values: Tensor, reference: Tensor, scale: float, examples: int) -> dict[str, Any]:
    """How far ``values`` (one epoch's stored map values) are from ``reference`` (the same
    positions at another epoch).

    ``distance``: the root mean square over examples of the Euclidean distance between an
    example's whole maps, estimated from the stored values (each stands for ``scale``
    values of the layer's output); ``relative``: ||values - reference|| / ||reference||;
    ``unit``: the distance between the two as unit vectors (in [0, 2]); ``snr_db``:
    10 log10(||reference||^2 / ||values - reference||^2), None when they are equal."""
    values, reference = values.double(), reference.double()
    diff = (values - reference).pow(2).sum().item()
    ref = reference.pow(2).sum().item()
    own = values.pow(2).sum().item()
    unit = None
    if ref > 0 and own > 0:
        unit = (values / math.sqrt(own) - reference / math.sqrt(ref)).norm().item()
    return {
        "distance": math.sqrt(diff * scale / examples),
        "relative": math.sqrt(diff / ref) if ref > 0 else None,
        "unit": unit,
        "snr_db": 10 * math.log10(ref / diff) if diff > 0 and ref > 0 else None,
    }


def relative_change(weights: Tensor, before: Tensor) -> float | None:
    """||weights - before|| / ||before||; None when ``before`` is all zeros."""
    norm = before.double().norm().item()
    if norm == 0:
        return None
    return (weights.double() - before.double()).norm().item() / norm


def flat_weights(params: tuple[Tensor, ...]) -> Tensor:
    """A layer's parameters as one float32 vector on the CPU (a copy)."""
    return torch.cat([p.detach().float().flatten() for p in params]).cpu()
