"""The probes (analysis=probes): what they measure, that they change nothing in training,
that they resume after a kill to the same file, and that they see every layer of a
ResNet-18 and of a timm model."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lerac.engine.batches import Splits
from lerac.engine.checkpoint import Checkpoint, rng_state
from lerac.engine.loop import Trainer
from lerac.engine.measures import (
    channel_dim,
    distances,
    feature_maps,
    map_entropy,
    sample_index,
    standardised,
)
from lerac.engine.probes import FIELDS, PROBES_CSV, PROBES_DIR, Probes
from lerac.engine.settings import TrainerSettings
from lerac.errors import ConfigError
from lerac.layers import find_layers
from lerac.suite.train import main, train
from tests.conftest import TINY, compose_config
from tests.test_reliability import SIGNAL_AFTER_FIRST_CHECKPOINT, env

pytestmark = pytest.mark.usefixtures("one_thread")

# Digits, 3 epochs of 3 steps, LeRaC over 2 epochs, deterministic, every layer probed.
PROBED = TINY + [
    "trainer.max_epochs=3",
    "trainer.batch_size=32",
    "trainer.limit_train_batches=3",
    "trainer.limit_eval_batches=2",
    "trainer.deterministic=true",
    "model.table1.lerac_k=2",
    "analysis=probes",
    "analysis.examples=16",
    "analysis.batch_size=8",
]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def without_seconds(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_csv(path)]


# --- what is measured ------------------------------------------------------------------


def test_entropy_is_one_for_a_constant_map_and_near_zero_for_one_dominant_position():
    constant = torch.full((2, 3, 16), 0.7)
    assert torch.allclose(map_entropy(constant), torch.ones(2, 3))
    assert torch.allclose(map_entropy(standardised(constant)), torch.ones(2, 3))
    dominant = torch.zeros(1, 1, 16)
    dominant[..., 5] = 50.0
    assert map_entropy(dominant).item() < 1e-3
    assert map_entropy(standardised(dominant)).item() < 0.5  # scale-free: one spike of 16
    assert math.isnan(map_entropy(torch.ones(1, 1, 1)).item())  # one position: undefined


def test_the_distance_of_maps_to_themselves_is_zero_and_scales_as_stated():
    values = torch.randn(1000)
    same = distances(values, values.clone(), scale=4.0, examples=2)
    assert same["distance"] == 0 and same["relative"] == 0 and same["snr_db"] is None
    assert same["unit"] == pytest.approx(0, abs=1e-6)
    double = distances(2 * values, values, scale=4.0, examples=2)
    assert double["relative"] == pytest.approx(1.0)
    assert double["unit"] == pytest.approx(0, abs=1e-6)  # the same direction
    assert double["snr_db"] == pytest.approx(0.0, abs=1e-9)
    # Each stored value stands for `scale` values; RMS over the examples.
    assert double["distance"] == pytest.approx(math.sqrt(values.pow(2).sum().item() * 4 / 2))


def test_maps_are_read_channels_first_for_convs_and_tokens_for_sequence_layers():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    out = conv(torch.randn(2, 3, 4, 6))
    assert channel_dim(conv, tuple(conv.parameters()), out) == 1
    assert feature_maps(out, 1).shape == (2, 5, 24)
    linear = nn.Linear(8, 7)
    tokens = linear(torch.randn(2, 9, 8))  # (batch, tokens, width)
    assert channel_dim(linear, tuple(linear.parameters()), tokens) == 2
    assert feature_maps(tokens, 2).shape == (2, 7, 9)  # positions are the tokens
    head = linear(torch.randn(2, 8))
    assert channel_dim(linear, tuple(linear.parameters()), head) is None  # no positions


def test_sampled_positions_are_distinct_sorted_and_fixed_by_the_seed():
    index = sample_index(10_000, 300, torch.Generator().manual_seed(3))
    assert len(set(index.tolist())) == 300 and bool((index.diff() > 0).all())
    assert int(index.max()) < 10_000
    again = sample_index(10_000, 300, torch.Generator().manual_seed(3))
    assert torch.equal(index, again)
    assert torch.equal(sample_index(5, 300, torch.Generator()), torch.arange(5))


def test_bad_probe_settings_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    argv = [*TINY, "analysis=probes", "analysis.examples=0", f"paths.output_dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", ["lerac-train", *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: analysis.examples=0")
    with pytest.raises(ConfigError, match="analysis.epochs"):
        Probes(tmp_path, epochs="some")


# --- probes change nothing -------------------------------------------------------------


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """The same LeRaC run with probes off and on."""
    root = tmp_path_factory.mktemp("probed")
    off = train(compose_config([o for o in PROBED if not o.startswith("analysis")]), root / "off")
    on = train(compose_config(PROBED), root / "on")
    return root, off, on


def test_probes_on_and_off_give_the_same_training_and_test_accuracy(probed):
    root, off, on = probed
    assert on["test_acc"] == off["test_acc"] and on["val_acc"] == off["val_acc"]
    assert without_seconds(root / "on" / "history.csv") == without_seconds(
        root / "off" / "history.csv"
    )
    assert (root / "on" / "predictions.csv").read_text() == (
        root / "off" / "predictions.csv"
    ).read_text()
    assert not (root / "off" / PROBES_CSV).exists() and not (root / "off" / PROBES_DIR).exists()


def test_probes_csv_covers_every_discovered_layer_of_resnet18_at_every_epoch(probed):
    root, _, on = probed
    rows = read_csv(root / "on" / PROBES_CSV)
    assert list(rows[0]) == FIELDS
    layers = [r["name"] for r in read_csv(root / "on" / "layers.csv")]  # lr_schedule's order
    assert len(layers) == on["layers"]
    for epoch in range(4):  # 0 = initialisation, then each of the 3 epochs
        at = [r for r in rows if int(r["epoch"]) == epoch]
        assert [r["name"] for r in at] == layers
        assert [int(r["layer"]) for r in at] == list(range(len(layers)))
        assert all(r["relative_distance_to_final"] != "" for r in at)
    conv1 = [r for r in rows if r["name"] == "conv1"]
    assert conv1[0]["entropy"] != "" and conv1[0]["positions"] == "64"  # 8x8 digits
    assert conv1[-1]["distance_to_final"] == "0" and conv1[0]["update_pace"] == ""
    fc = [r for r in rows if r["name"] == "fc"]
    assert fc[0]["entropy"] == "" and fc[0]["activation_std"] != ""  # no positions
    # The working files are gone; the probe examples and the epoch-k weights stay.
    files = sorted(p.name for p in (root / "on" / PROBES_DIR).iterdir())
    assert files == ["examples.csv", "model_epoch0002.pt"]
    assert len(read_csv(root / "on" / PROBES_DIR / "examples.csv")) == 16


def test_a_probe_leaves_random_states_loader_order_and_batch_norm_untouched(tmp_path):
    torch.manual_seed(0)
    from lerac.suite.models.resnet import ResNet18

    model = ResNet18(10, 1, 8, width=4)
    splits = tiny_splits(64, (1, 8, 8))
    loader = splits.loaders(16, "cpu", seed=1)[0]
    probes = Probes(tmp_path, examples=8, batch_size=4)
    probes.start(model, splits, find_layers(model, torch.zeros(2, 1, 8, 8)), "cpu", 0)
    model.train()
    rngs, order = rng_state(), loader.state_dict()["generator"].clone()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    probes.after_epoch(1, model)
    assert model.training and all(m.training for m in model.modules())
    after = rng_state()
    assert torch.equal(after["torch"], rngs["torch"]) and after["python"] == rngs["python"]
    assert (
        torch.equal(after["numpy"][1], rngs["numpy"][1]) and after["numpy"][2] == rngs["numpy"][2]
    )
    assert torch.equal(loader.state_dict()["generator"], order)
    for key, value in model.state_dict().items():
        if "running" in key:
            assert torch.equal(value, stats[key]), key


def tiny_splits(n: int, shape: tuple[int, ...], classes: int = 4) -> Splits:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((n, *shape), generator=generator)
    y = torch.randint(0, classes, (n,), generator=generator)
    return Splits(train=(x, y), val=(x[:16], y[:16]), test=(x[:16], y[:16]), num_classes=classes)


# --- the claim, measured ---------------------------------------------------------------


def test_lerac_holds_the_last_layer_back_in_epoch_one_and_not_the_first(probed, tmp_path):
    root, _, _ = probed
    conventional = train(compose_config(PROBED + ["regime=conventional"]), tmp_path / "conv")
    assert conventional["status"] == "completed"

    def pace(run_dir: Path) -> dict[str, float]:
        rows = [r for r in read_csv(run_dir / PROBES_CSV) if r["epoch"] == "1"]
        return {"first": float(rows[0]["update_pace"]), "last": float(rows[-1]["update_pace"])}

    lerac, conv = pace(root / "on"), pace(tmp_path / "conv")  # the same seed, the same init
    assert lerac["last"] < 1e-3 * conv["last"]  # orders of magnitude below
    assert 0.2 < lerac["first"] / conv["first"] < 5  # of the same order


# --- resume ----------------------------------------------------------------------------


def test_a_probed_run_killed_mid_training_resumes_to_the_same_probes_csv(probed, tmp_path):
    root, _, on = probed
    out = tmp_path / "out"
    out.mkdir()
    args = [sys.executable, "-c", SIGNAL_AFTER_FIRST_CHECKPOINT, "SIGKILL", *PROBED]
    args.append(f"paths.output_dir={out}")
    proc = subprocess.run(args, cwd=out, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_dir = out / "digits_resnet18_lerac_seed0"
    assert Checkpoint(run_dir).load()["progress"]["epoch"] == 1
    assert len({r["epoch"] for r in read_csv(run_dir / PROBES_CSV)}) == 2  # epochs 0 and 1
    resumed = train(compose_config(PROBED), run_dir)
    assert resumed["resumed_from_epoch"] == 1 and resumed["test_acc"] == on["test_acc"]
    assert (run_dir / PROBES_CSV).read_text() == (root / "on" / PROBES_CSV).read_text()


# --- any model --------------------------------------------------------------------------


def test_every_layer_of_a_timm_vit_is_probed_with_tokens_as_positions(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", num_classes=4, img_size=8, patch_size=4, depth=2, in_chans=1
    )
    settings = TrainerSettings(max_epochs=1, batch_size=16, device="cpu", progress=False)
    probes = Probes(tmp_path, examples=8, batch_size=8)
    splits = tiny_splits(32, (1, 8, 8))
    Trainer(settings, probes=probes).fit(
        model, splits, lambda groups: torch.optim.SGD(groups, lr=0.01)
    )
    rows = read_csv(tmp_path / PROBES_CSV)
    names = [layer.name for layer in find_layers(model, torch.zeros(2, 1, 8, 8))]
    for epoch in ("0", "1"):
        assert [r["name"] for r in rows if r["epoch"] == epoch] == names
    at0 = {r["name"]: r for r in rows if r["epoch"] == "0"}
    # 2x2 patches and the class token: 5 tokens are the positions of a block's output.
    assert at0["blocks.0.mlp.fc1"]["positions"] == "5" and at0["blocks.0.mlp.fc1"]["entropy"]
    assert at0["patch_embed.proj"]["positions"] == "4"  # the patch conv: 2x2 maps
    assert at0["head"]["entropy"] == ""  # the classifier's (batch, classes): no positions


def test_wandb_gets_the_probes_table_and_heatmaps_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # make test disables W&B; this needs it
    overrides = TINY + ["logger=wandb", "analysis=probes", "trainer.limit_train_batches=2"]
    train(compose_config(overrides), tmp_path / "run")
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    media = offline / "files" / "media"
    assert list((media / "images").glob("probes_heatmaps_*.png"))
    (table,) = (media / "table").glob("probes_*.table.json")
    logged = json.loads(table.read_text())
    assert logged["columns"] == FIELDS and len(logged["data"]) == 3 * 41  # epochs 0-2
    assert (tmp_path / "run" / "probes.png").read_bytes()[:4] == b"\x89PNG"
