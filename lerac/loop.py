"""The training loop: one regime, one optimizer, a schedule after the curriculum, early
stopping, a checkpoint per epoch.

Per epoch: regime.on_epoch_start -> for each batch: regime.before_step,
schedule.before_step, forward, backward, optimizer step -> validation. Once the regime's
curriculum is over, the schedule (reduce-on-plateau by default, paper 4.2) acts and early
stopping counts epochs without a better validation accuracy. The epoch with the best
validation accuracy is restored and its test accuracy reported; test data never
influences a choice.

Collaborators with one job each: the loaders (order), the regime and the schedule
(rates), :class:`Progress` (epoch, step, history, best epoch, early stopping), the
:class:`~lerac.checkpoint.Checkpoint` (resume) and :class:`~lerac.checkpoint.StopSignals`
(stop at the next step boundary on SIGTERM/SIGUSR1/SIGUSR2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from lerac.accel import Accelerator, check_settings
from lerac.checkpoint import Checkpoint, StopSignals, load_state_into, rng_state, set_rng_state
from lerac.checkpoint import state_of as state_of_part
from lerac.data.base import Splits, TensorLoader
from lerac.errors import ConfigError, LeRaCError, RunInterrupted
from lerac.layers import Layer, call_model, find_layers
from lerac.regimes import Conventional, Regime
from lerac.schedules import ReduceOnPlateau, Schedule
from lerac.store import RunStore
from lerac.tracking import NoLogger


class TrainingDiverged(LeRaCError):
    """The loss stopped being a finite number."""


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
    # The fast path (lerac/accel.py): bf16 autocast, NHWC convolutions, torch.compile,
    # one multi-tensor optimizer update across param groups.
    precision: str = "fp32"
    channels_last: Any = "auto"
    compile: bool | str = False
    fused_groups: Any = "auto"

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size", "early_stopping_patience"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"trainer.{name} must be positive, got {getattr(self, name)}")
        for name in ("limit_train_batches", "limit_eval_batches"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"trainer.{name} must be positive or null, got {value}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(
                f"trainer.device='{self.device}' is not an option: use auto, cpu or cuda"
            )
        check_settings(self.precision, self.channels_last, self.compile, self.fused_groups)


@dataclass
class FitResult:
    best_epoch: int  # 1-based, like the history
    val_acc: float
    test_acc: float
    test_loss: float
    epochs: int
    train_seconds: float
    layers: list[Layer]
    test_predictions: torch.Tensor | None = None  # predicted class per test example
    test_targets: torch.Tensor | None = None
    resumed_from_epoch: int = 0  # the checkpoint's epoch this process started after (0: fresh)


@dataclass
class Progress:
    """Where the run stands: epoch, step, history rows, the best epoch and its weights,
    early stopping. All of it goes into the checkpoint."""

    patience: int
    epoch: int = 0
    step: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    stale_epochs: int = 0
    stopped: bool = False  # early stopping ended the run (a resume must not train on)

    def end_epoch(self, row: dict[str, Any], val_acc: float, model: nn.Module) -> bool:
        """Record a finished epoch; True if its validation accuracy is the best so far."""
        self.epoch = row["epoch"]
        self.train_seconds += row["seconds"]
        self.history.append(row)
        improved = val_acc > self.best_val_acc
        if improved:
            self.best_epoch, self.best_val_acc = self.epoch, val_acc
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return improved

    def count_stale(self, improved: bool) -> None:
        """Early stopping (counted only once the curriculum is over)."""
        self.stale_epochs = 0 if improved else self.stale_epochs + 1
        self.stopped = self.stale_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


def lr_range(optimizer: Optimizer) -> tuple[float, float]:
    lrs = [float(group["lr"]) for group in optimizer.param_groups]
    return min(lrs), max(lrs)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu"
        )
    return torch.device(name)


def hard_labels(targets: torch.Tensor) -> torch.Tensor:
    """Class indices, also from soft (B, C) targets such as mix-up's."""
    return targets.argmax(dim=1) if targets.ndim > 1 else targets


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: TensorLoader, predictions: list | None = None
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in percent; appends (predicted, target) batches to
    ``predictions`` when given."""
    model.eval()
    loss_sum, correct = 0.0, 0.0
    for inputs, targets in loader:
        logits = call_model(model, inputs)
        predicted = logits.argmax(dim=1)
        loss_sum += nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        correct += (predicted == targets).sum()
        if predictions is not None:
            predictions.append((predicted, targets))
    n = loader.num_examples
    return float(loss_sum) / n, 100.0 * float(correct) / n


def train_epoch(
    model: nn.Module,
    loader: TensorLoader,
    optimizer: Optimizer,
    regime: Regime,
    schedule: Schedule,
    progress: Progress,
    store: RunStore | None,
    stop: StopSignals | None,
    show: bool,
) -> tuple[float, float]:
    """One pass over the training data; mean loss and accuracy (%)."""
    model.train()
    loss_sum = correct = 0  # tensors on the device after the first batch: no sync per step
    batches = tqdm(
        loader, desc=f"epoch {progress.epoch + 1}", unit="batch", leave=False, disable=not show
    )
    for batch, (inputs, targets) in enumerate(batches):
        if stop is not None and stop.requested:  # a step boundary: stop with the last checkpoint
            raise RunInterrupted(f"{stop.name()} received in epoch {progress.epoch + 1}")
        step = progress.step
        regime.before_step(step)
        schedule.before_step(step)
        # Every step while the rates move and the one where they arrive, then per epoch.
        if store and (batch == 0 or regime.in_curriculum(step - 1)):
            store.log_lrs(step, optimizer)
        logits = call_model(model, inputs)
        loss = nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.step += 1
        loss_sum = loss_sum + loss.detach() * len(targets)
        correct = correct + (logits.argmax(dim=1) == hard_labels(targets)).sum()
    return float(loss_sum) / loader.num_examples, 100.0 * float(correct) / loader.num_examples


def fit(
    model: nn.Module,
    splits: Splits,
    make_optimizer: Callable[[list[dict[str, Any]]], Optimizer],
    settings: TrainerSettings,
    regime: Regime | None = None,
    seed: int = 0,
    store: RunStore | None = None,
    logger: NoLogger | None = None,
    desc: str = "train",
    schedule: Schedule | None = None,
    checkpoint: Checkpoint | None = None,
    stop: StopSignals | None = None,
) -> FitResult:
    """Train (resuming from ``checkpoint`` when it holds one), restore the best epoch,
    test. ``stop`` ends the run at the next step boundary with :class:`RunInterrupted`."""
    regime = regime or Conventional()
    schedule = schedule or ReduceOnPlateau()
    logger = logger or NoLogger()
    device = resolve_device(settings.device)
    model.to(device)
    regime.prepare(model)

    train_loader, val_loader, test_loader = splits.loaders(
        settings.batch_size,
        device,
        seed,
        settings.limit_train_batches,
        settings.limit_eval_batches,
    )
    if len(train_loader) == 0:
        raise ConfigError(
            f"no training batch: {splits.sizes()['train']} training examples at "
            f"trainer.batch_size={settings.batch_size}"
        )

    layers = find_layers(model, next(iter(val_loader))[0])
    accel = Accelerator.from_settings(settings, device)
    model = accel.prepare(model)
    optimizer = accel.prepare_optimizer(make_optimizer(regime.param_groups(layers)))
    regime.start(optimizer, len(train_loader))
    initial_lrs = {n: g["lr"] for g in optimizer.param_groups for n in g.get("layers", [])}
    schedule.start(optimizer, len(train_loader), settings.max_epochs, regime.curriculum_steps)
    progress = Progress(settings.early_stopping_patience)
    # What a checkpoint holds, by name; each part has state_dict/load_state_dict.
    parts = dict(
        model=model,
        optimizer=optimizer,
        regime=regime,
        schedule=schedule,
        train_loader=train_loader,
        progress=progress,
    )
    resumed_from = resume(checkpoint, parts)
    if store:
        store.start(layers, initial_lrs, progress.history if resumed_from else None, progress.step)

    last_epoch = progress.epoch if progress.stopped else settings.max_epochs
    bar = tqdm(
        range(progress.epoch + 1, last_epoch + 1),
        desc=desc,
        unit="epoch",
        disable=not settings.progress,
        initial=progress.epoch,
        total=settings.max_epochs,
    )
    for epoch in bar:
        started = time.perf_counter()
        regime.on_epoch_start(epoch - 1, model)
        train_loss, train_acc = train_epoch(
            model,
            train_loader,
            optimizer,
            regime,
            schedule,
            progress,
            store,
            stop,
            show=settings.progress,
        )
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"the training loss became {train_loss} in epoch {epoch}; lower optimizer.lr "
                "(or regime.lr_first)"
            )
        val_loss, val_acc = evaluate(model, val_loader)
        lr_min, lr_max = lr_range(optimizer)
        row = {
            "epoch": epoch,
            "train_loss": round(train_loss, 6),
            "train_acc": round(train_acc, 4),
            "val_loss": round(val_loss, 6),
            "val_acc": round(val_acc, 4),
            "lr_min": f"{lr_min:.6e}",
            "lr_max": f"{lr_max:.6e}",
            "seconds": round(time.perf_counter() - started, 3),
        }
        if regime.cbs_sigma is not None:  # CBS: the sigma in force this epoch
            row["cbs_sigma"] = regime.cbs_sigma
        improved = progress.end_epoch(row, val_acc, model)
        if store:
            store.log_epoch(row)
        logger.log({k: float(v) for k, v in row.items() if k != "epoch"}, step=epoch)
        bar.set_postfix(val_acc=f"{val_acc:.2f}", lr=f"{lr_min:.0e}..{lr_max:.0e}")

        if not regime.in_curriculum(progress.step):
            schedule.after_epoch(val_loss)
            progress.count_stale(improved)
        if checkpoint:
            checkpoint.save(snapshot(parts))
        if progress.stopped:
            break
    bar.close()

    model.load_state_dict(progress.best_state)
    predictions: list = []
    test_loss, test_acc = evaluate(model, test_loader, predictions)
    return FitResult(
        progress.best_epoch,
        progress.best_val_acc,
        test_acc,
        test_loss,
        progress.epoch,
        progress.train_seconds,
        layers,
        torch.cat([p for p, _ in predictions]).cpu(),
        torch.cat([t for _, t in predictions]).cpu(),
        resumed_from,
    )


def snapshot(parts: dict[str, Any]) -> dict[str, Any]:
    return {name: state_of_part(part) for name, part in parts.items()} | {"rng": rng_state()}


def resume(checkpoint: Checkpoint | None, parts: dict[str, Any]) -> int:
    """Load the checkpoint into ``parts`` (and the RNGs); the epoch it ended, 0 if none."""
    state = checkpoint.load() if checkpoint else None
    if state is None:
        return 0
    for name, part in parts.items():
        load_state_into(part, state[name])
    set_rng_state(state["rng"])
    return parts["progress"].epoch
