"""How lerac-fetch knows that what it got is what its source means: a checksum of the
archive, a manifest of the files inside it, or (for a source with neither) the TLS
certificate of the source's own https address.

A manifest is a text file in ``sha256sum``'s format (``<sha256>  <path>``, one file a
line, paths relative to the data set's folder), named by the source's ``manifest`` key
relative to the sources file (``lerac/suite/manifests/`` for the suite's own). It is
checked after extraction and before the folder is put in place: every listed file must
be there with its hash, and no other file may be. ``lerac-fetch --write-manifest NAME``
writes one from a complete copy (``sha256sum -c`` reads it back).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from lerac.errors import LeRaCError

CHUNK = 1 << 20


class IntegrityError(LeRaCError):
    """Fetched content that does not match what its source pins, or a source that pins nothing."""


def digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def manifest_path(source: dict[str, Any]) -> Path | None:
    """The source's manifest file, when it names one and the file exists."""
    path = source.get("manifest")
    return Path(path) if path and Path(path).is_file() else None


def how_checked(name: str, source: dict[str, Any], url: str, local: bool) -> str:
    """``checksum``, ``manifest`` or ``tls``: how this archive will be checked. A source
    without a checksum or a manifest is taken only from its own https address, never
    through a mirror, plain http or a file someone put in the staging folder."""
    if source.get("checksum"):
        return "checksum"
    if manifest_path(source):
        return "manifest"
    if not local and url == source.get("url") and url.startswith("https://"):
        return "tls"
    where = "a copy in the staging folder" if local else url
    raise IntegrityError(
        f"{name} has no checksum or manifest in its sources file, so it is fetched only from "
        f"its own https address {source.get('url')}, not from {where}; write its manifest from a "
        f"copy you trust with `lerac-fetch --write-manifest {name}` (docs/reliability.md)"
    )


def files_under(folder: Path) -> list[str]:
    """Every regular file under ``folder``, '/'-separated and sorted (links not followed)."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        for file in files:
            found.append(Path(parent, file).relative_to(folder).as_posix())
    return sorted(found)


def read_manifest(path: Path) -> dict[str, str]:
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        value, _, name = line.partition("  ")
        if len(value) != 64 or not name:
            raise IntegrityError(f"{path}:{number} is not `<sha256>  <path>`: {line[:80]!r}")
        entries[name] = value.lower()
    return entries


def check_manifest(name: str, folder: Path, manifest: Path) -> None:
    """Raise unless ``folder`` holds exactly the manifest's files with its hashes."""
    expected = read_manifest(manifest)
    present = files_under(folder)
    extra = sorted(set(present) - set(expected))
    missing = sorted(set(expected) - set(present))
    problem = ""
    if missing:
        problem = f"{len(missing)} listed files are missing, e.g. {missing[0]}"
    elif extra:
        problem = f"{len(extra)} files are not in it, e.g. {extra[0]}"
    else:
        wrong = [f for f in present if digest(folder / f) != expected[f]]
        if wrong:
            problem = f"{len(wrong)} files differ from it, e.g. {wrong[0]}"
    if problem:
        raise IntegrityError(
            f"{name}: what was fetched does not match its manifest {manifest.name} ({problem}); "
            "the server holds another copy, so nothing was put in place"
        )


def write_manifest(folder: Path, manifest: Path) -> int:
    """The manifest of every file under ``folder``; how many files it lists."""
    files = files_under(folder)
    lines = [f"{digest(folder / f)}  {f}\n" for f in files]
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("".join(lines))
    return len(files)
