"""Counting what makes a training step slow on a GPU: host syncs and recompiles.

:class:`SyncCounter` counts the operations that make the host wait for the GPU: reading
a value (``.item()``, ``int(t)``, ``float(t)``, ``bool(t)``), operators whose output size
depends on the data (``nonzero``, indexing with a boolean mask, ``unique``) and copies
that block. On CUDA it counts what PyTorch's own detector reports
(``torch.cuda.set_sync_debug_mode("warn")``); on other devices it counts, through a
dispatch mode, the operators that would make a GPU wait, so a test on the CPU finds the
same places. Each count is kept by site, ``file:line`` of the innermost frame that does
more than pass the call on (this repository's files relative to its root; a sync inside
torch.optim or transformers is theirs), with the share whose site is this repository's
own code (:attr:`SyncCounter.ours`).

:class:`RecompileCounter` counts torch.compile's recompilations with their reasons (the
messages ``TORCH_LOGS=recompiles`` prints), whether Dynamo hit its recompile limit, and
the graphs compiled and graph breaks met meanwhile.
"""

from __future__ import annotations

import functools
import logging
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HERE = Path(__file__).resolve()
PACKAGE, REPO = HERE.parents[1], HERE.parents[2]  # lerac/, and the checkout holding it
TORCH = Path(torch.__file__).resolve().parent
SYNC_WARNING = "called a synchronizing CUDA operation"
PLUMBING = ("_compile.py", "_dynamo/", "utils/_python_dispatch.py", "_ops.py", "overrides.py")
PLUMBING += ("_tensor.py", "_jit_internal.py", "utils/_contextlib.py")
# Operators that read device memory on the host: on a GPU the host waits for them.
# (item/int/float/bool reach the dispatcher as _local_scalar_dense.)
SYNCING_OPS = frozenset(
    {
        "_local_scalar_dense",
        "nonzero",
        "masked_select",
        "unique",
        "_unique",
        "_unique2",
        "unique_consecutive",
        "unique_dim",
        "equal",
    }
)
INDEXING_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})
_host_reads = [0]  # depth of on_host blocks


@contextmanager
def on_host() -> Iterator[None]:
    """Marks reads of tensors that live in CPU memory on every device (a GPU run's too,
    such as Adam's step counters or a text batch's token counts): they make no GPU wait,
    so :class:`SyncCounter` leaves them out off CUDA too (on CUDA it never sees them)."""
    _host_reads[0] += 1
    try:
        yield
    finally:
        _host_reads[0] -= 1


@functools.cache
def _resolved(filename: str) -> Path:
    return Path(filename).resolve()


def _plumbing(path: Path) -> bool:
    """Frames that only carry a call from its caller to the operator (this module, torch's
    dispatch and compile wrappers, the Tensor method layer): a sync is the caller's."""
    if path == HERE:
        return True
    return path.is_relative_to(TORCH) and path.relative_to(TORCH).as_posix().startswith(PLUMBING)


def _site() -> tuple[str, bool]:
    """``file:line`` of the innermost frame that is not plumbing, and whether it is this
    repository's code (a sync inside torch.optim or transformers is theirs)."""
    frames = [f for f in traceback.extract_stack() if not _plumbing(_resolved(f.filename))]
    if not frames:
        return "torch", False
    path = _resolved(frames[-1].filename)
    ours = path.is_relative_to(PACKAGE) or (
        path.is_relative_to(REPO) and "site-packages" not in path.parts
    )
    if ours:
        name = path.relative_to(REPO).as_posix()
    else:  # a package's file from its own name on, else the last two parts
        parts = path.parts
        start = parts.index("site-packages") + 1 if "site-packages" in parts else len(parts) - 2
        name = "/".join(parts[start:])
    return f"{name}:{frames[-1].lineno}", ours


def waits_for_device(func: Any, args: tuple) -> bool:
    """Whether operator ``func`` on ``args`` makes the host wait for a GPU."""
    name = func.overloadpacket.__name__
    if name in SYNCING_OPS:
        return True
    if name in INDEXING_OPS and len(args) > 1:  # a boolean mask becomes indices: nonzero
        return any(
            isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in args[1] if t is not None
        )
    return False


class _SyncingOps(TorchDispatchMode):
    def __init__(self, record: Any) -> None:
        super().__init__()
        self.record = record

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not _host_reads[0] and waits_for_device(func, args):
            self.record()
        return func(*args, **(kwargs or {}))


class SyncCounter:
    """Host syncs inside the ``with`` block, by site (see the module docstring)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.sites: Counter[str] = Counter()
        self.ours: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.sites.values())

    def record(self) -> None:
        site, ours = _site()
        self.sites[site] += 1
        if ours:
            self.ours[site] += 1

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:
        if SYNC_WARNING in str(message):
            self.record()
        else:
            self._previous_show(message, category, filename, lineno, file, line)

    def __enter__(self) -> SyncCounter:
        self._stack = ExitStack()
        if self.device.type == "cuda":
            self._stack.enter_context(warnings.catch_warnings())  # restores showwarning
            warnings.filterwarnings("always", message=f".*{SYNC_WARNING}")
            self._previous_show, warnings.showwarning = warnings.showwarning, self._show
            self._stack.callback(torch.cuda.set_sync_debug_mode, torch.cuda.get_sync_debug_mode())
            torch.cuda.set_sync_debug_mode("warn")
        else:
            self._stack.enter_context(_SyncingOps(self.record))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()


class RecompileCounter(logging.Handler):
    """torch.compile recompilations inside the ``with`` block: :attr:`reasons` (one per
    recompile, the first line of the guard failure), :attr:`limit_hits` (Dynamo gave up
    compiling a function), :attr:`graphs` and :attr:`graph_breaks` compiled and met.
    Entering turns on torch's ``recompiles`` log; leaving resets torch's log settings."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reasons: list[str] = []
        self.limit_hits: list[str] = []
        self.graphs = self.graph_breaks = 0

    @property
    def recompiles(self) -> int:
        return len(self.reasons)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Recompiling function"):
            failures = [ln.strip("- ").strip() for ln in text.splitlines()[2:] if ln.strip()]
            self.reasons.append(failures[0] if failures else text.splitlines()[0])
        elif "hit config." in text and "recompile_limit" in text:
            self.limit_hits.append(text.splitlines()[0])

    @staticmethod
    def _counts() -> tuple[int, int]:
        from torch._dynamo.utils import counters

        return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())

    def __enter__(self) -> RecompileCounter:
        torch._logging.set_logs(recompiles=True)
        logging.getLogger("torch._dynamo").addHandler(self)
        self._start = self._counts()
        return self

    def __exit__(self, *exc: Any) -> None:
        graphs, breaks = self._counts()
        self.graphs, self.graph_breaks = graphs - self._start[0], breaks - self._start[1]
        logging.getLogger("torch._dynamo").removeHandler(self)
        torch._logging.set_logs()
