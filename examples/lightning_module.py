"""LeRaC in PyTorch Lightning: a small CNN on synthetic images, LeRaC per step for k
epochs, then reduce-on-plateau per epoch counted from the end of the curriculum, one curve
per layer logged by LayerRateMonitor (a LearningRateMonitor).

    pip install ".[lightning]"  # in a checkout (lerac is on no package index)
    python examples/lightning_module.py --out /tmp/lerac_pl              # 4 epochs, k = 2
    python examples/lightning_module.py --out /tmp/lerac_pl --resume /tmp/lerac_pl/epoch=0.ckpt
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lerac import LeRaC, PlateauAfterCurriculum, curriculum_steps, layer_param_groups
from lerac.integrations.lightning import (
    LayerRateMonitor,
    after_curriculum_config,
    lerac_scheduler_config,
)

BATCHES = 5  # batches per epoch: 40 images, 8 a batch


def images(seed: int = 0) -> TensorDataset:
    """40 random 1x8x8 images; the label is whether the top half is brighter."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 1, 8, 8, generator=generator)
    y = (x[:, :, :4].mean((1, 2, 3)) > x[:, :, 4:].mean((1, 2, 3))).long()
    return TensorDataset(x, y)


class SmallCNN(L.LightningModule):
    def __init__(self, k_epochs: int = 2, plateau: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.k_epochs, self.plateau = k_epochs, plateau or {"factor": 0.1, "patience": 1}
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.norm(self.conv(x))).mean((2, 3)))

    def training_step(self, batch, _index):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        # Lightning has moved the module to its device: the example batch goes there too.
        example = images()[:2][0].to(self.device)
        groups = layer_param_groups(self, example, weight_decay=5e-4)
        optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
        lerac = LeRaC(optimizer, curriculum_steps(self.k_epochs, BATCHES), 0.1, 1e-6)
        # Its patience counts from the end of the curriculum, not from epoch 0.
        plateau = PlateauAfterCurriculum(lerac, mode="min", **self.plateau)
        # LeRaC per step; the plateau per epoch, whose cuts last once the curriculum is over.
        schedulers = [lerac_scheduler_config(lerac), after_curriculum_config(plateau, "train_loss")]
        return [optimizer], schedulers


class RatesPerBatch(Callback):
    """Records (global step, every group's rate) at the start of every training batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, list[float]]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_index):
        groups = trainer.optimizers[0].param_groups
        self.seen.append((trainer.current_epoch, trainer.global_step, [g["lr"] for g in groups]))


def fit(
    out: str,
    epochs: int = 4,
    resume: str | None = None,
    plateau: dict[str, Any] | None = None,
) -> RatesPerBatch:
    L.seed_everything(0, verbose=False)
    rates = RatesPerBatch()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(out, name="logs"),
        callbacks=[
            rates,
            LayerRateMonitor(logging_interval="step"),
            ModelCheckpoint(dirpath=out, filename="{epoch}", every_n_epochs=1, save_top_k=-1),
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    data = DataLoader(images(), batch_size=8, shuffle=True)
    trainer.fit(SmallCNN(plateau=plateau), data, ckpt_path=resume)
    return rates


def main(argv: list[str] | None = None) -> RatesPerBatch:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="checkpoints and the CSV log go here")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--resume", help="a checkpoint written by an earlier run")
    options = parser.parse_args(argv)
    rates = fit(options.out, options.epochs, options.resume)
    for epoch, step, row in rates.seen:
        row = {"epoch": epoch, "step": step, "first_layer": row[0], "last_layer": row[-1]}
        print(json.dumps(row))
    return rates


if __name__ == "__main__":
    main()
