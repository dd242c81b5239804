"""Image files -> uint8 tensors, shared by every family that reads image files
(Tiny ImageNet, ImageNet-200, image folders).

Pillow decodes any format it knows; grayscale, palette and RGBA images are converted to
the requested channel count. Images of more than 8 bits are scaled by their bit depth, not
clipped: 16-bit grey (Pillow's ``I;16`` modes) by 255/65535, 32-bit integer (``I``) by
its bits per sample, and float images (``F``) are read as 0 to 1 (values outside are
clipped). Pillow itself decodes 16-bit RGB and RGBA (PNG, TIFF) to 8 bits per channel.
Images can be resized (shorter side to ``resize``) and
center-cropped to ``size`` x ``size``. A file that does not decode ends the run with its
path named. :func:`cached_images` keeps a decoded data set in one tensor file under
``paths.cache_dir``, keyed by the files' names, sizes and modification times and by the
decoding settings, so a changed tree is decoded again and an unchanged one never is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lerac.engine.io import cache_key, cached
from lerac.errors import ConfigError, LeRaCError, first_line

MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels -> Pillow mode
DECODING = 2  # in every cache key: 2 scales images of more than 8 bits by their depth


class ImageDecodeError(LeRaCError):
    """An image file that Pillow cannot read."""


def image_suffixes() -> set[str]:
    from PIL import Image

    Image.init()
    return {suffix.lower() for suffix in Image.registered_extensions()}


def list_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (by suffix, any case), sorted by name."""
    suffixes = image_suffixes()
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def check_channels(channels: int) -> None:
    if channels not in MODES:
        raise ConfigError(f"dataset.channels={channels} is not supported: use 1, 3 or 4")


def read_image(
    path: Path | str, channels: int = 3, size: int | None = None, resize: int | None = None
) -> Tensor:
    """One image as a uint8 (C, H, W) tensor; with ``size``, resized so its shorter side
    is ``resize`` (default ``size``) and center-cropped to ``size`` x ``size``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = to_8bit(image).convert(MODES[channels])
            if size is not None:
                image = fit(image, size, resize or size)
    except (OSError, ValueError, SyntaxError) as err:  # Pillow's errors for broken files
        raise ImageDecodeError(
            f"{path} could not be decoded as an image ({first_line(err)}); remove or replace it"
        ) from err
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def integer_bits(image) -> int:
    """Bits per sample of an integer image of more than 8 bits."""
    if image.mode.startswith("I;16"):
        return 16
    tags = getattr(image, "tag_v2", None)  # TIFF: BitsPerSample
    if tags is not None and 258 in tags:
        bits = tags[258]
        return int(bits[0] if isinstance(bits, tuple) else bits)
    return 16 if image.format == "PNG" else 32  # a PNG holds at most 16 bits


def to_8bit(image):
    """``image`` as 8 bits: a 16-bit, 32-bit or float grey image scaled by its depth
    (float: 0 to 1) to an ``L`` image; other modes as they are."""
    from PIL import Image

    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = 1.0 if image.mode == "F" else float(2 ** integer_bits(image) - 1)
    scaled = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L")


def fit(image, size: int, resize: int):
    """Shorter side to ``resize`` (bilinear, antialiased), then the central square of ``size``."""
    from PIL import Image

    width, height = image.size
    scale = resize / min(width, height)
    if scale != 1:
        width, height = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((width, height), Image.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageDecodeError(
            f"{path} could not be decoded as an image ({first_line(err)}); remove or replace it"
        ) from err


def read_images(
    paths: Sequence[Path], channels: int = 3, size: int | None = None, resize: int | None = None
) -> Tensor:
    """(N, C, H, W) uint8; decoded on a few threads (Pillow releases the GIL while decoding).
    Without ``size`` every image must already have the same size."""
    check_channels(channels)
    if not paths:
        return torch.zeros(0, channels, size or 0, size or 0, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(
            pool.map(lambda p: read_image(p, channels, size, resize), paths, chunksize=64)
        )
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ConfigError(f"images of different sizes {sorted(shapes)[:3]}: set dataset.image_size")
    return torch.stack(images)


def cached_images(
    cache_dir: str | Path,
    name: str,
    sources: Sequence[Path],
    settings: dict,
    build: Callable[[], dict[str, Tensor]],
) -> dict[str, Tensor]:
    """``build()``'s tensors, from ``cache_dir/<name>-<key>.pt`` when the key matches."""
    key = cache_key({**settings, "decoding": DECODING}, sources)
    file = Path(cache_dir) / f"{name}-{key}.pt"
    return cached(file, build, f"decoded {name} images")
