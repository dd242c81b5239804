"""The fast path: fused optimizer update, compile without recompiles, bf16 autocast,
channels_last, the in-memory loader, and the benchmark in its test size."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounter

from lerac.curriculum import LeRaC
from lerac.engine.accel import Accelerator, to_channels_last
from lerac.engine.batches import Splits, TensorLoader
from lerac.engine.loop import Trainer, training_step
from lerac.engine.optim import fuse_groups, unsupported
from lerac.engine.rates import LearningRates
from lerac.engine.regimes import LearningRateCurriculum
from lerac.engine.settings import TrainerSettings
from lerac.errors import ConfigError
from tests.conftest import TINY, compose_config

ROOT = Path(__file__).resolve().parent.parent


def small_cnn(num_classes: int = 5, **_: object) -> nn.Module:
    # No conv bias before batch norm: its gradient is ~0, so Adam's update of it would
    # only amplify rounding noise.
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, num_classes),
    )


def batches(n: int = 10):
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(8, 3, 8, 8, generator=generator),
            torch.randint(0, 5, (8,), generator=generator),
        )
        for _ in range(n)
    ]


OPTIMIZERS = {
    "sgd": lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "sgd_nesterov": lambda groups: torch.optim.SGD(
        groups, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3
    ),
    "sgd_plain": lambda groups: torch.optim.SGD(groups, lr=0.1),
    "adam": lambda groups: torch.optim.Adam(groups, lr=1e-3, weight_decay=1e-4),
    "adamw": lambda groups: torch.optim.AdamW(groups, lr=1e-3),
    "adamax": lambda groups: torch.optim.Adamax(groups, lr=2e-3, weight_decay=1e-4),
}


def train_with_curriculum(make_optimizer, fused: bool, backend=None, steps: int = 10):
    """Steps of LeRaC (rates move every step for 8 steps), then a 10x plateau cut that
    holds (the finished curriculum's step changes no rate).

    Returns the model, the optimizer, the rate of the last group at each step and the
    compiles so far after each step (when ``backend`` counts them)."""
    model = small_cnn()
    groups = [{"params": [p], "name": n} for n, p in model.named_parameters()]
    groups[-1]["weight_decay"] = 0.0  # a second bucket: groups differing beyond lr
    optimizer = make_optimizer(groups)
    if fused:
        base = type(optimizer)
        optimizer = fuse_groups(optimizer, compile_backend=backend)
        assert isinstance(optimizer, base) and type(optimizer).__name__ == f"Fused{base.__name__}"
        assert "step" not in vars(optimizer)  # a subclass's step, not one set on the object
    scheduler = LeRaC(optimizer, 8, optimizer.param_groups[0]["lr"], 1e-6)
    rates, compiles = [], []
    for step, (x, y) in enumerate(batches(steps)):
        if step == 8:  # what ReduceLROnPlateau does: write new float rates
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        rates.append(optimizer.param_groups[-1]["lr"])
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        compiles.append(getattr(backend, "frame_count", 0))
    return model, optimizer, rates, compiles


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fused_update_equals_the_optimizers_own(name):
    plain, plain_opt, rates, _ = train_with_curriculum(OPTIMIZERS[name], fused=False)
    fused, fused_opt, fused_rates, _ = train_with_curriculum(OPTIMIZERS[name], fused=True)
    # Eight rising rates, then the plateau cut, which the finished curriculum leaves alone.
    assert fused_rates == rates and len(set(rates[:9])) == 9 and rates[9] == rates[8]
    # Every step but the first, which creates the state (plain SGD keeps none).
    assert fused_opt.fused_update.steps_taken == (10 if name == "sgd_plain" else 9)
    for a, b in zip(plain.parameters(), fused.parameters()):
        assert torch.equal(a, b)  # on the CPU every update is PyTorch's arithmetic
    plain_state, fused_state = plain_opt.state_dict(), fused_opt.state_dict()
    assert plain_state["param_groups"] == fused_state["param_groups"]
    for key, entry in plain_state["state"].items():
        assert entry.keys() == fused_state["state"][key].keys()
        for field, value in entry.items():
            assert torch.equal(fused_state["state"][key][field], value)


def test_unsupported_optimizers_keep_their_own_step():
    params = [nn.Parameter(torch.zeros(2))]
    assert unsupported(torch.optim.SGD(params, lr=0.1)) is None
    assert "maximize" in unsupported(torch.optim.SGD(params, lr=0.1, maximize=True))
    assert "RMSprop" in unsupported(torch.optim.RMSprop(params, lr=0.1))
    optimizer = torch.optim.Adam(params, lr=0.1, amsgrad=True)
    with pytest.warns(UserWarning, match="amsgrad"):
        assert Accelerator("cpu", fused_groups=True).prepare_optimizer(optimizer) is optimizer
    assert "step" not in vars(optimizer)  # its own step, not replaced


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_compiled_update_does_not_recompile_when_rates_move(name):
    # The compiled form is the foreach one (SGD: multiply, then add): equal up to rounding.
    counter = CompileCounter()
    model, optimizer, rates, compiles = train_with_curriculum(
        OPTIMIZERS[name], fused=True, backend=counter
    )
    # Step 0 creates the state eagerly; step 1 compiles once per bucket (two: the last
    # group has its own weight decay); 8 more steps, each with new rates (and one 10x
    # cut, as ReduceLROnPlateau writes it), compile nothing.
    assert compiles == [0] + [2] * 9
    assert len(set(rates[:9])) == 9 and rates[9] == rates[8]
    plain, _, _, _ = train_with_curriculum(OPTIMIZERS[name], fused=False)
    for a, b in zip(plain.parameters(), model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_compiled_training_steps_do_not_recompile_across_the_curriculum():
    counter = CompileCounter()
    model = small_cnn()
    regime = LearningRateCurriculum(k=1, lr_first=0.1, lr_last=1e-6)
    accel = Accelerator("cpu", compile=True, backend=counter)
    x0 = batches(1)[0][0]
    from lerac.layers import find_layers

    groups = regime.param_groups(find_layers(model, x0))
    model = accel.prepare(model)
    optimizer = accel.prepare_optimizer(torch.optim.SGD(groups, lr=0.1, momentum=0.9))
    curriculum = regime.curriculum(optimizer, steps_per_epoch=8)
    rates = LearningRates(optimizer, curriculum=curriculum, steps_per_epoch=8, max_epochs=2)
    counts = []
    for step, (x, y) in enumerate(batches(8)):
        rates.before_step(step)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        counts.append(counter.frame_count)
    assert rates.in_curriculum(7)
    # The forward compiles at step 0, the update at step 1; then nothing, while every
    # step had new rates.
    assert counts[1] == counts[-1] and counts[-1] <= 3


def synthetic_splits(n: int = 48) -> Splits:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 4, (n,), generator=generator)
    mean = images.float().mean(dim=(0, 2, 3), keepdim=True)
    std = images.float().std(dim=(0, 2, 3), keepdim=True)
    return Splits(
        train=(images, labels),
        val=(images[:16], labels[:16]),
        test=(images[16:32], labels[16:32]),
        num_classes=4,
        input_spec={"in_channels": 3, "image_size": 8},
        mean=mean,
        std=std,
    )


def fit_tiny(**fast) -> tuple[float, list[torch.Tensor]]:
    model = small_cnn(num_classes=4)
    settings = TrainerSettings(max_epochs=2, batch_size=16, device="cpu", progress=False, **fast)
    trainer = Trainer(settings, regime=LearningRateCurriculum(k=1, lr_first=0.05, lr_last=1e-6))
    result = trainer.fit(
        model,
        synthetic_splits(),
        lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9, weight_decay=5e-4),
    )
    return result.test_loss, [p.detach().clone() for p in model.parameters()]


def test_the_fast_path_trains_like_the_plain_path():
    plain_loss, plain = fit_tiny(fused_groups=False)
    fast_loss, fast = fit_tiny(fused_groups=True, compile="eager")
    assert fast_loss == pytest.approx(plain_loss, rel=1e-4)
    for a, b in zip(plain, fast):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    bf16_loss, _ = fit_tiny(precision="bf16")
    assert bf16_loss == pytest.approx(plain_loss, rel=0.05)


def test_bf16_runs_the_forward_in_bfloat16_and_the_loss_in_float32():
    model = small_cnn()
    seen = []
    model[3].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    accel = Accelerator("cpu", precision="bf16")
    assert accel.prepare(model) is model and "forward" not in vars(model)  # not rewritten
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs, targets = batches(1)[0]
    loss, logits = training_step(model, optimizer, accel, inputs, targets)
    assert seen == [torch.bfloat16]
    assert logits.dtype == loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    seen.clear()
    model(inputs)  # outside the trainer's autocast block the model is plain float32
    assert seen == [torch.float32]


def test_backend_flags_hold_for_the_run_only():
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with Accelerator("cuda").backend_flags():
            assert torch.backends.cudnn.benchmark  # autotuning on CUDA
        assert not torch.backends.cudnn.benchmark
        with Accelerator("cpu").backend_flags():
            assert not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = before


def test_channels_last_is_for_cuda_and_keeps_the_parameters():
    model = small_cnn()
    before = list(model.parameters())
    assert Accelerator("cuda").uses_channels_last(model)  # auto, a CNN: yes on CUDA
    assert not Accelerator("cuda", channels_last=False).uses_channels_last(model)
    assert not Accelerator("cuda").uses_channels_last(nn.Linear(2, 2))
    assert not Accelerator("cpu").uses_channels_last(model)
    with pytest.warns(UserWarning, match="ignored on the CPU"):
        Accelerator("cpu", channels_last=True).prepare(model)
    assert model[0].weight.is_contiguous()
    to_channels_last(model)
    assert all(a is b for a, b in zip(before, model.parameters()))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_settings_come_from_the_config_and_bad_values_are_refused():
    cfg = compose_config(TINY + ["trainer.precision=bf16", "trainer.compile=aot_eager"])
    settings = TrainerSettings(**cfg.trainer)
    accel = Accelerator.from_settings(settings, "cpu")
    assert accel.dtype == torch.bfloat16 and accel.backend == "aot_eager"
    default = TrainerSettings(**compose_config(TINY).trainer)
    assert Accelerator.from_settings(default, "cpu").backend is None
    assert not Accelerator.from_settings(default, "cpu").fused_groups  # auto: CUDA only
    assert Accelerator.from_settings(default, "cuda").fused_groups
    with pytest.raises(ConfigError, match="trainer.precision"):
        TrainerSettings(max_epochs=1, batch_size=2, precision="fp16")
    with pytest.raises(ConfigError, match="trainer.channels_last"):
        TrainerSettings(max_epochs=1, batch_size=2, channels_last="maybe")
    with pytest.raises(ConfigError, match="trainer.fused_groups"):
        TrainerSettings(max_epochs=1, batch_size=2, fused_groups="always")


def test_in_memory_loader_covers_every_example_once_per_epoch_in_seeded_order():
    ids = torch.arange(37)

    def epochs(seed: int) -> list[list[int]]:
        loader = TensorLoader(ids, ids.clone(), batch_size=8, shuffle=True, seed=seed)
        return [torch.cat([x for x, _ in loader]).tolist() for _ in range(3)]

    first = epochs(0)
    for epoch in first:
        assert sorted(epoch) == list(range(37))  # every example once, the last batch of 5 too
    assert first[0] != first[1]  # a new order each epoch
    assert epochs(0) == first  # the same seed, the same orders
    assert epochs(1)[0] != first[0]
    ordered = TensorLoader(ids, ids.clone(), batch_size=8, shuffle=False)
    assert torch.cat([x for x, _ in ordered]).tolist() == list(range(37))


def test_the_benchmark_runs_in_its_test_size(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench", bench)  # its dataclasses look it up
    spec.loader.exec_module(bench)
    out = tmp_path / "benchmark.json"
    threads = torch.get_num_threads()
    argv = ["bench", "--size", "test", "--threads", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        bench.main()
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())

    def median(model: str, side: str) -> float:
        return report[model][side]["step_ms_median"]

    # Each ratio is the quotient of the two medians measured in the same run.
    for model, suffix in (("resnet18", ""), ("densenet121", "_many_layers")):
        for side in ("lerac_plain_step", "lerac_fused_update"):
            expected = median(model, side) / median(model, "conventional")
            assert report[f"{side}_vs_conventional_step_ratio{suffix}"] == pytest.approx(
                expected, abs=1e-4
            )
    assert report["lerac_side_the_trainer_uses"] == "lerac_plain_step"  # on the CPU
    assert (
        report["lerac_vs_conventional_step_ratio"]
        == report["lerac_plain_step_vs_conventional_step_ratio"]
    )
    assert report["cbs_vs_conventional_step_ratio"] == pytest.approx(
        median("resnet18", "cbs") / median("resnet18", "conventional"), abs=1e-4
    )
    probes = report["probes"]  # probes on and off, interleaved, every layer probed
    assert probes["probes_on_vs_off_step_ratio"] == pytest.approx(
        probes["step_ms_median_probes_on"] / probes["step_ms_median_probes_off"], abs=1e-4
    )
    assert probes["layers"] == 41 and probes["probe_ms_median"] > 0
    assert report["densenet121"]["lerac_fused_update"]["param_groups"] > 200  # its layers
    assert report["resnet18"]["conventional"]["param_groups"] == 1
    # The loader speedup compares time per example of the fastest torchvision loader.
    loader = report["loader"]
    torchvision_s = min(v for k, v in loader.items() if k.startswith("torchvision_epoch_s"))
    per_example = {side: n for side, n in loader["examples_per_epoch"].items()}
    expected = (torchvision_s / per_example["torchvision"]) / (
        loader["suite_epoch_s"] / per_example["suite"]
    )
    rounding = 5e-5 / loader["suite_epoch_s"]  # the epoch time is written to 4 decimals
    assert report["device_loader_speedup"] == pytest.approx(expected, rel=0.01 + rounding)
    (cpu,) = [v for k, v in report["throughput"].items() if k.startswith("cpu")]
    batch = report["setup"]["batch"]
    assert cpu["fp32"]["samples_per_s"] == pytest.approx(
        batch / (cpu["fp32"]["step_ms_median"] / 1e3), rel=0.01, abs=0.06
    )
    assert cpu["fp32"]["peak_memory_mb"] > 50  # at least torch itself is resident
