"""Archives from outside, unpacked without trusting them.

An archive is opened only as the format its source declares (``tar``, ``tar.gz`` or
``zip``): a tar served under a zip's name is refused, not unpacked. Every member is
checked before anything is written, and the whole archive is refused when one member is
a link (symbolic or hard), a device, a FIFO or anything else that is not a plain file or
a folder; has an absolute name, a drive letter, a backslash or a ``..`` part; appears
twice; is a file and also the folder of another member (``a`` and ``a/b``); or when the
members add up to more bytes, more members or a higher expansion ratio than the limits
allow. Then the members are written one by one by this module, never by ``tarfile`` or
``zipfile``'s own extraction, into a folder that did not exist before: folders are made
with ``mkdir`` and checked not to be links, files are created with ``O_EXCL`` and
``O_NOFOLLOW`` and get plain permissions (0644, folders 0755), whatever the archive says.
Bytes are counted as they are written, so a member whose header lies about its size is
caught too.

This does not depend on ``tarfile``'s extraction filters, whose ``data`` filter could be
bypassed before Python 3.9.23, 3.10.18, 3.11.13, 3.12.11 and 3.13.4 (CVE-2025-4517 and
its siblings, python/cpython#135034): an archive with a link is refused outright.
"""

from __future__ import annotations

import os
import stat
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lerac.engine.io import DISK_FULL
from lerac.errors import LeRaCError

FORMATS = {".tar.gz": "tar.gz", ".tgz": "tar.gz", ".tar": "tar", ".zip": "zip"}
# The first release of each Python line whose tarfile `data` filter holds against
# CVE-2025-4517 and its siblings (python/cpython#135034); the filter is older (3.8.17+).
FILTER_FIXED_IN = {(3, 9): 23, (3, 10): 18, (3, 11): 13, (3, 12): 11, (3, 13): 4, (3, 14): 0}
CHUNK = 1 << 20


