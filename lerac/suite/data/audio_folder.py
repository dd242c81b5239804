"""Anyone's labelled clips, no code needed: ``dataset=audio_folder dataset.path=DIR``.

Layout: ``DIR/train/<class>/*``, ``DIR/test/<class>/*`` and optionally ``DIR/val/<class>/*``
(otherwise ``val_fraction`` of train, drawn with ``split_seed``); files ending in .wav,
.flac or .ogg (any case), other files are ignored. Classes are train's folder names in
sorted order; val and test may not name a class train lacks.

Defaults that follow the data: ``sample_rate`` = the rate most files have (the others are
resampled), ``clip_seconds`` = the longest clip, at most ``max_clip_seconds`` (shorter
clips are padded with silence, longer ones clipped). STFT settings default to ESC-50's.
A file that does not decode ends the run with its path named.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lerac.engine.batches import Splits
from lerac.errors import ConfigError, DataNotFoundError, first_line
from lerac.suite.data.audio import Clips, audio_splits
from lerac.suite.data.base import hold_out
from lerac.suite.data.spectrogram import AUDIO_SUFFIXES, AudioDecodeError, SpectrogramSettings


def list_split(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """Audio files under ``folder/<class>/`` and their class names."""
    names = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if classes is not None:
        extra = sorted(set(names) - set(classes))
        if extra:
            raise ConfigError(
                f"{folder} has class folders that train/ lacks: {', '.join(extra)}; "
                "add them to train/ or remove them"
            )
    files, labels = [], []
    for name in names:
        for file in sorted((folder / name).rglob("*")):
            if file.is_file() and file.suffix.lower() in AUDIO_SUFFIXES:
                files.append(file)
                labels.append(name)
    if not files:
        raise DataNotFoundError(
            f"no audio files (.wav, .flac, .ogg) in {folder}/<class>/; check dataset.path"
        )
    return files, labels


def probe(files: list[Path]) -> list[tuple[int, float]]:
    """(sample rate, seconds) of every file, from its header."""
    import soundfile

    info = []
    for file in files:
        try:
            meta = soundfile.info(str(file))
        except Exception as err:  # libsndfile's errors have several types across versions
            raise AudioDecodeError(
                f"could not decode {file} ({first_line(err)}); replace or remove the file "
                "(wav, flac or ogg)"
            ) from err
        info.append((meta.samplerate, meta.frames / meta.samplerate))
    return info


def load_audio_folder(
    path: str | None,
    cache_dir: str,
    sample_rate: int | None = None,
    clip_seconds: float | None = None,
    max_clip_seconds: float = 10.0,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    augment: Mapping[str, Any] | None = None,
    **spectrogram: Any,
) -> Splits:
    if not path:
        raise ConfigError("dataset=audio_folder needs its folder: add dataset.path=DIR")
    root = Path(path)
    for needed in ("train", "test"):
        if not (root / needed).is_dir():
            raise DataNotFoundError(
                f"{root / needed} is missing; dataset.path=DIR needs DIR/train/<class>/ and "
                "DIR/test/<class>/ (DIR/val/<class>/ optional)"
            )
    train_files, train_names = list_split(root / "train")
    classes = sorted(set(train_names))
    parts = {"train": (train_files, train_names)}
    for split in ("val", "test"):
        if (root / split).is_dir():
            parts[split] = list_split(root / split, classes)

    files = [f for split_files, _ in parts.values() for f in split_files]
    names = [n for _, split_names in parts.values() for n in split_names]
    info = probe(files)
    if sample_rate is None:
        sample_rate = Counter(rate for rate, _ in info).most_common(1)[0][0]
    if clip_seconds is None:
        clip_seconds = min(max(seconds for _, seconds in info), max_clip_seconds)
    clips = Clips(files, [classes.index(n) for n in names])

    counts = {split: len(split_files) for split, (split_files, _) in parts.items()}
    start, index = 0, {}
    for split, n in counts.items():
        index[split] = torch.arange(start, start + n)
        start += n
    if "val" not in index:
        labels = torch.tensor(clips.labels)[index["train"]]
        try:
            (keep, _), (held, _) = hold_out(index["train"], labels, val_fraction, split_seed)
        except ValueError as err:
            raise ConfigError(
                f"{err} for validation (dataset.val_fraction); add {root / 'val'}/<class>/"
            ) from err
        index["train"], index["val"] = keep, held
    return audio_splits(
        "audio_folder",
        clips,
        index,
        num_classes=len(classes),
        settings=SpectrogramSettings(sample_rate, clip_seconds, **spectrogram),
        cache_dir=cache_dir,
        augment=augment,
    )
