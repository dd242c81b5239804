"""LeRaC on a timm model: ``timm.create_model`` (random weights, nothing downloaded) and one
param group per layer found by a forward pass, or timm's own layer-decay groups.

    pip install ".[timm]"  # in a checkout (lerac is on no package index)
    python examples/timm_model.py --model resnet10t --k 2
    python examples/timm_model.py --model resnet10t --k 2 --layer-decay 0.75

With ``--layer-decay`` the groups come from ``timm.optim.create_optimizer_v2``: timm gives
each of its layers an ``lr_scale`` (decay ** depth-from-the-top), and LeRaC makes each group
rise to lr x lr_scale. Those groups carry no layer rank, so the example ranks them by
``lr_scale`` (it grows from input to output): a layer's decay and no-decay halves share it.
"""

from __future__ import annotations

import argparse
import json

import timm
import torch
from timm.optim import create_optimizer_v2
from torch.nn import functional as F

from lerac import LeRaC, curriculum_steps, layer_param_groups


def make_optimizer(model, example, layer_decay: float | None) -> torch.optim.Optimizer:
    if layer_decay is None:
        groups = layer_param_groups(model, example, weight_decay=1e-4)
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    optimizer = create_optimizer_v2(
        model, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, layer_decay=layer_decay
    )
    for group in optimizer.param_groups:
        group["layer_rank"] = group["lr_scale"]
    return optimizer


def train(
    model_name: str = "resnet10t",
    k: int = 2,
    epochs: int = 3,
    layer_decay: float | None = None,
    lr_first: float = 0.1,
) -> tuple[LeRaC, list[list[float]]]:
    """The scheduler and every group's rate before each optimizer step."""
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=2)
    generator = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 3, 32, 32, generator=generator), torch.tensor([0, 1, 0, 1]))] * 3
    optimizer = make_optimizer(model, data[0][0], layer_decay)
    lerac = LeRaC(optimizer, curriculum_steps(k, len(data)), lr_first=lr_first, lr_last=1e-6)
    seen = []
    model.train()
    for x, y in data * epochs:
        seen.append(lerac.get_last_lr())  # every group's rate for this step
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lerac.step()
    return lerac, seen


def main(argv: list[str] | None = None) -> tuple[LeRaC, list[list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet10t", help="any timm model name")
    parser.add_argument("--k", type=int, default=2, help="epochs the curriculum lasts")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--layer-decay", type=float, help="use timm's layer-decay groups")
    parser.add_argument("--lr-first", type=float, default=None)
    options = parser.parse_args(argv)
    # Under layer decay the input layer ends lowest: it must also start at or below that.
    lr_first = options.lr_first or (1e-3 if options.layer_decay else 0.1)
    lerac, seen = train(options.model, options.k, options.epochs, options.layer_decay, lr_first)
    for step, rates in enumerate(seen):
        print(json.dumps({"step": step, "lowest": min(rates), "highest": max(rates)}))
    return lerac, seen


if __name__ == "__main__":
    main()
