"""Pretrained weights from a local directory or the HuggingFace hub, with one clear error.

Every HuggingFace-backed model (CvT-13, BERT, any ``hf_*`` model) loads through
:func:`from_pretrained`: a local directory written by ``save_pretrained`` is used as it
is; a hub id is looked up in the local cache first and downloaded only if the cache lacks
it. When neither works (the hub is unreachable on these machines) the run ends with a
:class:`PretrainedUnavailable` that says how to provide the files.

Inside :func:`architecture_only` a model is built from its architecture alone (the fetched
``config.json``, else the published configuration), without weights: the FLOP estimate
builds every model the way training does, with no checkpoint needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from lerac.errors import ConfigError, LeRaCError, first_line

# The published architectures of the paper's pre-trained checkpoints (their config.json on
# the hub): CvT-13 is transformers' default CvtConfig; BERT-large has 24 layers of width 1024.
PUBLISHED_ARCHITECTURES = {
    "microsoft/cvt-13": ("cvt", {}),
    "bert-large-uncased": (
        "bert",
        {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
        },
    ),
}
_ARCHITECTURE_ONLY: ContextVar[bool] = ContextVar("architecture_only", default=False)
# The keyword arguments of from_pretrained that are fields of the model's config.
CONFIG_KWARGS = ("num_labels", "id2label", "label2id")


class PretrainedUnavailable(LeRaCError):
    """Pretrained weights (or a tokenizer / image processor) could not be loaded."""


def from_pretrained(cls: Any, source: str, what: str = "weights", **kwargs: Any) -> Any:
    """``cls.from_pretrained(source)`` from a local directory, the cache, or the hub.

    ``cls`` is any HuggingFace class with ``from_pretrained`` (a model, a tokenizer, an
    image processor); ``what`` names it in the error message.
    """
    source = str(source)
    if building_architecture_only() and hasattr(cls, "from_config"):
        return from_architecture(cls, source, **kwargs)
    local = local_copy(source) or Path(source).expanduser()  # lerac-fetch's copy of a hub id
    if local.is_dir():
        try:
            return cls.from_pretrained(str(local), local_files_only=True, **kwargs)
        except Exception as err:  # safetensors, torch and transformers raise their own types
            raise PretrainedUnavailable(
                f"{what} could not be loaded from the directory {local} ({type(err).__name__}: "
                f"{first_line(err)}); its files are damaged or do not belong together: fetch it "
                "again (lerac-fetch NAME --force) or write it with save_pretrained(...)"
            ) from err
    if not looks_like_hub_id(source):
        raise PretrainedUnavailable(
            f"{what}: the directory {local} does not exist; point model.pretrained at a "
            "directory written by save_pretrained, or at a hub id such as microsoft/cvt-13"
        )
    try:
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass  # not cached: try the hub below, unless told to stay offline
    if not hub_offline():
        try:
            return cls.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as err:
            reason = first_line(err)
        except Exception as err:  # network layers raise their own types
            reason = f"{type(err).__name__}: {first_line(err)}"
    else:
        reason = "HF_HUB_OFFLINE is set and the cache does not hold it"
    raise PretrainedUnavailable(
        f"{what} '{source}' could not be loaded ({reason}); {how_to_get(source)}"
    )


@contextmanager
def architecture_only() -> Iterator[None]:
    """Inside: :func:`from_pretrained` builds models without weights (module docstring)."""
    token = _ARCHITECTURE_ONLY.set(True)
    try:
        yield
    finally:
        _ARCHITECTURE_ONLY.reset(token)


def building_architecture_only() -> bool:
    return _ARCHITECTURE_ONLY.get()


def architecture(source: str) -> Any:
    """A transformers config for a checkpoint: its config.json (the directory, or the
    fetched copy of a hub id), else the published architecture."""
    from transformers import AutoConfig

    for folder in (Path(source).expanduser(), fetched_copy(source)):
        if (folder / "config.json").is_file():
            return AutoConfig.from_pretrained(str(folder))
    if source not in PUBLISHED_ARCHITECTURES:
        raise ConfigError(f"no architecture known for {source}: fetch it (lerac-fetch) first")
    kind, fields = PUBLISHED_ARCHITECTURES[source]
    return AutoConfig.for_model(kind, **fields)


def from_architecture(cls: Any, source: str, **kwargs: Any) -> Any:
    """``cls`` built from ``source``'s architecture, without weights."""
    config = architecture(source)
    for key in CONFIG_KWARGS:
        if key in kwargs:
            setattr(config, key, kwargs[key])
    return cls.from_config(config)


def how_to_get(source: str) -> str:
    """The fix for a hub id that is neither fetched nor cached, in one sentence."""
    name = source.split("/")[-1]
    return (
        f"on a machine with network access run `hf download {source} --local-dir "
        f"weights/{name}` (or `lerac-fetch {name}`, which puts it in <data>/weights/{name}, "
        "where it is found offline, or write the folder with from_pretrained(...)."
        f"save_pretrained(...)), copy that folder here and set model.pretrained=weights/{name}"
    )


def local_copy(source: str) -> Path | None:
    """The folder a model source names on this machine: itself, or the copy ``lerac-fetch``
    made of a hub id; None when there is neither."""
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    if looks_like_hub_id(source) and fetched_copy(source).is_dir():
        return fetched_copy(source)
    return None


def fetched_copy(source: str) -> Path:
    """Where ``lerac-fetch`` puts a hub id's files: ``<data>/weights/<name>``, with
    ``<data>`` the data folder (env LERAC_DATA_DIR, default ``data``, as paths.data_dir)."""
    return Path(os.environ.get("LERAC_DATA_DIR") or "data") / "weights" / source.split("/")[-1]


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is set: nothing may be fetched from the hub."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def looks_like_hub_id(source: str) -> bool:
    """``name`` or ``org/name``; anything else is meant as a local path."""
    parts = source.split("/")
    return len(parts) <= 2 and all(parts) and not source.startswith((".", "~"))
