"""LeRaC inside a HuggingFace ``Trainer`` (extra ``hf``).

Two lines change in a plain Trainer script::

    from lerac.integrations.hf import LeRaCTrainer as Trainer    # was: from transformers ...
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      lerac={"k_epochs": 3, "lr_first": 1e-4, "lr_last": 1e-8})

:class:`LeRaCTrainer` builds one param group per layer and the optimizer that
``TrainingArguments(optim=...)`` names, runs the curriculum for k epochs, then the
arguments' ``lr_scheduler_type`` over the steps left (``reduce_lr_on_plateau`` counting its
patience from the end of the curriculum), and logs every layer's rate. The Trainer keeps
the schedule in its checkpoints (``scheduler.pt``), so a resumed run continues it exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import SequentialLR
from transformers import Trainer, TrainerCallback, TrainingArguments, get_scheduler

from lerac.curriculum import LeRaC, curriculum_steps
from lerac.errors import ConfigError
from lerac.layers import layer_param_groups, layer_rates
from lerac.plateau import PlateauAfterCurriculum

# The keys of LeRaCTrainer(lerac={...}): the curriculum's length (one of the first two),
# LeRaC's own arguments, and the batch inputs that find the layers (default: a batch of
# the train dataloader).
LERAC_KEYS = (
    "k_epochs",
    "total_steps",
    "lr_first",
    "lr_last",
    "c",
    "update",
    "anti",
    "step_every",
    "start_lrs",
    "example_inputs",
)


def layer_optimizer(
    model: nn.Module,
    args: TrainingArguments,
    example_inputs: Any,
    optimizer_cls_and_kwargs: tuple[type, dict[str, Any]] | None = None,
) -> torch.optim.Optimizer:
    """The optimizer ``args.optim`` names (with its learning rate, betas, epsilon, ...)
    on one param group per layer (no decay on biases and norms); or the class and
    keyword arguments given to the Trainer as ``optimizer_cls_and_kwargs``."""
    optimizer_cls, options = optimizer_cls_and_kwargs or Trainer.get_optimizer_cls_and_kwargs(
        args, model
    )
    takes_groups = isinstance(optimizer_cls, type) and issubclass(
        optimizer_cls, torch.optim.Optimizer
    )
    if not takes_groups or {"params", "model", "optimizer_dict"} & set(options):
        raise ConfigError(
            f"optim='{args.optim}' builds its own parameter groups, and LeRaC needs one group "
            "per layer: choose a plain optimizer (adamw_torch, adamw_torch_fused, sgd, "
            "adafactor, adagrad, rmsprop, ...)"
        )
    groups = layer_param_groups(model, example_inputs, weight_decay=args.weight_decay)
    return optimizer_cls(groups, **options)


def lerac_optimizers(
    model: nn.Module,
    args: TrainingArguments,
    example_inputs: Any,
    *,
    train_batches: int,
    k_epochs: int,
    lr_first: float,
    lr_last: float,
    **lerac_options: Any,
) -> tuple[torch.optim.Optimizer, LeRaC]:
    """The optimizer ``args.optim`` names on one param group per layer, and LeRaC over
    ``k_epochs`` epochs, for ``Trainer(optimizers=(optimizer, scheduler))``.

    ``train_batches`` is the length of the Trainer's train dataloader on one process
    (``len(trainer.get_train_dataloader())``); ``example_inputs`` is a batch's inputs (a
    dict of tensors for a transformers model) on the model's device. Other keyword
    arguments go to :class:`LeRaC` (``c``, ``update``, ``anti``). After the curriculum the
    rates stay at the base rate: :class:`LeRaCTrainer` hands over to the arguments' schedule.
    """
    optimizer = layer_optimizer(model, args, example_inputs)
    steps = curriculum_steps(k_epochs, train_batches, args.gradient_accumulation_steps)
    return optimizer, LeRaC(optimizer, steps, lr_first, lr_last, **lerac_options)


class LeRaCTrainer(Trainer):
    """A ``Trainer`` that trains with the LeRaC curriculum, set by ``lerac={...}``.

    ``lerac`` takes ``k_epochs`` (or ``total_steps``, in optimizer steps), ``lr_first``,
    ``lr_last`` and LeRaC's other arguments (``c``, ``update``, ``anti``, ...), and
    ``example_inputs`` (default: a batch of the train dataloader). From the
    ``TrainingArguments``: the optimizer (``optim``, ``learning_rate``, betas, ...), the
    weight decay (not on biases and norms), the gradient accumulation, and the schedule
    after the curriculum (``lr_scheduler_type`` over the steps left). A warm-up is refused:
    the curriculum is the warm-up.
    """

    def __init__(self, *args: Any, lerac: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.lerac_options = checked_options(lerac)
        if any(kwargs.get("optimizers") or ()):
            raise ConfigError(
                "LeRaCTrainer builds the optimizer and the scheduler itself: leave out "
                "optimizers=(...) (or use Trainer with lerac_optimizers)"
            )
        super().__init__(*args, **kwargs)
        self.curriculum_stepper = CurriculumStepper()
        self.callback_handler.callbacks.insert(0, LayerRatesCallback())  # before report_to
        self.add_callback(self.curriculum_stepper)
        self.batches_per_epoch: int | None = None

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = self.model if model is None else model
            example = self._example_inputs()
            self.optimizer = layer_optimizer(
                model, self.args, example, self.optimizer_cls_and_kwargs
            )
        return self.optimizer

    def _example_inputs(self) -> Any:
        """``lerac["example_inputs"]``, else a batch of the train dataloader on the device
        (the global random state left as it was); notes the dataloader's length."""
        with torch.random.fork_rng(devices=[]):
            loader = self.get_train_dataloader()
            try:
                self.batches_per_epoch = len(loader)
            except TypeError:  # an iterable dataset
                self.batches_per_epoch = None
            given = self.lerac_options.get("example_inputs")
            return given if given is not None else self._prepare_inputs(next(iter(loader)))

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            optimizer = self.optimizer if optimizer is None else optimizer
            self.lr_scheduler = self._curriculum_then(optimizer, num_training_steps)
            self._created_lr_scheduler = True  # the Trainer rebuilds it on the next train()
        return self.lr_scheduler

    def _curriculum_then(self, optimizer, num_training_steps: int):
        """LeRaC, then the arguments' lr_scheduler_type from the end of the curriculum."""
        if self.args.get_warmup_steps(num_training_steps) > 0:
            raise ConfigError(
                "LeRaCTrainer: the curriculum is the warm-up; set warmup_steps=0 (and "
                "warmup_ratio=0) in TrainingArguments"
            )
        options = {
            key: value
            for key, value in self.lerac_options.items()
            if key not in ("k_epochs", "example_inputs")
        }
        if "k_epochs" in self.lerac_options:
            if self.batches_per_epoch is None:
                raise ConfigError(
                    "lerac={'k_epochs': ...} needs a train dataset with a length: give "
                    "'total_steps' (optimizer steps) instead"
                )
            options["total_steps"] = curriculum_steps(
                self.lerac_options["k_epochs"],
                self.batches_per_epoch,
                self.args.gradient_accumulation_steps,
            )
        lerac = LeRaC(optimizer, **options)
        self.curriculum_stepper.plateau = None
        left = num_training_steps - lerac.total_steps
        kind = getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)
        if kind == "reduce_lr_on_plateau":
            plateau = PlateauAfterCurriculum(lerac, **(self.args.lr_scheduler_kwargs or {}))
            self.curriculum_stepper.plateau = plateau
            return plateau
        if left <= 0:
            return lerac
        after = get_scheduler(
            self.args.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=0,
            num_training_steps=left,
            scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
        )
        return SequentialLR(optimizer, [lerac, after], milestones=[lerac.total_steps])


