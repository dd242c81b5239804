"""ESC-50 (Piczak 2015; paper 4.1): 2,000 clips of 5 s at 44.1 kHz, 50 classes.

Layout under ``path`` (the public repository, cloned or unzipped):
  audio/<fold>-<source>-<take>-<target>.wav
  meta/esc50.csv   header filename,fold,target,category,esc10,src_file,take
The official 5-fold cross-validation: ``fold`` (1-5) is the test fold, the other four
train. Validation: ``val_fraction`` (10%, paper 4.1) of the training folds, drawn by
whole source recordings (``src_file``) with ``split_seed``, because ESC-50 keeps the clips
cut from one recording in one fold on purpose; a clip-level draw would put near copies in
train and validation and make early stopping trust an optimistic score.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lerac.engine.batches import Splits
from lerac.errors import ConfigError, CorruptDataError, DataNotFoundError
from lerac.suite.data.audio import Clips, audio_splits, group_split
from lerac.suite.data.spectrogram import SpectrogramSettings

FOLDS = (1, 2, 3, 4, 5)


def read_meta(root: Path) -> list[dict[str, str]]:
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DataNotFoundError(
            f"ESC-50 not found: {meta} is missing; clone https://github.com/karolpiczak/ESC-50 "
            f"(or unzip its archive) so that {root} holds audio/ and meta/esc50.csv, or point "
            "dataset.path at that folder"
        )
    try:
        with open(meta, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows, columns = list(reader), set(reader.fieldnames or ())
    except UnicodeDecodeError as err:
        raise CorruptDataError(
            f"{meta} is not UTF-8 text ({err.reason} at byte {err.start}), as the official file "
            "is; fetch it again (lerac-fetch esc50 --force) or save it as UTF-8"
        ) from err
    missing = {"filename", "fold", "target", "src_file"} - columns
    if missing:
        raise CorruptDataError(f"{meta} lacks the columns {sorted(missing)} of the official file")
    if not rows:
        raise CorruptDataError(f"{meta} holds a header but no rows; fetch it again")
    return rows


def clip_paths(root: Path, rows: list[dict[str, str]]) -> list[Path]:
    """Each row's clip, ``root/audio/<filename>``; a name that leaves that folder (absolute,
    with a folder or ``..`` in it, or a link that points out) is an error."""
    audio = root / "audio"
    inside = audio.resolve()
    paths = []
    for row in rows:
        name = row["filename"] or ""
        path = audio / name
        plain = name not in ("", ".", "..") and "/" not in name and "\\" not in name
        if not (plain and path.resolve().is_relative_to(inside)):
            raise CorruptDataError(
                f"{root / 'meta' / 'esc50.csv'} names the clip {name!r}, which is not a file of "
                f"{audio}: the official file lists plain names; fetch it again"
            )
        paths.append(path)
    return paths


def load_esc50(
    path: str,
    cache_dir: str,
    fold: int = 1,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    augment: Mapping[str, Any] | None = None,
    **spectrogram: Any,
) -> Splits:
    if fold not in FOLDS:
        raise ConfigError(f"dataset.fold={fold} is not an ESC-50 fold: choose 1, 2, 3, 4 or 5")
    root = Path(path)
    rows = read_meta(root)
    clips = Clips(clip_paths(root, rows), [int(r["target"]) for r in rows])
    absent = [p for p in clips.paths if not p.is_file()]
    if absent:
        raise DataNotFoundError(
            f"{len(absent)} clip(s) listed in meta/esc50.csv are missing, e.g. {absent[0]}"
        )
    folds = torch.tensor([int(r["fold"]) for r in rows])
    train_index = torch.nonzero(folds != fold).flatten()
    test_index = torch.nonzero(folds == fold).flatten()
    sources = [rows[i]["src_file"] for i in train_index.tolist()]
    keep, held = group_split(sources, (1 - val_fraction, val_fraction), split_seed, "recordings")
    return audio_splits(
        "esc50",
        clips,
        {"train": train_index[keep], "val": train_index[held], "test": test_index},
        num_classes=max(clips.labels) + 1,
        settings=SpectrogramSettings(**spectrogram),
        cache_dir=cache_dir,
        augment=augment,
    )
