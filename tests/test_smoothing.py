"""Curriculum by Smoothing: the kernel, the sites (counted by their effect on the live
model), the schedule, the saved state, and real cbs / cbs_lerac runs."""

import copy
import csv
import io
import math

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from lerac import smoothing
from lerac.curriculum import initial_rates
from lerac.engine.regimes import CurriculumBySmoothing, SmoothedLearningRateCurriculum
from lerac.errors import ConfigError
from lerac.layers import find_layers
from lerac.smoothing import (
    SmoothingCurriculum,
    attach_smoothing,
    auto_kernel_size,
    gaussian_kernel1d,
    set_sigma,
    smooth,
    smoothed_modules,
)
from lerac.suite.build import build
from lerac.suite.models.resnet import ResNet18
from lerac.suite.train import train
from tests.conftest import TINY, compose_config


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def blur(layout, sigma, size):
    return lambda x: smooth(x, gaussian_kernel1d(sigma, size), layout)


def smoothed_convs(model: nn.Module, inputs: torch.Tensor) -> tuple[int, int]:
    """(convs whose output differs from their plain convolution, convs in the pass).

    A hook registered after the smoothing hook sees the output the rest of the network
    gets; recomputing the bare convolution from the input tells whether it was changed.
    """
    changed, ran = [], []

    def check(module, args, output):
        raw = module._conv_forward(args[0], module.weight, module.bias)
        ran.append(module)
        if not torch.allclose(raw, output, atol=1e-6):
            changed.append(module)

    hooks = [m.register_forward_hook(check) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return len(changed), len(ran)


# ---------------------------------------------------------------- the kernel itself


@pytest.mark.parametrize("sigma, size", [(1.0, 5), (0.8, 5), (0.5, 3), (2.3, 11)])
def test_kernel_sums_to_one_and_matches_the_gaussian(sigma, size):
    kernel = gaussian_kernel1d(sigma, size)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    x = torch.arange(size) - size // 2
    gauss = torch.exp(-(x.double() ** 2) / (2 * sigma**2))
    assert torch.allclose(kernel.double(), gauss / gauss.sum(), atol=1e-7)
    # The 2D blur is the product of the two passes: its impulse response is the 2D Gaussian.
    nchw = blur("nchw", sigma, size)
    impulse = torch.zeros(1, 2, 15, 15)
    impulse[:, :, 7, 7] = 1.0
    response = nchw(impulse)[0, 0, 7 - size // 2 : 8 + size // 2, 7 - size // 2 : 8 + size // 2]
    g2 = torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2).double() / (2 * sigma**2))
    assert torch.allclose(response.double(), g2 / g2.sum(), atol=1e-6)
    assert nchw(impulse).sum().item() == pytest.approx(2.0, abs=1e-5)  # mass kept, per channel


def test_kernel_size_is_three_taps_by_default_and_sized_from_sigma_on_request():
    # The released CBS code's --kernel_size default is 3 (pairlab/CBS, arguments.py).
    assert SmoothingCurriculum(1.0, 0.9, 5).kernel_size == 3
    assert SmoothingCurriculum(1.0, 0.9, 5, kernel_size=None).kernel_size == 5
    assert [auto_kernel_size(s) for s in (0.1, 0.5, 0.8, 1.0, 1.5, 2.0)] == [3, 3, 5, 5, 7, 9]


@pytest.mark.parametrize("regime", ["cbs", "cbs_lerac"])
def test_composed_cbs_regimes_blur_with_three_taps_by_hand(regime):
    # sigma_0 = 1 (Table 1, ResNet-18): taps exp(-1/2), 1, exp(-1/2), normalised.
    built = build(compose_config(TINY + [f"regime={regime}"]).regime)
    model = ResNet18(10, width=4)
    built.prepare(model)
    side = math.exp(-0.5)
    by_hand = torch.tensor([side, 1.0, side]) / (1 + 2 * side)
    kernels = [getattr(m, smoothing.KERNEL) for m in smoothed_modules(model)]
    assert len(kernels) == 17  # the stem and the 16 block convs
    for kernel in kernels:
        assert torch.allclose(kernel, by_hand, atol=1e-7)
    # The sigma-sized kernel stays an option: 5 taps at sigma_0 = 1.
    sized = build(compose_config(TINY + [f"regime={regime}", "regime.kernel_size=null"]).regime)
    other = ResNet18(10, width=4)
    sized.prepare(other)
    assert {getattr(m, smoothing.KERNEL).numel() for m in smoothed_modules(other)} == {5}


