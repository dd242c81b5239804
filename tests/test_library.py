"""LeRaC as a library: torch-only packaging and import, the hand-off to schedulers stepped
after the curriculum, layer ranks, timm's lr_scale, saved states and argument errors."""

import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import PathDistribution, distribution
from pathlib import Path

import pytest
import tomllib
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, ReduceLROnPlateau

from lerac import LeRaC, PlateauAfterCurriculum, curriculum_steps, layer_param_groups
from lerac.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CORE = {"torch", "numpy"}
HEAVY = [
    "hydra",
    "omegaconf",
    "wandb",
    "transformers",
    "timm",
    "datasets",
    "torchvision",
    "torchaudio",
    "lightning",
    "scipy",
    "matplotlib",
]


def base_requirements(requires: list[str]) -> set[str]:
    """Distribution names of the requirements outside every extra."""
    names = set()
    for line in requires:
        if "extra ==" in line:
            continue
        name = line.split(";")[0].strip()
        for stop in "<>=!~[ ":
            name = name.split(stop)[0]
        names.add(name.lower())
    return names


def test_metadata_requires_torch_and_numpy_only(tmp_path):
    # The metadata setuptools writes for this tree (what a wheel of it would carry).
    for item in ("pyproject.toml", "README.md", "lerac"):
        copy = shutil.copytree if (ROOT / item).is_dir() else shutil.copy
        copy(ROOT / item, tmp_path / item)
    script = (
        "import sys; from setuptools import build_meta; "
        "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))"
    )
    out = tmp_path / "meta"
    out.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    meta = PathDistribution(out / run.stdout.strip().splitlines()[-1])
    assert base_requirements(meta.requires) == CORE
    extras = set(meta.metadata.get_all("Provides-Extra"))
    assert {"suite", "hf", "lightning", "timm", "dev"} <= extras
    assert any(r.startswith("accelerate") and 'extra == "hf"' in r for r in meta.requires)
    # Where this tree is the installed lerac (make install), the installed metadata agrees.
    installed = distribution("lerac")
    origin = json.loads(installed.read_text("direct_url.json") or "{}").get("url", "")
    if origin == ROOT.as_uri():
        assert base_requirements(installed.requires) == CORE


