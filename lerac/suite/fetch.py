"""`lerac-fetch`: every data set and checkpoint of the paper, in the layout the suite reads.

    lerac-fetch cifar10 cifar100 tiny_imagenet esc50      # archives, verified
    lerac-fetch boolq rte qnli cvt-13 bert-large-uncased  # HuggingFace hub
    lerac-fetch all                                       # everything downloadable
    lerac-fetch imagenet200 --from /data/imagenet-1k      # symlinks of the 200 classes
    lerac-fetch crema_d --from CREMA-D                    # a clone of its repository
    lerac-fetch --check [NAME ...]                        # complete / incomplete / missing
    lerac-fetch esc50 --mirror http://mirror.local/lerac  # archives by file name there

Everything lands under the data folder (``--data-dir``, env LERAC_DATA_DIR, default
``data``: what ``paths.data_dir`` reads), checkpoints under its ``weights/`` folder, where
the models look for a hub id's files before the hub (lerac/suite/models/hub.py). Sources,
checksums and sizes: lerac/suite/sources.yaml (``--sources FILE`` reads another).

An archive is downloaded into ``<data>/.fetch/`` (a dropped connection resumes with an
HTTP Range request, as does the next run), its checksum and size verified (a mismatch
removes the file), extracted into a temporary folder there, checked with ``--check``'s
counts and only then renamed into place: a failed or interrupted fetch never leaves a
half folder where a loader looks. A data set that is already complete is skipped.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from omegaconf import OmegaConf

from lerac.errors import ConfigError, LeRaCError
from lerac.suite.datacheck import Report, check, table

SOURCES = Path(__file__).with_name("sources.yaml")
STAGING = ".fetch"  # under the data folder: downloads and extractions in progress
CHUNK = 1 << 20
SPACE_FACTOR = 2.5  # free space wanted per archive byte: the archive and its extraction


class FetchError(LeRaCError):
    """A data set could not be fetched (network, checksum, space, manual step)."""


class Dropped(OSError):
    """The server closed the connection before the whole file arrived."""


# --- sources ---------------------------------------------------------------------------


def load_sources(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The sources file as plain dicts, by name."""
    path = Path(path or os.environ.get("LERAC_SOURCES") or SOURCES)
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the sources file {path} ({err})") from err


def resolve_names(names: Sequence[str], sources: dict[str, dict[str, Any]]) -> list[str]:
    """Names as given (``all``: everything, hub ids of checkpoints accepted), in order."""
    aliases = {s["repo"]: n for n, s in sources.items() if s.get("repo")}
    out: list[str] = []
    for name in names:
        picked = list(sources) if name == "all" else [aliases.get(name, name)]
        unknown = [n for n in picked if n not in sources]
        if unknown:
            raise ConfigError(
                f"unknown data set or checkpoint '{unknown[0]}': choose from "
                f"{', '.join(sources)} or all"
            )
        out += [n for n in picked if n not in out]
    return out


def target(data_dir: Path, source: dict[str, Any]) -> Path:
    return data_dir / source["target"]


# --- downloading -----------------------------------------------------------------------


