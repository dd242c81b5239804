"""The trainer's typed settings (``trainer.*`` in the suite's config) and the per-key
rules they are checked with: one rule per key, shared with the suite's whole-config check
(lerac.suite.validate), so a value is judged the same way however the settings are built.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from fnmatch import fnmatch
from typing import Any

from lerac.engine.accel import check_fast_path
from lerac.errors import ConfigError

DEVICES = "auto, cpu or cuda (cuda:N for one device)"


@dataclass(frozen=True)
class Rule:
    key: str  # dotted; ``*`` matches within a name (dataset.*_fraction)
    kind: type  # int, float (an int is fine), bool or str
    ok: Callable[[Any], bool]
    need: str  # what a good value is, for the message
    example: str  # a value that works
    required: bool = False
    nullable: bool = False


def positive(v: Any) -> bool:
    return v > 0


def non_negative(v: Any) -> bool:
    return v >= 0


def anything(v: Any) -> bool:
    return True


def open_unit(v: Any) -> bool:
    return 0 < v < 1


def is_device(v: str) -> bool:
    return v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())


TRAINER_RULES = (
    Rule("trainer.max_epochs", int, positive, "a positive number of epochs", "200", True),
    Rule("trainer.batch_size", int, positive, "a positive batch size", "64", True),
    Rule("trainer.limit_train_batches", int, positive, "positive or null", "null", nullable=True),
    Rule("trainer.limit_eval_batches", int, positive, "positive or null", "null", nullable=True),
    Rule("trainer.early_stopping_patience", int, positive, "a positive number of epochs", "20"),
    Rule("trainer.device", str, is_device, DEVICES, "auto"),
    Rule("trainer.progress", bool, anything, "true or false", "true"),
    Rule("trainer.deterministic", bool, anything, "true or false", "true"),
    Rule("trainer.keep_checkpoint", bool, anything, "true or false", "false"),
)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"a.b.c": value}."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _has_type(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # bool is an int to Python, never to a config
        return kind is bool
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, kind)


def _bad(key: str, value: Any, need: str, example: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not valid: it must be {need} (e.g. {key}={example})")


def check_values(values: dict[str, Any], rules: Sequence[Rule]) -> None:
    """Type and range of every key a rule covers (``values``: a flattened config)."""
    for rule in rules:
        keys = [k for k in values if fnmatch(k, rule.key)] if "*" in rule.key else [rule.key]
        for key in keys:
            if key not in values:
                if rule.required:
                    raise ConfigError(f"{key} is missing; set it (e.g. {key}={rule.example})")
                continue
            value = values[key]
            if value is None and rule.nullable:
                continue
            if not (_has_type(value, rule.kind) and rule.ok(value)):
                raise _bad(key, value, rule.need, rule.example)


@dataclass
class TrainerSettings:
    """``trainer.*`` in the config. The patience is the suite's choice; the paper names
    early stopping without one."""

    max_epochs: int
    batch_size: int
    device: str = "auto"
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    early_stopping_patience: int = 20
    progress: bool = True
    deterministic: bool = False  # torch deterministic algorithms (train.py switches them)
    keep_checkpoint: bool = False  # keep checkpoint.pt once the run is complete
    # The fast path (lerac/engine/accel.py): bf16 autocast, NHWC convolutions, torch.compile,
    # one multi-tensor optimizer update across param groups.
    precision: str = "fp32"
    channels_last: Any = "auto"
    compile: bool | str = False
    fused_groups: Any = "auto"

    def __post_init__(self) -> None:
        # The same rules the suite's config check applies to trainer.* (TRAINER_RULES).
        check_values({f"trainer.{k}": v for k, v in asdict(self).items()}, TRAINER_RULES)
        check_fast_path(self.precision, self.channels_last, self.compile, self.fused_groups)

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> TrainerSettings:
        """The settings from ``trainer.*``; an unknown key is named with the closest one."""
        known = [f.name for f in fields(cls)]
        for key in node:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = (
                    f"did you mean trainer.{close[0]}?" if close else "known: " + ", ".join(known)
                )
                raise ConfigError(f"trainer.{key} is not a trainer setting; {hint}")
        return cls(**dict(node))
