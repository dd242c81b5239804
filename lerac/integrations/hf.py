"""LeRaC inside a HuggingFace ``Trainer`` (``pip install "lerac[hf]"``).

    optimizer, scheduler = lerac_optimizers(model, args, example, train_batches=len(loader),
                                            k_epochs=3, lr_first=1e-4, lr_last=1e-8)
    trainer = Trainer(model, args, optimizers=(optimizer, scheduler),
                      callbacks=[LayerRatesCallback()], ...)

The Trainer steps the scheduler after every optimizer step and saves and restores it in
its checkpoints (``scheduler.pt``), so a resumed run continues the curriculum exactly.
Under FSDP the Trainer refuses ``optimizers=(...)``: override ``create_optimizer`` and
``create_scheduler`` of a Trainer subclass to return the two instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainingArguments

from lerac.curriculum import LeRaC, curriculum_steps
from lerac.layers import layer_param_groups


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
    """AdamW on one param group per layer (no decay on biases and norms) and LeRaC over
    ``k_epochs`` epochs, both from ``args``: its learning rate (the rate every layer rises
    to), weight decay, Adam betas and epsilon, and gradient accumulation.

    ``train_batches`` is the length of the Trainer's train dataloader on one process
    (``len(trainer.get_train_dataloader())``); ``example_inputs`` is a batch's inputs
    (a dict of tensors for a transformers model) on the model's device. Other keyword
    arguments go to :class:`LeRaC` (``c``, ``update``, ``anti``).
    """
    groups = layer_param_groups(model, example_inputs, weight_decay=args.weight_decay)
    optimizer = torch.optim.AdamW(
        groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    steps = curriculum_steps(k_epochs, train_batches, args.gradient_accumulation_steps)
    return optimizer, LeRaC(optimizer, steps, lr_first, lr_last, **lerac_options)


def layer_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``lr/<group name>`` of every param group (``lr/<index>`` for a group without name)."""
    return {
        f"lr/{group.get('name', index)}": group["lr"]
        for index, group in enumerate(optimizer.param_groups)
    }


class LayerRatesCallback(TrainerCallback):
    """Adds every layer's rate to each log of the Trainer (its own ``learning_rate`` is
    group 0's alone). The rates go into ``trainer.state.log_history`` (and so
    ``trainer_state.json``) and into the logs the callbacks after this one see; to reach
    ``report_to`` integrations, which come first, put this callback before them:
    ``trainer.callback_handler.callbacks.insert(0, LayerRatesCallback())``."""

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        if logs is None or optimizer is None:
            return
        rates = layer_rates(optimizer)
        logs.update(rates)
        if state.log_history:
            state.log_history[-1].update(rates)
