"""Text classification data (BoolQ, RTE, QNLI, anyone's labelled text) through HF ``datasets``.

Sources, in order: local files under ``path`` (csv, tsv, jsonl or parquet; a split is a
file named ``<split>.<ext>`` or parquet shards ``<split>-00000-of-00001.parquet``), then
the HuggingFace hub (``hub_id``/``hub_config``) when it is reachable. Neither: one
:class:`DataNotFoundError` saying where to put which files.

``files`` maps each split (train, val, test) to the file names that hold it. For BoolQ,
RTE and QNLI the test labels are hidden, so the official validation split (``dev``,
``val`` or ``validation``) is the test set and ``val_fraction`` of train, chosen with
``split_seed`` (the same for every run seed), is the validation set; for ``text_files`` a
missing ``val`` split is held out the same way.

Columns: ``text_column``, ``text_pair_column`` (null: single texts) and ``label_column``
each name a column or a list of alternatives (the first present wins: BoolQ's label is
``label`` in SuperGLUE's copy, ``answer`` in the original). Labels may be strings, ints or
booleans; with ``label_names`` they map onto those names (ints and booleans are indices),
otherwise the classes are the sorted training labels. The class names are saved with each
run (``labels.txt``).

Tokenized splits are cached under ``cache_dir/text`` per (source files, columns, tokenizer,
max length, validation split), so every seed and regime reuses them.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lerac.engine.batches import Splits
from lerac.engine.io import cache_key, cached
from lerac.errors import ConfigError, DataNotFoundError, first_line
from lerac.suite.data.base import hold_out, text_input
from lerac.suite.data.tokenize import make_tokenizer, to_tensors, token_lengths, trim_padding
from lerac.suite.models.hub import hub_offline

log = logging.getLogger("lerac")

FORMATS = {"csv": "csv", "tsv": "csv", "jsonl": "json", "json": "json", "parquet": "parquet"}
CACHE_VERSION = 1  # bump when the cached layout changes
Columns = str | Sequence[str] | None


def load_text(
    dataset: str,
    path: str,
    tokenizer: dict[str, Any] | None,
    cache_dir: str,
    text_column: Columns = "text",
    text_pair_column: Columns = None,
    label_column: Columns = "label",
    label_names: Sequence[str] | None = None,
    files: dict[str, Sequence[str]] | None = None,
    hub_id: str | None = None,
    hub_config: str | None = None,
    hub_splits: dict[str, str] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
) -> Splits:
    """A text data set, tokenized for the model whose ``tokenizer`` block is given."""
    encoder = make_tokenizer(tokenizer, dataset)
    files = {k: list(v) for k, v in (files or {"train": ["train"], "test": ["test"]}).items()}
    local = find_files(Path(path), files)
    if local is None:
        source = {"hub_id": hub_id, "hub_config": hub_config}
    else:
        source = {
            s: [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in fs]
            for s, fs in local.items()
        }
    columns = {"text": text_column, "pair": text_pair_column, "label": label_column}
    key = {
        "version": CACHE_VERSION,
        "dataset": dataset,
        "source": source,
        "columns": columns,
        "label_names": list(label_names) if label_names else None,
        "tokenizer": [dict(tokenizer), encoder.fingerprint()],
        "val": None if local and "val" in local else [val_fraction, split_seed],
    }
    cache = Path(cache_dir) / "text" / f"{dataset}-{tokenizer.get('kind')}-{cache_key(key)}.pt"

    def build() -> dict[str, Any]:
        tables = (
            read_local(local, Path(cache_dir))
            if local is not None
            else read_hub(dataset, path, files, hub_id, hub_config, hub_splits or {})
        )
        return tokenize_tables(
            dataset, tables, encoder, columns, label_names, val_fraction, split_seed
        )

    return _splits(cached(cache, build, f"tokenized {dataset}"))


def _splits(stored: dict[str, Any]) -> Splits:
    return Splits(
        train=(stored["train_inputs"], stored["train_labels"]),
        val=(stored["val_inputs"], stored["val_labels"]),
        test=(stored["test_inputs"], stored["test_labels"]),
        num_classes=len(stored["label_names"]),
        input_spec=text_input(stored["vocab_size"], stored["max_length"]),
        trim=trim_padding,
        host_facts=token_lengths,
        artifacts={**stored["artifacts"], "labels.txt": "\n".join(stored["label_names"]) + "\n"},
    )


# -- finding and reading the raw tables ------------------------------------------------


def find_files(root: Path, files: dict[str, list[str]]) -> dict[str, list[Path]] | None:
    """Each split's files under ``root``; None when ``root`` holds no training file."""
    if not root.is_dir():
        return None
    present = sorted(p for p in root.iterdir() if p.is_file())
    found: dict[str, list[Path]] = {}
    for split, names in files.items():
        for name in names:
            pattern = re.compile(rf"^{re.escape(name)}([-_.][^/]*)?\.({'|'.join(FORMATS)})$")
            matches = [p for p in present if pattern.match(p.name)]
            if matches:
                found[split] = matches
                break
    if "train" not in found:
        return None
    if "test" not in found:
        raise DataNotFoundError(
            f"{root} holds training data but no test file named {' or '.join(files['test'])}"
            f".csv|.tsv|.jsonl|.parquet (found: {', '.join(p.name for p in present)})"
        )
    return found


