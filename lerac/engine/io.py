"""Files written whole or not at all, and caches keyed by what made them.

Every file the suite writes for later reading (metrics, CSV logs, checkpoints, decoded
data caches) goes through :func:`atomic_open`: the bytes land in a temporary file of
this process next to the target, are flushed to disk, and only then renamed over the
target. A crash at any moment leaves either the old file or the new one, never half of
one, and two processes writing the same file (parallel jobs filling one cache) each
write their own temporary file, so the last rename wins with a whole file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # the errnos of a full disk or an exceeded quota


def temporary_name(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process or thread uses; it names the
    writer (``<name>.<pid>-<thread>@<host>.tmp``) so its leftovers can be told stale."""
    writer = f"{os.getpid()}-{threading.get_ident()}@{socket.gethostname()}"
    return path.with_name(f"{path.name}.{writer}{TMP_SUFFIX}")


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete the temporary files in ``folder`` whose writer, a process of this machine,
    is gone (killed before its rename); a live writer's, or another machine's, stay."""
    host = socket.gethostname()
    for leftover in Path(folder).glob(f"*{TMP_SUFFIX}"):
        writer = re.search(rf"\.(\d+)-\d+@(.+){re.escape(TMP_SUFFIX)}$", leftover.name)
        if writer and writer[2] == host and not process_alive(int(writer[1])):
            leftover.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **open_args: Any) -> Iterator[IO]:
    """Open ``path`` for writing; the file appears under its name only when the block ends
    without an error (written, flushed, fsynced, renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when something failed before the rename


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load_torch(path: str | Path) -> Any:
    """``torch.load`` of a file this suite wrote: tensors and plain containers only."""
    return torch.load(path, map_location="cpu", weights_only=True)


def remove_temporaries(folder: str | Path, of: str = "*") -> None:
    """Delete the temporary files in ``folder`` of the file named ``of`` (of every file by
    default): what killed writers left behind. Only where no other process writes now
    (under the run's lock); elsewhere :func:`remove_stale_temporaries`."""
    for leftover in Path(folder).glob(f"{of}.*{TMP_SUFFIX}"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


# --- caches ------------------------------------------------------------------------------


def cache_key(settings: Any, files: Sequence[str | Path] = ()) -> str:
    """A short digest of ``settings`` (anything JSON can write) and of each file's path,
    size and modification time, so a cache is rebuilt when its inputs change."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for file in files:
        stat = os.stat(file)
        digest.update(f"\n{Path(file).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cached(file: str | Path, build: Callable[[], Any], what: str = "data") -> Any:
    """What ``build()`` returns, read from ``file`` when an earlier run saved it there.

    ``build``'s result must be tensors in plain containers: it is read back with
    ``weights_only=True``.
    """
    file = Path(file)
    if file.is_file():
        log.info("%s from cache %s", what, file)
        return load_torch(file)
    log.info("building %s into cache %s", what, file)
    if file.parent.is_dir():
        remove_stale_temporaries(file.parent)  # a killed build's half-written caches
    data = build()
    save_torch(file, data)
    return data