def run_python(*lines: str) -> subprocess.CompletedProcess:
    """``lines`` of Python in a fresh interpreter (a clean sys.modules), from the repo root."""
    return subprocess.run(
        [sys.executable, "-c", "\n".join(lines)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_lerac_loads_no_suite_package():
    run = run_python(
        "import json, sys",
        "import lerac, lerac.curriculum, lerac.layers, lerac.smoothing",
        "from lerac import LeRaC, layer_param_groups, attach_smoothing, set_sigma",
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == []


@pytest.mark.parametrize("command", ["train", "grid", "report", "plots", "fetch"])
def test_a_command_on_the_core_install_names_the_missing_extra(command):
    """Each console script with the suite's packages absent (as on ``pip install lerac``):
    one error line naming the extra, exit 2, no traceback."""
    absent = ("hydra", "omegaconf", "yaml", "matplotlib", "tqdm")
    run = run_python(
        "import sys",
        f"sys.modules.update(dict.fromkeys({absent!r}))  # None: imported as if not installed",
        "from lerac.suite import cli",
        f"sys.exit(cli.{command}())",
    )
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: lerac-{command} needs the suite")
    assert "pip install '.[suite]' in a checkout" in lines[0]


def test_the_console_scripts_go_through_the_guard():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {
        f"lerac-{c}": f"lerac.suite.cli:{c}" for c in ("train", "report", "plots", "grid", "fetch")
    }


def layered(n: int = 3, lr: float = 0.1) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(n)])
    groups = [{"params": layer.parameters(), "name": str(i)} for i, layer in enumerate(model)]
    return model, torch.optim.SGD(groups, lr=lr)


def train_steps(model, optimizer, schedulers, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.ones(2, 4)).sum().backward()
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()


def rates(optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def test_step_after_the_curriculum_changes_no_rate():
    model, optimizer = layered()
    sched = LeRaC(optimizer, total_steps=4, lr_first=0.1, lr_last=1e-4)
    train_steps(model, optimizer, [sched], 4)
    assert sched.finished and rates(optimizer) == [0.1] * 3  # step k sets eta^(k) exactly
    for group, rate in zip(optimizer.param_groups, (0.05, 0.01, 0.002)):
        group["lr"] = rate  # what another scheduler (or a person) set
    train_steps(model, optimizer, [sched], 3)
    assert rates(optimizer) == [0.05, 0.01, 0.002]
    assert sched.last_epoch == 7 and sched.get_last_lr() == [0.05, 0.01, 0.002]


def test_plateau_cut_after_the_curriculum_lasts():
    model, optimizer = layered()
    sched = LeRaC(optimizer, total_steps=6, lr_first=0.1, lr_last=1e-4)
    plateau = ReduceLROnPlateau(optimizer, factor=0.1, patience=0)
    seen = []
    for _epoch in range(5):  # 3 steps per epoch, the curriculum is 2 epochs
        for _ in range(3):
            train_steps(model, optimizer, [sched], 1)
            seen.append(rates(optimizer)[0])
        plateau.step(1.0)  # never improves: a cut at every epoch's end after the first
    # Epochs 2, 3, 4 run at the cut rates for every one of their batches.
    assert seen[6:] == pytest.approx([0.01] * 3 + [0.001] * 3 + [1e-4] * 3, rel=1e-12)


def flat_loss_run(make_plateau, k_epochs: int = 3, epochs: int = 9) -> list[float]:
    """The first layer's rate at every step: 2 steps an epoch, a loss that never improves,
    the plateau made by ``make_plateau(optimizer, lerac)`` (None: not yet) at each epoch end."""
    model, optimizer = layered()
    sched = LeRaC(optimizer, total_steps=2 * k_epochs, lr_first=0.1, lr_last=1e-4)
    plateau, seen = None, []
    for _epoch in range(epochs):
        for _ in range(2):
            seen.append(rates(optimizer)[0])
            train_steps(model, optimizer, [sched], 1)
        plateau = plateau or make_plateau(optimizer, sched)
        if plateau is not None:
            plateau.step(1.0)
    return seen


def test_plateau_after_the_curriculum_counts_its_patience_from_the_hand_over():
    options = {"factor": 0.1, "patience": 2}
    handed_over = flat_loss_run(lambda _opt, lerac: PlateauAfterCurriculum(lerac, **options))
    # The docs' other recipe: a ReduceLROnPlateau built when the curriculum has finished.
    built_late = flat_loss_run(
        lambda opt, lerac: ReduceLROnPlateau(opt, **options) if lerac.finished else None
    )
    from_epoch_0 = flat_loss_run(lambda opt, _lerac: ReduceLROnPlateau(opt, **options))
    assert handed_over == built_late
    # k = 3 epochs (steps 0-5); the end of epoch 2 sets the best loss; epochs 3, 4 and 5 run
    # at the base rate; the cut comes at the end of epoch 5.
    assert handed_over[6:12] == [0.1] * 6 and handed_over[12:] == pytest.approx([0.01] * 6)
    # Stepped from epoch 0, the curriculum's flat epochs fill its patience: it cuts after
    # the first epoch past the curriculum.
    assert from_epoch_0[8:10] == pytest.approx([0.01] * 2)


def test_a_plateau_state_carries_the_curriculum(tmp_path):
    model, optimizer = layered()
    lerac = LeRaC(optimizer, 4, 0.1, 1e-4)
    plateau = PlateauAfterCurriculum(lerac, patience=1)
    train_steps(model, optimizer, [lerac], 2)
    torch.save(plateau.state_dict(), tmp_path / "plateau.pt")  # all an HF checkpoint keeps
    _model, fresh_optimizer = layered()
    resumed = PlateauAfterCurriculum(LeRaC(fresh_optimizer, 4, 0.1, 1e-4), patience=1)
    resumed.load_state_dict(torch.load(tmp_path / "plateau.pt", weights_only=True))
    assert resumed.curriculum.last_epoch == 2 and resumed.patience == 1
    assert not any(isinstance(value, LeRaC) for value in plateau.state_dict().values())
    with pytest.raises(TypeError, match="needs the LeRaC scheduler it follows"):
        PlateauAfterCurriculum(optimizer)


def test_exponential_after_the_curriculum_decays_as_alone():
    model, optimizer = layered()
    sched = LeRaC(optimizer, total_steps=4, lr_first=0.1, lr_last=1e-4)
    exponential = None
    for _epoch in range(8):  # 2 steps per epoch; the exponential starts where LeRaC ends
        train_steps(model, optimizer, [sched], 2)
        if sched.finished and exponential is None:
            exponential = ExponentialLR(optimizer, gamma=0.5)
        elif exponential is not None:
            exponential.step()
    # Alone on the base rates, ExponentialLR stepped 6 times (the ends of epochs 2-7).
    alone_model, alone = layered()
    alone_sched = ExponentialLR(alone, gamma=0.5)
    train_steps(alone_model, alone, [alone_sched], 6)
    assert rates(optimizer) == pytest.approx(rates(alone), rel=1e-12)
    assert rates(optimizer)[0] == pytest.approx(0.1 * 0.5**6)


def test_exponential_stepped_from_the_start_decays_from_the_handoff():
    model, optimizer = layered()
    sched = LeRaC(optimizer, total_steps=4, lr_first=0.1, lr_last=1e-4)
    exponential = ExponentialLR(optimizer, gamma=0.5)  # built at once, stepped every epoch
    with pytest.warns(UserWarning, match="changed since LeRaC last set it"):
        for _epoch in range(8):
            train_steps(model, optimizer, [sched], 2)
            exponential.step()
    # The curriculum rewrote the rates during epochs 0-1 (the decay at the end of epoch 0
    # lasted one step, hence the warning); the ends of epochs 1-7 decayed them.
    assert rates(optimizer) == pytest.approx([0.1 * 0.5**7] * 3, rel=1e-12)


def test_sequential_into_cosine():
    model, optimizer = layered()
    sched = LeRaC(optimizer, total_steps=4, lr_first=0.1, lr_last=1e-4)
    cosine = CosineAnnealingLR(optimizer, T_max=4)
    seq = torch.optim.lr_scheduler.SequentialLR(optimizer, [sched, cosine], milestones=[4])
    seen = []
    for _ in range(8):
        train_steps(model, optimizer, [seq], 1)
        seen.append(rates(optimizer)[-1])
    expected_cos = [0.05 * (1 + math.cos(math.pi * t / 4)) for t in range(5)]
    assert seen[3:] == pytest.approx(expected_cos, rel=1e-9)


def test_loading_a_state_with_another_k_is_refused():
    _model, optimizer = layered()
    saved = LeRaC(optimizer, total_steps=10, lr_first=0.1, lr_last=1e-4).state_dict()
    _model, optimizer = layered()
    other = LeRaC(optimizer, total_steps=20, lr_first=0.1, lr_last=1e-4)
    with pytest.raises(ConfigError, match="total_steps=10 but .* total_steps=20"):
        other.load_state_dict(saved)
    _model, optimizer = layered()
    lower = LeRaC(optimizer, total_steps=10, lr_first=0.1, lr_last=1e-6)
    with pytest.raises(ConfigError, match="start_lrs"):
        lower.load_state_dict(saved)
    _model, optimizer = layered()
    same = LeRaC(optimizer, total_steps=10, lr_first=0.1, lr_last=1e-4)
    same.load_state_dict(saved)  # the same arguments: accepted
    assert same.total_steps == 10


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.norm(self.conv(x)).mean((2, 3)))


def test_no_decay_halves_share_their_layer_rate():
    model = Net()
    groups = layer_param_groups(model, torch.randn(2, 1, 6, 6), weight_decay=5e-4)
    names = [g["name"] for g in groups]
    assert names == ["conv", "conv.no_decay", "norm.no_decay", "head", "head.no_decay"]
    assert [g["layer_rank"] for g in groups] == [0, 0, 1, 2, 2]
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0, 0.0, 5e-4, 0.0]
    assert groups[1]["params"] == [model.conv.bias]
    assert groups[2]["params"] == [model.norm.weight, model.norm.bias]
    sched = LeRaC(torch.optim.SGD(groups, lr=0.1), total_steps=4, lr_first=0.1, lr_last=1e-3)
    # Three layers (Eq. 6: 1e-1, 1e-2, 1e-3), each half of a layer at its layer's rate.
    assert sched.get_last_lr() == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001])


