"""Curriculum by Smoothing (Sinha et al. 2020): a Gaussian blur of activations that fades.

sigma(e) = sigma_0 * d ** floor(e / u) for epoch e counted from 0, as the released CBS code
does it (pairlab/CBS, resnet.py ``get_new_kernels``).

Where: the outputs of the modules a model lists in ``cbs_sites() -> [(module, layout)]``
(``nchw``, ``nhwc``: blur over H and W; ``nlc``: along L); any other model gets every
``nn.Conv2d`` larger than 1x1, before its normalisation (the released placement for
ResNets). How: each site gets two buffers (``cbs_kernel``, ``cbs_sigma``) and a forward
hook; buffers are not parameters, so LeRaC's layer finder sees the same layers, and a
new sigma rewrites the kernel in place, so the model stays the same object for the
optimizer, checkpoints and torch.compile. The blur is depthwise and zero padded; up to
``SEPARABLE_ABOVE`` taps it is one 2D pass, above it two 1D passes. Kernel size: 3 taps
by default (pairlab/CBS ``--kernel_size``), or sized from sigma_0 (``kernel_size=None``);
docs/cbs.md has the sites per model and the reasons.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lerac.errors import ConfigError

LAYOUTS = ("nchw", "nhwc", "nlc")
# Taps per axis when none is given: the released CBS code's default (pairlab/CBS,
# arguments.py, ``--kernel_size``).
DEFAULT_KERNEL_SIZE = 3
# Names of what a site module gains: two buffers (in its state_dict) and a plain attribute.
KERNEL, SIGMA, LAYOUT = "cbs_kernel", "cbs_sigma", "cbs_layout"


def gaussian_kernel1d(sigma: float, size: int) -> Tensor:
    """The Gaussian with std ``sigma`` sampled at the ``size`` integer offsets around 0,
    normalised to sum 1; a unit impulse when sigma is 0 (or too small to reach a
    neighbour)."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    if sigma <= 0:
        return (offsets == 0).to(torch.float32)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return (weights / weights.sum()).to(torch.float32)


def auto_kernel_size(sigma: float) -> int:
    """An odd size covering +-2 sigma, at least 3."""
    return max(3, 2 * math.ceil(2 * sigma) + 1)


# Up to this size one 2D depthwise pass beats two 1D passes: the blur is memory-bound and
# each pass reads and writes the whole map (CPU, 64x64x32x32, forward + backward: 2D
# 0.62 s vs separable 1.2 s at 5 taps, 0.74 vs 1.2 s at 9). Larger kernels go separable.
SEPARABLE_ABOVE = 7


def smooth(x: Tensor, kernel: Tensor, layout: str) -> Tensor:
    """Blur ``x`` over its spatial axes with the 1D ``kernel`` (odd length; in 2D its outer
    product), depthwise, zero padding, all channels in one call."""
    size = kernel.numel()
    pad = size // 2
    kernel = kernel.to(x.dtype)
    if layout == "nlc":  # (N, L, C) -> (N, C, L), a strided view
        y = x.transpose(1, 2)
        c = y.shape[1]
        y = F.conv1d(y, kernel.view(1, 1, size).expand(c, 1, size), None, 1, pad, 1, c)
        return y.transpose(1, 2)
    # nhwc -> nchw is a view in channels_last memory format, which conv2d takes as it is.
    y = x.permute(0, 3, 1, 2) if layout == "nhwc" else x
    c = y.shape[1]
    if size <= SEPARABLE_ABOVE:
        square = torch.outer(kernel, kernel).view(1, 1, size, size).expand(c, 1, size, size)
        y = F.conv2d(y, square, None, 1, pad, 1, c)
    else:
        y = F.conv2d(y, kernel.view(1, 1, size, 1).expand(c, 1, size, 1), None, 1, (pad, 0), 1, c)
        y = F.conv2d(y, kernel.view(1, 1, 1, size).expand(c, 1, 1, size), None, 1, (0, pad), 1, c)
    return y.permute(0, 2, 3, 1) if layout == "nhwc" else y


def _smooth_output(module: nn.Module, _args: Any, output: Any) -> Any:
    """Forward hook of a site: its output, blurred. A module-level function reading the
    site's own buffers (not a closure), so copies and pickles of the model keep working."""
    kernel, layout = getattr(module, KERNEL), getattr(module, LAYOUT)
    if isinstance(output, Tensor):
        return smooth(output, kernel, layout)
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return (smooth(output[0], kernel, layout), *output[1:])  # (hidden states, extras)
    raise TypeError(
        f"CBS site {type(module).__name__} returned {type(output).__name__}; a site must "
        "return a tensor (or a tuple whose first item is one): list another module in cbs_sites()"
    )


