"""The loaders against hostile and unlucky files, written here in the real formats:
16-bit and float images (Pillow, and numpy for the 16-bit RGB files Pillow cannot write),
a CIFAR batch that runs a command when unpickled, ESC-50 CSVs whose clip names leave the
data set, CSVs in latin-1 or with a header only, a one-class image folder."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lerac.errors import LeRaCError
from lerac.suite import fetch
from lerac.suite.data.cifar import load_cifar
from lerac.suite.data.esc50 import load_esc50
from lerac.suite.data.image_folder import load_image_folder
from lerac.suite.data.images import read_image
from tests.audio_fixtures import SMALL_SPECTROGRAM, write_esc50
from tests.cli_fixtures import error_line
from tests.conftest import TINY, cifar_batch, write_cifar10, write_pickle
from tests.test_fetch import write_sources
from tests.vision_fixtures import image_folder_tree

# --- images of more than 8 bits ---------------------------------------------------------


def png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA by the last axis), written byte by byte:
    Pillow cannot write 16-bit colour."""
    height, width, channels = pixels.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def tiff16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit RGB(A) baseline TIFF, uncompressed, one strip, written byte by byte."""
    height, width, channels = pixels.shape
    body = pixels.astype("<u2").tobytes()
    bits_at = 8 + len(body)
    bits = struct.pack(f"<{channels}H", *[16] * channels)
    short = lambda tag, value: struct.pack("<HHIHH", tag, 3, 1, value, 0)  # noqa: E731
    long_ = lambda tag, value: struct.pack("<HHII", tag, 4, 1, value)  # noqa: E731
    entries = [
        short(256, width),
        short(257, height),
        struct.pack("<HHII", 258, 3, channels, bits_at),
        short(259, 1),
        short(262, 2),
        long_(273, 8),
        short(277, channels),
        short(278, height),
        long_(279, len(body)),
        short(284, 1),
    ] + ([short(338, 2)] if channels == 4 else [])
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    path.write_bytes(b"II*\0" + struct.pack("<I", bits_at + len(bits)) + body + bits + ifd)
    return path


RAMP16 = (np.arange(48, dtype=np.uint32).reshape(6, 8) * 1365).astype(np.uint16)  # 0..64155


def expected8(values: np.ndarray, top: float) -> np.ndarray:
    return np.clip(np.rint(values.astype(np.float64) * 255 / top), 0, 255)


def test_16_bit_grey_png_and_tiff_are_scaled_not_clipped(tmp_path):
    for suffix in ("png", "tif"):
        path = tmp_path / f"grey16.{suffix}"
        Image.fromarray(RAMP16).save(path)  # Pillow writes 16-bit grey itself
        assert Image.open(path).mode == "I;16"
        want = expected8(RAMP16, 65535)
        for channels in (1, 3, 4):
            image = read_image(path, channels)
            assert image.dtype == torch.uint8 and image.shape == (channels, 6, 8)
            for c in range(min(channels, 3)):
                assert np.array_equal(image[c].numpy(), want), (suffix, channels)
        assert 0 < image[0].float().mean() < 255  # was 255 nearly everywhere: white


def test_16_bit_rgb_and_rgba_png_and_tiff_keep_their_values(tmp_path):
    rng = np.random.default_rng(0)
    for channels in (3, 4):
        pixels = rng.integers(0, 65536, size=(5, 7, channels)).astype(np.uint16)
        for path in (
            png16(tmp_path / f"c{channels}.png", pixels),
            tiff16(tmp_path / f"c{channels}.tif", pixels),
        ):
            image = read_image(path, channels).permute(1, 2, 0).numpy().astype(int)
            want = expected8(pixels, 65535)
            assert np.abs(image - want).max() <= 1, path.name  # Pillow keeps the high byte
    grey = png16(tmp_path / "grey.png", RAMP16[:, :, None])
    assert np.array_equal(read_image(grey, 1)[0].numpy(), expected8(RAMP16, 65535))


def test_float_and_32_bit_tiffs_are_scaled_by_their_range(tmp_path):
    ramp = np.linspace(-0.25, 1.25, 48, dtype=np.float32).reshape(6, 8)
    Image.fromarray(ramp).save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "float.tif").mode == "F"
    image = read_image(tmp_path / "float.tif", 1)[0].numpy()
    assert np.array_equal(image, expected8(ramp, 1.0))  # 0 to 1, the rest clipped
    wide = (RAMP16.astype(np.int64) << 15).astype(np.int32)
    Image.fromarray(wide).save(tmp_path / "int32.tif")
    assert Image.open(tmp_path / "int32.tif").mode == "I"
    image = read_image(tmp_path / "int32.tif", 1)[0].numpy()
    assert np.array_equal(image, expected8(wide, 2**32 - 1))


def test_an_image_folder_of_16_bit_pngs_trains_on_real_values(tmp_path):
    root = tmp_path / "folder"
    rng = np.random.default_rng(1)
    for split, count in (("train", 6), ("test", 2)):
        for label, name in enumerate(("dark", "light")):
            for i in range(count):
                pixels = rng.integers(0, 30000, size=(8, 8)) + 30000 * label
                (root / split / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels.astype(np.uint16)).save(root / split / name / f"{i}.png")
    splits = load_image_folder(str(root), str(tmp_path / "cache"), channels=1)
    images, labels = splits.test
    raw = images.float()  # uint8 as decoded; normalized on the device
    dark, light = raw[labels == 0].mean(), raw[labels == 1].mean()
    assert 20 < dark < 70 and 140 < light < 190  # not both white


def test_a_one_class_image_folder_warns(tmp_path):
    root = image_folder_tree(tmp_path, classes=("cat",))
    with pytest.warns(UserWarning, match=r"one class folder \(cat\).*100% by construction"):
        load_image_folder(str(root), str(tmp_path / "cache"))


# --- a CIFAR batch that runs code --------------------------------------------------------


class Payload:
    """Unpickled, calls os.system: what a crafted data_batch_1 does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted_cifar(root: Path, marker: Path) -> Path:
    write_cifar10(root / "cifar-10-batches-py", np.random.default_rng(0), 8, 6)
    batch = cifar_batch(np.random.default_rng(1), 8, 10, "labels")
    batch["batch_label"] = Payload(marker)
    write_pickle(root / "cifar-10-batches-py" / "data_batch_1", batch)
    return root


