"""`lerac-fetch` against a loopback HTTP server serving archives in the real formats (CIFAR's
python pickles in a tar.gz, Tiny ImageNet's zip, ESC-50's GitHub zip), written here; the
hub paths from local folders; `--check` on complete, truncated and missing folders."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from lerac.suite import fetch
from lerac.suite.data.cifar import load_cifar
from lerac.suite.data.crema_d import find_clips
from lerac.suite.data.esc50 import read_meta
from lerac.suite.data.imagenet200 import WNIDS, read_wnids
from lerac.suite.data.tiny_imagenet import load_tiny_imagenet
from tests.audio_fixtures import write_crema_d, write_esc50
from tests.conftest import compose_config, write_cifar10
from tests.text_fixtures import N_DEV, N_TRAIN, rows, write_table, write_tiny_model
from tests.vision_fixtures import tiny_imagenet_tree, write_image

WNIDS3 = ["n01443537", "n01629819", "n01641577"]


class Server:
    """Files over HTTP on 127.0.0.1 with Range support; ``drop[name] = n`` closes the
    connection after n bytes of that file, once; ``streams[name] = (length, chunks)`` sends
    the chunks as they come (a hostile server: endless, slow), announcing ``length`` (None:
    no Content-Length). ``requests`` logs (file, Range header)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.drop, self.requests, self.streams = files, {}, [], {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name.removeprefix("lerac/") in server.streams:
                    self.stream(*server.streams[name.removeprefix("lerac/")])
                    return
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0])
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = server.drop.pop(name, None)
                self.wfile.write(body if cut is None else body[:cut])
                self.close_connection = cut is not None

            def stream(self, length, chunks):
                self.send_response(200)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                self.close_connection = True
                try:
                    for chunk in chunks():
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except OSError:  # the client gave up: what a hostile server sees
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/lerac"

    def __enter__(self) -> Server:
        self.files = {f"lerac/{k}": v for k, v in self.files.items()}
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def tar_gz(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t:
        t.add(folder, arcname=folder.name)
    return buffer.getvalue()


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    return make_archives(tmp_path_factory.mktemp("made"))


def make_archives(root: Path) -> dict[str, bytes]:
    """The three archives in their official formats, at toy size."""
    rng = np.random.default_rng(0)
    cifar = write_cifar10(root / "cifar-10-batches-py", rng, 8, 6)
    tiny = tiny_imagenet_tree(root, WNIDS3, train_per_class=2)
    esc = write_esc50(root / "ESC-50-master", classes=2, sources_per_fold=1)
    return {
        "cifar-10-python.tar.gz": tar_gz(cifar),
        "tiny-imagenet-200.zip": zipped(tiny),
        "ESC-50-master.zip": zipped(esc),
    }


# A complete toy copy of each data set holds these counts.
TOY_EXPECT = {
    "cifar10": {"train": 40, "test": 6},
    "tiny_imagenet": {"classes": 3, "train": 6, "test": 6},
    "esc50": {"clips": 20, **{f"fold{k}": 4 for k in range(1, 6)}},
    "crema_d": {"clips": 24, "actors": 2},
    "imagenet200": {"classes": 200, "test": 200},
    "boolq": {"train": N_TRAIN, "test": N_DEV},
    "rte": {"train": N_TRAIN, "test": N_DEV},
}


def write_sources(path: Path, archives: dict[str, bytes], **changes) -> Path:
    """The real sources file with the toy archives' sums, sizes and counts."""
    sources = yaml.safe_load(fetch.SOURCES.read_text())
    for name, source in sources.items():
        source["expect"] = TOY_EXPECT.get(name, source.get("expect"))
        file = source.get("file") or Path(source.get("url", "")).name
        if file in archives:
            data = archives[file]
            source["checksum"] = f"sha256:{hashlib.sha256(data).hexdigest()}"
            source["size"] = len(data)
    for name, change in changes.items():
        sources[name].update(change)
    path.write_text(yaml.safe_dump(sources))
    return path


def run(data: Path, sources: Path, *args: str) -> int:
    base = ["--data-dir", str(data), "--sources", str(sources), "--quiet", "--retry-wait", "0"]
    return fetch.main([*args, *base])


def test_fetch_through_a_mirror_then_skip(archives, tmp_path, capsys):
    sources, data = write_sources(tmp_path / "sources.yaml", archives), tmp_path / "data"
    with Server(dict(archives)) as server:
        assert run(data, sources, "cifar10", "tiny_imagenet", "esc50", "--mirror", server.url) == 0
        assert sorted(name for name, _ in server.requests) == sorted(f"lerac/{n}" for n in archives)
        # The loaders read what landed.
        splits = load_cifar(str(data), "cifar10")
        assert len(splits.train[1]) + len(splits.val[1]) == 40 and len(splits.test[1]) == 6
        tiny = load_tiny_imagenet(str(data), str(tmp_path / "cache"))
        assert tiny.num_classes == 3 and len(tiny.test[1]) == 6
        assert len(read_meta(data / "ESC-50")) == 20
        # Nothing left in the staging folder: no archive, no half extraction.
        assert list((data / fetch.STAGING).iterdir()) == []
        capsys.readouterr()
        # Already complete: skipped, the server is not asked again.
        assert run(data, sources, "cifar10", "tiny_imagenet", "esc50", "--mirror", server.url) == 0
        assert len(server.requests) == 3
    assert capsys.readouterr().out.count("skipped") == 3
    assert run(data, sources, "--check", "cifar10", "tiny_imagenet", "esc50") == 0
    out = capsys.readouterr().out
    assert out.count(" complete ") == 3 and "train 40/40, test 6/6" in out


def test_a_dropped_connection_resumes(archives, tmp_path, capsys):
    sources, data = write_sources(tmp_path / "sources.yaml", archives), tmp_path / "data"
    name = "cifar-10-python.tar.gz"
    half = len(archives[name]) // 2
    part = data / fetch.STAGING / f"{name}.part"
    with Server(dict(archives)) as server:
        # No retries: the run ends with one error line and keeps the bytes it got.
        server.drop[f"lerac/{name}"] = half
        assert run(data, sources, "cifar10", "--mirror", server.url, "--retries", "0") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: could not download") and "--mirror" in err
        assert part.stat().st_size == half and not (data / "cifar-10-batches-py").exists()
        # The next run asks only for the rest, and a drop within a run is resumed there.
        server.drop[f"lerac/{name}"] = 100
        assert run(data, sources, "cifar10", "--mirror", server.url) == 0
    assert server.requests[1:] == [
        (f"lerac/{name}", f"bytes={half}-"),
        (f"lerac/{name}", f"bytes={half + 100}-"),
    ]
    assert len(load_cifar(str(data), "cifar10").test[1]) == 6 and not part.exists()


def test_a_wrong_checksum_is_refused_and_nothing_stays(archives, tmp_path, capsys):
    wrong = {"cifar10": {"checksum": "md5:" + "0" * 32}}
    sources = write_sources(tmp_path / "sources.yaml", archives, **wrong)
    data = tmp_path / "data"
    with Server(dict(archives)) as server:
        assert run(data, sources, "cifar10", "--mirror", server.url) == 2
    err = capsys.readouterr().err.strip()
    actual = hashlib.md5(archives["cifar-10-python.tar.gz"]).hexdigest()
    assert err.startswith("error: cifar-10-python.tar.gz has md5 ") and len(err.splitlines()) == 1
    assert actual in err and "0" * 32 in err and "removed" in err
    assert list((data / fetch.STAGING).iterdir()) == []
    assert not (data / "cifar-10-batches-py").exists()


def test_an_archive_that_is_not_complete_is_not_put_in_place(archives, tmp_path, capsys):
    # The mirror holds an archive whose content falls short (a clip less than expected).
    sources = write_sources(tmp_path / "sources.yaml", archives, esc50={"expect": {"clips": 21}})
    data = tmp_path / "data"
    with Server(dict(archives)) as server:
        assert run(data, sources, "esc50", "--mirror", server.url) == 2
    assert "clips: 20 of 21" in capsys.readouterr().err
    assert not (data / "ESC-50").exists() and list((data / fetch.STAGING).iterdir()) == []


def test_no_network_no_space_and_unknown_names_are_one_line(archives, tmp_path, capsys):
    data = tmp_path / "data"
    sources = write_sources(tmp_path / "s.yaml", archives)
    server = Server({})
    port = server.httpd.server_address[1]
    server.httpd.server_close()  # a port nothing listens on: connection refused
    refused = f"http://127.0.0.1:{port}"
    assert run(data, sources, "cifar10", "--mirror", refused, "--retries", "1") == 2
    huge = write_sources(tmp_path / "huge.yaml", archives, cifar10={"size": 10**18})
    assert run(data, huge, "cifar10") == 2
    assert run(data, sources, "cifar11") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "after 2 tries" in lines[0] and "not enough space" in lines[1]
    assert "unknown data set or checkpoint 'cifar11'" in lines[2]


# --- hub data and weights from local folders, and offline ---------------------------------


def test_hub_datasets_from_local_copies(archives, tmp_path, capsys):
    sources, data = write_sources(tmp_path / "s.yaml", archives), tmp_path / "data"
    boolq = tmp_path / "google-boolq" / "data"  # the hub repository's own layout
    write_table(boolq / "train-00000-of-00001.parquet", rows("boolq_superglue", N_TRAIN, 1))
    write_table(boolq / "validation-00000-of-00001.parquet", rows("boolq_superglue", N_DEV, 2))
    glue = tmp_path / "nyu-mll-glue"  # one folder per configuration
    write_table(glue / "rte" / "train-00000-of-00001.parquet", rows("rte_hf", N_TRAIN, 1))
    write_table(glue / "rte" / "validation-00000-of-00001.parquet", rows("rte_hf", N_DEV, 2))
    write_table(glue / "qnli" / "train-00000-of-00001.parquet", rows("qnli_hf", 7, 1))
    assert run(data, sources, "boolq", "--from", str(boolq.parent)) == 0
    assert run(data, sources, "rte", "--from", str(glue)) == 0
    written = sorted(p.name for p in (data / "rte").iterdir())
    assert written == ["train.parquet", "validation.parquet"]
    # The text loader reads them: its validation split is the official one.
    from lerac.suite.build import build_data

    cfg = compose_config(["dataset=boolq", "model=lstm", f"paths.data_dir={data}"])
    splits = build_data(cfg)
    assert len(splits.test[1]) == N_DEV and len(splits.train[1]) + len(splits.val[1]) == N_TRAIN
    capsys.readouterr()
    assert run(data, sources, "--check", "boolq", "rte") == 0
    assert capsys.readouterr().out.count(f"train {N_TRAIN}/{N_TRAIN}, test {N_DEV}/{N_DEV}") == 2


def test_hub_offline_is_one_clear_error(archives, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    sources, data = write_sources(tmp_path / "s.yaml", archives), tmp_path / "data"
    assert run(data, sources, "qnli") == 2
    assert run(data, sources, "cvt-13") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "qnli: the hub copy nyu-mll/glue could not be loaded" in lines[0]
    assert "--from DIR" in lines[0] and "--from DIR" in lines[1]
    assert not (data / "qnli").exists() and not (data / "weights").exists()


def test_weights_from_a_folder_load_by_hub_id_and_a_truncated_one_is_caught(
    archives, tmp_path, capsys, monkeypatch
):
    from transformers import AutoModelForSequenceClassification

    from lerac.suite.models.hub import from_pretrained

    sources, data = write_sources(tmp_path / "s.yaml", archives), tmp_path / "data"
    saved = write_tiny_model(tmp_path / "tiny-bert")
    assert run(data, sources, "bert-large-uncased", "--from", str(saved)) == 0
    # The model config's hub id finds the fetched copy, offline.
    monkeypatch.setenv("LERAC_DATA_DIR", str(data))
    model = from_pretrained(AutoModelForSequenceClassification, "bert-large-uncased", num_labels=2)
    assert model.config.hidden_size == 16
    weights = data / "weights" / "bert-large-uncased" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    capsys.readouterr()
    assert run(data, sources, "--check", "bert-large-uncased", "cvt-13") == 1
    out = capsys.readouterr().out
    assert "incomplete" in out and "model.safetensors is truncated" in out
    assert out.splitlines()[2].split()[:2] == ["cvt-13", "missing"]


# --- ImageNet-200 and CREMA-D from the user's copy ----------------------------------------


def test_imagenet200_and_crema_d_from_local_copies(archives, tmp_path, capsys):
    sources, data = write_sources(tmp_path / "s.yaml", archives), tmp_path / "data"
    rng = np.random.default_rng(0)
    imagenet = tmp_path / "imagenet-1k"
    for wnid in read_wnids(WNIDS) + ["n01440764"]:  # one class outside the 200
        for split in ("train", "val"):
            write_image(imagenet / split / wnid / f"{wnid}_0.JPEG", rng, (8, 8))
    assert run(data, sources, "imagenet200") == 2  # no --from: says how
    assert "imagenet200 --from" in capsys.readouterr().err
    assert run(data, sources, "imagenet200", "--from", str(imagenet)) == 0
    link = data / "imagenet" / "train" / read_wnids(WNIDS)[0]
    assert link.is_symlink() and not (data / "imagenet" / "train" / "n01440764").exists()
    crema = write_crema_d(tmp_path / "CREMA-D-repo", actors=2)
    assert run(data, sources, "crema_d", "--from", str(crema)) == 0
    clips, actors = find_clips(data / "CREMA-D")
    assert len(clips.paths) == 24 and len(set(actors)) == 2
    # A copy with a class missing is refused, and the complete one stays.
    shutil.rmtree(imagenet / "val" / read_wnids(WNIDS)[5])
    assert run(data, sources, "imagenet200", "--from", str(imagenet), "--force") == 2
    assert (data / "imagenet" / "val" / read_wnids(WNIDS)[5]).is_symlink()


# --- --check on complete, truncated and missing folders of each family --------------------


def toy_copies(root: Path, archives: dict[str, bytes]) -> None:
    """A complete toy copy of cifar10, tiny_imagenet, esc50, crema_d and rte under root."""
    for name, data in archives.items():
        if name.endswith(".zip"):
            zipfile.ZipFile(io.BytesIO(data)).extractall(root)
        else:
            tarfile.open(fileobj=io.BytesIO(data)).extractall(root, filter="data")
    (root / "ESC-50-master").rename(root / "ESC-50")
    write_crema_d(root / "CREMA-D", actors=2)
    write_table(root / "rte" / "train.parquet", rows("rte_hf", N_TRAIN, 1))
    write_table(root / "rte" / "dev.tsv", rows("rte_glue", N_DEV, 2))


BREAK = {  # damage one data set's copy the way a cut download or a lost file would
    "cifar10": lambda d: (d / "cifar-10-batches-py" / "data_batch_3").write_bytes(
        (d / "cifar-10-batches-py" / "data_batch_3").read_bytes()[:500]
    ),
    "tiny_imagenet": lambda d: shutil.rmtree(d / "tiny-imagenet-200" / "train" / WNIDS3[1]),
    "esc50": lambda d: next((d / "ESC-50" / "audio").glob("3-*.wav")).unlink(),
    "crema_d": lambda d: [p.unlink() for p in (d / "CREMA-D" / "AudioWAV").glob("1002_*")],
    "rte": lambda d: (d / "rte" / "train.parquet").write_bytes(
        (d / "rte" / "train.parquet").read_bytes()[:200]
    ),
}
BROKEN = {
    "cifar10": "data_batch_3 cannot be read",
    "tiny_imagenet": "train 4/6",
    "esc50": "fold3 3/4",
    "crema_d": "actors 1/2",
    "rte": "cannot read",
}


@pytest.mark.parametrize("name", sorted(BREAK))
def test_check_tells_complete_truncated_and_missing(name, archives, tmp_path, capsys):
    sources, data = write_sources(tmp_path / "s.yaml", archives), tmp_path / "data"
    assert run(data, sources, "--check", name) == 1
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == [name, "missing"]
    toy_copies(data, archives)
    assert run(data, sources, "--check", name) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == [name, "complete"]
    BREAK[name](data)
    assert run(data, sources, "--check", name) == 1
    row = capsys.readouterr().out.splitlines()[1]
    assert row.split()[:2] == [name, "incomplete"] and BROKEN[name] in row
