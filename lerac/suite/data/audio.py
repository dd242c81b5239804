"""What the audio families share: labelled clips -> cached spectrograms -> :class:`Splits`.

Each family (esc50.py, crema_d.py, audio_folder.py) only finds its files, labels and
split; this module turns them into spectrogram tensors that live on the training device
like images (float16 or uint8, see spectrogram.py), with the paper's augmentation on
training batches (audio_augment.py) and a per-batch conversion to float32 on [0, 1].

``input_spec`` is ``in_channels=1`` and ``image_size=(H, W)`` = (mel bins, frames): SepTr
needs both sides for its positional embeddings; CNNs ignore the size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lerac.engine.batches import Splits
from lerac.errors import ConfigError
from lerac.suite.data.audio_augment import build_augment
from lerac.suite.data.base import image_input
from lerac.suite.data.spectrogram import SpectrogramSettings, cached_spectrograms, to_unit


@dataclass
class Clips:
    """Audio files with their class indices, in a fixed order."""

    paths: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)


def group_split(
    groups: Sequence[str], fractions: Sequence[float], seed: int, what: str = "examples"
) -> list[Tensor]:
    """Indices of each part; whole groups go to one part.

    The distinct groups are shuffled with ``seed`` and laid end to end; each goes to the
    part where its middle falls when the parts take their fractions of the examples, so
    with one example per group the sizes are exact up to rounding. Used for CREMA-D's
    70/15/15 split (groups: clips or speakers) and ESC-50's validation part (groups:
    source recordings).
    """
    if abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
        raise ConfigError(f"split fractions {list(fractions)} must be positive and sum to 1")
    names = sorted(set(groups))
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    bounds, total = [], 0.0
    for f in fractions:
        total += f
        bounds.append(total * len(groups))
    parts: list[list[int]] = [[] for _ in fractions]
    taken = 0
    for j in order:
        group = members[names[j]]
        middle = taken + len(group) / 2  # a group goes where most of it falls
        part = next((p for p, bound in enumerate(bounds) if middle < bound), len(parts) - 1)
        parts[part].extend(group)
        taken += len(group)
    if any(not p for p in parts):
        raise ConfigError(
            f"{len(names)} {what} cannot be split into parts of {list(fractions)}: a part would "
            "be empty; add data or change the fractions"
        )
    return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]


def audio_splits(
    name: str,
    clips: Clips,
    parts: Mapping[str, Tensor],
    num_classes: int,
    settings: SpectrogramSettings,
    cache_dir: str | Path,
    augment: Mapping[str, Any] | None,
) -> Splits:
    """Spectrograms of all ``clips`` (one cache file, whatever the split), then the
    ``train``, ``val`` and ``test`` parts by index."""
    if not cache_dir:
        raise ConfigError("dataset.cache_dir is empty; it should be ${paths.cache_dir}")
    specs = cached_spectrograms(name, clips.paths, settings, cache_dir)
    labels = torch.tensor(clips.labels, dtype=torch.long)
    train, val, test = ((specs[parts[s]], labels[parts[s]]) for s in ("train", "val", "test"))
    return Splits(
        train=train,
        val=val,
        test=test,
        num_classes=num_classes,
        input_spec=image_input(1, (settings.n_mels, settings.frames)),
        prepare=to_unit,
        augment=build_augment(augment, num_classes),
    )