def test_a_cifar_batch_that_runs_code_is_refused_in_check_and_in_training(
    tmp_path, capsys, monkeypatch
):
    marker = tmp_path / "ran"
    data = crafted_cifar(tmp_path / "data", marker)
    with pytest.raises(LeRaCError, match=r"data_batch_1 asks to run posix.system when read"):
        load_cifar(str(data), "cifar10")
    # --check: the row says why; nothing ran.
    sources = write_sources(tmp_path / "s.yaml", {}, cifar10={"expect": {"train": 40}})
    assert fetch.main(["--check", "cifar10", "--data-dir", str(data), "--sources", str(sources)])
    row = capsys.readouterr().out.splitlines()[1]
    assert "incomplete" in row and "asks to run posix.system" in row
    # Training: one error line, exit 2.
    argv = [*TINY, "dataset=cifar10", f"paths.data_dir={data}", f"paths.output_dir={tmp_path}"]
    line = error_line(monkeypatch, capsys, argv)
    assert "asks to run posix.system" in line and "lerac-fetch cifar10" in line
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5, "numpy.core"])
def test_cifar_batches_of_every_pickle_protocol_still_load(tmp_path, protocol):
    folder = write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(0), 8, 6)
    for file in [*folder.glob("data_batch_*"), folder / "test_batch"]:  # the arrays' files
        batch = pickle.loads(file.read_bytes())
        data = pickle.dumps(batch, protocol=2 if protocol == "numpy.core" else protocol)
        if protocol == "numpy.core":  # the official files: numpy.core, Python 2's protocol 2
            data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
            assert b"numpy.core.multiarray\n_reconstruct" in data
        file.write_bytes(data)
    splits = load_cifar(str(tmp_path), "cifar10")
    assert len(splits.train[1]) + len(splits.val[1]) == 40 and len(splits.test[1]) == 6


