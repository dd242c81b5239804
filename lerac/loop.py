"""The training loop: one regime, one optimizer, a schedule after the curriculum, early
stopping.

Per epoch: regime.on_epoch_start -> for each batch: regime.before_step,
schedule.before_step, forward, backward, optimizer step -> validation. Once the regime's
curriculum is over, the schedule (reduce-on-plateau by default, paper 4.2) acts and early
stopping counts epochs without a better validation accuracy. The epoch with the best
validation accuracy is restored and its test accuracy reported; test data never
influences a choice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from lerac.accel import Accelerator, check_settings
from lerac.data.base import Splits, TensorLoader
from lerac.errors import ConfigError, LeRaCError
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
) -> FitResult:
    regime = regime or Conventional()
    schedule = schedule or ReduceOnPlateau()
    logger = logger or NoLogger()
    device = resolve_device(settings.device)
    model.to(device)

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
    schedule.start(optimizer, len(train_loader), settings.max_epochs, regime.curriculum_steps)
    if store:
        store.start(layers)

    best_epoch, best_val_acc, best_state = 0, -math.inf, None
    stale_epochs, step, train_seconds = 0, 0, 0.0
    bar = tqdm(
        range(1, settings.max_epochs + 1), desc=desc, unit="epoch", disable=not settings.progress
    )
    for epoch in bar:
        started = time.perf_counter()
        regime.on_epoch_start(epoch - 1, model)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        batches = tqdm(
            train_loader,
            desc=f"epoch {epoch}",
            unit="batch",
            leave=False,
            disable=not settings.progress,
        )
        for batch, (inputs, targets) in enumerate(batches):
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
            step += 1
            loss_sum += loss.detach() * len(targets)
            correct += (logits.argmax(dim=1) == hard_labels(targets)).sum()
        train_loss = loss_sum.item() / train_loader.num_examples
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"the training loss became {train_loss} in epoch {epoch}; lower optimizer.lr "
                "(or regime.lr_first)"
            )
        val_loss, val_acc = evaluate(model, val_loader)
        lr_min, lr_max = lr_range(optimizer)
        seconds = time.perf_counter() - started
        train_seconds += seconds
        row = {
            "epoch": epoch,
            "train_loss": round(train_loss, 6),
            "train_acc": round(100.0 * correct.item() / train_loader.num_examples, 4),
            "val_loss": round(val_loss, 6),
            "val_acc": round(val_acc, 4),
            "lr_min": f"{lr_min:.6e}",
            "lr_max": f"{lr_max:.6e}",
            "seconds": round(seconds, 3),
        }
        if store:
            store.log_epoch(row)
        logger.log({k: float(v) for k, v in row.items() if k != "epoch"}, step=epoch)
        bar.set_postfix(val_acc=f"{val_acc:.2f}", lr=f"{lr_min:.0e}..{lr_max:.0e}")

        improved = val_acc > best_val_acc
        if improved:
            best_epoch, best_val_acc = epoch, val_acc
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if not regime.in_curriculum(step):
            schedule.after_epoch(val_loss)
            stale_epochs = 0 if improved else stale_epochs + 1
            if stale_epochs >= settings.early_stopping_patience:
                break
    bar.close()

    model.load_state_dict(best_state)
    predictions: list = []
    test_loss, test_acc = evaluate(model, test_loader, predictions)
    return FitResult(
        best_epoch,
        best_val_acc,
        test_acc,
        test_loss,
        epoch,
        train_seconds,
        layers,
        torch.cat([p for p, _ in predictions]).cpu(),
        torch.cat([t for _, t in predictions]).cpu(),
    )
