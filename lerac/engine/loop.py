"""The training loop: a :class:`Trainer` and the collaborators it calls.

    trainer = Trainer(settings, regime=regime, schedule=schedule, store=store, seed=seed)
    result = trainer.fit(model, splits, make_optimizer)

``fit`` is four parts: :meth:`Trainer.setup` (device, loaders, layers, optimizer, the
fast path, resume), :meth:`Trainer.train_epoch` (the steps), :meth:`Trainer.end_epoch`
(validation, history, the schedule after the curriculum, early stopping, checkpoint) and
:meth:`Trainer.test` (the best epoch restored and tested). One training step is
:func:`training_step`, the hot path in a few lines.

Each collaborator has one job and a do-nothing default, so the loop has no ``if x is
not None``: the regime (rate units, param groups, the curriculum; :class:`~lerac.engine.
regimes.Regime`), the schedule after it (reduce-on-plateau by default, paper 4.2), both
behind one owner of the rates (:class:`~lerac.engine.rates.LearningRates`), the store (the run's
files; :class:`~lerac.engine.store.NoStore`), the logger (W&B; ``NoLogger``), the checkpoint
(resume; :class:`~lerac.engine.checkpoint.NoCheckpoint`), the stop signals (SIGTERM/SIGUSR1/
SIGUSR2 end the run at the next step boundary; :class:`~lerac.engine.checkpoint.NoStop`),
the probes (every layer's maps and weights at initialisation and after chosen epochs;
:class:`~lerac.engine.probes.NoProbes`) and the :class:`~lerac.engine.accel.Accelerator`
(precision, layout, compile, fused update).

The epoch with the best validation accuracy is restored and its test accuracy reported;
test data never influences a choice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from lerac.engine.accel import Accelerator
from lerac.engine.batches import Splits, TensorLoader
from lerac.engine.checkpoint import NoCheckpoint, NoStop, rng_state, set_rng_state
from lerac.engine.probes import NoProbes
from lerac.engine.rates import LearningRates
from lerac.engine.regimes import Conventional, Regime
from lerac.engine.schedules import ReduceOnPlateau, Schedule
from lerac.engine.settings import TrainerSettings
from lerac.engine.store import NoStore, rates_of
from lerac.errors import ConfigError, LeRaCError, RunInterrupted
from lerac.layers import Layer, call_model, find_layers


class NoLogger:
    """Logs nothing (logger=none)."""

    def start(self, config: dict[str, Any], run_dir: str, name: str, group: str) -> None:
        pass

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def finish(self, summary: dict[str, Any], failed: bool = False) -> None:
        pass


class TrainingDiverged(LeRaCError):
    """The loss stopped being a finite number."""


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

    def record_epoch(self, row: dict[str, Any], val_acc: float, model: nn.Module) -> bool:
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


def hard_labels(targets: Tensor) -> Tensor:
    """Class indices, also from soft (B, C) targets such as mix-up's."""
    return targets.argmax(dim=1) if targets.ndim > 1 else targets


# --- the hot path ------------------------------------------------------------------------


