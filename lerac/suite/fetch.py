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

An archive is downloaded into ``<data>/.fetch/`` within limits (size, minimum rate,
deadline), its checksum and size verified (a mismatch removes the file), unpacked as the
format its source declares after every member was checked (lerac/suite/archives.py)
into a temporary folder there, checked against its manifest and ``--check``'s counts and
only then renamed into place: a failed or interrupted fetch never leaves a half folder
where a loader looks. A data set that is already complete is skipped. The threat model
and the limits: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import fcntl
import http.client
import os
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from omegaconf import OmegaConf

from lerac.engine.io import DISK_FULL
from lerac.errors import ConfigError, LeRaCError, one_line
from lerac.suite import archives
from lerac.suite.datacheck import Report, check, table
from lerac.suite.integrity import (
    IntegrityError,
    check_manifest,
    digest,
    how_checked,
    manifest_path,
    write_manifest,
)

SOURCES = Path(__file__).with_name("sources.yaml")
STAGING = ".fetch"  # under the data folder: downloads and extractions in progress
CHUNK = 1 << 20
SPACE_FACTOR = 2.5  # free space wanted per archive byte: the archive and its extraction
# Defaults of the limits (flags of the same names; docs/reliability.md).
MAX_DOWNLOAD = "4G"  # a source without a listed size (one with a size gets exactly that)
MAX_EXPAND = "20G"
MAX_RATIO = 20.0
MIN_RATE = "10k"  # bytes per second, averaged over RATE_WINDOW
RATE_WINDOW = 60.0
DEADLINE = 6 * 3600.0  # seconds for one download, retries included


class FetchError(LeRaCError):
    """A data set could not be fetched (network, checksum, space, manual step)."""


class DiskFull(FetchError):
    """The data folder's file system filled up while fetching."""


class Dropped(OSError):
    """The server closed the connection before the whole file arrived."""


class TooSlow(OSError):
    """The server sent less than the minimum rate over a whole window."""


@dataclass(frozen=True)
class TransferLimits:
    max_bytes: int
    min_rate: float  # bytes per second over ``window`` seconds
    window: float
    deadline: float  # seconds for the whole download, retries included


def parse_size(text: str | int | float) -> int:
    """``4G``, ``500M``, ``10k`` or a plain number of bytes (powers of 1024)."""
    value = str(text).strip().upper().removesuffix("B")
    scale = 1
    if value and value[-1] in "KMGT":
        scale = 1024 ** ("KMGT".index(value[-1]) + 1)
        value = value[:-1]
    try:
        return int(float(value) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500M, 4G)") from None


LIMIT_FLAGS = (
    ("--max-download", parse_size, MAX_DOWNLOAD, "bytes of a source without a listed size"),
    ("--max-expand", parse_size, MAX_EXPAND, "bytes one archive may unpack to"),
    ("--max-ratio", float, MAX_RATIO, "unpacked bytes per archive byte"),
    ("--min-rate", parse_size, MIN_RATE, "bytes per second over --rate-window"),
    ("--rate-window", float, RATE_WINDOW, "seconds"),
    ("--deadline", float, DEADLINE, "seconds for one download, retries included"),
)


# --- sources ---------------------------------------------------------------------------