def read_local(found: dict[str, list[Path]], cache_dir: Path) -> dict[str, Any]:
    """Each split as a ``datasets.Dataset`` read from its files."""
    import datasets

    datasets.disable_progress_bars()  # a few local files: no bars in the training log
    tables = {}
    for split, paths in found.items():
        exts = {p.name.rsplit(".", 1)[-1] for p in paths}
        if len(exts) > 1:
            raise ConfigError(f"split {split} mixes formats: {', '.join(map(str, paths))}")
        ext = exts.pop()
        options: dict[str, Any] = {}
        if ext == "tsv":
            options = {"sep": "\t", "quoting": 3}  # GLUE's TSVs: no quoting, quotes are text
        for path in paths:
            check_rows(path, ext)
        try:
            with quiet_logger("datasets"):  # it logs the cause as well as raising it
                tables[split] = datasets.load_dataset(
                    FORMATS[ext],
                    data_files=[str(p) for p in paths],
                    split="train",
                    cache_dir=str(cache_dir / "hf_datasets"),
                    **options,
                )
        except Exception as err:  # a malformed file: name it and the cause
            raise ConfigError(f"cannot read {', '.join(map(str, paths))}: {cause(err)}") from err
    return tables


def check_rows(path: Path, ext: str) -> None:
    """An empty file, or a csv/tsv with a header and no rows, named as such."""
    problem = "is empty" if path.stat().st_size == 0 else None
    if problem is None and ext in ("csv", "tsv"):
        with open(path, "rb") as f:
            lines = [line for line in itertools.islice(f, 50) if line.strip()]
        problem = "holds a header but no rows" if len(lines) < 2 else None
    if problem:
        raise ConfigError(f"{path} {problem}: every split needs examples")


def cause(err: BaseException) -> str:
    """What a reader's error comes down to: text that is not UTF-8, or the first line of
    the innermost cause (``datasets`` wraps it in "An error occurred while generating")."""
    seen, chain = set(), []
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    for link in chain:
        if isinstance(link, UnicodeDecodeError):
            return (
                f"it is not UTF-8 text ({link.reason} at byte {link.start}); save it as UTF-8 "
                "(e.g. iconv -f latin1 -t utf-8 FILE > NEW)"
            )
    return f"{type(chain[-1]).__name__}: {first_line(chain[-1])}"


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_hub(
    dataset: str,
    path: str,
    files: dict[str, list[str]],
    hub_id: str | None,
    hub_config: str | None,
    hub_splits: dict[str, str],
) -> dict[str, Any]:
    """The splits from the HuggingFace hub (or its local cache), else the layout to provide."""
    import datasets

    reason = "no hub copy is configured (dataset.hub_id)"
    offline = hub_offline()
    if hub_id and offline and not datasets.config.HF_HUB_OFFLINE:
        reason = f"HF_HUB_OFFLINE is set, so the hub copy {hub_id} was not tried"
    elif hub_id:
        try:
            loaded = datasets.load_dataset(hub_id, hub_config)
            return {split: loaded[name] for split, name in hub_splits.items()}
        except Exception as err:  # network layers raise their own types
            reason = f"the hub copy {hub_id} could not be loaded ({type(err).__name__})"
    layout = ", ".join(f"{split}: {'|'.join(names)}" for split, names in files.items())
    folder = Path(path)
    found = sorted(p.name for p in folder.iterdir())[:10] if folder.is_dir() else []
    there = f" (it holds {', '.join(found)})" if found else ""
    raise DataNotFoundError(
        f"dataset={dataset}: no data under {path}{there} and {reason}. Put the files there, "
        f"one per split named {layout} with extension .csv, .tsv, .jsonl or .parquet (shards "
        f"like train-00000-of-00001.parquet work too), or set dataset.path=DIR"
    )


