"""The data contract between the suite and the training loop: train/val/test tensors and
a loader that batches them where they live (CPU or GPU memory) with index slices of a
seeded permutation.

Images stay in their stored dtype (uint8 for CIFAR) and are normalized per batch, so a
whole data set fits on the device and no worker processes are needed. The loop only sees
:meth:`Splits.loaders`: three loaders that yield ``(inputs, targets)`` on the training
device. A family too large for memory (ImageNet-200) subclasses :class:`Splits` and
returns streaming loaders with the same interface (``__len__``, ``__iter__``,
``num_examples``, ``state_dict``/``load_state_dict`` for the shuffling order).

Per batch, in order: ``augment`` (training batches only; may change targets, e.g. mix-up
gives soft targets of shape (B, C)), then ``prepare`` (every split: normalize images) or
``trim`` (text: cut the padding). Both run on the device, on whole batches. Per-example
facts the host needs for a batch (a text's token count, to know how far to cut) are
computed once from the stored inputs and stay in CPU memory (``host_facts``), so reading
them never waits for the GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

Inputs = Any  # a tensor, or a dict of tensors with the same first dimension
BatchTransform = Callable[[Inputs, Tensor], tuple[Inputs, Tensor]]


def take(inputs: Inputs, index: Tensor) -> Inputs:
    if isinstance(inputs, dict):
        return {k: v[index] for k, v in inputs.items()}
    return inputs[index]


def move(inputs: Inputs, device: torch.device | str) -> Inputs:
    if isinstance(inputs, dict):
        return {k: v.to(device) for k, v in inputs.items()}
    return inputs.to(device)


def count(inputs: Inputs) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


@dataclass
class Splits:
    """A data set ready to train on.

    ``input_spec`` is what the model needs to know about the inputs, one small spec per
    modality (``lerac.suite.data.base``: image, text); the suite passes a model's
    constructor the keys of it that the constructor names.
    ``mean``/``std`` (shape (1, C, 1, 1)) normalize image batches; None leaves inputs as
    they are. ``prepare`` replaces that normalization when set (e.g. spectrograms to
    [0, 1]). ``trim(inputs, multiple)`` replaces both for inputs of variable width (text):
    it cuts a batch to its longest example, rounded up to ``multiple`` (the loaders'
    ``pad_multiple``: > 1 under torch.compile, so it sees few shapes). ``host_facts(inputs)``
    gives per-example CPU tensors (name -> tensor) that the loaders cut with each batch
    and add to its inputs before ``trim``, which takes them out (the model never sees
    them). ``augment`` acts on training batches only. ``artifacts`` are files the run
    keeps (name -> text), e.g. an LSTM's vocabulary, so its predictions can be reproduced.
    """

    train: tuple[Inputs, Tensor]
    val: tuple[Inputs, Tensor]
    test: tuple[Inputs, Tensor]
    num_classes: int
    input_spec: dict[str, Any] = field(default_factory=dict)
    mean: Tensor | None = None
    std: Tensor | None = None
    prepare: Callable[[Inputs], Inputs] | None = None
    augment: BatchTransform | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    trim: Callable[[Inputs, int], Inputs] | None = None
    host_facts: Callable[[Inputs], dict[str, Tensor]] | None = None

    def normalizer(
        self, device: torch.device | str = "cpu", pad_multiple: int = 1
    ) -> Callable[[Inputs], Inputs]:
        """A per-batch transform with the statistics already on ``device`` (no copy per batch)."""
        if self.trim is not None:
            return functools.partial(self.trim, multiple=pad_multiple)
        if self.prepare is not None:
            return self.prepare
        if self.mean is None:
            return lambda x: x
        mean, std = self.mean.to(device), self.std.to(device)
        return lambda x: (x.float() - mean) / std

    def sizes(self) -> dict[str, int]:
        return {name: count(getattr(self, name)[0]) for name in ("train", "val", "test")}

    def loaders(
        self,
        batch_size: int,
        device: torch.device | str,
        seed: int = 0,
        limit_train_batches: int | None = None,
        limit_eval_batches: int | None = None,
        pad_multiple: int = 1,
    ) -> tuple[Any, Any, Any]:
        """Train (shuffled, augmented), validation and test loaders on ``device``;
        ``pad_multiple``: the width multiple of variable-width batches (see ``trim``)."""
        normalize = self.normalizer(device, pad_multiple)
        return tuple(
            self.loader(
                split,
                batch_size,
                device,
                shuffle=split == "train",
                seed=seed,
                transform=normalize,
                augment=self.augment if split == "train" else None,
                max_batches=limit_train_batches if split == "train" else limit_eval_batches,
            )
            for split in ("train", "val", "test")
        )

    def loader(self, split: str, batch_size: int, device: torch.device | str, **options) -> Any:
        """One split's loader; a family that streams from disk overrides this."""
        inputs, targets = getattr(self, split)
        host = {} if self.host_facts is None else self.host_facts(inputs)
        return TensorLoader(
            move(inputs, device), targets.to(device), batch_size, host=host, **options
        )


class EpochBatches:
    """The batching rules every loader shares: a new permutation per training epoch drawn
    from a generator seeded once (same seed, same batches), a lone last training example
    dropped (batch norm cannot train on it; evaluation keeps every example), ``max_batches``
    per epoch (smoke tests), and per batch ``augment`` (training, stored dtype) then
    ``transform`` (inputs). Subclasses say where the examples come from."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        transform: Callable[[Inputs], Inputs] | None = None,
        max_batches: int | None = None,
        augment: BatchTransform | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.transform = transform or (lambda x: x)
        self.augment = augment
        full, rest = divmod(n, batch_size)
        batches = full + (1 if rest > (1 if shuffle else 0) else 0)
        self.num_batches = min(batches, max_batches) if max_batches else batches

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_examples(self) -> int:
        return min(self.n, self.num_batches * self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """The shuffling generator's state: restoring it replays the same epoch orders."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def epoch_order(self) -> Tensor:
        """This epoch's example order (on the CPU)."""
        return (
            torch.randperm(self.n, generator=self.generator)
            if self.shuffle
            else torch.arange(self.n)
        )

    def finish(self, inputs: Inputs, targets: Tensor) -> tuple[Inputs, Tensor]:
        if self.augment is not None:
            inputs, targets = self.augment(inputs, targets)
        return self.transform(inputs), targets


class TensorLoader(EpochBatches):
    """Batches of (normalized inputs, targets) from tensors already on the target device,
    cut by index from this epoch's order (rules in :class:`EpochBatches`). ``host``: CPU
    tensors of per-example facts, cut by the same order on the CPU and added to each
    batch's inputs (a dict) before ``transform``."""

    def __init__(
        self,
        inputs: Inputs,
        targets: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        host: dict[str, Tensor] | None = None,
        **rules: Any,
    ) -> None:
        super().__init__(len(targets), batch_size, shuffle, seed, **rules)
        self.inputs, self.targets, self.host = inputs, targets, host or {}

    def __iter__(self) -> Iterator[tuple[Inputs, Tensor]]:
        host_order = self.epoch_order()
        order = host_order.to(self.targets.device)
        for b in range(self.num_batches):
            cut = slice(b * self.batch_size, (b + 1) * self.batch_size)
            index = order[cut]
            inputs = take(self.inputs, index)
            if self.host:
                inputs = inputs | take(self.host, host_order[cut])
            yield self.finish(inputs, self.targets[index])