def test_mixed_ranks_are_refused():
    model = Net()
    groups = layer_param_groups(model, torch.randn(2, 1, 6, 6))
    del groups[0]["layer_rank"]
    with pytest.raises(ConfigError, match="1 of 3 param groups have no 'layer_rank'"):
        LeRaC(torch.optim.SGD(groups, lr=0.1), total_steps=4, lr_first=0.1, lr_last=1e-3)


def test_lr_scale_sets_the_rate_a_group_rises_to():
    model, optimizer = layered(2)
    optimizer.param_groups[0]["lr_scale"] = 0.5  # as timm's layer decay writes it
    sched = LeRaC(optimizer, total_steps=2, lr_first=0.01, lr_last=1e-4)
    train_steps(model, optimizer, [sched], 1)
    # Eq. 8 halfway from 1e-2 to 0.05 and from 1e-4 to 0.1.
    assert rates(optimizer) == pytest.approx([math.sqrt(0.01 * 0.05), math.sqrt(1e-4 * 0.1)])
    train_steps(model, optimizer, [sched], 3)
    assert rates(optimizer) == pytest.approx([0.05, 0.1])


def test_curriculum_steps_counts_optimizer_steps():
    assert curriculum_steps(5, 100) == 500
    assert curriculum_steps(2, 10, grad_accumulation=4) == 6  # ceil(10 / 4) steps an epoch
    with pytest.raises(ConfigError, match="grad_accumulation must be a positive integer"):
        curriculum_steps(2, 10, grad_accumulation=0)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(total_steps=2.5), "total_steps"),
        (dict(c=1.0), "c must be above 1"),
        (dict(lr_first=1e-6, lr_last=1e-2), "pass anti=True"),
        (dict(lr_first=1.0), "lower lr_first or raise the optimizer's lr"),
    ],
)
def test_errors_name_the_python_arguments(kwargs, key):
    _model, optimizer = layered()
    args = dict(total_steps=4, lr_first=0.1, lr_last=1e-4) | kwargs
    with pytest.raises(ConfigError) as err:
        LeRaC(optimizer, **args)
    assert key in str(err.value) and "regime." not in str(err.value)


