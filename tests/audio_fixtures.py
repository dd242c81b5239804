"""Audio files in the real on-disk layouts of ESC-50, CREMA-D and audio_folder, written
with soundfile: short tones with noise, a pitch per class, so a model has something to
learn. Tiny on purpose (fractions of a second at 8 kHz)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile

# Small spectrograms for runs on a CPU: 0.5 s at 8 kHz, hop 128 -> 32 frames, 32 mels.
SMALL_SPECTROGRAM = [
    "dataset.sample_rate=8000",
    "dataset.clip_seconds=0.5",
    "dataset.n_fft=256",
    "dataset.win_length=128",
    "dataset.hop_length=128",
    "dataset.n_mels=32",
]
SMALL_SHAPE = (1, 32, 32)


def tone(rng, label: int, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * (300 + 250 * label) * t) + 0.05 * rng.standard_normal(len(t))
    wave = wave.astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def write_clip(path: Path, rng, label: int, seconds=0.5, rate=8000, channels=1, fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), tone(rng, label, seconds, rate, channels), rate, format=fmt)
    return path


def write_esc50(root: Path, classes: int = 3, sources_per_fold: int = 2) -> Path:
    """ESC-50's layout: audio/<fold>-<source>-<take>-<target>.wav and meta/esc50.csv;
    two takes of each source recording, as in the real set."""
    rng = np.random.default_rng(0)
    rows = []
    for fold in range(1, 6):
        for target in range(classes):
            for s in range(sources_per_fold):
                source = f"{fold}{target}{s:03d}"
                for take in "AB":
                    name = f"{fold}-{source}-{take}-{target}.wav"
                    write_clip(root / "audio" / name, rng, target)
                    rows.append(
                        [name, fold, target, f"class{target}", False, f"{source}.ogg", take]
                    )
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)
    return root


def write_crema_d(root: Path, actors: int = 6, sentences=("DFA", "IEO")) -> Path:
    """CREMA-D's AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav at 16 kHz, lengths
    varying around the 4 s the paper pads or clips to (here scaled down)."""
    rng = np.random.default_rng(1)
    for a in range(actors):
        for sentence in sentences:
            for label, emotion in enumerate(("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")):
                seconds = rng.uniform(0.3, 0.7)
                name = f"{1001 + a}_{sentence}_{emotion}_XX.wav"
                write_clip(root / "AudioWAV" / name, rng, label, seconds, rate=16000)
    return root


def write_audio_folder(root: Path, val: bool = False) -> Path:
    """train/<class>/ and test/<class>/ in wav, flac and ogg; most files at 8 kHz, one at
    16 kHz in stereo (resampled, mixed down); the longest clip lasts 0.6 s."""
    rng = np.random.default_rng(2)
    splits = {"train": 6, "test": 2, **({"val": 2} if val else {})}
    for split, count in splits.items():
        for label, name in enumerate(("bird", "dog", "rain")):
            for i in range(count):
                fmt = ("wav", "flac", "ogg")[i % 3]
                seconds = 0.6 if (split, label, i) == ("train", 0, 0) else 0.4
                write_clip(root / split / name / f"{i}.{fmt}", rng, label, seconds, fmt=fmt.upper())
    write_clip(root / "train" / "dog" / "stereo.wav", rng, 1, 0.4, rate=16000, channels=2)
    (root / "train" / "dog" / "notes.txt").write_text("not audio: ignored")
    return root
