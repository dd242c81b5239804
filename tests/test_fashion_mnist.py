"""Fashion-MNIST: IDX files in the real format (gzipped or not), a reader that refuses
crafted headers before allocating anything, lerac-fetch and --check, and the analysis
experiment's CPU block run as a SMOKE with its Table 6-8 report."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lerac.errors import CorruptDataError, DataNotFoundError, LeRaCError
from lerac.suite import analysis_report, fetch, grid
from lerac.suite.analysis_plots import figure3
from lerac.suite.data.fashion_mnist import load_fashion_mnist
from lerac.suite.data.idx import read_idx
from tests.conftest import compose_config
from tests.test_fetch import Server
from tests.vision_fixtures import write_image

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN, TEST = 120, 40
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: two zero bytes, the type code (0x08: unsigned byte), the number of
    dims, each dim as a big-endian uint32, then the values."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(folder: Path, zipped: bool = True, seed: int = 0) -> Path:
    """A toy Fashion-MNIST in its release layout: 28x28 uint8 images and labels 0-9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", TRAIN), ("test", TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        labels = rng.integers(0, 10, size=n)
        for name, array in zip(FILES[split], (images, labels)):
            data = idx_bytes(array)
            if zipped:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("zipped", [True, False])
def test_the_idx_files_load_as_a_data_set_gzipped_or_not(tmp_path, zipped):
    root = write_fashion_mnist(tmp_path / "fashion-mnist", zipped)
    splits = load_fashion_mnist(str(root), val_fraction=0.25)
    assert splits.sizes() == {"train": 90, "val": 30, "test": TEST}
    assert splits.train[0].dtype == torch.uint8 and splits.train[0].shape[1:] == (1, 28, 28)
    assert splits.input_spec == {"in_channels": 1, "image_size": 28}
    raw = read_idx(root / ("t10k-labels-idx1-ubyte" + (".gz" if zipped else "")))
    assert raw.shape == (TEST,) and raw.max() <= 9
    subset = load_fashion_mnist(str(root), val_fraction=0.25, train_examples=40)
    assert subset.sizes() == {"train": 30, "val": 10, "test": TEST}


def crafted(tmp_path: Path, name: str, data: bytes, zipped: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if zipped else data)
    return path


@pytest.mark.parametrize(
    "data, zipped, words",
    [
        (b"\x00\x00\x08", False, "shorter than its 4-byte header"),
        (b"PK\x03\x04" + b"\x00" * 8, False, "not an IDX one"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x02xx", False, "not an IDX one"),  # type 0x07
        (b"\x00\x00\x08\x09" + b"\x00" * 36, False, "9 dims"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x05", False, "header is cut short"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x00", False, "empty dim"),
        # 4 GiB announced, 3 bytes held: refused before anything is allocated.
        (b"\x00\x00\x08\x02\xff\xff\xff\xff\x00\x00\x00\x01abc", False, "at most"),
        (b"\x00\x00\x08\x02\xff\xff\xff\xff\x00\x00\x00\x01abc", True, "at most"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", False, "holds 3 bytes"),  # truncated
        (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", False, "holds 3 bytes"),  # trailing data
        (b"\x00\x00\x08\x01\x00\x01\x00\x00abc", True, "holds 3 bytes"),  # short, gzipped
        (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", True, "more data"),  # long, gzipped
    ],
)
def test_a_crafted_idx_file_is_one_clear_error(tmp_path, data, zipped, words):
    path = crafted(tmp_path, "bad-idx1-ubyte", data, zipped)
    with pytest.raises(CorruptDataError, match=words) as caught:
        read_idx(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


def test_a_damaged_gzip_and_a_mismatched_pair_are_named(tmp_path):
    root = write_fashion_mnist(tmp_path / "fashion-mnist")
    labels = root / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-12])  # a cut download
    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte.gz"):
        load_fashion_mnist(str(root))
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(TRAIN - 1))))  # one label short
    with pytest.raises(CorruptDataError, match="one label in 0-9 per image"):
        load_fashion_mnist(str(root))
    labels.unlink()
    with pytest.raises(DataNotFoundError, match="lerac-fetch fashion_mnist"):
        load_fashion_mnist(str(root))


