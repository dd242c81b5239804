"""Is a data set's folder complete? Counts per split against what a full copy holds.

Each family has a reader that counts what its folder holds with the data loaders' own
helpers (:mod:`lerac.suite.data`), without decoding images or audio: CIFAR's pickle batches
are unpickled by the loader's restricted unpickler (a truncated batch does not unpickle,
one that names a function outside the format is refused), Tiny ImageNet's and ImageNet's class
folders and Tiny ImageNet's val annotations are listed, ESC-50's and CREMA-D's clips are
listed by name, text splits are read by the text loader's reader, and a checkpoint's
weight file is checked against its own header (safetensors) or zip directory (torch).

A folder is ``missing`` when it does not exist or holds none of its data set's files,
``incomplete`` when a file is missing, damaged or a count falls short of the expected
one (``expect`` in lerac/suite/sources.yaml: the paper's section 4.1), and ``complete``
otherwise.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lerac.errors import LeRaCError

COMPLETE, INCOMPLETE, MISSING = "complete", "incomplete", "missing"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# The text data sets' split files, as conf/dataset/{boolq,rte,qnli}.yaml name them.
TEXT_FILES = {"train": ["train"], "test": ["dev", "val", "validation"]}


class Absent(Exception):  # noqa: N818 - a state of a folder, not a fault
    """The folder holds none of the data set's files."""


@dataclass
class Report:
    """What ``--check`` found for one data set or checkpoint."""

    name: str
    folder: Path
    status: str = MISSING
    counts: dict[str, int] = field(default_factory=dict)
    expect: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    def describe(self) -> str:
        shown = [
            f"{k} {v}" + (f"/{self.expect[k]}" if k in self.expect else "")
            for k, v in self.counts.items()
        ]
        if not shown and self.expect:
            shown = ["- (expects " + ", ".join(f"{k} {v}" for k, v in self.expect.items()) + ")"]
        text = ", ".join(shown) or "-"
        return f"{text}; {self.problems[0]}" if self.problems else text


# --- one reader per family: folder -> counts, problems ------------------------------------