# --- ESC-50's CSV: names that leave the data set, encodings, a header only --------------


def esc50_with(root: Path, change) -> Path:
    folder = write_esc50(root / "ESC-50", classes=2, sources_per_fold=1)
    meta = folder / "meta" / "esc50.csv"
    meta.write_bytes(change(meta.read_text(), folder))
    return folder


def escape_by_link(text: str, folder: Path) -> bytes:
    clip = next((folder / "audio").glob("1-*.wav"))
    outside = folder.parent / "outside.wav"
    shutil.copy(clip, outside)
    clip.unlink()
    clip.symlink_to(outside)
    return text.encode()


def first_clip_named(name: str):
    def change(text: str, _) -> bytes:
        return text.replace(text.splitlines()[1].split(",")[0], name, 1).encode()

    return change


ESCAPES = {
    "absolute": first_clip_named("/etc/hostname"),
    "dotdot": first_clip_named("../../x.wav"),
    "link out": escape_by_link,
}


@pytest.mark.parametrize("kind", sorted(ESCAPES))
def test_esc50_clip_names_that_leave_the_data_set_are_errors(kind, tmp_path, capsys):
    folder = esc50_with(tmp_path, ESCAPES[kind])
    with pytest.raises(LeRaCError, match=r"which is not a file of .*audio"):
        load_esc50(str(folder), str(tmp_path / "cache"))
    sources = write_sources(tmp_path / "s.yaml", {}, esc50={"expect": {"clips": 20}})
    args = ["--check", "esc50", "--data-dir", str(tmp_path), "--sources", str(sources)]
    assert fetch.main(args) == 1
    row = capsys.readouterr().out.splitlines()[1]
    assert row.split()[:2] == ["esc50", "incomplete"] and "is not a file of" in row


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda text, _: text.replace("class0", "caf\xe9").encode("latin-1"), "is not UTF-8 text"),
        (lambda text, _: text.splitlines()[0].encode() + b"\n", "holds a header but no rows"),
    ],
    ids=["latin-1", "header only"],
)
def test_an_esc50_csv_in_latin1_or_with_a_header_only_names_the_cause(
    change, words, tmp_path, capsys, monkeypatch
):
    esc50_with(tmp_path / "data", change)
    argv = [*TINY, "model=resnet18", "dataset=esc50", f"paths.data_dir={tmp_path / 'data'}"]
    argv += [*SMALL_SPECTROGRAM, f"paths.output_dir={tmp_path / 'out'}"]
    assert words in error_line(monkeypatch, capsys, argv)


# --- text CSVs: latin-1, a header only ----------------------------------------------------


@pytest.mark.parametrize(
    "test_csv, words",
    [
        ("text,label\ncaf\xe9 au lait,pos\nbon,neg\n".encode("latin-1"), "is not UTF-8 text"),
        (b"text,label\n", "holds a header but no rows"),
    ],
    ids=["latin-1", "header only"],
)
def test_a_text_csv_in_latin1_or_with_a_header_only_names_the_cause(
    test_csv, words, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "text"
    folder.mkdir()
    rows = "".join(f"word{i} more words,{'pos' if i % 2 else 'neg'}\n" for i in range(20))
    (folder / "train.csv").write_text("text,label\n" + rows)
    (folder / "test.csv").write_bytes(test_csv)
    small = [o for o in TINY if not o.startswith("model.width")]  # the LSTM has no width
    argv = [*small, "model=lstm", "dataset=text_files", f"dataset.path={folder}"]
    argv += [f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    line = error_line(monkeypatch, capsys, argv)
    assert words in line and "test.csv" in line and "An error occurred" not in line
