"""The fast path of the training loop, chosen by ``trainer.*`` (docs/performance.md has
every option and why):

    accel = Accelerator.from_settings(settings, device)
    with accel.backend_flags():                  # cuDNN autotuning and TF32, restored after
        model = accel.prepare(model)             # channels_last and compile, in place
        optimizer = accel.prepare_optimizer(optimizer)  # maybe a Fused<Optimizer>
        with accel.autocast():                   # bf16 in the step and evaluation
            logits = model(inputs)

TF32 follows the precision (``fp32`` is IEEE float32 everywhere); autotuning stays off
under ``trainer.deterministic``; channels_last acts on CUDA only (torch 2.14.1 computes
wrong NHWC weight gradients on the CPU for small 1x1 stride-2 convolutions); under compile
variable-width inputs are padded to :data:`PAD_MULTIPLE` tokens so the compiler sees a few
widths, and rates reach the compiled update as tensors, so LeRaC's per-step rates cause
no recompiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from lerac.engine.optim import fuse_groups, unsupported
from lerac.errors import ConfigError

PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16}  # the autocast dtype
TF32 = {"fp32": False, "tf32": True, "bf16": True}  # TensorFloat-32 allowed on CUDA
AUTO_TRUE_FALSE = ("auto", "true", "false")
# Under compile: text widths padded to a multiple of this many tokens, and the graphs
# Dynamo may keep per function (Dynamo's default, 8, is below a text run's bounded count).
PAD_MULTIPLE = 64
RECOMPILE_LIMIT = 64


def check_fast_path(
    precision: str, channels_last: Any, compile: Any, fused_groups: Any = "auto"
) -> None:
    """Refuse unknown values before any data is read."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision='{precision}' is not an option: use {', '.join(PRECISIONS)}"
        )
    for name, value in (("channels_last", channels_last), ("fused_groups", fused_groups)):
        if str(value).lower() not in AUTO_TRUE_FALSE:
            raise ConfigError(f"trainer.{name}={value!r} is not an option: use auto, true or false")
    if not isinstance(compile, (bool, str)) or compile == "":
        raise ConfigError(
            f"trainer.compile={compile!r} is not an option: use false, true or a torch.compile "
            "backend name (e.g. aot_eager)"
        )


def compile_backend(compile: bool | str) -> str | None:
    """The torch.compile backend ``trainer.compile`` asks for, or None."""
    if compile is True or str(compile).lower() == "true":
        return "inductor"
    if compile is False or str(compile).lower() == "false":
        return None
    return str(compile)


def to_channels_last(model: nn.Module) -> nn.Module:
    """NHWC 4D weights, in place: the Parameter objects (and so param groups) stay."""
    return model.to(memory_format=torch.channels_last)


def backend_state(compiling: bool) -> dict[str, Any]:
    """The global switches :meth:`Accelerator.backend_flags` sets. TF32 through the flags
    torch 2.11 and later read alike (``allow_tf32``); Dynamo's limit only when compiling
    (importing Dynamo takes seconds)."""
    state = {
        "benchmark": torch.backends.cudnn.benchmark,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
    }
    if compiling:
        from torch import _dynamo

        state["recompile_limit"] = _dynamo.config.recompile_limit
    return state


def restore_backend_state(saved: dict[str, Any]) -> None:
    torch.backends.cudnn.benchmark = saved["benchmark"]
    torch.backends.cuda.matmul.allow_tf32 = saved["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = saved["cudnn_tf32"]
    if "recompile_limit" in saved:
        torch._dynamo.config.recompile_limit = saved["recompile_limit"]


class Accelerator:
    """Applies the fast-path settings to a model and an optimizer on ``device``.

    ``backend`` overrides the torch.compile backend (tests pass a compile counter);
    ``deterministic`` (``trainer.deterministic``) keeps cuDNN autotuning off.
    """

    def __init__(
        self,
        device: torch.device | str,
        precision: str = "fp32",
        compile: bool | str = False,
        channels_last: Any = "auto",
        fused_groups: Any = "auto",
        backend: Any = None,
        deterministic: bool = False,
    ) -> None:
        check_fast_path(precision, channels_last, compile, fused_groups)
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.deterministic = bool(deterministic)
        self.backend = backend if backend is not None else compile_backend(compile)
        # The width multiple variable-width inputs are padded to (1: cut to the longest).
        self.pad_multiple = PAD_MULTIPLE if self.backend is not None else 1
        self.channels_last = str(channels_last).lower()
        fused = str(fused_groups).lower()
        self.fused_groups = fused == "true" or (fused == "auto" and self.device.type == "cuda")

    @classmethod
    def from_settings(cls, settings: Any, device: torch.device | str) -> Accelerator:
        """From a :class:`lerac.engine.loop.TrainerSettings` (or any object with its fields)."""
        return cls(
            device,
            precision=getattr(settings, "precision", "fp32"),
            compile=getattr(settings, "compile", False),
            channels_last=getattr(settings, "channels_last", "auto"),
            fused_groups=getattr(settings, "fused_groups", "auto"),
            deterministic=getattr(settings, "deterministic", False),
        )

    def uses_channels_last(self, model: nn.Module) -> bool:
        if self.channels_last == "false" or not any(
            isinstance(m, nn.Conv2d) for m in model.modules()
        ):
            return False
        if self.device.type != "cuda":
            if self.channels_last == "true":
                warnings.warn(
                    "trainer.channels_last=true is ignored on the CPU (wrong NHWC gradients "
                    "there, see lerac/engine/accel.py); it applies on CUDA",
                    stacklevel=2,
                )
            return False
        return True

    def autocast(self) -> Any:
        """The autocast context of ``trainer.precision`` (a no-op for fp32)."""
        if self.dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)

    @contextmanager
    def backend_flags(self) -> Iterator[None]:
        """Backend switches for the run's duration: cuDNN autotuning (CUDA, unless
        deterministic), TensorFloat-32 per precision, and under compile Dynamo's recompile
        limit; each comes back as it was when the block ends."""
        saved = backend_state(self.backend is not None)
        torch.backends.cudnn.benchmark = not self.deterministic and (
            saved["benchmark"] or self.device.type == "cuda"
        )
        torch.backends.cuda.matmul.allow_tf32 = TF32[self.precision]
        torch.backends.cudnn.allow_tf32 = TF32[self.precision]
        if self.backend is not None:
            torch._dynamo.config.recompile_limit = max(RECOMPILE_LIMIT, saved["recompile_limit"])
        try:
            yield
        finally:
            restore_backend_state(saved)

    def prepare(self, model: nn.Module) -> nn.Module:
        """The same module, set up for the fast path (parameters keep their identity)."""
        if self.uses_channels_last(model):
            to_channels_last(model)
        if self.backend is not None:
            model.compile(backend=self.backend)
        return model

    def prepare_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """The optimizer to train with: this one, or its fused (and, under compile, compiled)
        subclass built from the same groups."""
        if not (self.fused_groups or self.backend is not None):
            return optimizer
        reason = unsupported(optimizer)
        if reason:
            warnings.warn(f"{reason}; the optimizer keeps its own step", stacklevel=2)
            return optimizer
        return fuse_groups(optimizer, compile_backend=self.backend)