def count_cifar(folder: Path, source: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    from lerac.suite.data.cifar import read_batch, variant_of

    spec = variant_of(source["variant"])
    counts, problems = {"train": 0, "test": 0}, []
    files = [("train", f) for f in spec.train_files] + [("test", f) for f in spec.test_files]
    if not any((folder / f).is_file() for _, f in files):
        raise Absent
    for split, name in files:
        try:
            counts[split] += len(read_batch(folder / name)[spec.label_key])
        except FileNotFoundError:
            problems.append(f"{name} is missing")
        except LeRaCError as err:  # a file that asks to run code: refused, said why
            problems.append(str(err))
        except Exception as err:  # a truncated pickle raises EOFError, UnpicklingError, ...
            problems.append(f"{name} cannot be read ({type(err).__name__}: truncated?)")
    return counts, problems


def count_idx(folder: Path, _: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    """Fashion-MNIST's IDX files: every file read whole (headers, lengths, labels)."""
    from lerac.suite.data.fashion_mnist import FILES, find_file, read_split

    if not any(find_file(folder, n) for names in FILES.values() for n in names):
        raise Absent
    counts, problems = {}, []
    for split in FILES:
        try:
            counts[split] = len(read_split(folder, split)[1])
        except LeRaCError as err:
            counts[split] = 0
            problems.append(str(err))
    return counts, problems


def count_tiny_imagenet(folder: Path, _: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    from lerac.suite.data.images import list_images
    from lerac.suite.data.tiny_imagenet import read_val_annotations

    if not (folder / "wnids.txt").is_file():
        raise Absent
    wnids = (folder / "wnids.txt").read_text().split()
    problems: list[str] = []
    train = 0
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        train += len(list_images(images)) if images.is_dir() else 0
    test = 0
    try:
        files, _ = read_val_annotations(folder / "val", {w: i for i, w in enumerate(wnids)})
        test = sum(p.is_file() for p in files)
    except (OSError, LeRaCError, ValueError) as err:
        problems.append(f"val/val_annotations.txt: {err}")
    return {"classes": len(wnids), "train": train, "test": test}, problems


def count_esc50(folder: Path, _: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    from lerac.suite.data.esc50 import clip_paths, read_meta

    if not (folder / "meta" / "esc50.csv").is_file():
        raise Absent
    try:
        rows = read_meta(folder)
        paths = clip_paths(folder, rows)
    except LeRaCError as err:
        return {}, [str(err)]
    present = [r for r, p in zip(rows, paths) if _nonempty(p)]
    folds = Counter(int(r["fold"]) for r in present)
    counts = {"clips": len(present), **{f"fold{k}": folds[k] for k in range(1, 6)}}
    lost = len(rows) - len(present)
    return counts, [f"{lost} clips of meta/esc50.csv are missing or empty"] if lost else []


def count_crema_d(folder: Path, _: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    from lerac.suite.data.crema_d import find_clips

    wavs = folder / "AudioWAV" if (folder / "AudioWAV").is_dir() else folder
    if not folder.is_dir() or not any(wavs.glob("*.wav")):
        raise Absent
    try:
        clips, actors = find_clips(folder)
    except LeRaCError as err:
        return {}, [str(err)]
    empty = sum(not _nonempty(p) for p in clips.paths)
    counts = {"clips": len(clips.paths) - empty, "actors": len(set(actors))}
    return counts, [f"{empty} clips are empty"] if empty else []


def count_imagenet200(folder: Path, _: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    from lerac.suite.data.imagenet200 import WNIDS, read_wnids
    from lerac.suite.data.images import list_images

    if not (folder / "train").is_dir() and not (folder / "val").is_dir():
        raise Absent
    counts, problems, classes = {}, [], 0
    wnids = read_wnids(WNIDS)
    for split, key in (("train", "train"), ("val", "test")):
        found = [len(list_images(folder / split / w)) if (folder / split / w).is_dir() else 0
                 for w in wnids]  # fmt: skip
        counts[key] = sum(found)
        empty = [w for w, n in zip(wnids, found) if not n]
        classes = max(classes, len(wnids) - len(empty))
        if empty:
            problems.append(f"{split}/{empty[0]} and {len(empty) - 1} more classes are empty")
    return {"classes": classes, **counts}, problems


def count_text(folder: Path, _: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    from lerac.suite.data.text import find_files, read_local

    try:
        found = find_files(folder, TEXT_FILES)
    except LeRaCError as err:
        return {}, [str(err)]
    if found is None:
        raise Absent
    try:
        tables = read_local(found, folder.parent / "cache")
    except LeRaCError as err:
        return {}, [str(err)]
    return {split: len(table) for split, table in tables.items()}, []


def count_weights(folder: Path, _: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    if not folder.is_dir() or not any(folder.iterdir()):
        raise Absent
    problems = []
    try:
        json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        problems.append(f"config.json cannot be read ({type(err).__name__})")
    weights = [folder / n for n in WEIGHT_FILES if (folder / n).is_file()]
    if not weights:
        problems.append(f"no weight file ({' or '.join(WEIGHT_FILES)})")
    for file in weights:
        problem = weight_file_problem(file)
        if problem:
            problems.append(f"{file.name} {problem}")
    return {"weight files": len(weights)}, problems


def weight_file_problem(file: Path) -> str | None:
    """Why a weight file is damaged (a truncated download), or None when it is whole."""
    size = file.stat().st_size
    if file.suffix == ".safetensors":  # 8-byte header length, JSON header, then the data
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "is truncated (no header)"
            (length,) = struct.unpack("<Q", head)
            try:
                header = json.loads(f.read(length))
            except ValueError:
                return "is truncated (its header does not parse)"
        tensors = [v for k, v in header.items() if k != "__metadata__"]
        bad = next((t for t in tensors if not _consistent(t)), None)
        if bad is not None:
            return f"has a header that no loader reads ({str(bad)[:80]})"
        ends = [t["data_offsets"][1] for t in tensors]
        return None if 8 + length + max(ends, default=0) <= size else "is truncated"
    try:
        with zipfile.ZipFile(file) as z:  # torch.save writes a zip: its directory at the end
            pickled = any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist())
            return None if pickled else "is not a torch checkpoint (no data.pkl)"
    except zipfile.BadZipFile:
        return "is truncated or not a torch checkpoint"


# Bytes per element of each safetensors dtype (the format's own list); the sub-byte kinds
# are packed, so only their name is checked.
SAFETENSORS_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                     "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8,
                     "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1,
                     "F8_E5M2FNUZ": 1}  # fmt: skip
PACKED = ("F4", "F6_E2M3", "F6_E3M2")


def _consistent(tensor: Any) -> bool:
    """A safetensors header entry: a known dtype, and offsets that hold its shape."""
    try:
        start, end = tensor["data_offsets"]
        if tensor["dtype"] in PACKED:
            return 0 <= start <= end
        count = math.prod(int(n) for n in tensor["shape"])
        return end - start == count * SAFETENSORS_BYTES[tensor["dtype"]] and 0 <= start <= end
    except (KeyError, TypeError, ValueError):
        return False


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


CHECKS: dict[str, Callable[[Path, Mapping[str, Any]], tuple[dict[str, int], list[str]]]] = {
    "cifar": count_cifar,
    "idx": count_idx,
    "tiny_imagenet": count_tiny_imagenet,
    "esc50": count_esc50,
    "crema_d": count_crema_d,
    "imagenet200": count_imagenet200,
    "text": count_text,
    "weights": count_weights,
}


def check(name: str, source: Mapping[str, Any], folder: Path) -> Report:
    """The state of ``folder`` as a copy of ``name`` (described by ``source``)."""
    expect = {str(k): int(v) for k, v in (source.get("expect") or {}).items()}
    report = Report(name, folder, expect=expect)
    try:
        report.counts, report.problems = CHECKS[source["family"]](folder, source)
    except Absent:
        return report
    short = [k for k, v in expect.items() if report.counts.get(k, 0) < v]
    if short and not report.problems:
        k = short[0]
        report.problems.append(f"{k}: {report.counts.get(k, 0)} of {expect[k]}")
    report.status = INCOMPLETE if report.problems or short else COMPLETE
    return report


def table(reports: list[Report]) -> str:
    """The reports as an aligned text table."""
    rows = [("data", "status", "counts (found/expected)", "folder")]
    rows += [(r.name, r.status, r.describe(), str(r.folder)) for r in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in rows
    )
