"""Time a training step under the conventional regime, LeRaC and CBS, interleaved.

The paper says LeRaC "does not add any extra time over the conventional approach" and is
7-12% faster than CBS. LeRaC's only cost in this suite is one optimizer param group per
layer (PyTorch batches its foreach kernels within a group) and the per-step rate update;
CBS's is the Gaussian blur after every smoothed conv (ResNet-18: 17 separable depthwise
blurs, forward and backward). The sides run in turn, step by step (the order rotates),
on identical models and batches, and the medians are compared.

    python scripts/bench_regimes.py                       # ResNet-18, CIFAR-sized batch of 64
    python scripts/bench_regimes.py --device cuda --steps 200 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
from torch import nn

from lerac.engine.loop import resolve_device
from lerac.engine.rates import LearningRates
from lerac.engine.regimes import Conventional, CurriculumBySmoothing, LearningRateCurriculum
from lerac.layers import find_layers
from lerac.suite.models.resnet import ResNet18


def make_side(regime, args, device, batch):
    torch.manual_seed(0)
    model = ResNet18(num_classes=10, in_channels=3, image_size=args.image_size, width=args.width)
    model.to(device)
    regime.on_epoch_start(0, model)  # CBS attaches its kernels here; the others do nothing
    groups = regime.param_groups(find_layers(model, batch[0]))
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=5e-4)
    steps = args.warmup + args.steps
    curriculum = regime.curriculum(optimizer, steps_per_epoch=steps)
    rates = LearningRates(optimizer, curriculum=curriculum, steps_per_epoch=steps, max_epochs=2)
    return model, optimizer, rates


def timed_step(side, batch, step, device) -> tuple[float, float]:
    """Seconds for the whole step and for the optimizer update (rate update included)."""
    model, optimizer, rates = side
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sync()
    update_start = time.perf_counter()
    rates.before_step(step)
    optimizer.step()
    sync()
    end = time.perf_counter()
    return end - start, end - update_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cbs-sigma", type=float, default=1.0, help="Table 1: 1 for ResNet-18")
    parser.add_argument(
        "--cbs-kernel-size", type=int, default=3, help="taps (suite default 3); 0: from sigma"
    )
    parser.add_argument("--out", help="write the numbers to this JSON file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    batch = (
        torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device),
        torch.randint(0, 10, (args.batch_size,), device=device),
    )
    # k spans all timed steps, so LeRaC updates its rates on every one of them.
    lerac = LearningRateCurriculum(k=1, lr_first=0.1, lr_last=1e-8)
    cbs = CurriculumBySmoothing(args.cbs_sigma, 0.9, 5, args.cbs_kernel_size or None)
    sides = {
        "conventional": make_side(Conventional(), args, device, batch),
        "lerac": make_side(lerac, args, device, batch),
        "cbs": make_side(cbs, args, device, batch),
    }
    times = {name: ([], []) for name in sides}
    names = list(sides)
    for step in range(args.warmup + args.steps):
        for name in names[step % 3 :] + names[: step % 3]:  # rotate who goes first
            total, update = timed_step(sides[name], batch, step, device)
            if step >= args.warmup:
                times[name][0].append(total)
                times[name][1].append(update)

    result = {
        "command": " ".join(["python", "scripts/bench_regimes.py", *sys.argv[1:]]),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "setup": vars(args),
        "param_groups": {name: len(side[1].param_groups) for name, side in sides.items()},
        "cbs_kernel_size": cbs.smoothing.kernel_size,
    }
    for name, (total, update) in times.items():
        result[f"{name}_step_ms_median"] = 1e3 * statistics.median(total)
        result[f"{name}_update_ms_median"] = 1e3 * statistics.median(update)
    for part in ("step", "update"):
        result[f"{part}_time_ratio_lerac_over_conventional"] = (
            result[f"lerac_{part}_ms_median"] / result[f"conventional_{part}_ms_median"]
        )
    result["step_time_ratio_cbs_over_conventional"] = (
        result["cbs_step_ms_median"] / result["conventional_step_ms_median"]
    )
    result["step_time_ratio_lerac_over_cbs"] = (
        result["lerac_step_ms_median"] / result["cbs_step_ms_median"]
    )
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
