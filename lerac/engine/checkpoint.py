"""Resume a run exactly where its last finished epoch left it.

:class:`Checkpoint` writes ``checkpoint.pt`` in the run directory after every epoch,
atomically (temporary name, fsync, rename): a run killed at any moment leaves the
previous epoch's checkpoint whole. It holds everything the rest of the run depends on:
the model, the optimizer, the regime (its curriculum scheduler; smoothing buffers live in
the model), the schedule, early stopping with the best weights so far, the history rows,
the training loader's shuffling order, the step counter and the RNG states of Python,
NumPy, torch and the training GPU. Restored, the run continues bit for bit as if never
stopped (CPU, or GPU with ``trainer.deterministic=true``).

:class:`StopSignals` turns SIGTERM, SIGUSR1 and SIGUSR2 (what SLURM and submitit send
before a preemption or a time limit) into a request the loop honours at the next step
boundary: the run stops with the last epoch's checkpoint (at most one epoch is redone on
resume; an exact mid-epoch checkpoint would need the loader's position inside an epoch).
Then the launcher's own handler runs: under submitit, USR1 and USR2 requeue the job,
which resumes (the log says ``resuming after epoch N``, metrics.json
``resumed_from_epoch``).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lerac.engine.io import load_torch, remove_temporaries, save_torch
from lerac.errors import LeRaCError, first_line

CHECKPOINT = "checkpoint.pt"
log = logging.getLogger("lerac")
VERSION = 1


class NoCheckpoint:
    """Keeps nothing: a run without a run directory trains from the start."""

    def save(self, state: dict[str, Any]) -> None:
        pass

    def load(self) -> dict[str, Any] | None:
        return None


class Checkpoint(NoCheckpoint):
    """``checkpoint.pt`` of one run directory: save (atomic), load, prune."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / CHECKPOINT

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: dict[str, Any]) -> None:
        save_torch(self.path, {"version": VERSION, **state})

    def load(self) -> dict[str, Any] | None:
        if not self.exists():
            return None
        try:
            state = load_torch(self.path)
        except Exception as err:
            raise LeRaCError(
                f"{self.path} cannot be read ({type(err).__name__}: {first_line(err)}); "
                "delete it to train the run from the start (or run again with overwrite=true)"
            ) from err
        if state.get("version") != VERSION:
            raise LeRaCError(
                f"{self.path} is a checkpoint of format {state.get('version')}, this suite "
                f"reads {VERSION}; delete it or run again with overwrite=true"
            )
        log.info("%s: resuming after epoch %d", self.path.parent.name, state["progress"]["epoch"])
        return state

    def prune(self) -> None:
        self.path.unlink(missing_ok=True)
        remove_temporaries(self.path.parent, of=self.path.name)


def rng_state(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Python, NumPy and torch's CPU generator states, and on a CUDA training device that
    device's generator (only it: the GPUs a resumed run sees may be fewer)."""
    device = torch.device(device)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
    }


def cuda_state_for(states: list[torch.Tensor], device: torch.device | str) -> Any:
    """The saved CUDA generator state to restore on ``device``, or None (not CUDA, none
    saved). A checkpoint holds the training device's state alone; one written before
    holds every GPU its process saw, of which the training device's index is taken (the
    first where the resumed process has fewer), so it loads under one GPU too."""
    device = torch.device(device)
    if device.type != "cuda" or not states:
        return None
    index = device.index or 0
    return states[index] if index < len(states) else states[0]


def set_rng_state(state: dict[str, Any], device: torch.device | str = "cpu") -> None:
    """Restore what :func:`rng_state` saved; CUDA's on ``device`` only."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    cuda = cuda_state_for(state.get("cuda", []), device)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class NoStop:
    """No stop is ever requested (a run outside :class:`StopSignals`)."""

    requested = False

    def name(self) -> str:
        return ""


PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # SLURM's pre-timeout/preemption signals


class StopSignals(NoStop):
    """While active, SIGTERM/SIGUSR1/SIGUSR2 set :attr:`requested` instead of killing.

    On exit the previous handlers come back, and a previous Python handler of the signal
    received (submitit's, which requeues the SLURM job) is called, so a launcher that
    manages preemption still does its part after the run has stopped cleanly.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers need it
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        handler = self.requeue_handler()
        if handler is not None:
            handler(self.received, None)

    def requeue_handler(self) -> Any:
        """The previous Python handler to call once the run has stopped: the received
        signal's own, and for USR1 or USR2 without one the other's. submitit requeues on
        USR2 (``--signal=USR2@signal_delay_s``), a cluster or a user may send USR1: both
        requeue the job. SIGTERM (``scancel``) only stops it."""
        previous = self._previous.get(self.received)
        if not callable(previous) and self.received in PREEMPT_SIGNALS:
            previous = next(
                (h for s in PREEMPT_SIGNALS if callable(h := self._previous.get(s))), None
            )
        return previous if callable(previous) else None

    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""