def smoothing_sites(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Where CBS smooths ``model``: its ``cbs_sites()``, else every Conv2d with a kernel
    larger than 1x1 (see the module docstring)."""
    if hasattr(model, "cbs_sites"):
        sites = list(model.cbs_sites())
        source = f"{type(model).__name__}.cbs_sites()"
    else:
        sites = [
            (m, "nchw")
            for m in model.modules()
            if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1
        ]
        source = "the CNN rule (every Conv2d with a kernel above 1x1)"
    if not sites:
        raise ConfigError(
            f"CBS has no placement for {type(model).__name__}: {source} found no site. "
            "Give the model a cbs_sites() method returning [(module, 'nchw'|'nhwc'|'nlc')], "
            "or use a regime without smoothing (e.g. regime=lerac)"
        )
    for module, layout in sites:
        if not isinstance(module, nn.Module) or layout not in LAYOUTS:
            raise ConfigError(
                f"{source} returned ({type(module).__name__}, {layout!r}); each site must be "
                f"(an nn.Module of the model, one of {', '.join(LAYOUTS)})"
            )
    return sites


def attach_smoothing(model: nn.Module, kernel_size: int) -> list[nn.Module]:
    """Give every site of ``model`` its kernel buffers and the hook that applies them
    (at sigma 0, the identity, until :func:`set_sigma`); sites that already have them are
    left as they are (idempotent). Returns the site modules.

    The state lives in buffers of the site itself, not in a child module: a child would
    be run a second time by a site that is an nn.Sequential (it calls every child) and
    would shift its negative indices.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"kernel_size must be a positive odd number, got {kernel_size}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    modules = []
    for module, layout in smoothing_sites(model):
        if not hasattr(module, KERNEL):
            module.register_buffer(KERNEL, gaussian_kernel1d(0.0, kernel_size).to(device))
            module.register_buffer(SIGMA, torch.zeros((), device=device))
            setattr(module, LAYOUT, layout)
            module.register_forward_hook(_smooth_output)
        modules.append(module)
    return modules


def smoothed_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that carry CBS kernels."""
    return [m for m in model.modules() if hasattr(m, KERNEL)]


@torch.no_grad()
def set_sigma(sites: list[nn.Module], sigma: float) -> None:
    """Rewrite every site's kernel in place for ``sigma`` (same size, same storage)."""
    for module in sites:
        kernel = getattr(module, KERNEL)
        kernel.copy_(gaussian_kernel1d(float(sigma), kernel.numel()))
        getattr(module, SIGMA).fill_(float(sigma))


def check_smoothing(
    sigma: float, decay: float, decay_every: int, kernel_size: int | None, prefix: str = ""
) -> None:
    """Refuse a schedule the smoothing cannot run. Messages name the Python arguments; the
    suite passes ``prefix="regime."`` so that they name its config keys."""
    p = prefix
    if not sigma > 0:
        raise ConfigError(f"{p}sigma must be positive, got {sigma}")
    if not 0 < decay <= 1:
        raise ConfigError(
            f"{p}decay must be in (0, 1] (sigma only shrinks; the kernel is sized for "
            f"sigma_0), got {decay}"
        )
    if not isinstance(decay_every, int) or decay_every <= 0:
        raise ConfigError(f"{p}decay_every must be a positive number of epochs, got {decay_every}")
    if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
        raise ConfigError(f"{p}kernel_size must be a positive odd number, got {kernel_size}")


class SmoothingCurriculum:
    """The CBS schedule and its application to a model, shared by the ``cbs`` and
    ``cbs_lerac`` regimes.

    Args:
        sigma: sigma_0, the starting std of the Gaussian in activation pixels/tokens.
        decay: d, the factor applied every ``decay_every`` epochs (0 < d <= 1).
        decay_every: u, epochs between two decays.
        kernel_size: odd taps per axis (3, the released code's default); None sizes it
            from sigma_0: max(3, 2 * ceil(2 * sigma_0) + 1).
    """

    def __init__(
        self,
        sigma: float,
        decay: float,
        decay_every: int,
        kernel_size: int | None = DEFAULT_KERNEL_SIZE,
    ) -> None:
        check_smoothing(sigma, decay, decay_every, kernel_size)
        self.sigma_0, self.decay, self.decay_every = float(sigma), float(decay), decay_every
        self.kernel_size = kernel_size or auto_kernel_size(self.sigma_0)
        self.current: float | None = None

    def sigma_at(self, epoch: int) -> float:
        """sigma(e) = sigma_0 * d ** floor(e / u), e counted from 0."""
        return self.sigma_0 * self.decay ** (epoch // self.decay_every)

    def apply(self, epoch: int, model: nn.Module) -> None:
        """Attach the smoothing (first call) and set every site to sigma(epoch)."""
        self.current = self.sigma_at(epoch)
        set_sigma(attach_smoothing(model, self.kernel_size), self.current)
