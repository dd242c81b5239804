"""CREMA-D, audio only (Cao et al. 2014; paper 4.1): 7,442 clips of 91 actors, 6 emotions.

Layout: ``path`` holds the wav files (or an ``AudioWAV/`` folder of them, as in the
public repository), named ``<actor>_<sentence>_<emotion>_<level>.wav``, e.g.
``1001_DFA_ANG_XX.wav``. Classes: ANG, DIS, FEA, HAP, NEU, SAD (0-5, in that order).

Split (paper 4.1): 70% train, 15% validation, 15% test, drawn with ``split_seed``.
``split_by=clip`` (default) draws clips, as the paper describes ("dividing the set of
audio samples"), so an actor's voice appears in every split; ``split_by=speaker`` draws
actors instead (about 70/15/15 of the clips), which tests on unseen speakers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lerac.engine.batches import Splits
from lerac.errors import ConfigError, DataNotFoundError
from lerac.suite.data.audio import Clips, audio_splits, group_split
from lerac.suite.data.spectrogram import SpectrogramSettings

EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
SPLIT_BY = ("clip", "speaker")


def find_clips(path: str | Path) -> tuple[Clips, list[str]]:
    """The clips under ``path`` with their emotion classes, and each clip's actor."""
    root = Path(path)
    if (root / "AudioWAV").is_dir():
        root = root / "AudioWAV"
    files = sorted(root.glob("*.wav")) if root.is_dir() else []
    if not files:
        raise DataNotFoundError(
            f"CREMA-D not found: no .wav files in {root}; put the clips (AudioWAV/ of "
            "https://github.com/CheyneyComputerScience/CREMA-D) there or point dataset.path "
            "at their folder"
        )
    labels, actors = [], []
    for file in files:
        parts = file.stem.split("_")
        if len(parts) != 4 or parts[2] not in EMOTIONS:
            raise DataNotFoundError(
                f"{file} is not named <actor>_<sentence>_<emotion>_<level>.wav with an emotion "
                f"of {', '.join(EMOTIONS)}; remove it from {root}"
            )
        labels.append(EMOTIONS.index(parts[2]))
        actors.append(parts[0])
    return Clips(files, labels), actors


def load_crema_d(
    path: str,
    cache_dir: str,
    split_by: str = "clip",
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    split_seed: int = 0,
    augment: Mapping[str, Any] | None = None,
    **spectrogram: Any,
) -> Splits:
    if split_by not in SPLIT_BY:
        raise ConfigError(f"dataset.split_by='{split_by}' is not an option: use clip or speaker")
    clips, actors = find_clips(path)
    groups = actors if split_by == "speaker" else [p.name for p in clips.paths]
    train, val, test = group_split(groups, tuple(fractions), split_seed, f"{split_by}s")
    return audio_splits(
        "crema_d",
        clips,
        {"train": train, "val": val, "test": test},
        num_classes=len(EMOTIONS),
        settings=SpectrogramSettings(**spectrogram),
        cache_dir=cache_dir,
        augment=augment,
    )
