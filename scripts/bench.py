"""`make bench`: what the suite costs, measured against its goals, in results/benchmark.json.

- Step-time ratios of LeRaC (during the curriculum) and CBS over conventional training:
  the same model, batch and optimizer, the sides alternating step by step (who goes first
  alternates too), medians of the timed steps. On ResNet-18 and on DenseNet-121
  (torchvision's, ~240 param groups under LeRaC: the most layers on this branch).
  Conventional runs the trainer's default fast path (lerac/engine/accel.py); LeRaC runs with
  PyTorch's own per-group optimizer step and with the fused multi-group update
  (``trainer.fused_groups``); the headline ratio uses the one the trainer picks on the
  device (``auto``: fused on CUDA, PyTorch's own on the CPU).
- ``device_loader_speedup``: one epoch of batches from the suite's in-memory loader
  (``Splits.loaders``) against torchvision's CIFAR10 Dataset + ToTensor/Normalize +
  DataLoader over the same CIFAR-format files, per example, batches moved to the device.
- ResNet-18 throughput (samples/s) and peak memory at 32x32, batch 64, per device found.
- ``probes``: the cost of ``analysis=probes`` (lerac/engine/probes.py) on ResNet-18: training
  steps with and without probes, interleaved (medians: the probes leave no hook in the
  step), and one probe of every layer on 64 examples, as at the end of an epoch, against
  a CIFAR-10 epoch of steps (45,000 / 64).

    python scripts/bench.py                      # full size (BENCH_QUICK=1: quick size)
    python scripts/bench.py --size test --out /tmp/b.json   # seconds, for the tests
    python scripts/bench.py --data-dir data      # real CIFAR-10 if present (else synthetic)
    python scripts/bench.py --only probes --out results/bench_probes_cpu.json   # one part

Sizes: ``full`` (30 timed steps per side, a 50k-example epoch), ``quick`` (8 steps, 10k
examples; within 10 minutes on 2 CPU cores), ``test`` (tiny widths; seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lerac.engine.accel import Accelerator
from lerac.engine.batches import Splits
from lerac.engine.loop import training_step
from lerac.engine.probes import Probes
from lerac.engine.rates import LearningRates
from lerac.engine.regimes import Conventional, LearningRateCurriculum, Regime
from lerac.layers import find_layers
from lerac.suite.data.cifar import load_cifar
from lerac.suite.models.resnet import ResNet18
from lerac.suite.synthetic import write_cifar10

# ResNet-18 width, DenseNet widths, timed and untimed steps per side, loader examples.
SIZES: dict[str, dict[str, Any]] = {
    "full": {"width": 64, "dense": "full", "steps": 30, "warmup": 5, "examples": 50_000},
    "quick": {"width": 64, "dense": "full", "steps": 8, "warmup": 2, "examples": 10_000},
    "test": {
        "width": 4,
        "dense": "tiny",
        "steps": 2,
        "warmup": 1,
        "examples": 256,
        "batch": 8,
        "image": 32,
        "workers": (0,),
    },
}
BATCH, IMAGE, CLASSES = 64, 32, 10  # the paper's CIFAR batch and image size
GOALS = {
    "lerac_vs_conventional_step_ratio": "<= 1.02",
    "lerac_vs_conventional_step_ratio_many_layers": "<= 1.02",
    "cbs_vs_conventional_step_ratio": "<= 1.15 on CPU, <= 1.05 on a GPU",
    "device_loader_speedup": ">= 10 on CPU, >= 30 on a GPU",
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def densenet121(size: str) -> nn.Module:
    """torchvision's DenseNet-121 (its 121 layers and ~240 param groups); ``tiny`` keeps
    the depth and shrinks the widths, for the test size."""
    from torchvision.models import DenseNet

    if size == "tiny":
        return DenseNet(4, (6, 12, 24, 16), 8, bn_size=1, num_classes=CLASSES)
    return DenseNet(32, (6, 12, 24, 16), 64, num_classes=CLASSES)


def cbs_regime() -> tuple[Regime, str]:
    """The CBS regime from its config (conf/regime/cbs.yaml, Table 1 settings)."""
    from lerac.suite.build import build
    from lerac.suite.compose import compose_config

    cfg = compose_config(["regime=cbs", "model=resnet18", "logger=none"])
    return build(cfg.regime), "CBS on ResNet-18 (conf/regime/cbs.yaml, Table 1 settings)"


@dataclass
class Side:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    rates: LearningRates
    accel: Accelerator
    times: list[float]


def make_side(build_model, regime: Regime, batch, device, total_steps: int, **accel) -> Side:
    torch.manual_seed(0)
    model = build_model().to(device)
    layers = find_layers(model, batch[0])
    accelerator = Accelerator(device, **accel)
    model = accelerator.prepare(model)
    groups = regime.param_groups(layers)
    optimizer = accelerator.prepare_optimizer(
        torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=5e-4)
    )
    curriculum = regime.curriculum(optimizer, total_steps)
    rates = LearningRates(
        optimizer, curriculum=curriculum, steps_per_epoch=total_steps, max_epochs=2
    )
    regime.on_epoch_start(0, model)
    model.train()
    return Side(model, optimizer, rates, accelerator, [])


def train_step(side: Side, batch, step: int) -> None:
    """The trainer's own step (lerac.engine.loop.training_step), after its rates are set."""
    side.rates.before_step(step)
    training_step(side.model, side.optimizer, side.accel, batch[0], batch[1])


