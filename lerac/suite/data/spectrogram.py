"""Audio clips to the paper's log-mel spectrograms (4.2), computed once and cached.

Per clip: decode with soundfile (mono: channels averaged) -> resample to the data set's
rate with torchaudio -> pad with silence or clip to a fixed length -> STFT (n_fft points,
Hamming window of win_length, hop hop_length) -> square root of the magnitude -> mel
filterbank (torchaudio defaults: HTK scale, 0 Hz to Nyquist, no area normalisation) ->
natural log of (value + log_offset) -> min-max to [0, 1] per clip.

Per-clip min-max is the natural reading of "normalized to the interval [0, 1]": it needs
no statistics of a split, so one cache serves every fold and split, and 0 is always the
clip's quietest bin (padding silence, the fill of time shifts and SpecAugment masks).

Storage: float16 by default (spacing <= 2^-11 on [0, 1], far below any augmentation);
``storage=uint8`` quantises to 256 levels and halves the memory again (CREMA-D at the
paper's settings: 0.95 GB in uint8, 1.9 GB in float16). :func:`to_unit` turns either into
float32 on [0, 1] per batch on the device.

The cache file is named by a hash of the settings and of every file's path, size and
modification time, so a changed file or setting computes a new one; all runs (seeds,
folds, regimes) of one data set share it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from lerac.engine.io import cache_key, cached
from lerac.errors import ConfigError, LeRaCError, first_line

log = logging.getLogger("lerac")
STORAGE = {"float16": torch.float16, "uint8": torch.uint8}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class AudioDecodeError(LeRaCError):
    """An audio file that soundfile cannot read."""


@dataclass(frozen=True)
class SpectrogramSettings:
    """Everything that decides a spectrogram's values; defaults are ESC-50's (paper 4.2)."""

    sample_rate: int
    clip_seconds: float
    n_fft: int = 1024
    win_length: int = 512
    hop_length: int = 128
    n_mels: int = 128
    log_offset: float = 1e-6
    storage: str = "float16"

    def __post_init__(self) -> None:
        for name in ("sample_rate", "clip_seconds", "n_fft", "win_length", "hop_length", "n_mels"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"dataset.{name} must be positive, got {getattr(self, name)}")
        if self.win_length > self.n_fft:
            raise ConfigError(
                f"dataset.win_length={self.win_length} exceeds dataset.n_fft={self.n_fft}; "
                "the window must fit in the FFT"
            )
        if self.log_offset <= 0:
            raise ConfigError(f"dataset.log_offset must be positive, got {self.log_offset}")
        if self.storage not in STORAGE:
            raise ConfigError(
                f"dataset.storage='{self.storage}' is not an option: use {' or '.join(STORAGE)}"
            )

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def frames(self) -> int:
        """Time steps of a spectrogram (the STFT is centred: one frame per hop, plus one)."""
        return 1 + self.clip_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.n_mels, self.frames)


def read_audio(path: str | Path, sample_rate: int) -> Tensor:
    """A mono float32 waveform of ``path`` at ``sample_rate``."""
    import soundfile
    import torchaudio.functional as AF

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile's errors have several types across versions
        raise AudioDecodeError(
            f"could not decode {path} ({first_line(err)}); replace or remove the file "
            "(wav, flac or ogg)"
        ) from err
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{path} holds no samples; replace or remove the file")
    wave = torch.from_numpy(data).mean(dim=1)
    if rate != sample_rate:
        wave = AF.resample(wave, rate, sample_rate)
    return wave


def fix_length(wave: Tensor, samples: int) -> Tensor:
    """Clip the end off, or pad the end with silence, to exactly ``samples``."""
    if len(wave) >= samples:
        return wave[:samples]
    return torch.nn.functional.pad(wave, (0, samples - len(wave)))


class LogMel(torch.nn.Module):
    """Waveforms (N, samples) -> spectrograms (N, 1, n_mels, frames) on [0, 1], float32."""

    def __init__(self, settings: SpectrogramSettings) -> None:
        super().__init__()
        import torchaudio.transforms as T

        self.settings = settings
        self.stft = T.Spectrogram(
            n_fft=settings.n_fft,
            win_length=settings.win_length,
            hop_length=settings.hop_length,
            window_fn=torch.hamming_window,
            power=0.5,  # |X|^0.5: the square root of the magnitude
        )
        self.mel = T.MelScale(
            n_mels=settings.n_mels,
            sample_rate=settings.sample_rate,
            n_stft=settings.n_fft // 2 + 1,
        )

    def forward(self, waves: Tensor) -> Tensor:
        x = torch.log(self.mel(self.stft(waves)) + self.settings.log_offset)
        low = x.amin(dim=(-2, -1), keepdim=True)
        high = x.amax(dim=(-2, -1), keepdim=True)
        return ((x - low) / (high - low).clamp_min(1e-12)).unsqueeze(1)  # silence -> zeros


def store(x: Tensor, storage: str) -> Tensor:
    """[0, 1] float spectrograms in their compact stored dtype."""
    if storage == "uint8":
        return (x * 255).round_().to(torch.uint8)
    return x.to(STORAGE[storage])


def to_unit(x: Tensor) -> Tensor:
    """Stored spectrograms (float16 or uint8) as float32 on [0, 1]."""
    if x.dtype == torch.uint8:
        return x.float() / 255
    return x.float()


def compute_spectrograms(
    paths: Sequence[Path], settings: SpectrogramSettings, batch_size: int = 64
) -> Tensor:
    """Spectrograms of ``paths`` in order, in batches (on the GPU when one is visible)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    transform = LogMel(settings).to(device)
    out = torch.empty((len(paths), *settings.shape), dtype=STORAGE[settings.storage])
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        waves = torch.stack(
            [fix_length(read_audio(p, settings.sample_rate), settings.clip_samples) for p in chunk]
        )
        with torch.no_grad():
            out[start : start + len(chunk)] = store(transform(waves.to(device)), settings.storage)
    return out


def cache_file(name: str, paths: Sequence[Path], settings: SpectrogramSettings, cache_dir) -> Path:
    """Where the spectrograms of ``paths`` at ``settings`` are cached."""
    return Path(cache_dir) / "spectrograms" / f"{name}-{cache_key(asdict(settings), paths)}.pt"


def cached_spectrograms(
    name: str, paths: Sequence[Path], settings: SpectrogramSettings, cache_dir: str | Path
) -> Tensor:
    """:func:`compute_spectrograms`, read from ``cache_dir`` when an earlier run computed it."""
    file = cache_file(name, paths, settings, cache_dir)
    what = f"{len(paths)} {name} spectrograms {settings.shape}"
    return cached(file, lambda: compute_spectrograms(paths, settings), what)