def test_fetch_downloads_verifies_and_checks_fashion_mnist(tmp_path, capsys):
    made = write_fashion_mnist(tmp_path / "made")
    served = {p.name: p.read_bytes() for p in made.iterdir()}
    sources = yaml.safe_load(fetch.SOURCES.read_text())
    entry = sources["fashion_mnist"]
    for file in entry["files"]:
        data = served[Path(file["url"]).name]
        file.update(checksum=f"sha256:{hashlib.sha256(data).hexdigest()}", size=len(data))
    entry["expect"] = {"train": TRAIN, "test": TEST}
    source_file = tmp_path / "sources.yaml"
    source_file.write_text(yaml.safe_dump(sources))
    data = tmp_path / "data"
    base = ["--data-dir", str(data), "--sources", str(source_file), "--quiet"]
    assert fetch.main(["--check", "fashion_mnist", *base]) == 1
    assert "missing" in capsys.readouterr().out
    with Server(served) as server:
        assert fetch.main(["fashion_mnist", "--mirror", server.url, *base]) == 0
    assert sorted(p.name for p in (data / "fashion-mnist").iterdir()) == sorted(served)
    assert list((data / fetch.STAGING).iterdir()) == []
    assert fetch.main(["--check", "fashion_mnist", *base]) == 0
    assert "train 120/120, test 40/40" in capsys.readouterr().out
    images = data / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:300])
    assert fetch.main(["--check", "fashion_mnist", *base]) == 1
    row = capsys.readouterr().out.splitlines()[1]
    assert "incomplete" in row and "t10k-images-idx3-ubyte.gz" in row
    # A file whose checksum is not the expected one is refused and nothing is put in place.
    served_wrong = {**served, "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.ones(3)))}
    with Server(served_wrong) as server:
        other = tmp_path / "other"
        args = ["fashion_mnist", "--mirror", server.url, "--data-dir", str(other)]
        assert fetch.main([*args, "--sources", str(source_file), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train-labels-idx1-ubyte.gz is") and err.count("\n") == 1
    assert not (other / "fashion-mnist").exists()


def test_the_dataset_group_composes_and_reads(tmp_path):
    write_fashion_mnist(tmp_path / "fashion-mnist")
    cfg = compose_config(["dataset=fashion_mnist", f"paths.data_dir={tmp_path}"])
    assert cfg.dataset.root == str(tmp_path / "fashion-mnist")


# --- the analysis experiment -----------------------------------------------------------


def test_dry_lists_the_analysis_runs_and_their_gpu_hours(capsys, tmp_path):
    out_dir = f"paths.output_dir={tmp_path}"
    table6 = ["analysis", "--dry", "hydra.sweeper.params.regime=conventional", out_dir]
    assert grid.main(table6) == 0
    out = capsys.readouterr().out
    runs = [line for line in out.splitlines() if line.startswith("missing")]
    assert len(runs) == 5 + 3 and all("conventional" in line for line in runs)  # Table 6
    assert "GPU-hours" in out.splitlines()[-1]
    assert grid.main(["analysis", "--dry", "--block", "main", out_dir]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("missing") for line in out.splitlines()) == 10
    assert "cifar10_resnet18_lerac_seed4" in out and "GPU-hours" in out


def test_smoke_runs_the_cpu_block_and_reports_tables_6_to_8(tmp_path, capsys):
    write_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    overrides = [
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.output_dir={tmp_path / 'out'}",
        "trainer.device=cpu",
        "trainer.progress=false",
        "logger=none",
        "model.width=4",
        "trainer.batch_size=16",
        'grid.blocks.fashion_mnist.seed="0"',
    ]
    block = ["--smoke", "--block", "fashion_mnist"]
    # The files hold a few examples, not the release's 60k: past the grid's data check.
    assert grid.main(["analysis", *block, "--no-report", "--no-data-check", *overrides]) == 0
    assert analysis_report.main([*block, *overrides]) == 0
    report = tmp_path / "out_smoke" / "report"
    text = (report / "analysis_fashion_mnist.md").read_text()
    for title in ("Table 6", "Table 7", "Table 8", "training pace"):
        assert title in text
    assert "lerac ÷ conventional" in text
    figures = sorted(p.name for p in (report / "figures").iterdir())
    assert "analysis_fashion_mnist_figure3_fashion_mnist.png" in figures
    assert "analysis_fashion_mnist_probes_fashion_mnist_lerac.png" in figures
    rows = (report / "analysis_fashion_mnist.csv").read_text().splitlines()
    assert rows[0].startswith("table,dataset,model,regime,layer")
    assert any(r.startswith("7,fashion_mnist,resnet18,lerac,last_conv") for r in rows)
    # Figure 3 from a folder of the user's images (colour, any size: made grey, 28 px).
    rng = np.random.default_rng(0)
    for i in range(4):
        write_image(tmp_path / "images" / f"photo{i}.png", rng, size=(50, 40))
    runs = {g: tmp_path / "out_smoke" / f"fashion_mnist_resnet18_{g}_seed0"
            for g in ("conventional", "lerac")}  # fmt: skip
    out = figure3(runs, 1, tmp_path / "figure3.png", images=tmp_path / "images")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(LeRaCError, match="holds 4 image files; Figure 3 needs 5"):
        figure3(runs, 1, tmp_path / "f.png", images=tmp_path / "images", count=5)
    with pytest.raises(LeRaCError, match="model_epoch0002.pt does not exist"):
        figure3(runs, 2, tmp_path / "f.png")
