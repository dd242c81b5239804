"""The controls of issue 13 (warmup, warmup_linear, lerac_shuffled): rates by hand, through
the LeRaC scheduler, and real short runs through the entrypoint."""

import csv
import math

import pytest
import torch
from torch import nn

from lerac.curriculum import LeRaC, initial_rates
from lerac.engine.rates import LearningRates
from lerac.engine.regimes import LearningRateCurriculum, ShuffledLearningRateCurriculum, Warmup
from lerac.errors import ConfigError
from lerac.layers import Layer
from lerac.suite.build import build
from lerac.suite.config import CONF_DIR
from lerac.suite.train import train
from tests.conftest import TINY, compose_config

CONTROLS = ("warmup", "warmup_linear", "lerac_shuffled")
FAST = TINY + ["trainer.limit_train_batches=3", "trainer.limit_eval_batches=2"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def started(regime, n_layers=5, lr=0.1, steps_per_epoch=4):
    """``regime`` started on an SGD over ``n_layers`` one-layer param groups."""
    layers = [Layer(f"l{i}", tuple(nn.Linear(2, 2).parameters())) for i in range(n_layers)]
    optimizer = torch.optim.SGD(regime.param_groups(layers), lr=lr)
    curriculum = regime.curriculum(optimizer, steps_per_epoch)
    owner = LearningRates(
        optimizer, curriculum=curriculum, steps_per_epoch=steps_per_epoch, max_epochs=10
    )
    return owner, optimizer


def rates_per_step(owner, optimizer, steps):
    out = []
    for step in range(steps):
        owner.before_step(step)
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()  # no gradients: changes nothing, keeps the step order PyTorch expects
    return out


def test_warmup_follows_eq8_from_one_shared_rate_by_hand():
    # lr_start 1e-4 to 0.1 over k = 1 epoch of 4 steps: exponent -4 + 3 * l / 4.
    regime = Warmup(k=1, lr_start=1e-4)
    owner, optimizer = started(regime)
    seen = rates_per_step(owner, optimizer, 7)
    by_hand = [10 ** (-4 + 3 * step / 4) for step in range(5)] + [0.1, 0.1]
    for step, rates in enumerate(seen):
        assert len(set(rates)) == 1, step  # no layer ahead of another, at every step
        assert rates[0] == pytest.approx(by_hand[step], rel=1e-9), step
    assert owner.curriculum_steps == 4 and not owner.in_curriculum(4)


def test_warmup_is_lerac_curve_of_a_layer_started_at_the_same_rate():
    # Under LeRaC from 0.1 down to 1e-4 the last layer starts at 1e-4: its curve is the
    # warmup's, step by step.
    lerac = LearningRateCurriculum(k=2, lr_first=0.1, lr_last=1e-4)
    warmup = Warmup(k=2, lr_start=1e-4)
    lerac_rates = rates_per_step(*started(lerac), 10)
    warmup_rates = rates_per_step(*started(warmup), 10)
    for lerac_step, warmup_step in zip(lerac_rates, warmup_rates):
        assert warmup_step == pytest.approx([lerac_step[-1]] * 5, rel=1e-12)


def test_warmup_linear_rises_linearly_by_hand():
    regime = Warmup(k=1, lr_start=1e-4, update="linear")
    seen = rates_per_step(*started(regime), 6)
    for step, rates in enumerate(seen):
        expected = 1e-4 + min(step, 4) / 4 * (0.1 - 1e-4)
        assert rates == pytest.approx([expected] * 5, rel=1e-12), step


def test_shuffled_uses_lerac_rates_in_another_order_fixed_by_the_seed():
    lerac_start = initial_rates(12, 0.1, 1e-8)

    def start(seed):
        regime = ShuffledLearningRateCurriculum(order_seed=seed, k=1, lr_first=0.1, lr_last=1e-8)
        return [g["lr"] for g in started(regime, n_layers=12)[1].param_groups]

    first = start(0)
    assert sorted(first) == pytest.approx(sorted(lerac_start), rel=1e-12)  # same multiset
    assert first != pytest.approx(lerac_start, rel=1e-12)  # another order
    assert start(0) == first  # reproducible
    assert start(1) != first  # the seed decides


def test_shuffled_never_keeps_lerac_order_even_with_two_layers():
    for seed in range(10):  # half of the plain draws of 2 layers would be the identity
        regime = ShuffledLearningRateCurriculum(order_seed=seed, k=1, lr_first=0.1, lr_last=1e-3)
        assert [g["lr"] for g in started(regime, n_layers=2)[1].param_groups] == pytest.approx(
            [1e-3, 0.1]
        )


def test_shuffled_rates_rise_to_the_base_rate_by_eq8():
    regime = ShuffledLearningRateCurriculum(order_seed=3, k=1, lr_first=0.1, lr_last=1e-4)
    owner, optimizer = started(regime)
    start = [g["lr"] for g in optimizer.param_groups]
    seen = rates_per_step(owner, optimizer, 6)
    for step, rates in enumerate(seen):
        t = min(step, 4) / 4
        assert rates == pytest.approx([s * (0.1 / s) ** t for s in start], rel=1e-9), step


def test_explicit_start_rates_are_checked():
    optimizer = torch.optim.SGD([{"params": nn.Linear(2, 2).parameters()}] * 1, lr=0.1)
    with pytest.raises(ConfigError, match="one positive rate per param group"):
        LeRaC(optimizer, 4, 0.1, 1e-8, start_lrs=[0.1, 0.01])
    with pytest.raises(ConfigError, match="above the base lr"):
        LeRaC(optimizer, 4, 0.1, 1e-8, start_lrs=[1.0])


def test_every_model_composes_with_the_controls():
    for model_file in sorted((CONF_DIR / "model").glob("*.yaml")):
        for regime in CONTROLS:
            cfg = compose_config([f"model={model_file.stem}", f"regime={regime}"])
            built = build(cfg.regime)
            assert built.k == cfg.model.table1.lerac_k
            if regime.startswith("warmup"):
                assert built.lr_first == built.lr_last == cfg.model.table1.lerac_lr_last
                assert built.update == ("linear" if regime == "warmup_linear" else "exponential")
            else:
                assert built.lr_last == cfg.model.table1.lerac_lr_last and built.order_seed == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("control_runs")
    return {
        regime: (root / regime, train(compose_config(FAST + [f"regime={regime}"]), root / regime))
        for regime in CONTROLS
    }


@pytest.mark.parametrize("regime", CONTROLS)
def test_a_real_run_through_the_entrypoint(runs, regime):
    run_dir, metrics = runs[regime]
    assert metrics["status"] == "completed" and metrics["regime"] == regime
    history = read_csv(run_dir / "history.csv")
    assert len(history) == 2 and all(math.isfinite(float(r["train_loss"])) for r in history)
    assert "cbs_sigma" not in history[0]  # no smoothing: no sigma column
    assert float(history[-1]["lr_min"]) == float(history[-1]["lr_max"]) == 0.1  # after k
    layers = read_csv(run_dir / "layers.csv")
    start = [float(r["initial_lr"]) for r in layers]
    lerac_start = initial_rates(len(layers), 0.1, 1e-8)
    if regime == "lerac_shuffled":
        assert sorted(start) == pytest.approx(sorted(lerac_start), rel=1e-5)
        assert start != pytest.approx(lerac_start, rel=1e-5)
    else:
        assert start == [1e-8] * len(layers)
        # The lr file: every layer at one rate at every step of the curriculum.
        steps = {}
        for row in read_csv(run_dir / "lr_schedule.csv"):
            steps.setdefault(row["step"], set()).add(row["lr"])
        assert all(len(rates) == 1 for rates in steps.values())