# -- columns, labels, tokens -------------------------------------------------------------


def read_column(table: Any, wanted: Columns, option: str, where: str) -> list[Any]:
    """The first of the ``wanted`` columns the table has, else an error listing its columns."""
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    for name in names:
        if name in table.column_names:
            return table.data.column(name).to_pylist()  # arrow: far faster than row by row
    raise ConfigError(
        f"{where} split has no column {' or '.join(map(repr, names))} (dataset.{option}); "
        f"columns found: {', '.join(table.column_names)}"
    )


def label_index(
    labels: dict[str, list[Any]], label_names: Sequence[str] | None
) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Class names and each split's labels as class indices.

    With ``label_names``, strings match a name (case aside) and ints or booleans are
    indices; without, the classes are the distinct training labels, sorted.
    """

    def norm(value: Any) -> Any:
        if isinstance(value, bool):
            return int(value)
        return value.strip().lower() if isinstance(value, str) and label_names else value

    if label_names:
        names = [str(n) for n in label_names]
        lookup: dict[Any, int] = {n.lower(): i for i, n in enumerate(names)}
        lookup.update({i: i for i in range(len(names))})
    else:
        seen = {norm(v) for v in labels["train"]}
        mixed = len({type(v) for v in seen}) > 1  # e.g. 1 and "1": compare as text
        if mixed:
            seen = {str(v) for v in seen}
        names = [str(v) for v in sorted(seen)]
        lookup = {v: i for i, v in enumerate(sorted(seen))}
        if mixed:
            norm_plain = norm
            norm = lambda value: str(norm_plain(value))  # noqa: E731
    indexed = {}
    for split, values in labels.items():
        out = []
        for value in values:
            v = norm(value)
            if v not in lookup:
                where = "training labels" if not label_names else "dataset.label_names"
                raise ConfigError(
                    f"{split} label {value!r} is not among the {where} "
                    f"({', '.join(names)}); every {split} label must be a known class"
                )
            out.append(lookup[v])
        indexed[split] = torch.tensor(out, dtype=torch.long)
    return names, indexed


def tokenize_tables(
    dataset: str,
    tables: dict[str, Any],
    encoder: Any,
    columns: dict[str, Columns],
    label_names: Sequence[str] | None,
    val_fraction: float,
    split_seed: int,
) -> dict[str, Any]:
    texts, pairs, labels = {}, {}, {}
    for split, table in tables.items():
        where = f"dataset={dataset}: {split}"
        texts[split] = [_text(v) for v in read_column(table, columns["text"], "text_column", where)]
        pairs[split] = None
        if columns["pair"]:
            pair = read_column(table, columns["pair"], "text_pair_column", where)
            pairs[split] = [_text(v) for v in pair]
        labels[split] = list(read_column(table, columns["label"], "label_column", where))
    names, targets = label_index(labels, label_names)
    if len(names) < 2:
        raise ConfigError(f"dataset={dataset}: the training labels hold one class ({names[0]})")

    if "val" not in tables:  # hold out val_fraction of train, the same for every run seed
        n = len(targets["train"])
        try:
            (keep, _), (out, _) = hold_out(
                torch.arange(n), torch.arange(n), val_fraction, split_seed
            )
        except ValueError as err:
            raise ConfigError(f"dataset={dataset}: {err} (dataset.val_fraction)") from err
        for split, index in (("val", out), ("train", keep)):
            texts[split] = [texts["train"][i] for i in index]
            pairs[split] = None if pairs["train"] is None else [pairs["train"][i] for i in index]
            targets[split] = targets["train"][index]

    encoder.fit(texts["train"], pairs["train"])  # a word vocabulary sees training texts only
    stored: dict[str, Any] = {
        "label_names": names,
        "vocab_size": encoder.vocab_size,
        "max_length": encoder.max_length,
        "artifacts": encoder.artifacts(),
    }
    for split in ("train", "val", "test"):
        encoded = encoder.encode(texts[split], pairs[split])
        stored[f"{split}_inputs"] = to_tensors(encoded, encoder.pad_id)
        stored[f"{split}_labels"] = targets[split]
    log.info(
        "tokenized %s: %s examples, vocabulary %d",
        dataset,
        {s: len(targets[s]) for s in ("train", "val", "test")},
        encoder.vocab_size,
    )
    return stored


def _text(value: Any) -> str:
    return "" if value is None else str(value)