def test_the_lightning_helper_refuses_a_plateau_that_counts_the_curriculum():
    from lerac.integrations.lightning import after_curriculum_config

    _model, optimizer = layered()
    lerac = LeRaC(optimizer, 4, 0.1, 1e-4)
    with pytest.raises(ConfigError, match="plain ReduceLROnPlateau.*PlateauAfterCurriculum"):
        after_curriculum_config(ReduceLROnPlateau(optimizer), monitor="val_loss")
    with pytest.raises(ConfigError, match="needs monitor="):
        after_curriculum_config(PlateauAfterCurriculum(lerac))
    config = after_curriculum_config(PlateauAfterCurriculum(lerac), monitor="val_loss")
    assert config["interval"] == "epoch" and config["monitor"] == "val_loss"


def test_the_wheel_carries_the_configs_and_finds_them(tmp_path):
    """A non-editable install has no checkout: the build copies conf/ into the package and
    CONF_DIR finds that copy, so lerac-train composes its configs from the wheel alone."""
    for item in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "lerac", "conf"):
        copy = shutil.copytree if (ROOT / item).is_dir() else shutil.copy
        if (ROOT / item).exists():
            copy(ROOT / item, tmp_path / item)
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist")]
    run = subprocess.run(build, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("lerac-*.whl"))  # built from the sdist
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "lerac" / "suite" / "conf" / "train.yaml").is_file()
    script = (
        "from lerac.suite.config import CONF_DIR; from lerac.suite.compose import compose_config; "
        "print(CONF_DIR); print(compose_config(['dataset=digits']).regime.id)"
    )
    elsewhere = tmp_path / "elsewhere"  # not the copied checkout, which python -c would see
    elsewhere.mkdir()
    shown = subprocess.run(
        [sys.executable, "-c", script],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.split() == [str(site / "lerac" / "suite" / "conf"), "lerac"]
