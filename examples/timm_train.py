"""LeRaC in timm's own training protocol: a ``timm.create_model`` network (random weights,
nothing downloaded), ``create_optimizer_v2`` on one param group per layer, and
``LeRaCScheduler`` driven the way timm's train.py drives any timm scheduler:
``step_update(num_updates, metric)`` after every update, ``step(epoch + 1, metric)`` after
every epoch, ``step(start_epoch)`` on resume. The curriculum runs for k epochs, then a
scheduler from ``create_scheduler_v2`` takes over (cosine, or plateau).

    pip install ".[timm]"  # in a checkout (lerac is on no package index)
    python examples/timm_train.py --model resnet10t --epochs 5 --k 2 --sched cosine
    python examples/timm_train.py --model resnet10t --epochs 5 --k 2 --start-epoch 1
"""

from __future__ import annotations

import argparse
import json
import warnings

import timm
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.nn import functional as F

from lerac import layer_param_groups
from lerac.integrations.timm import LeRaCScheduler


def batches(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches of 2 random 3x16x16 images with fixed labels."""
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, 16, 16, generator=generator), torch.tensor([0, 1]))] * n


def build(model_name: str, epochs: int, k: int, sched: str, updates_per_epoch: int, example):
    """The model, timm's optimizer on the layer groups, and LeRaC then ``sched``."""
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=2)
    groups = layer_param_groups(model, example, weight_decay=1e-4)
    optimizer = create_optimizer_v2(groups, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
    with warnings.catch_warnings():  # timm deprecates its plateau scheduler
        warnings.simplefilter("ignore", FutureWarning)
        after, _ = create_scheduler_v2(
            optimizer,
            sched,
            num_epochs=epochs - k,  # the epochs left after the curriculum
            patience_epochs=1,
            plateau_mode="min",
            updates_per_epoch=updates_per_epoch,
        )
    scheduler = LeRaCScheduler(
        optimizer,
        k * updates_per_epoch,
        lr_first=0.1,
        lr_last=1e-6,
        updates_per_epoch=updates_per_epoch,
        after=after,
    )
    return model, optimizer, scheduler


def train(
    model_name: str = "resnet10t",
    epochs: int = 5,
    k: int = 2,
    sched: str = "cosine",
    start_epoch: int = 0,
) -> tuple[LeRaCScheduler, dict[int, list[float]]]:
    """The scheduler and every group's rate before each update, by update count."""
    data = batches()
    updates_per_epoch = len(data)
    model, optimizer, scheduler = build(model_name, epochs, k, sched, updates_per_epoch, data[0][0])
    if start_epoch > 0:  # timm's resume: the scheduler is a function of the counts
        scheduler.step(start_epoch)
    seen: dict[int, list[float]] = {}
    model.train()
    for epoch in range(start_epoch, epochs):
        num_updates, losses = epoch * updates_per_epoch, []
        for x, y in data:
            seen[num_updates] = [group["lr"] for group in optimizer.param_groups]
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            num_updates += 1
            scheduler.step_update(num_updates=num_updates, metric=sum(losses) / len(losses))
        scheduler.step(epoch + 1, sum(losses) / len(losses))
    return scheduler, seen


def main(argv: list[str] | None = None) -> tuple[LeRaCScheduler, dict[int, list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet10t", help="any timm model name")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--k", type=int, default=2, help="epochs the curriculum lasts")
    parser.add_argument("--sched", default="cosine", help="timm's scheduler after LeRaC")
    parser.add_argument("--start-epoch", type=int, default=0, help="resume at this epoch")
    options = parser.parse_args(argv)
    scheduler, seen = train(
        options.model, options.epochs, options.k, options.sched, options.start_epoch
    )
    for update, rates in sorted(seen.items()):
        print(json.dumps({"update": update, "lowest": min(rates), "highest": max(rates)}))
    return scheduler, seen


if __name__ == "__main__":
    main()
