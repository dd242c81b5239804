"""Data families on real formats: digits from scikit-learn, CIFAR from pickle batches."""

import pickle

import pytest
import torch

from lerac.engine.batches import TensorLoader
from lerac.errors import DataNotFoundError
from lerac.suite.data.cifar import load_cifar
from lerac.suite.data.digits import load_digits


def test_cifar10_reads_the_official_batch_files(cifar_root):
    splits = load_cifar(str(cifar_root), "cifar10", val_fraction=0.1, split_seed=0)
    assert splits.sizes() == {"train": 90, "val": 10, "test": 30}
    assert splits.num_classes == 10
    assert splits.input_spec == {"in_channels": 3, "image_size": 32}
    x, y = splits.train
    assert x.shape == (90, 3, 32, 32) and x.dtype == torch.uint8
    # The first test image is the first row of test_batch, reshaped as R, G, B planes.
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert torch.equal(splits.test[0][0].flatten(), torch.as_tensor(raw["data"][0]))
    assert splits.test[1].tolist() == raw["labels"]
    # Train and validation partition the 100 training images.
    everything = torch.cat([splits.train[0], splits.val[0]]).flatten(1)
    assert len({tuple(r.tolist()) for r in everything}) == 100


def test_validation_split_is_seeded(cifar_root):
    a = load_cifar(str(cifar_root), "cifar10", split_seed=0)
    b = load_cifar(str(cifar_root), "cifar10", split_seed=0)
    c = load_cifar(str(cifar_root), "cifar10", split_seed=1)
    assert torch.equal(a.val[0], b.val[0])
    assert not torch.equal(a.val[0], c.val[0])


def test_cifar100_uses_fine_labels(cifar_root):
    splits = load_cifar(str(cifar_root), "cifar100")
    assert splits.num_classes == 100
    assert splits.sizes() == {"train": 90, "val": 10, "test": 30}
    with open(cifar_root / "cifar-100-python" / "test", "rb") as f:
        assert splits.test[1].tolist() == pickle.load(f, encoding="latin1")["fine_labels"]


def test_normalization_uses_training_statistics(cifar_root):
    splits = load_cifar(str(cifar_root), "cifar10")
    x = splits.normalizer()(splits.train[0])
    assert x.dtype == torch.float32
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_missing_cifar_names_the_path_and_the_download(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_cifar(str(tmp_path), "cifar100")
    message = str(err.value)
    assert str(tmp_path / "cifar-100-python" / "train") in message
    assert "cifar-100-python.tar.gz" in message and "paths.data_dir" in message


def test_digits_has_fixed_train_val_test_splits():
    splits = load_digits()
    assert splits.sizes() == {"train": 1294, "val": 144, "test": 359}
    assert splits.input_spec == {"in_channels": 1, "image_size": 8}
    assert torch.equal(load_digits().test[1], splits.test[1])


def test_loader_batches_shuffles_by_seed_and_limits():
    x, y = torch.arange(10).float().view(10, 1), torch.arange(10)
    batches = lambda seed, **kw: [b[1].tolist() for b in TensorLoader(x, y, 3, True, seed, **kw)]  # noqa: E731
    first = batches(0)
    assert [len(b) for b in first] == [3, 3, 3]  # the single leftover example is dropped
    assert len(set(sum(first, []))) == 9  # each example at most once per epoch
    assert batches(0) == first and batches(1) != first
    assert len(batches(0, max_batches=2)) == 2
    evaluation = list(TensorLoader(x, y, 3, shuffle=False))
    assert [b[1].tolist() for b in evaluation] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_download_extracts_the_official_archive_layout(cifar_root, tmp_path, monkeypatch):
    # The archive is built from the fixture's files and served over HTTP on loopback, so
    # the real download-verify-extract path runs without leaving the machine.
    import functools
    import hashlib
    import http.server
    import tarfile
    import threading

    from lerac.suite.data import cifar

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    spec = cifar.VARIANTS["cifar10"]
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(cifar.VARIANTS, "cifar10", cifar.Variant(**{**spec.__dict__, "md5": md5}))

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = tmp_path / "data"
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        folder = cifar.download_cifar(str(target), "cifar10", url=url)
    finally:
        server.shutdown()
    assert folder == target / "cifar-10-batches-py"
    assert load_cifar(str(target), "cifar10").sizes() == {"train": 90, "val": 10, "test": 30}


def test_failed_download_says_what_to_do(tmp_path):
    from lerac.suite.data.cifar import download_cifar

    with pytest.raises(DataNotFoundError, match="extract it into"):
        download_cifar(str(tmp_path), "cifar10", url=(tmp_path / "absent.tar.gz").as_uri())