def load_sources(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The sources file as plain dicts, by name; a ``manifest`` is made relative to the file."""
    path = Path(path or os.environ.get("LERAC_SOURCES") or SOURCES)
    try:
        sources = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the sources file {path} ({one_line(err)})") from err
    for source in sources.values():
        if source.get("manifest"):
            source["manifest"] = str(path.parent / source["manifest"])
    return sources


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


def manual(source: dict[str, Any]) -> bool:
    """ImageNet-200 and CREMA-D: no public archive, built from the user's own copy."""
    return source["kind"] in ("manual", "imagenet")


# --- downloading -----------------------------------------------------------------------


def archive_url(source: dict[str, Any], mirror: str | None) -> tuple[str, str]:
    """The URL to download and the archive's file name (the mirror's key)."""
    name = source.get("file") or PurePosixPath(source["url"]).name
    return (f"{mirror.rstrip('/')}/{name}" if mirror else source["url"]), name


def _content_length(response: Any, have: int) -> int | None:
    try:
        return have + int(response.headers.get("Content-Length"))
    except (TypeError, ValueError):
        return None


def _transfer(url: str, part: Path, limits: TransferLimits, ends: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (a Range request when part has bytes), within
    ``limits``; ``ends`` is the deadline on ``time.monotonic``'s clock."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lerac-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    wait = max(1.0, min(limits.window, ends - time.monotonic()))  # one read's longest wait
    try:
        response = urllib.request.urlopen(request, timeout=wait)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not have:  # 416: the range starts at the end already
            raise
        return
    with response:
        if have and response.status != 206:  # the server ignores Range: start again
            have = 0
        total = _content_length(response, have)
        if total is not None and total > limits.max_bytes:
            raise FetchError(
                f"{url} announces {total:,} bytes, over the limit {limits.max_bytes:,}"
            )
        from tqdm import tqdm

        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, disable=not progress,
                   desc=part.name.removesuffix(".part"), leave=False)  # fmt: skip
        with bar, open(part, "ab" if have else "wb") as out:
            got = _copy_within(response, out, bar, have, limits, ends, url)
    if total is not None and got < total:
        raise Dropped(f"connection closed at byte {got} of {total}")


def _copy_within(response, out, bar, got: int, limits: TransferLimits, ends: float, url: str):
    """Copy the response body to ``out`` as it arrives; stop over the size limit, under
    the minimum rate (a whole window) or past the deadline. The bytes held at the end."""
    start, window_bytes = time.monotonic(), 0
    while chunk := response.read1(CHUNK):  # returns what has arrived, not a full chunk
        got += len(chunk)
        if got > limits.max_bytes:
            raise FetchError(
                f"{url} sent more than {limits.max_bytes:,} bytes (the source's size, or "
                "--max-download); it was stopped and the part removed"
            )
        out.write(chunk)
        bar.update(len(chunk))
        now, window_bytes = time.monotonic(), window_bytes + len(chunk)
        if now > ends:
            raise TimeoutError("the deadline passed")
        if now - start >= limits.window:
            if window_bytes < limits.min_rate * (now - start):
                rate = window_bytes / (now - start)
                raise TooSlow(f"{rate:.0f} bytes/s, under --min-rate {limits.min_rate:.0f}")
            start, window_bytes = now, 0
    return got


def download(
    url: str,
    dest: Path,
    *,
    limits: TransferLimits,
    retries: int = 5,
    wait: float = 2.0,
    keep_part: bool = False,
    progress: bool = True,
) -> Path:
    """``url`` into ``dest`` through ``dest.part``, resuming after a dropped connection.
    A failed download removes the part, unless ``keep_part`` (a source whose size and
    checksum will vet the bytes) and the failure was the network's: then the next run
    asks only for the rest."""
    part = dest.with_name(dest.name + ".part")
    ends, reason, keep = time.monotonic() + limits.deadline, "", False
    try:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(max(0.0, min(wait * attempt, ends - time.monotonic())))
            try:
                _transfer(url, part, limits, ends, progress)
                part.replace(dest)
                return dest
            except urllib.error.HTTPError as err:
                if err.code < 500:  # not there: trying again will not help
                    raise FetchError(f"{url} answered HTTP {err.code} ({err.reason})") from err
                reason = f"HTTP {err.code}"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                if getattr(err, "errno", None) in DISK_FULL:
                    raise DiskFull(f"no space left on the device while writing {part}") from err
                reason = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            if time.monotonic() >= ends:
                reason = f"{reason}; the deadline of {limits.deadline:g} s passed (--deadline)"
                break
        keep = keep_part
        raise FetchError(
            f"could not download {url} after {attempt + 1} tries ({reason}); without network "
            f"access use --mirror URL (a server holding {dest.name}) or put {dest.name} in "
            f"{dest.parent} yourself and run the same command"
            + (" (the part already fetched is kept)" if keep else "")
        )
    except KeyboardInterrupt:
        keep = keep_part
        raise
    finally:
        if not keep:
            part.unlink(missing_ok=True)


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


def need_space(folder: Path, size: int | None, factor: float = SPACE_FACTOR) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if size and free < factor * size:
        raise DiskFull(
            f"not enough space under {folder}: {free / 1e9:.1f} GB free, about "
            f"{factor * size / 1e9:.1f} GB needed (the archive and its extraction)"
        )


# --- one fetch at a time, staging, putting in place ------------------------------------


@contextmanager
def fetch_lock(data_dir: Path, name: str) -> Iterator[None]:
    """One lerac-fetch of ``name`` at a time (an ``flock`` the kernel drops when its
    process dies); holding it, whatever a killed fetch of ``name`` left is removed."""
    root = data_dir / STAGING
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.lock"
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(lock.fileno()).st_ino != os.stat(path).st_ino:
                raise OSError("the lock file was replaced")  # its holder just finished
        except OSError:
            raise FetchError(
                f"another lerac-fetch is fetching {name} into {data_dir}; wait for it to end"
            ) from None
        for stale in root.glob(f"{name}.*.tmp"):  # a killed fetch's extraction
            shutil.rmtree(stale, ignore_errors=True)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # before unlocking: a waiting fetch sees it replaced
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def staging(data_dir: Path, name: str) -> Iterator[Path]:
    """A temporary folder under ``<data>/.fetch`` that is removed whatever happens."""
    folder = data_dir / STAGING / f"{name}.{os.getpid()}.tmp"
    shutil.rmtree(folder, ignore_errors=True)
    try:
        yield folder
    except OSError as err:
        if err.errno in DISK_FULL:
            raise DiskFull(f"no space left on the device under {data_dir}") from err
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove(path: Path) -> None:
    """A folder, or a link (never what it points to)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def place(name: str, source: dict[str, Any], built: Path, data_dir: Path) -> Report:
    """Rename ``built`` into place once it checks complete. A complete copy already there
    (``--force``) is replaced and deleted; an incomplete one is moved aside into
    ``<data>/.fetch`` (never deleted: it may be the user's)."""
    report = check(name, source, built)
    if not report.complete:
        raise FetchError(f"{name}: what was fetched is {report.status} ({report.describe()})")
    final = target(data_dir, source)
    final.parent.mkdir(parents=True, exist_ok=True)
    if not (final.is_symlink() or final.exists()):
        built.rename(final)
        return check(name, source, final)
    complete = check(name, source, final).complete
    aside = data_dir / STAGING / f"{name}.replaced.{time.strftime('%Y%m%d-%H%M%S')}"
    final.rename(aside)
    built.rename(final)
    if complete:
        remove(aside)  # a complete copy fetched again: one copy stays, not two
    else:
        print(f"{name}: the incomplete copy was moved to {aside}", flush=True)
    return check(name, source, final)


# --- one fetcher per kind --------------------------------------------------------------


def transfer_limits(source: dict[str, Any], args: Any) -> TransferLimits:
    return TransferLimits(
        max_bytes=source.get("size") or args.max_download,
        min_rate=args.min_rate,
        window=args.rate_window,
        deadline=args.deadline,
    )


def fetch_archive(name: str, source: dict[str, Any], data_dir: Path, args: Any) -> Report:
    url, file = archive_url(source, args.mirror)
    archive = data_dir / STAGING / file
    fmt = source.get("format") or archives.declared_format(file)
    checked_by = how_checked(name, source, url, local=archive.is_file())
    if not archive.is_file():
        resumable = bool(source.get("size") and source.get("checksum"))
        if not resumable:  # a part no checksum will vet: never appended to
            archive.with_name(file + ".part").unlink(missing_ok=True)
        need_space(archive.parent, source.get("size"))
        print(f"{name}: downloading {url}", flush=True)
        limits = transfer_limits(source, args)
        download(url, archive, limits=limits, retries=args.retries, wait=args.retry_wait,
                 keep_part=resumable, progress=not args.quiet)  # fmt: skip
    verify(archive, source.get("checksum"), source.get("size"))
    try:
        report = unpack_and_place(name, source, archive, fmt, data_dir, args)
    except DiskFull as err:
        if checked_by == "tls":  # nothing vouches for it on a later run: fetch it again then
            archive.unlink(missing_ok=True)
        kept = "" if checked_by == "tls" else f"; the checked archive stays in {archive.parent}"
        raise DiskFull(f"{err}{kept}: free space and run the same command") from err
    except LeRaCError as err:
        archive.unlink(missing_ok=True)  # it does not hold the data set: nothing of it stays
        raise FetchError(f"{one_line(err)}; {archive.name} was removed") from err
    if not args.keep_archives:
        archive.unlink()
    return report


def unpack_and_place(
    name: str, source: dict[str, Any], archive: Path, fmt: str, data_dir: Path, args: Any
) -> Report:
    """The archive's members checked and written into a staging folder, its manifest
    checked (where it has one), the folder renamed into place."""
    limits = archives.Limits(max_bytes=args.max_expand, max_ratio=args.max_ratio)
    with staging(data_dir, name) as folder:
        archives.extract(archive, folder, fmt, limits)
        built = folder / source["member"]
        manifest = manifest_path(source)
        if manifest and not source.get("checksum"):
            check_manifest(name, built, manifest)
        return place(name, source, built, data_dir)


def fetch_files(name: str, source: dict[str, Any], data_dir: Path, args: Any) -> Report:
    """A data set released as separate files (``files``: url, checksum and size each): each
    downloaded within the transfer limits and verified into a staging folder, which is put
    in place once complete. Every file must pin its checksum (nothing else vouches for a
    file that is not unpacked)."""
    files = source["files"]
    need_space(data_dir / STAGING, sum(f.get("size") or 0 for f in files))
    with staging(data_dir, name) as folder:
        folder.mkdir(parents=True)
        for file in files:
            url, file_name = archive_url(file, args.mirror)
            if not file.get("checksum") or PurePosixPath(file_name).name != file_name:
                raise IntegrityError(
                    f"{name}: every file of a `files` source needs a checksum and a plain "
                    f"name ({file_name!r}); fix its entry in the sources file"
                )
            print(f"{name}: downloading {url}", flush=True)
            dest = download(url, folder / file_name, limits=transfer_limits(file, args),
                            retries=args.retries, wait=args.retry_wait,
                            progress=not args.quiet)  # fmt: skip
            verify(dest, file["checksum"], file.get("size"))
        return place(name, source, folder, data_dir)


def fetch_hub_dataset(name: str, source: dict[str, Any], data_dir: Path, args: Any) -> Report:
    import datasets

    hub, config = source["hub_id"], source.get("hub_config")
    if args.from_dir:
        local_files(Path(args.from_dir), args.follow_links)  # refuses links out, devices
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
            f"{name}: {where} could not be loaded ({type(err).__name__}: {one_line(err)}); "
            f"offline, pass --from DIR with a copy of https://huggingface.co/datasets/{hub} "
            "(its parquet files)"
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
            copy_tree(Path(args.from_dir), folder, args.follow_links)
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


# --- copies of a user's folder (--from) --------------------------------------------------


def link_roots(origin: Path) -> list[Path]:
    """Where a link inside ``origin`` may point and still be copied without
    ``--follow-links``: ``origin`` itself, and for a hub cache snapshot
    (``<repo>/snapshots/<revision>``) its repository's ``blobs`` folder."""
    real = origin.resolve()
    roots = [real]
    if real.parent.name == "snapshots":
        roots.append(real.parent.parent / "blobs")
    return roots


def local_files(origin: Path, follow_links: bool) -> list[Path]:
    """The files under ``origin`` (``.git*`` left out), relative to it, once each is known
    to be a regular file: a device, FIFO or socket is refused, and so is a link whose
    target lies outside ``origin`` unless ``follow_links``."""
    roots, files = link_roots(origin), []
    for parent, dirs, names in os.walk(origin):
        here = Path(parent)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".git"))
        for name in dirs + sorted(n for n in names if not n.startswith(".git")):
            path = here / name
            if path.is_symlink():
                real = path.resolve()
                if not (follow_links or any(real.is_relative_to(r) for r in roots)):
                    raise FetchError(
                        f"--from {origin}: {path} is a link to {real}, outside that folder; "
                        "copy the files themselves there, or pass --follow-links to copy "
                        "what the links point to"
                    )
                if name in dirs:
                    raise FetchError(f"--from {origin}: {path} links a folder; copy it there")
            if name in dirs:
                continue
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError:
                regular = False
            if not regular:
                raise FetchError(
                    f"--from {origin}: {path} is not a regular file (a device, FIFO, socket "
                    "or a broken link); remove it from the folder"
                )
            files.append(path.relative_to(origin))
    return files