def interleave(sides: dict[str, Side], batch, device, warmup: int, steps: int) -> dict:
    """Median step time per side; all sides take each step before the next one starts."""
    names = list(sides)
    for step in range(warmup + steps):
        for name in names if step % 2 == 0 else names[::-1]:
            sync(device)
            start = time.perf_counter()
            train_step(sides[name], batch, step)
            sync(device)
            if step >= warmup:
                sides[name].times.append(time.perf_counter() - start)
    return {
        name: {
            "step_ms_median": round(1e3 * statistics.median(side.times), 3),
            "param_groups": len(side.optimizer.param_groups),
        }
        for name, side in sides.items()
    }


PROBE_EXAMPLES = 64
CIFAR10_STEPS = 45_000 // BATCH  # one epoch of CIFAR-10's training split at batch 64


def probe_cost(device: torch.device, size: dict) -> dict[str, Any]:
    """Conventional training steps with and without probes, interleaved, a probe (as at
    the end of an epoch) after every third of the timed steps on the probed side."""
    batch, side = random_batch(device, size), size.get("image", IMAGE)
    resnet = lambda: ResNet18(CLASSES, 3, side, size["width"])  # noqa: E731
    total = size["warmup"] + size["steps"]
    sides = {n: make_side(resnet, Conventional(), batch, device, total) for n in ("off", "on")}
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4 * PROBE_EXAMPLES, 3, side, side, generator=generator)
    labels = torch.randint(0, CLASSES, (len(images),), generator=generator)
    splits = Splits((images, labels), (images, labels), (images, labels), CLASSES)
    model, every = sides["on"].model, max(1, size["steps"] // 3)
    probe_times: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        probes = Probes(folder, examples=PROBE_EXAMPLES, batch_size=size.get("batch", BATCH))
        probes.start(model, splits, find_layers(model, batch[0]), device, 0)
        for epoch in range(1, size["steps"] // every + 1):
            warmup = size["warmup"] if epoch == 1 else 0
            steps = interleave(sides, batch, device, warmup, every)
            sync(device)
            start = time.perf_counter()
            probes.after_epoch(epoch, model)
            sync(device)
            probe_times.append(time.perf_counter() - start)
    off, on = steps["off"]["step_ms_median"], steps["on"]["step_ms_median"]
    probe = 1e3 * statistics.median(probe_times)
    return {
        "step_ms_median_probes_off": off,
        "step_ms_median_probes_on": on,
        "probe_ms_median": round(probe, 3),
        "probes_timed": len(probe_times),
        "layers": len(probes.layers),
        "examples": PROBE_EXAMPLES,
        "probes_on_vs_off_step_ratio": round(on / off, 4),
        "steps_per_epoch": CIFAR10_STEPS,
        "probe_share_of_epoch": round(probe / (CIFAR10_STEPS * off), 6),
        "probes_on_vs_off_epoch_ratio": round(
            (CIFAR10_STEPS * on + probe) / (CIFAR10_STEPS * off), 4
        ),
    }


def ratio(result: dict, side: str, base: str = "conventional") -> float:
    return round(result[side]["step_ms_median"] / result[base]["step_ms_median"], 4)


def compare_regimes(build_model, batch, device, size, with_cbs: bool) -> tuple[dict, str]:
    total = size["warmup"] + size["steps"]

    def lerac() -> LearningRateCurriculum:  # k spans every timed step: rates move each one
        return LearningRateCurriculum(k=1, lr_first=0.1, lr_last=1e-8)

    sides = {
        "conventional": make_side(build_model, Conventional(), batch, device, total),
        "lerac_plain_step": make_side(
            build_model, lerac(), batch, device, total, fused_groups=False
        ),
        "lerac_fused_update": make_side(
            build_model, lerac(), batch, device, total, fused_groups=True
        ),
    }
    note = ""
    if with_cbs:
        regime, note = cbs_regime()
        sides["cbs"] = make_side(build_model, regime, batch, device, total)
    return interleave(sides, batch, device, size["warmup"], size["steps"]), note


def throughput(device: torch.device, size: dict, precision: str) -> dict:
    """ResNet-18, 32x32, batch 64, conventional regime: samples/s and peak memory."""
    batch = random_batch(device, size)
    side = make_side(
        lambda: ResNet18(CLASSES, 3, size.get("image", IMAGE), size["width"]),
        Conventional(),
        batch,
        device,
        1,
        precision=precision,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(size["warmup"] + size["steps"]):
        sync(device)
        start = time.perf_counter()
        train_step(side, batch, step)
        sync(device)
        if step >= size["warmup"]:
            side.times.append(time.perf_counter() - start)
    median = statistics.median(side.times)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        what = "torch.cuda.max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        what = "peak resident memory of the whole benchmark process so far"
    return {
        "samples_per_s": round(len(batch[1]) / median, 1),
        "step_ms_median": round(1e3 * median, 3),
        "peak_memory_mb": round(peak, 1),
        "peak_memory_is": what,
    }


def random_batch(device: torch.device, size: dict) -> tuple[torch.Tensor, torch.Tensor]:
    n, side = size.get("batch", BATCH), size.get("image", IMAGE)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, side, side, generator=generator)
    labels = torch.randint(0, CLASSES, (n,), generator=generator)
    return images.to(device), labels.to(device)


def loader_speedup(
    root: Path, device: torch.device, workers: tuple[int, ...] = (0, 2), repeats: int = 3
) -> dict:
    """Per-example time of one epoch: torchvision's pipeline over the suite's loader."""
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):  # no checksums: the files may be synthetic
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    splits = load_cifar(str(root), "cifar10")
    (train_loader, _, _) = splits.loaders(BATCH, device, seed=0)
    suite = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _batch in train_loader:
            pass
        sync(device)
        suite.append(time.perf_counter() - start)
    suite_per_example = statistics.median(suite) / train_loader.num_examples

    mean = splits.mean.flatten().div(255).tolist()
    std = splits.std.flatten().div(255).tolist()
    dataset = LocalCIFAR10(
        str(root),
        train=True,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)]),
    )
    result: dict[str, Any] = {
        "examples_per_epoch": {"suite": train_loader.num_examples, "torchvision": len(dataset)},
        "suite_epoch_s": round(statistics.median(suite), 4),
    }
    best = None
    for count in workers:
        loader = DataLoader(
            dataset,
            batch_size=BATCH,
            shuffle=True,
            num_workers=count,
            pin_memory=device.type == "cuda",
        )
        sync(device)
        start = time.perf_counter()
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
        sync(device)
        seconds = time.perf_counter() - start
        result[f"torchvision_epoch_s_workers{count}"] = round(seconds, 4)
        per_example = seconds / len(dataset)
        best = per_example if best is None else min(best, per_example)
    result["speedup"] = round(best / suite_per_example, 2)
    result["compared_with"] = f"the fastest torchvision DataLoader (num_workers in {workers})"
    return result


