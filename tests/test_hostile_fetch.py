"""`lerac-fetch` against hostile sources (issue: nothing from outside writes outside the
data folder, runs code, fills the disk or hangs): archives crafted here with links,
devices, escaping and clashing names, nested symlinks past PATH_MAX (CVE-2025-4517's
shape), another format under an archive's name, bombs; a loopback server that sends
forever, slowly, or lies about its length; a full disk; leftovers of a killed fetch;
``--from`` folders with links out and FIFOs."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import yaml

from lerac.suite import archives, fetch
from lerac.suite.datacheck import check
from tests.test_fetch import Server, make_archives, run, write_sources
from tests.text_fixtures import write_tiny_model

LONG = "d" * 247  # a path part; sixteen of them are past PATH_MAX (4096)
STEPS = "abcdefghijklmnop"


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]], gz: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    return member


def nested_symlinks(up: int = 3) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """CVE-2025-4517's shape: links through folders nested past PATH_MAX, where
    os.path.realpath stops resolving, so the `data` filter of an unpatched Python
    (3.11.7 here) takes `escape` for a link inside; the last member overwrites mine.txt
    through it, ``up`` folders above the extraction (3: beside lerac-fetch's data folder)."""
    members, path = [], ""
    for step in STEPS:
        members.append((info(os.path.join(path, LONG), tarfile.DIRTYPE), None))
        members.append((info(os.path.join(path, step), tarfile.SYMTYPE, LONG), None))
        path = os.path.join(path, LONG)
    deep = os.path.join(*STEPS, "l" * 254)
    members.append((info(deep, tarfile.SYMTYPE, os.path.join(*[".."] * len(STEPS))), None))
    members.append((info("escape", tarfile.SYMTYPE, deep + "/.." * up), None))
    members.append((info("escape/mine.txt"), b"overwritten from the archive\n"))
    return members


GOOD = [(info("cifar-10-batches-py", tarfile.DIRTYPE), None)]
HOSTILE_TARS = {
    "symlink": GOOD + [(info("cifar-10-batches-py/x", tarfile.SYMTYPE, "/etc/passwd"), None)],
    "hardlink": GOOD + [(info("cifar-10-batches-py/x", tarfile.LNKTYPE, "/etc/passwd"), None)],
    "fifo": GOOD + [(info("cifar-10-batches-py/pipe", tarfile.FIFOTYPE), None)],
    "device": GOOD + [(info("cifar-10-batches-py/zero", tarfile.CHRTYPE), None)],
    "absolute": GOOD + [(info("/tmp/lerac-absolute.txt"), b"x")],
    "dotdot": GOOD + [(info("cifar-10-batches-py/../../outside.txt"), b"x")],
    "nested symlinks": nested_symlinks(),
}
REASONS = {
    "symlink": "holds a link",
    "hardlink": "holds a link",
    "fifo": "holds a device or FIFO",
    "device": "holds a device or FIFO",
    "absolute": "absolute path",
    "dotdot": "leaves its folder",
    "nested symlinks": "holds a link",
}


@pytest.fixture(scope="module")
def toy_archives(tmp_path_factory) -> dict[str, bytes]:
    return make_archives(tmp_path_factory.mktemp("made"))


def outside_files(root: Path, data: Path) -> set[Path]:
    return {p for p in root.rglob("*") if data not in p.parents and p != data}


def pinned(tmp_path: Path, name: str, payload: bytes, **fields) -> Path:
    """A sources file that pins ``payload``'s checksum for ``name``: only the archive's
    own checks stand between it and the disk (as for a mirror's own sources file)."""
    sources = yaml.safe_load(fetch.SOURCES.read_text())
    sources[name].update(
        checksum=f"sha256:{hashlib.sha256(payload).hexdigest()}", size=len(payload), **fields
    )
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(sources))
    return path


@pytest.mark.parametrize("kind", sorted(HOSTILE_TARS))
def test_a_tar_with_links_devices_or_escaping_names_is_refused_before_writing(
    kind, tmp_path, capsys
):
    root = tmp_path / "root"
    data = root / "data"
    root.mkdir()
    (root / "mine.txt").write_text("the user's file\n")  # beside the data folder
    payload = tar_of(HOSTILE_TARS[kind])
    sources = pinned(tmp_path, "cifar10", payload)
    before = outside_files(root, data)
    with Server({"cifar-10-python.tar.gz": payload}) as server:
        assert run(data, sources, "cifar10", "--mirror", server.url) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert REASONS[kind] in err and "was removed" in err, err
    assert outside_files(root, data) == before  # nothing new beside the data folder
    assert (root / "mine.txt").read_text() == "the user's file\n"
    assert not Path("/tmp/lerac-absolute.txt").exists()
    assert list((data / fetch.STAGING).iterdir()) == []  # the archive is gone too
    assert not (data / "cifar-10-batches-py").exists()