def archive_url(source: dict[str, Any], mirror: str | None) -> tuple[str, str]:
    """The URL to download and the archive's file name (the mirror's key)."""
    name = source.get("file") or PurePosixPath(source["url"]).name
    return (f"{mirror.rstrip('/')}/{name}" if mirror else source["url"]), name


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (a Range request when part has bytes)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lerac-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not have:  # 416: the range starts at the end already
            raise
        return
    with response:
        if have and response.status != 206:  # the server ignores Range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        from tqdm import tqdm

        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, disable=not progress,
                   desc=part.name.removesuffix(".part"), leave=False)  # fmt: skip
        with bar, open(part, "ab" if have else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
            got = out.tell()
    if total is not None and got < total:
        raise Dropped(f"connection closed at byte {got} of {total}")


def download(url: str, dest: Path, retries: int = 5, wait: float = 2.0, progress=True) -> Path:
    """``url`` into ``dest``, resuming from ``dest.part`` after a dropped connection."""
    part = dest.with_name(dest.name + ".part")
    reason = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(wait * attempt)
        try:
            _transfer(url, part, timeout=60, progress=progress)
            part.replace(dest)
            return dest
        except urllib.error.HTTPError as err:
            if err.code < 500:  # not there: trying again will not help
                raise FetchError(f"{url} answered HTTP {err.code} ({err.reason})") from err
            reason = f"HTTP {err.code}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if getattr(err, "errno", None) == errno.ENOSPC:
                raise FetchError(f"no space left on the device while writing {part}") from err
            reason = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
    raise FetchError(
        f"could not download {url} after {retries + 1} tries ({reason}); without network "
        f"access use --mirror URL (a server holding {dest.name}) or put {dest.name} in "
        f"{dest.parent} yourself and run the same command (the part already fetched is kept)"
    )


def digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def verify(file: Path, checksum: str | None, size: int | None) -> None:
    """Raise (after removing ``file``) unless it has the expected size and checksum."""
    problem = None
    if size is not None and file.stat().st_size != size:
        problem = f"is {file.stat().st_size} bytes, not {size}"
    elif checksum:
        algorithm, _, expected = checksum.partition(":")
        actual = digest(file, algorithm)
        if actual != expected.lower():
            problem = f"has {algorithm} {actual}, not the expected {expected}"
    if problem:
        file.unlink()
        raise FetchError(
            f"{file.name} {problem}: the download is damaged or the server holds another "
            "file; it was removed, run the same command again"
        )


def need_space(folder: Path, size: int | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if size and free < SPACE_FACTOR * size:
        raise FetchError(
            f"not enough space under {folder}: {free / 1e9:.1f} GB free, about "
            f"{SPACE_FACTOR * size / 1e9:.1f} GB needed (the archive and its extraction)"
        )


# --- extracting and putting in place ---------------------------------------------------


def extract(archive: Path, into: Path) -> None:
    """A .tar(.gz) or .zip into ``into``; no member may land outside it."""
    into.mkdir(parents=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                if member.startswith("/") or ".." in PurePosixPath(member).parts:
                    raise FetchError(f"{archive.name} holds an unsafe path: {member}")
            z.extractall(into)
    else:
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")  # refuses absolute paths, .., device files


@contextmanager
def staging(data_dir: Path, name: str):
    """A temporary folder under ``<data>/.fetch`` that is removed whatever happens."""
    folder = data_dir / STAGING / f"{name}.{os.getpid()}.tmp"
    shutil.rmtree(folder, ignore_errors=True)
    try:
        yield folder
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise FetchError(f"no space left on the device under {data_dir}") from err
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def place(name: str, source: dict[str, Any], built: Path, data_dir: Path) -> Report:
    """Rename ``built`` into place once it checks complete. An incomplete copy already
    there is moved aside into ``<data>/.fetch`` (never deleted: it may be the user's)."""
    report = check(name, source, built)
    if not report.complete:
        raise FetchError(f"{name}: what was fetched is {report.status} ({report.describe()})")
    final = target(data_dir, source)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_symlink() or final.exists():
        aside = data_dir / STAGING / f"{name}.replaced.{time.strftime('%Y%m%d-%H%M%S')}"
        final.rename(aside)
        print(f"{name}: the incomplete copy was moved to {aside}", flush=True)
    built.rename(final)
    return check(name, source, final)


# --- one fetcher per kind --------------------------------------------------------------


def fetch_archive(name: str, source: dict[str, Any], data_dir: Path, args: Any) -> Report:
    url, file = archive_url(source, args.mirror)
    archive = data_dir / STAGING / file
    if not archive.is_file():
        need_space(archive.parent, source.get("size"))
        print(f"{name}: downloading {url}", flush=True)
        download(url, archive, args.retries, args.retry_wait, progress=not args.quiet)
    verify(archive, source.get("checksum"), source.get("size"))
    try:
        with staging(data_dir, name) as folder:
            extract(archive, folder)
            report = place(name, source, folder / source["member"], data_dir)
    except (FetchError, tarfile.TarError, zipfile.BadZipFile) as err:
        archive.unlink()  # it does not hold the data set: nothing of it stays
        if isinstance(err, FetchError):
            raise
        raise FetchError(f"{archive.name} cannot be extracted ({err}); it was removed") from err
    if not args.keep_archives:
        archive.unlink()
    return report


def fetch_files(name: str, source: dict[str, Any], data_dir: Path, args: Any) -> Report:
    """A data set released as separate files (``files``: url, checksum, size each): each
    downloaded and verified into a staging folder, which is put in place once complete."""
    files = source["files"]
    need_space(data_dir / STAGING, sum(f.get("size") or 0 for f in files))
    with staging(data_dir, name) as folder:
        folder.mkdir(parents=True)
        for file in files:
            url, file_name = archive_url(file, args.mirror)
            print(f"{name}: downloading {url}", flush=True)
            dest = download(url, folder / file_name, args.retries, args.retry_wait,
                            progress=not args.quiet)  # fmt: skip
            verify(dest, file.get("checksum"), file.get("size"))
        return place(name, source, folder, data_dir)


def fetch_hub_dataset(name: str, source: dict[str, Any], data_dir: Path, args: Any) -> Report:
    import datasets

    hub, config = source["hub_id"], source.get("hub_config")
    try:
        if args.from_dir:  # a local copy of the hub repository (git clone, snapshot)
            local = Path(args.from_dir)
            sub = config if config and (local / config).is_dir() else None
            loaded = datasets.load_dataset(str(local), data_dir=sub)
        else:
            loaded = datasets.load_dataset(hub, config)
    except Exception as err:  # the hub and datasets raise many types; all end the same
        where = args.from_dir or f"the hub copy {hub}"
        raise FetchError(
            f"{name}: {where} could not be loaded ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); offline, pass --from DIR with "
            f"a copy of https://huggingface.co/datasets/{hub} (its parquet files)"
        ) from err
    with staging(data_dir, name) as folder:
        folder.mkdir(parents=True)
        for split, hub_split in source["splits"].items():
            loaded[hub_split].to_parquet(str(folder / f"{split}.parquet"))
        return place(name, source, folder, data_dir)


def fetch_hub_model(name: str, source: dict[str, Any], data_dir: Path, args: Any) -> Report:
    with staging(data_dir, name) as folder:
        if args.from_dir:  # a folder written by save_pretrained, or a hub snapshot
            if not Path(args.from_dir).is_dir():
                raise FetchError(f"{name}: --from {args.from_dir} is not a folder")
            shutil.copytree(args.from_dir, folder, ignore=shutil.ignore_patterns(".git*"))
        else:
            snapshot(name, source["repo"], folder)
        return place(name, source, folder, data_dir)


def snapshot(name: str, repo: str, folder: Path) -> None:
    """The repository's configuration, tokenizer and one weight file (safetensors when
    there is one, else the torch file), not its copies for other frameworks."""
    from huggingface_hub import snapshot_download

    try:
        for weights in ("model.safetensors", "pytorch_model.bin"):
            snapshot_download(repo, local_dir=folder, allow_patterns=["*.json", "*.txt", weights])
            if (folder / weights).is_file():
                return
    except Exception as err:  # offline, unreachable, not found: one line
        raise FetchError(
            f"{name}: the hub repository {repo} could not be downloaded ({type(err).__name__}); "
            f"offline, fetch it on a machine with network access (`lerac-fetch {name}`) and "
            f"copy the folder, or pass --from DIR with a folder written by save_pretrained"
        ) from err


def fetch_linked(name: str, source: dict[str, Any], data_dir: Path, args: Any) -> Report:
    """ImageNet-200 and CREMA-D from the user's own copy (``--from``), linked or copied."""
    if not args.from_dir:
        raise FetchError(f"{name} has no public download: {source['how']}")
    origin = Path(args.from_dir).resolve()
    if source["kind"] == "imagenet":
        from lerac.suite.data.imagenet200 import WNIDS, read_wnids

        parts = [Path(split, w) for split in ("train", "val") for w in read_wnids(WNIDS)]
    else:  # CREMA-D: the clips folder
        parts = [Path("AudioWAV")] if (origin / "AudioWAV").is_dir() else [Path(".")]
    missing = [p for p in parts if not (origin / p).is_dir()]
    if missing:
        raise FetchError(
            f"{name}: {origin / missing[0]} is not a folder ({len(missing)} of {len(parts)} "
            f"missing); {source['how']} (ImageNet's val sorted into val/<wnid>/)"
        )
    with staging(data_dir, name) as folder:
        for part in parts:
            link = folder / ("AudioWAV" if part == Path(".") else part)
            link.parent.mkdir(parents=True, exist_ok=True)
            if args.copy:
                shutil.copytree(origin / part, link)
            else:
                link.symlink_to(origin / part, target_is_directory=True)
        return place(name, source, folder, data_dir)


FETCHERS: dict[str, Callable[[str, dict[str, Any], Path, Any], Report]] = {
    "archive": fetch_archive,
    "files": fetch_files,
    "hub_dataset": fetch_hub_dataset,
    "hub_model": fetch_hub_model,
    "imagenet": fetch_linked,
    "manual": fetch_linked,
}


def fetch(name: str, source: dict[str, Any], data_dir: Path, args: Any) -> Report:
    """Fetch one data set or checkpoint unless it is already complete."""
    report = check(name, source, target(data_dir, source))
    if report.complete and not args.force:
        print(f"{name}: complete in {report.folder}; skipped", flush=True)
        return report
    report = FETCHERS[source["kind"]](name, source, data_dir, args)
    print(f"{name}: {report.status} in {report.folder} ({report.describe()})", flush=True)
    return report


# --- command line ----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lerac-fetch",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "names", nargs="*", help="data sets / checkpoints (lerac/suite/sources.yaml), all"
    )
    p.add_argument("--check", action="store_true", help="report complete/incomplete/missing")
    p.add_argument("--data-dir", default=os.environ.get("LERAC_DATA_DIR", "data"))
    p.add_argument("--mirror", default=os.environ.get("LERAC_MIRROR"), help="archives base URL")
    p.add_argument("--from", dest="from_dir", help="a local copy (ImageNet, CREMA-D, hub)")
    p.add_argument("--copy", action="store_true", help="copy the --from folder, not symlinks")
    p.add_argument("--sources", help="another sources file (default lerac/suite/sources.yaml)")
    p.add_argument("--force", action="store_true", help="fetch again even when complete")
    p.add_argument("--keep-archives", action="store_true", help="keep archives in <data>/.fetch")
    p.add_argument("--retries", type=int, default=5, help="resumes after a dropped connection")
    p.add_argument("--retry-wait", type=float, default=2.0, help="seconds, times the attempt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    sources = load_sources(args.sources)
    data_dir = Path(args.data_dir)
    if args.check:
        names = resolve_names(args.names or ["all"], sources)
        reports = [check(n, sources[n], target(data_dir, sources[n])) for n in names]
        print(table(reports))
        return 0 if all(r.complete for r in reports) else 1
    if not args.names:
        raise ConfigError("name what to fetch (e.g. cifar10, all) or pass --check")
    names = resolve_names(args.names, sources)
    if args.from_dir and len(names) > 1:
        raise ConfigError("--from names one local copy: fetch one data set with it")
    manual = []
    for name in names:
        source = sources[name]
        if source["kind"] in ("manual", "imagenet") and not args.from_dir and len(names) > 1:
            manual.append(f"{name}: {source['how']}")  # `all`: say how, fetch the rest
            continue
        fetch(name, source, data_dir, args)
    for line in manual:
        print(f"not fetched, needs your copy: {line}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except LeRaCError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the same command resumes the download", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