def device_names() -> list[torch.device]:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices += [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return devices


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def run(
    size_name: str,
    device: torch.device,
    data_dir: str | None,
    *,
    throughput_on: str = "all",
    only: str = "all",
) -> dict[str, Any]:
    size = SIZES[size_name]
    batch = random_batch(device, size)
    report: dict[str, Any] = {
        "size": size_name,
        "device": f"{device} ({describe(device)})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "setup": {"batch": BATCH, "image": IMAGE, **size},  # a size may shrink both
        "goals": GOALS,
    }
    report["probes"] = probe_cost(device, size)
    if only == "probes":
        return report

    resnet = lambda: ResNet18(CLASSES, 3, size.get("image", IMAGE), size["width"])  # noqa: E731
    sides, cbs_note = compare_regimes(resnet, batch, device, size, with_cbs=True)
    default = "lerac_fused_update" if Accelerator(device).fused_groups else "lerac_plain_step"
    report["lerac_side_the_trainer_uses"] = default
    report["resnet18"] = sides
    report["lerac_vs_conventional_step_ratio"] = ratio(sides, default)
    for side in ("lerac_plain_step", "lerac_fused_update"):
        report[f"{side}_vs_conventional_step_ratio"] = ratio(sides, side)
    report["cbs_vs_conventional_step_ratio"] = ratio(sides, "cbs") if "cbs" in sides else None
    report["cbs_note"] = cbs_note

    dense, _ = compare_regimes(lambda: densenet121(size["dense"]), batch, device, size, False)
    report["densenet121"] = dense
    report["lerac_vs_conventional_step_ratio_many_layers"] = ratio(dense, default)
    for side in ("lerac_plain_step", "lerac_fused_update"):
        report[f"{side}_vs_conventional_step_ratio_many_layers"] = ratio(dense, side)

    with contextlib.ExitStack() as stack:
        root = Path(data_dir) if data_dir else None
        if root is None or not (root / "cifar-10-batches-py" / "test_batch").is_file():
            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            n = max(1, size["examples"] // 5)  # per training batch, and the test batch
            write_cifar10(root / "cifar-10-batches-py", np.random.default_rng(0), n, n)
            report["loader_data"] = f"synthetic CIFAR-10 files, {size['examples']} train examples"
        else:
            report["loader_data"] = f"CIFAR-10 files under {root}"
        loader = loader_speedup(root, device, size.get("workers", (0, 2)))
    report["loader"] = loader
    report["device_loader_speedup"] = loader["speedup"]

    report["throughput"] = {}
    for each in device_names() if throughput_on == "all" else [device]:
        precisions = ["fp32", "bf16"] if each.type == "cuda" else ["fp32"]
        report["throughput"][f"{each} ({describe(each)})"] = {
            precision: throughput(each, size, precision) for precision in precisions
        }
    return report


TABLE_KEYS = (
    "lerac_vs_conventional_step_ratio",
    "lerac_vs_conventional_step_ratio_many_layers",
    "cbs_vs_conventional_step_ratio",
    "device_loader_speedup",
    "lerac_plain_step_vs_conventional_step_ratio",
    "lerac_fused_update_vs_conventional_step_ratio",
    "lerac_plain_step_vs_conventional_step_ratio_many_layers",
    "lerac_fused_update_vs_conventional_step_ratio_many_layers",
)
PROBE_KEYS = (
    "probes_on_vs_off_step_ratio",
    "probes_on_vs_off_epoch_ratio",
    "probe_share_of_epoch",
    "probe_ms_median",
)


def print_table(report: dict[str, Any]) -> None:
    rows = [(f"probes {key}", report["probes"][key], "") for key in PROBE_KEYS]
    rows += [(key, report[key], GOALS.get(key, "")) for key in TABLE_KEYS if key in report]
    for device, figures in report.get("throughput", {}).items():
        for precision, figure in figures.items():
            rows.append(
                (
                    f"resnet18 {device} {precision}",
                    f"{figure['samples_per_s']} samples/s, {figure['peak_memory_mb']} MB",
                    "",
                )
            )
    width = max(len(r[0]) for r in rows)
    print(f"benchmark ({report['size']}, {report['device']}, torch {report['torch']})")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {str(value):<28} {goal}")
    if report.get("cbs_vs_conventional_step_ratio", 0) is None:
        print(f"cbs: {report['cbs_note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_size = "quick" if os.environ.get("BENCH_QUICK") == "1" else "full"
    parser.add_argument("--size", choices=SIZES, default=os.environ.get("BENCH_SIZE", default_size))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (ratios, loader)")
    parser.add_argument("--data-dir", help="a folder holding cifar-10-batches-py (else synthetic)")
    parser.add_argument("--out", default="results/benchmark.json")
    parser.add_argument("--only", choices=["all", "probes"], default="all", help="one part")
    parser.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: torch's choice)"
    )
    parser.add_argument(
        "--throughput-on",
        choices=["all", "device"],
        default="all",
        help="throughput on every device found, or on --device only (the GPU check: CPU "
        "figures are measured on CPU machines)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    report = run(args.size, device, args.data_dir, throughput_on=args.throughput_on, only=args.only)
    report["command"] = " ".join(["python", "scripts/bench.py", *sys.argv[1:]])
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