def checked_options(lerac: dict[str, Any] | None) -> dict[str, Any]:
    """LeRaCTrainer's ``lerac`` settings, refused with the fix where they cannot work."""
    if not lerac:
        raise ConfigError(
            "LeRaCTrainer needs lerac={'k_epochs': <epochs>, 'lr_first': <rate>, 'lr_last': "
            "<rate>} (the curriculum's settings)"
        )
    unknown = sorted(set(lerac) - set(LERAC_KEYS))
    if unknown:
        raise ConfigError(f"lerac has no option {unknown}: choose from {', '.join(LERAC_KEYS)}")
    missing = [key for key in ("lr_first", "lr_last") if key not in lerac]
    if missing or ("k_epochs" in lerac) == ("total_steps" in lerac):
        raise ConfigError(
            "lerac needs lr_first, lr_last and one of k_epochs (epochs) or total_steps "
            f"(optimizer steps); got {sorted(lerac)}"
        )
    return dict(lerac)


class CurriculumStepper(TrainerCallback):
    """Steps LeRaC after every optimizer step when the Trainer's scheduler is a plateau
    scheduler (which the Trainer steps only after an evaluation)."""

    def __init__(self) -> None:
        self.plateau: PlateauAfterCurriculum | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.plateau is not None:
            self.plateau.curriculum.step()


class LayerRatesCallback(TrainerCallback):
    """Adds every layer's rate to each log of the Trainer as ``lr/<layer>``: the rates the
    logged step trained with, as the Trainer's own ``learning_rate`` (group 0's alone). The
    rates go into ``trainer.state.log_history`` (and so ``trainer_state.json``) and into
    the logs the callbacks after this one see; to reach ``report_to`` integrations, which
    come first, put this callback before them:
    ``trainer.callback_handler.callbacks.insert(0, LayerRatesCallback())`` (LeRaCTrainer
    does)."""

    def __init__(self) -> None:
        self.rates: dict[str, float] | None = None

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None:  # after the update, before the scheduler's step
            self.rates = {f"lr/{layer}": rate for layer, rate in layer_rates(optimizer).items()}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or self.rates is None:
            return
        logs.update(self.rates)
        if state.log_history:
            state.log_history[-1].update(self.rates)


__all__ = [
    "LayerRatesCallback",
    "LeRaCTrainer",
    "layer_optimizer",
    "lerac_optimizers",
]