@pytest.mark.parametrize(
    "layout, shape", [("nchw", (2, 3, 6, 7)), ("nhwc", (2, 6, 7, 3)), ("nlc", (2, 9, 3))]
)
@pytest.mark.parametrize("sigma", [0.0, 1e-3, 0.1])
def test_sigma_to_zero_is_the_identity(layout, shape, sigma):
    x = torch.randn(shape)
    assert not torch.allclose(blur(layout, 1.0, 5)(x), x, atol=1e-3)
    assert torch.allclose(blur(layout, sigma, 5)(x), x, atol=1e-6)


def reference_blur(x: torch.Tensor, kernel: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Zero-padded correlation along ``dims`` by shifted sums (slow, obvious)."""
    r = len(kernel) // 2
    for dim in dims:
        pad = [0, 0] * x.ndim
        pad[2 * (x.ndim - 1 - dim)] = pad[2 * (x.ndim - 1 - dim) + 1] = r
        padded = F.pad(x, pad)
        x = sum(kernel[t] * padded.narrow(dim, t, x.shape[dim]) for t in range(len(kernel)))
    return x


@pytest.mark.parametrize(
    "layout, shape, dims",
    [("nchw", (2, 3, 6, 7), (2, 3)), ("nhwc", (2, 6, 7, 3), (1, 2)), ("nlc", (2, 9, 3), (1,))],
)
@pytest.mark.parametrize("size", [5, 9])  # one 2D pass; two 1D passes
def test_each_layout_blurs_its_spatial_axes_only(layout, shape, dims, size):
    x = torch.randn(shape)
    kernel = gaussian_kernel1d(1.7, size)
    assert torch.allclose(smooth(x, kernel, layout), reference_blur(x, kernel, dims), atol=1e-5)


def test_bad_settings_name_the_key():
    # The suite's regime names its config keys; the core's class, its Python arguments.
    for kwargs, key in [
        (dict(sigma=0.0, decay=0.9, decay_every=1), "sigma"),
        (dict(sigma=1.0, decay=1.5, decay_every=1), "decay"),
        (dict(sigma=1.0, decay=0.9, decay_every=0), "decay_every"),
        (dict(sigma=1.0, decay=0.9, decay_every=2, kernel_size=4), "kernel_size"),
    ]:
        with pytest.raises(ConfigError, match=rf"^regime\.{key} must"):
            CurriculumBySmoothing(**kwargs)
        with pytest.raises(ConfigError, match=rf"^{key} must"):
            SmoothingCurriculum(**kwargs)


# ---------------------------------------------------------------- the schedule and the state


def test_sigma_follows_the_schedule_with_odd_decay_and_step():
    model = ResNet18(num_classes=3, in_channels=1, image_size=8, width=4)
    regime = CurriculumBySmoothing(sigma=1.3, decay=0.7, decay_every=3, kernel_size=None)
    by_hand = [1.3, 1.3, 1.3, 0.91, 0.91, 0.91, 0.637, 0.637, 0.637, 0.4459]
    regime.on_epoch_start(0, model)
    sites = smoothed_modules(model)
    kernels = [b.cbs_kernel.data_ptr() for b in sites]
    for epoch, sigma in enumerate(by_hand):
        regime.on_epoch_start(epoch, model)
        assert regime.cbs_sigma == pytest.approx(sigma)
        assert smoothed_modules(model) == sites  # nothing added or rebuilt
        assert [b.cbs_kernel.data_ptr() for b in sites] == kernels  # rewritten in place
        for b in sites:
            assert float(b.cbs_sigma) == pytest.approx(sigma)
            assert b.cbs_kernel.numel() == 7  # sized once, for sigma_0 = 1.3
            assert torch.allclose(b.cbs_kernel, gaussian_kernel1d(sigma, 7))


def test_sigma_survives_a_save_and_load_of_the_model_state():
    torch.manual_seed(0)
    model = ResNet18(num_classes=3, in_channels=1, image_size=8, width=4)
    cbs = SmoothingCurriculum(1.0, 0.8, 2)
    cbs.apply(7, model)  # sigma = 0.8 ** 3
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)

    clone = ResNet18(num_classes=3, in_channels=1, image_size=8, width=4)
    SmoothingCurriculum(1.0, 0.8, 2).apply(0, clone)  # attached, at sigma_0
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer))
    assert len(smoothed_modules(clone)) == 17
    for b in smoothed_modules(clone):
        assert float(b.cbs_sigma) == pytest.approx(0.8**3)
        assert torch.allclose(b.cbs_kernel, gaussian_kernel1d(0.8**3, 3))  # the default 3 taps
    x = torch.randn(2, 1, 8, 8)
    model.eval(), clone.eval()
    assert torch.allclose(model(x), clone(x))


def test_a_deep_copy_smooths_with_its_own_kernels():
    model = ResNet18(num_classes=3, in_channels=1, image_size=8, width=4).eval()
    SmoothingCurriculum(1.0, 0.9, 1).apply(0, model)
    twin = copy.deepcopy(model)
    x = torch.randn(2, 1, 8, 8)
    before = model(x)
    set_sigma(smoothed_modules(twin), 0.0)
    assert torch.equal(model(x), before)  # the copy's hooks use the copy's kernels
    assert smoothed_convs(twin, x)[0] == 0


# ---------------------------------------------------------------- where it smooths


def test_resnet18_smooths_the_stem_and_16_block_convs_not_the_shortcuts():
    model = ResNet18(num_classes=3, in_channels=3, image_size=16, width=4)
    x = torch.randn(2, 3, 16, 16)
    assert smoothed_convs(model, x) == (0, 20)
    SmoothingCurriculum(1.0, 0.9, 5).apply(0, model)
    assert smoothed_convs(model, x) == (17, 20)  # 3 1x1 shortcuts untouched
    for conv in (model.conv1, model.layer4[1].conv2):  # the first and the deepest
        assert hasattr(conv, "cbs_kernel")
    assert not hasattr(model.layer2[0].downsample[0], "cbs_kernel")


def test_attaching_again_adds_nothing(monkeypatch):
    model = ResNet18(num_classes=3, in_channels=1, image_size=8, width=4).eval()
    cbs = SmoothingCurriculum(1.0, 0.9, 1)
    cbs.apply(0, model)
    x = torch.randn(2, 1, 8, 8)
    once = model(x)
    for _ in range(3):
        cbs.apply(0, model)
    calls = []
    counted = smoothing.smooth
    monkeypatch.setattr(smoothing, "smooth", lambda *a: calls.append(1) or counted(*a))
    assert torch.equal(model(x), once)
    assert len(smoothed_modules(model)) == 17 and len(calls) == 17  # one blur per site per pass


def test_the_curriculum_sees_the_same_layers_with_smoothing():
    model = ResNet18(num_classes=3, in_channels=1, image_size=8, width=4)
    x = torch.randn(2, 1, 8, 8)
    plain = find_layers(model, x)
    SmoothingCurriculum(1.0, 0.9, 1).apply(0, model)
    smoothed = find_layers(model, x)
    assert [(layer.name, layer.params) for layer in smoothed] == [
        (layer.name, layer.params) for layer in plain
    ]
    assert all(not b.cbs_kernel.requires_grad for b in smoothed_modules(model))
    assert all(p.requires_grad for p in model.parameters())  # nothing else frozen


@pytest.mark.parametrize(
    "build, sites, convs",
    [
        # Bottleneck blocks: conv1 1x1, conv2 3x3, conv3 1x1 -> stem + 16 middle convs.
        (lambda: torchvision.models.wide_resnet50_2(num_classes=3), 17, 1 + 16 * 3 + 4),
        # Dense layers: 1x1 bottleneck + 3x3 conv; 1x1 transitions -> stem + 58 3x3 convs.
        (lambda: torchvision.models.densenet121(num_classes=3), 59, 1 + 58 * 2 + 3),
    ],
    ids=["wide_resnet50_2", "densenet121"],
)
def test_the_cnn_rule_on_torchvision_models(build, sites, convs):
    torch.manual_seed(0)
    model = build()
    x = torch.randn(1, 3, 32, 32)
    SmoothingCurriculum(1.0, 0.9, 1, kernel_size=3).apply(0, model)
    assert smoothed_convs(model, x) == (sites, convs)


class ChannelsFirst(nn.Module):  # a 2D map, channels first; the site is an nn.Sequential
    def __init__(self):
        super().__init__()
        self.embed = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def cbs_sites(self):
        return [(self.embed, "nchw")]

    def forward(self, x):
        return self.head(self.embed(x).mean((2, 3)))


class ChannelsLast(nn.Module):  # patch tokens kept as a (N, H, W, C) grid
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(2, 4)
        self.head = nn.Linear(4, 3)

    def cbs_sites(self):
        return [(self.embed, "nhwc")]

    def forward(self, x):
        return self.head(self.embed(x.permute(0, 2, 3, 1)).mean((1, 2)))


class Sequence(nn.Module):  # token embeddings (N, L, C) followed by a recurrent layer
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.rnn = nn.GRU(4, 4, batch_first=True)
        self.head = nn.Linear(4, 3)

    def cbs_sites(self):
        return [(self.embed, "nlc")]

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out[:, -1])


@pytest.mark.parametrize(
    "model, inputs, dims",
    [
        (ChannelsFirst(), torch.randn(2, 2, 5, 6), (2, 3)),
        (ChannelsLast(), torch.randn(2, 2, 5, 6), (1, 2)),
        (Sequence(), torch.randint(0, 10, (2, 7)), (1,)),
    ],
    ids=["nchw", "nhwc", "nlc"],
)
def test_cbs_sites_smooth_each_layout_at_the_listed_module(model, inputs, dims):
    site = model.cbs_sites()[0][0]
    seen = {}
    # Hooks run in the order they were registered: the first sees the site's own output,
    # the last the output after the smoothing hook (what the rest of the model gets).
    site.register_forward_hook(lambda m, a, out: seen.update(raw=out.detach()))  # -> None
    layers_before = [layer.name for layer in find_layers(model, inputs)]
    plain_logits = model(inputs).detach()
    SmoothingCurriculum(1.0, 0.9, 1).apply(0, model)
    site.register_forward_hook(lambda m, a, out: seen.update(out=out.detach()))
    smoothed_logits = model(inputs)
    expected = reference_blur(seen["raw"], site.cbs_kernel, dims)
    assert torch.allclose(seen["out"], expected, atol=1e-5)
    assert not torch.allclose(smoothed_logits, plain_logits)
    assert [layer.name for layer in find_layers(model, inputs)] == layers_before
    set_sigma(smoothed_modules(model), 0.0)
    assert torch.allclose(model(inputs), plain_logits, atol=1e-6)


def test_a_model_without_a_site_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="no placement.*cbs_sites"):
        attach_smoothing(nn.Sequential(nn.Linear(3, 3)), 3)
    with pytest.raises(ConfigError, match="no placement"):  # 1x1 convs only
        attach_smoothing(nn.Sequential(nn.Conv2d(3, 3, 1)), 3)

    class BadLayout(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def cbs_sites(self):
            return [(self.fc, "nwc")]

    with pytest.raises(ConfigError, match="nwc"):
        attach_smoothing(BadLayout(), 3)


# ---------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cbs_runs")
    # u = 1, d = 0.5 so sigma changes between the two epochs.
    fast = TINY + ["trainer.limit_train_batches=3", "trainer.limit_eval_batches=2"]
    schedule = ["model.table1.cbs_step=1", "model.table1.cbs_decay=0.5"]
    return {
        regime: (
            root / regime,
            train(compose_config(fast + schedule + [f"regime={regime}"]), root / regime),
        )
        for regime in ("cbs", "cbs_lerac")
    }


@pytest.mark.parametrize("regime", ["cbs", "cbs_lerac"])
def test_a_real_run_logs_the_sigma_of_each_epoch(runs, regime):
    run_dir, metrics = runs[regime]
    assert metrics["status"] == "completed" and metrics["regime"] == regime
    history = read_csv(run_dir / "history.csv")
    assert [float(r["cbs_sigma"]) for r in history] == [1.0, 0.5]
    assert all(math.isfinite(float(r["train_loss"])) for r in history)


def test_cbs_lerac_orders_the_same_layers_as_lerac(runs):
    # The layers LeRaC finds on the bare model (as under regime=lerac), with Eq. 6 rates.
    bare = ResNet18(num_classes=10, in_channels=1, image_size=8, width=4)
    names = [layer.name for layer in find_layers(bare, torch.zeros(2, 1, 8, 8))]
    layers = read_csv(runs["cbs_lerac"][0] / "layers.csv")
    assert [r["name"] for r in layers] == names and len(names) == 41
    start = [float(r["initial_lr"]) for r in layers]
    assert start == pytest.approx(initial_rates(41, 0.1, 1e-8), rel=1e-5)
    assert runs["cbs_lerac"][1]["layers"] == 41
    assert {r["initial_lr"] for r in read_csv(runs["cbs"][0] / "layers.csv")} == {"1.000000e-01"}


def test_every_model_composes_with_both_regimes():
    from lerac.suite.build import build
    from lerac.suite.config import CONF_DIR

    for model_file in sorted((CONF_DIR / "model").glob("*.yaml")):
        for regime in ("cbs", "cbs_lerac"):
            cfg = compose_config([f"model={model_file.stem}", f"regime={regime}"])
            built = build(cfg.regime)
            assert built.smoothing.sigma_0 == cfg.model.table1.cbs_sigma
            assert built.smoothing.decay == cfg.model.table1.cbs_decay
            assert built.smoothing.decay_every == cfg.model.table1.cbs_step
            if regime == "cbs_lerac":
                assert isinstance(built, SmoothedLearningRateCurriculum)
                assert built.k == cfg.model.table1.lerac_k


def test_a_compiled_model_follows_the_in_place_sigma_changes():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 6 * 6, 2))
    cbs = SmoothingCurriculum(1.0, 0.5, 1)
    cbs.apply(0, model)
    compiled = torch.compile(model, backend="aot_eager")  # no C++ toolchain needed
    x = torch.randn(2, 2, 6, 6)
    first = compiled(x)
    assert torch.allclose(first, model(x))
    cbs.apply(3, model)  # sigma 1 -> 0.125, written into the same buffers
    assert torch.allclose(compiled(x), model(x)) and not torch.allclose(compiled(x), first)