def tar_filter_holds(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> bool:
    """Whether this Python's tarfile `data` filter is a patched one (it is not relied on)."""
    return version[2] >= FILTER_FIXED_IN.get(version[:2], 0 if version[:2] > (3, 14) else 99)


class ArchiveError(LeRaCError):
    """An archive that is refused (unsafe, over a limit) or cannot be read."""


@dataclass(frozen=True)
class Limits:
    """What unpacking one archive may cost: bytes written, members, bytes per archive byte."""

    max_bytes: int
    max_ratio: float
    max_members: int = 1_000_000


@dataclass(frozen=True)
class Member:
    name: str  # relative, '/'-separated, no '.' or '..' parts
    is_dir: bool
    size: int
    entry: Any  # the TarInfo or ZipInfo it came from


def declared_format(file_name: str) -> str:
    """The archive format a file name declares (``x.tar.gz``, ``x.zip``, ...)."""
    for suffix, fmt in FORMATS.items():
        if file_name.lower().endswith(suffix):
            return fmt
    raise ArchiveError(
        f"{file_name} does not name an archive format: give its source a `format` "
        f"({', '.join(sorted(set(FORMATS.values())))})"
    )


def safe_name(raw: str, archive: str) -> str:
    """``raw`` as a relative path inside the archive's folder, or an ArchiveError."""
    if not raw or "\x00" in raw or "\\" in raw:
        raise ArchiveError(f"{archive} holds a member with an unsafe name: {raw!r}")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise ArchiveError(f"{archive} holds a member with an absolute path: {raw!r}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{archive} holds a member that leaves its folder: {raw!r}")
    return "/".join(parts)


def _tar_members(archive: tarfile.TarFile, name: str) -> Iterator[Member]:
    for info in archive:
        if not (info.isreg() or info.isdir()):
            kind = "a link" if info.issym() or info.islnk() else "a device or FIFO"
            raise ArchiveError(f"{name} holds {kind}, which a data set never needs: {info.name!r}")
        yield Member(
            safe_name(info.name, name), info.isdir(), info.size if info.isreg() else 0, info
        )


def _zip_members(archive: zipfile.ZipFile, name: str) -> Iterator[Member]:
    for info in archive.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            what = "a link" if kind == stat.S_IFLNK else "a device or FIFO"
            raise ArchiveError(
                f"{name} holds {what}, which a data set never needs: {info.filename!r}"
            )
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{name} holds an encrypted member: {info.filename!r}")
        yield Member(safe_name(info.filename, name), info.is_dir(), info.file_size, info)


def check_members(members: Iterator[Member], name: str, size: int, limits: Limits) -> list[Member]:
    """Every member, checked as a whole: no name twice, no file that is also a folder,
    totals within ``limits`` (checked as the members are read, so a bomb stops early)."""
    kept: list[Member] = []
    seen: dict[str, bool] = {}  # name -> is a folder
    total = 0
    for member in members:
        total += member.size
        if len(kept) >= limits.max_members:
            raise ArchiveError(f"{name} holds more than {limits.max_members} members")
        over_limits(name, total, size, limits)
        if not member.name:
            continue  # the archive's own root folder ('./')
        if member.name in seen and not (member.is_dir and seen[member.name]):
            raise ArchiveError(f"{name} holds {member.name!r} twice")
        seen[member.name] = member.is_dir
        kept.append(member)
    for member in kept:
        parts = member.name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if seen.get(parent) is False:
                raise ArchiveError(
                    f"{name} holds {parent!r} both as a file and as the folder of {member.name!r}"
                )
    return kept


def over_limits(name: str, total: int, size: int, limits: Limits) -> None:
    if total > limits.max_bytes:
        raise ArchiveError(
            f"{name} expands to more than {limits.max_bytes:,} bytes (--max-expand); raise "
            "the limit if you trust this archive"
        )
    if total > limits.max_ratio * max(size, 1) and total > CHUNK:
        raise ArchiveError(
            f"{name} expands to {total:,} bytes from {size:,}, more than {limits.max_ratio:g} "
            "times its size (--max-ratio): an archive bomb, or a source to trust explicitly"
        )


@contextmanager
def opened(archive: Path, fmt: str) -> Iterator[tuple[Any, Iterator[Member]]]:
    """The archive opened as ``fmt`` and its members; content of another format is refused."""
    with open(archive, "rb") as f:
        head = f.read(4)
    if fmt == "zip":
        if not head.startswith(b"PK\x03\x04") and not head.startswith(b"PK\x05\x06"):
            raise ArchiveError(
                f"{archive.name} is not a zip archive, as its source declares; the server "
                "sent another file"
            )
        with zipfile.ZipFile(archive) as z:
            yield z, _zip_members(z, archive.name)
        return
    if fmt == "tar.gz" and not head.startswith(b"\x1f\x8b"):
        raise ArchiveError(
            f"{archive.name} is not a gzip-compressed tar, as its source declares; the "
            "server sent another file"
        )
    with tarfile.open(archive, "r:gz" if fmt == "tar.gz" else "r:") as t:
        yield t, _tar_members(t, archive.name)


def _reader(handle: Any, member: Member) -> IO[bytes]:
    if isinstance(handle, zipfile.ZipFile):
        return handle.open(member.entry)
    return handle.extractfile(member.entry)


def _make_dirs(root: Path, relative: str) -> Path:
    """``root/relative`` as real folders (made here, never through a link)."""
    folder = root
    for part in relative.split("/") if relative else []:
        folder = folder / part
        try:
            os.mkdir(folder, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise ArchiveError(f"{folder} is not a folder made by this extraction") from None
    return folder


def _write(source: IO[bytes], target: Path, member: Member, written: int, limits: Limits) -> int:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    count = 0
    with os.fdopen(fd, "wb") as out, source:
        while block := source.read(CHUNK):
            count += len(block)
            if count > member.size or written + count > limits.max_bytes:
                raise ArchiveError(f"{member.name} holds more bytes than its header says")
            out.write(block)
    return count


def extract(archive: Path, into: Path, fmt: str, limits: Limits) -> int:
    """Check every member of ``archive`` (read as ``fmt``), then write them into the new
    folder ``into``; the bytes written. Nothing is written when a check fails."""
    size = archive.stat().st_size
    try:
        with opened(archive, fmt) as (handle, members):
            checked = check_members(members, archive.name, size, limits)
            os.mkdir(into, 0o755)  # exclusive: never an existing folder
            written = 0
            for member in checked:
                if member.is_dir:
                    _make_dirs(into, member.name)
                    continue
                parent, _, leaf = member.name.rpartition("/")
                target = _make_dirs(into, parent) / leaf
                written += _write(_reader(handle, member), target, member, written, limits)
            return written
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
        raise ArchiveError(f"{archive.name} cannot be read as {fmt} ({err})") from err
    except OSError as err:
        if err.errno in DISK_FULL:
            raise  # not the archive's fault: the caller keeps the checked archive
        raise ArchiveError(f"{archive.name} cannot be unpacked ({err})") from err