def copy_tree(origin: Path, dest: Path, follow_links: bool) -> None:
    """Copy the files of ``origin`` (checked by :func:`local_files`) into ``dest``."""
    for relative in local_files(origin, follow_links):
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin / relative, dest / relative)


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
                copy_tree(origin / part, link, args.follow_links)
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
    with fetch_lock(data_dir, name):
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
    p.add_argument(
        "--follow-links", action="store_true", help="--from: copy what links out point to"
    )
    p.add_argument("--sources", help="another sources file (default lerac/suite/sources.yaml)")
    p.add_argument("--force", action="store_true", help="fetch again even when complete")
    p.add_argument("--keep-archives", action="store_true", help="keep archives in <data>/.fetch")
    p.add_argument(
        "--write-manifest", action="store_true", help="write the named sources' manifests"
    )
    p.add_argument("--retries", type=int, default=5, help="resumes after a dropped connection")
    p.add_argument("--retry-wait", type=float, default=2.0, help="seconds, times the attempt")
    limits = p.add_argument_group("limits (docs/reliability.md)")
    for flag, kind, default, what in LIMIT_FLAGS:
        limits.add_argument(flag, type=kind, default=kind(default), help=f"{what} ({default})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def fetch_all(names: list[str], sources: dict[str, dict[str, Any]], data_dir: Path, args) -> int:
    """Fetch each name; with several, a failure is reported and the rest still fetched.
    Ends with what needs the user's own copy and what failed."""
    needs_copy, failed = [], []
    for name in names:
        source = sources[name]
        if manual(source) and not args.from_dir and len(names) > 1:
            needs_copy.append(f"{name}: {source['how']}")  # `all`: say how, fetch the rest
            continue
        try:
            fetch(name, source, data_dir, args)
        except LeRaCError as err:
            if len(names) == 1:
                raise
            print(f"error: {name}: {one_line(err)}", file=sys.stderr, flush=True)
            failed.append(name)
    for line in needs_copy:
        print(f"not fetched, needs your copy: {line}", flush=True)
    if failed:
        print(
            f"not fetched, failed: {', '.join(failed)} (errors above); the same command "
            "fetches them once the cause is fixed",
            flush=True,
        )
        return 2
    return 0


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
    if args.write_manifest:
        return write_manifests(names, sources, data_dir)
    if args.from_dir and len(names) > 1:
        raise ConfigError("--from names one local copy: fetch one data set with it")
    return fetch_all(names, sources, data_dir, args)


def write_manifests(names: list[str], sources: dict[str, dict[str, Any]], data_dir: Path) -> int:
    """``--write-manifest``: each source's manifest from its complete copy."""
    for name in names:
        source, folder = sources[name], target(data_dir, sources[name])
        if not source.get("manifest"):
            raise ConfigError(f"{name} names no manifest file in its sources file (`manifest:`)")
        report = check(name, source, folder)
        if not report.complete:
            raise FetchError(f"{name}: {folder} is {report.status}; fetch it first")
        count = write_manifest(folder, Path(source["manifest"]))
        print(f"{name}: {count} files listed in {source['manifest']}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except LeRaCError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "error: interrupted; run the same command again (a download of a listed size "
            "resumes where it stopped)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