def test_the_nested_symlink_archive_escapes_tarfiles_data_filter_but_not_the_fetch(tmp_path):
    # Why lerac-fetch does not rely on the filter: on this Python it lets the archive out.
    payload = tar_of(nested_symlinks(up=2), gz=False)
    (tmp_path / "a.tar").write_bytes(payload)
    (tmp_path / "x" / "y").mkdir(parents=True)
    escaped = tmp_path / "mine.txt"
    with tarfile.open(tmp_path / "a.tar") as t:
        try:
            t.extractall(tmp_path / "x" / "y", filter="data")
        except tarfile.FilterError:
            pass  # a patched Python (3.11.13+, 3.12.11+, 3.13.4+) refuses it
    assert escaped.exists() != archives.tar_filter_holds()  # the versions docs/reliability.md names
    escaped.unlink(missing_ok=True)
    limits = archives.Limits(max_bytes=1 << 30, max_ratio=100)
    with pytest.raises(archives.ArchiveError, match="holds a link"):
        archives.extract(tmp_path / "a.tar", tmp_path / "z", "tar", limits)
    assert not (tmp_path / "z").exists() and not escaped.exists()


def zip_of(entries: list[tuple[str, bytes, int]]) -> bytes:
    """A zip of (name, data, unix mode) entries, written member by member as crafted."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a name written twice: on purpose
        for name, data, mode in entries:
            entry = zipfile.ZipInfo(name)
            entry.external_attr = mode << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(entry, data)
    return buffer.getvalue()


FILE = stat.S_IFREG | 0o644
HOSTILE_ZIPS = {
    "symlink": ([("tiny-imagenet-200/x", b"/etc/passwd", stat.S_IFLNK | 0o777)], "holds a link"),
    "absolute": ([("/tmp/lerac-absolute.txt", b"x", FILE)], "absolute path"),
    "dotdot": ([("tiny-imagenet-200/../../outside.txt", b"x", FILE)], "leaves its folder"),
    "backslash": ([("tiny-imagenet-200\\..\\..\\x", b"x", FILE)], "unsafe name"),
    "name clash": (
        [("tiny-imagenet-200/a", b"x", FILE), ("tiny-imagenet-200/a/b", b"y", FILE)],
        "both as a file and as the folder",
    ),
    "twice": ([("tiny-imagenet-200/a", b"x", FILE), ("tiny-imagenet-200/a", b"y", FILE)], "twice"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_ZIPS))
def test_a_zip_with_links_or_bad_names_is_refused_and_removed(kind, tmp_path, capsys):
    entries, reason = HOSTILE_ZIPS[kind]
    payload = zip_of(entries)
    data = tmp_path / "data"
    sources = pinned(tmp_path, "tiny_imagenet", payload)
    with Server({"tiny-imagenet-200.zip": payload}) as server:
        for _ in range(2):  # a rerun says the same in one line: the bad archive is gone
            assert run(data, sources, "tiny_imagenet", "--mirror", server.url) == 2
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and reason in err and "Traceback" not in err, err
            assert list((data / fetch.STAGING).iterdir()) == []
    assert len(server.requests) == 2
    assert {p.name for p in tmp_path.iterdir()} == {"data", "sources.yaml"}


def test_an_archive_is_opened_only_as_the_format_its_source_declares(tmp_path, capsys):
    # A tar (with a link) served under the zip's name: content sniffing would unpack it.
    payload = tar_of(HOSTILE_TARS["symlink"])
    data = tmp_path / "data"
    sources = pinned(tmp_path, "tiny_imagenet", payload)
    with Server({"tiny-imagenet-200.zip": payload}) as server:
        assert run(data, sources, "tiny_imagenet", "--mirror", server.url) == 2
    err = capsys.readouterr().err
    assert "is not a zip archive, as its source declares" in err
    assert list((data / fetch.STAGING).iterdir()) == []


def test_esc50_without_a_checksum_is_taken_only_from_its_https_address(tmp_path, capsys):
    # The real sources entry: no checksum, no manifest file yet. A mirror (or plain http)
    # serving a hostile tar under its name is refused before a byte is downloaded.
    root = tmp_path / "root"
    data = root / "data"
    root.mkdir()
    payload = tar_of(nested_symlinks(), gz=False)
    with Server({"ESC-50-master.zip": payload}) as server:
        assert run(data, fetch.SOURCES, "esc50", "--mirror", server.url) == 2
    assert server.requests == []
    err = capsys.readouterr().err
    assert "no checksum or manifest" in err and "--write-manifest esc50" in err
    assert outside_files(root, data) == set()


def test_esc50_through_a_mirror_is_checked_against_its_manifest(toy_archives, tmp_path, capsys):
    data, good = tmp_path / "data", toy_archives["ESC-50-master.zip"]
    manifest = tmp_path / "esc50.sha256"
    sources = write_sources(tmp_path / "s.yaml", {})  # esc50 keeps checksum null
    entries = yaml.safe_load(sources.read_text())
    entries["esc50"]["manifest"] = str(manifest)
    sources.write_text(yaml.safe_dump(entries))
    # A maintainer writes the manifest from a copy fetched from the trusted address.
    with Server({"ESC-50-master.zip": good}) as server:
        trusted = write_sources(tmp_path / "t.yaml", {"ESC-50-master.zip": good})
        assert run(tmp_path / "trusted", trusted, "esc50", "--mirror", server.url) == 0
    assert run(tmp_path / "trusted", sources, "esc50", "--write-manifest") == 0
    assert len(manifest.read_text().splitlines()) == 21  # 20 clips and meta/esc50.csv
    # A mirror's copy with one clip changed is refused; the true copy is accepted.
    tampered = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as z, zipfile.ZipFile(tampered, "w") as out:
        for entry in z.infolist():
            body = z.read(entry)
            out.writestr(
                entry, body[:-4] + b"\0\0\0\0" if entry.filename.endswith("-0.wav") else body
            )
    for payload, status in ((tampered.getvalue(), 2), (good, 0)):
        with Server({"ESC-50-master.zip": payload}) as server:
            assert run(data, sources, "esc50", "--mirror", server.url) == status
    err = capsys.readouterr().err
    assert "does not match its manifest" in err and "files differ from it" in err
    assert check("esc50", entries["esc50"] | {"expect": {}}, data / "ESC-50").complete


def infinite(total: int = 50 << 20, chunk: int = 64 << 10):
    return lambda: (b"\0" * chunk for _ in range(total // chunk))


def slowly(count: int = 100, pause: float = 0.1):
    def chunks():
        for _ in range(count):
            time.sleep(pause)
            yield b"\0"

    return chunks


LIMITS = [
    ("endless", (None, infinite()), ["--max-download", "300k"], "sent more than 307,200 bytes"),
    ("announced", (10**12, infinite(1 << 20)), [], "announces 1,000,000,000,000 bytes"),
    ("too slow", (None, slowly()), ["--min-rate", "1k", "--rate-window", "1"], "--min-rate"),
    ("deadline", (None, slowly(100, 0.05)), ["--min-rate", "0", "--deadline", "1"], "--deadline"),
]


@pytest.mark.parametrize("case, stream, flags, words", LIMITS, ids=[c[0] for c in LIMITS])
def test_a_download_is_bounded_in_size_rate_and_time(case, stream, flags, words, tmp_path, capsys):
    # ESC-50 with a manifest: the source with no listed size, so a mirror may be asked.
    manifest = tmp_path / "esc50.sha256"
    manifest.write_text("")
    sources = write_sources(tmp_path / "s.yaml", {}, esc50={"manifest": str(manifest)})
    data = tmp_path / "data"
    with Server({}) as server:
        server.streams["ESC-50-master.zip"] = stream
        started = time.monotonic()
        assert run(data, sources, "esc50", "--mirror", server.url, "--retries", "0", *flags) == 2
        took = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err, err
    assert took < 8, took  # never the 50 MB or the 10 s the server would take
    assert list((data / fetch.STAGING).iterdir()) == []  # no .part stays to fill the disk


def bomb(size: int = 4 << 20) -> bytes:
    return zip_of([("tiny-imagenet-200/zeros", b"\0" * size, FILE)])


BOMB_LIMITS = [
    ([], "more than 20 times its size (--max-ratio)"),
    (["--max-ratio", "1e6", "--max-expand", "1M"], "more than 1,048,576 bytes (--max-expand)"),
]


@pytest.mark.parametrize("flags, words", BOMB_LIMITS)
def test_an_archive_bomb_is_refused_before_it_is_unpacked(flags, words, tmp_path, capsys):
    payload = bomb()
    assert len(payload) < 20_000  # 4 MB of zeros
    data = tmp_path / "data"
    sources = pinned(tmp_path, "tiny_imagenet", payload)
    with Server({"tiny-imagenet-200.zip": payload}) as server:
        assert run(data, sources, "tiny_imagenet", "--mirror", server.url, *flags) == 2
    assert words in capsys.readouterr().err
    assert list((data / fetch.STAGING).iterdir()) == []


def test_a_full_disk_keeps_the_checked_archive(toy_archives, tmp_path, capsys, monkeypatch):
    sources, data = write_sources(tmp_path / "s.yaml", toy_archives), tmp_path / "data"
    write = archives._write

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archives, "_write", full)
    with Server(dict(toy_archives)) as server:
        assert run(data, sources, "cifar10", "--mirror", server.url) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no space left" in err and "checked archive stays" in err
    assert (data / fetch.STAGING / "cifar-10-python.tar.gz").is_file()
    assert [p.name for p in (data / fetch.STAGING).iterdir()] == ["cifar-10-python.tar.gz"]
    # Space again: the same command unpacks the kept archive; no server is asked.
    monkeypatch.setattr(archives, "_write", write)
    assert run(data, sources, "cifar10", "--mirror", "http://127.0.0.1:9") == 0
    assert check(
        "cifar10", yaml.safe_load(sources.read_text())["cifar10"], data / "cifar-10-batches-py"
    ).complete


def test_force_keeps_one_copy_and_a_killed_fetchs_leftovers_go(toy_archives, tmp_path):
    sources, data = write_sources(tmp_path / "s.yaml", toy_archives), tmp_path / "data"
    staging = data / fetch.STAGING
    (staging / "cifar10.4242.tmp" / "half").mkdir(parents=True)  # SIGKILL mid-extraction
    (staging / "cifar10.4242.tmp" / "half" / "data_batch_1").write_bytes(b"x" * 100)
    with Server(dict(toy_archives)) as server:
        for _ in range(3):
            assert run(data, sources, "cifar10", "--force", "--mirror", server.url) == 0
    assert list(staging.iterdir()) == []  # no old copy per --force, no stale extraction
    assert sorted(p.name for p in data.iterdir()) == [".fetch", "cifar-10-batches-py"]


def test_all_fetches_the_rest_after_a_failure_and_lists_what_you_supply(
    toy_archives, tmp_path, capsys
):
    broken = {"cifar10": {"checksum": "md5:" + "0" * 32}}
    sources = write_sources(tmp_path / "s.yaml", toy_archives, **broken)
    data = tmp_path / "data"
    with Server(dict(toy_archives)) as server:
        names = ["cifar10", "imagenet200", "tiny_imagenet", "crema_d"]
        assert run(data, sources, *names, "--mirror", server.url) == 2
    out, err = capsys.readouterr()
    assert err.strip().startswith("error: cifar10: cifar-10-python.tar.gz has md5")
    assert (data / "tiny-imagenet-200" / "wnids.txt").is_file()  # fetched after the failure
    tail = out.strip().splitlines()[-3:]
    assert tail[0].startswith("not fetched, needs your copy: imagenet200")
    assert tail[1].startswith("not fetched, needs your copy: crema_d")
    assert tail[2].startswith("not fetched, failed: cifar10")


def test_from_refuses_links_out_of_its_folder_and_fifos(toy_archives, tmp_path, capsys):
    sources, data = write_sources(tmp_path / "s.yaml", toy_archives), tmp_path / "data"
    model = write_tiny_model(tmp_path / "model")
    secret = tmp_path / "secret.txt"
    secret.write_text("not a model file")
    (model / "vocab.txt").rename(tmp_path / "vocab.txt")
    (model / "vocab.txt").symlink_to(tmp_path / "vocab.txt")
    os.mkfifo(model / "pipe.txt")  # reading it would hang the copy
    assert run(data, sources, "bert-large-uncased", "--from", str(model)) == 2
    assert "pipe.txt is not a regular file" in capsys.readouterr().err
    (model / "pipe.txt").unlink()
    assert run(data, sources, "bert-large-uncased", "--from", str(model)) == 2
    err = capsys.readouterr().err
    assert "vocab.txt is a link to" in err and "--follow-links" in err
    assert not (data / "weights").exists()
    # Asked explicitly, the link's target is copied as a file (never a link).
    assert run(data, sources, "bert-large-uncased", "--from", str(model), "--follow-links") == 0
    copied = data / "weights" / "bert-large-uncased" / "vocab.txt"
    assert not copied.is_symlink() and copied.read_text() == (tmp_path / "vocab.txt").read_text()


def test_from_takes_a_hub_cache_snapshot_whose_links_point_into_its_blobs(tmp_path, toy_archives):
    sources, data = write_sources(tmp_path / "s.yaml", toy_archives), tmp_path / "data"
    model = write_tiny_model(tmp_path / "model")
    repo = tmp_path / "hub" / "models--bert-large-uncased"
    snapshot = repo / "snapshots" / "0123abc"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in model.iterdir():  # the hub cache's layout: names linked to content blobs
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    assert run(data, sources, "bert-large-uncased", "--from", str(snapshot)) == 0
    weights = data / "weights" / "bert-large-uncased"
    assert sorted(p.name for p in weights.iterdir()) == sorted(p.name for p in model.iterdir())
    assert not any(p.is_symlink() for p in weights.iterdir())