def training_step(
    model: nn.Module, optimizer: Optimizer, accel: Accelerator, inputs: Any, targets: Tensor
) -> tuple[Tensor, Tensor]:
    """One optimizer step on one batch; the loss (detached) and the float32 logits."""
    with accel.autocast():
        logits = call_model(model, inputs)
    logits = logits.float()
    loss = nn.functional.cross_entropy(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: TensorLoader,
    accel: Accelerator | None = None,
    predictions: list | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in percent; appends (predicted, target) batches to
    ``predictions`` when given."""
    accel = accel or Accelerator("cpu")
    model.eval()
    loss_sum, correct = 0.0, 0.0
    for inputs, targets in loader:
        with accel.autocast():
            logits = call_model(model, inputs)
        logits = logits.float()
        predicted = logits.argmax(dim=1)
        loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
        correct += (predicted == targets).sum()
        if predictions is not None:
            predictions.append((predicted, targets))
    n = loader.num_examples
    return float(loss_sum) / n, 100.0 * float(correct) / n


# --- the trainer -------------------------------------------------------------------------


@dataclass
class LiveRun:
    """The live pieces of one run, built by :meth:`Trainer.setup`."""

    model: nn.Module
    optimizer: Optimizer
    layers: list[Layer]
    train_loader: TensorLoader
    val_loader: TensorLoader
    test_loader: TensorLoader
    progress: Progress
    rates: LearningRates
    resumed_from: int = 0

    def parts(self, regime: Regime) -> dict[str, Any]:
        """What a checkpoint holds, by name; each part has state_dict/load_state_dict."""
        return dict(
            model=self.model,
            optimizer=self.optimizer,
            regime=regime,
            schedule=self.rates,
            train_loader=self.train_loader,
            progress=self.progress,
        )


class Trainer:
    """Trains one model on one data set under one regime; see the module docstring."""

    def __init__(
        self,
        settings: TrainerSettings,
        *,
        regime: Regime | None = None,
        schedule: Schedule | None = None,
        store: NoStore | None = None,
        logger: NoLogger | None = None,
        checkpoint: NoCheckpoint | None = None,
        stop: NoStop | None = None,
        probes: NoProbes | None = None,
        seed: int = 0,
        desc: str = "train",
    ) -> None:
        self.settings, self.seed, self.desc = settings, seed, desc
        self.regime = regime or Conventional()
        self.schedule = schedule or ReduceOnPlateau()
        self.store = store or NoStore()
        self.logger = logger or NoLogger()
        self.checkpoint = checkpoint or NoCheckpoint()
        self.stop = stop or NoStop()
        self.probes = probes or NoProbes()
        self.device = resolve_device(settings.device)
        self.accel = Accelerator.from_settings(settings, self.device)

    def fit(
        self,
        model: nn.Module,
        splits: Splits,
        make_optimizer: Callable[[list[dict[str, Any]]], Optimizer],
    ) -> FitResult:
        """Train (resuming from the checkpoint when it holds one), restore the best epoch,
        test. A stop signal ends the run at the next step boundary with RunInterrupted."""
        with self.accel.backend_flags():
            run = self.setup(model, splits, make_optimizer)
            for epoch in self.epochs(run):
                started = time.perf_counter()
                self.regime.on_epoch_start(epoch - 1, run.model)
                train_loss, train_acc = self.train_epoch(run)
                self.end_epoch(run, epoch, train_loss, train_acc, started)
                if run.progress.stopped:
                    break
            self.probes.finish(run.model)
            return self.test(run)

    def setup(self, model: nn.Module, splits: Splits, make_optimizer: Callable) -> LiveRun:
        """Model on the device, loaders, layers, optimizer and rates, resumed state."""
        s = self.settings
        model.to(self.device)
        self.regime.prepare(model)
        train_loader, val_loader, test_loader = splits.loaders(
            s.batch_size,
            self.device,
            self.seed,
            s.limit_train_batches,
            s.limit_eval_batches,
            pad_multiple=self.accel.pad_multiple,
        )
        if len(train_loader) == 0:
            raise ConfigError(
                f"no training batch: {splits.sizes()['train']} training examples at "
                f"trainer.batch_size={s.batch_size}"
            )
        layers = self.regime.units(find_layers(model, next(iter(val_loader))[0]), model)
        model = self.accel.prepare(model)
        optimizer = self.accel.prepare_optimizer(make_optimizer(self.regime.param_groups(layers)))
        rates = LearningRates(
            optimizer,
            curriculum=self.regime.curriculum(optimizer, len(train_loader)),
            schedule=self.schedule,
            steps_per_epoch=len(train_loader),
            max_epochs=s.max_epochs,
        )
        rates.before_step(0)
        initial_lrs = rates_of(layers, optimizer)  # step 0's, before a checkpoint moves them
        progress = Progress(s.early_stopping_patience)
        loaders = dict(train_loader=train_loader, val_loader=val_loader, test_loader=test_loader)
        run = LiveRun(model, optimizer, layers, **loaders, progress=progress, rates=rates)
        run.resumed_from = self.resume(run)
        self.probes.start(run.model, splits, layers, self.device, run.progress.epoch)
        self.store.start(
            layers,
            optimizer,
            initial_lrs,
            extra_fields=list(self.regime.epoch_log()),
            history=progress.history if run.resumed_from else None,
            step=progress.step,
        )
        return run

    def epochs(self, run: LiveRun) -> Iterable[int]:
        """The epochs left to train (none after early stopping), with a progress bar."""
        done, last = run.progress.epoch, self.settings.max_epochs
        if run.progress.stopped:
            last = done
        return tqdm(
            range(done + 1, last + 1),
            desc=self.desc,
            unit="epoch",
            disable=not self.settings.progress,
            initial=done,
            total=self.settings.max_epochs,
        )

    def train_epoch(self, run: LiveRun) -> tuple[float, float]:
        """One pass over the training data; mean loss and accuracy (%)."""
        run.model.train()
        loss_sum = correct = 0  # tensors on the device after the first batch: no sync per step
        batches = tqdm(
            run.train_loader,
            desc=f"epoch {run.progress.epoch + 1}",
            unit="batch",
            leave=False,
            disable=not self.settings.progress,
        )
        for batch, (inputs, targets) in enumerate(batches):
            if self.stop.requested:  # a step boundary: stop with the last checkpoint
                raise RunInterrupted(
                    f"{self.stop.name()} received in epoch {run.progress.epoch + 1}"
                )
            step = run.progress.step
            run.rates.before_step(step)
            # Every step while the rates move and the one where they arrive, then per epoch.
            if batch == 0 or run.rates.in_curriculum(step - 1):
                self.store.log_lrs(step, run.optimizer)
            loss, logits = training_step(run.model, run.optimizer, self.accel, inputs, targets)
            run.progress.step += 1
            loss_sum = loss_sum + loss * len(targets)
            correct = correct + (logits.argmax(dim=1) == hard_labels(targets)).sum()
        n = run.train_loader.num_examples
        return float(loss_sum) / n, 100.0 * float(correct) / n

    def end_epoch(
        self, run: LiveRun, epoch: int, train_loss: float, train_acc: float, started: float
    ) -> None:
        """Validate, record the epoch, hand over to the schedule and early stopping once
        the curriculum is over, checkpoint."""
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"the training loss became {train_loss} in epoch {epoch}; lower optimizer.lr "
                "(or regime.lr_first)"
            )
        val_loss, val_acc = evaluate(run.model, run.val_loader, self.accel)
        lr_min, lr_max = lr_range(run.optimizer)
        row = {
            "epoch": epoch,
            "train_loss": round(train_loss, 6),
            "train_acc": round(train_acc, 4),
            "val_loss": round(val_loss, 6),
            "val_acc": round(val_acc, 4),
            "lr_min": f"{lr_min:.6e}",
            "lr_max": f"{lr_max:.6e}",
            "seconds": round(time.perf_counter() - started, 3),
            **self.regime.epoch_log(),
        }
        improved = run.progress.record_epoch(row, val_acc, run.model)
        self.store.log_epoch(row)
        self.logger.log({k: float(v) for k, v in row.items() if k != "epoch"}, step=epoch)
        if run.rates.after_epoch(run.progress.step, val_loss):  # past the curriculum
            run.progress.count_stale(improved)
        self.probes.after_epoch(epoch, run.model)
        self.checkpoint.save(self.snapshot(run))

    def test(self, run: LiveRun) -> FitResult:
        """The best epoch's weights, evaluated on the test set."""
        progress = run.progress
        run.model.load_state_dict(progress.best_state)
        predictions: list = []
        test_loss, test_acc = evaluate(run.model, run.test_loader, self.accel, predictions)
        return FitResult(
            progress.best_epoch,
            progress.best_val_acc,
            test_acc,
            test_loss,
            progress.epoch,
            progress.train_seconds,
            run.layers,
            torch.cat([p for p, _ in predictions]).cpu(),
            torch.cat([t for _, t in predictions]).cpu(),
            run.resumed_from,
        )

    def snapshot(self, run: LiveRun) -> dict[str, Any]:
        parts = run.parts(self.regime) | {"probes": self.probes}
        rng = {"rng": rng_state(self.device)}
        return {name: part.state_dict() for name, part in parts.items()} | rng

    def resume(self, run: LiveRun) -> int:
        """Load the checkpoint into the run (and the RNGs); the epoch it ended, 0 if none."""
        state = self.checkpoint.load()
        if state is None:
            return 0
        for name, part in run.parts(self.regime).items():
            part.load_state_dict(state[name])
        self.probes.load_state_dict(state.get("probes", {}))
        set_rng_state(state["rng"], self.device)
        return run.progress.epoch
