"""The LeRaC scheduler against values worked out by hand from the paper."""

import math
import warnings

import pytest
import torch
from torch import nn

from lerac.curriculum import LeRaC, initial_rates, released_start_rates
from lerac.errors import ConfigError


def optimizer_with_layers(n: int, lr: float = 0.1) -> torch.optim.Optimizer:
    layers = [nn.Linear(2, 2) for _ in range(n)]
    return torch.optim.SGD([{"params": layer.parameters()} for layer in layers], lr=lr)


def exps(rates):
    return [round(math.log10(r), 10) for r in rates]


def test_paper_example_initial_rates():
    # Paper 6.2: 5 layers, eta_1 = 1e-1, eta_5 = 1e-2 -> 10^-1, 10^-1.25, ..., 10^-2.
    assert exps(initial_rates(5, 1e-1, 1e-2)) == [-1.0, -1.25, -1.5, -1.75, -2.0]


def test_eq8_by_hand_on_the_paper_example():
    opt = optimizer_with_layers(5, lr=0.1)
    sched = LeRaC(opt, total_steps=4, lr_first=1e-1, lr_last=1e-2)
    # Eq. 8 with c = 10: exponent_j(l) = e_j + l/4 * (-1 - e_j).
    by_hand = {
        0: [-1.0, -1.25, -1.5, -1.75, -2.0],
        1: [-1.0, -1.1875, -1.375, -1.5625, -1.75],
        2: [-1.0, -1.125, -1.25, -1.375, -1.5],
        3: [-1.0, -1.0625, -1.125, -1.1875, -1.25],
        4: [-1.0, -1.0, -1.0, -1.0, -1.0],
        6: [-1.0, -1.0, -1.0, -1.0, -1.0],
    }
    seen = {0: exps(sched.get_last_lr())}
    for step in range(1, 7):
        opt.step()
        sched.step()
        seen[step] = exps(g["lr"] for g in opt.param_groups)
    for step, expected in by_hand.items():
        assert seen[step] == pytest.approx(expected, abs=1e-9), step
    assert sched.finished
    assert [g["lr"] for g in opt.param_groups] == [0.1] * 5  # exactly the base rate at k


def test_eq8_table1_range_reaches_base_and_keeps_order():
    opt = optimizer_with_layers(41, lr=0.1)
    sched = LeRaC(opt, total_steps=7 * 20, lr_first=1e-1, lr_last=1e-8)
    previous = sched.get_last_lr()
    assert previous[0] == pytest.approx(1e-1) and previous[-1] == pytest.approx(1e-8)
    for _ in range(7 * 20):
        opt.step()
        sched.step()
        rates = sched.get_last_lr()
        assert all(a >= b * (1 - 1e-12) for a, b in zip(rates, rates[1:]))  # Eq. 6 order holds
        assert all(r >= p * (1 - 1e-12) for r, p in zip(rates, previous))  # rates only rise
        previous = rates
    assert rates == [0.1] * 41


def test_c_is_the_exponent_base_of_eq8():
    # c**(t*(log_c b - log_c s)) == (b/s)**t for any c > 1: Eq. 8 holds for every base.
    a = LeRaC(optimizer_with_layers(4), total_steps=10, lr_first=0.1, lr_last=1e-6, c=10)
    b = LeRaC(optimizer_with_layers(4), total_steps=10, lr_first=0.1, lr_last=1e-6, c=2)
    assert a.rates_at(3) == pytest.approx(b.rates_at(3), rel=1e-9)


def test_linear_update_table5():
    opt = optimizer_with_layers(5, lr=0.1)
    sched = LeRaC(opt, total_steps=4, lr_first=1e-1, lr_last=1e-2, update="linear")
    assert sched.rates_at(2)[-1] == pytest.approx(0.01 + 0.5 * (0.1 - 0.01))
    assert sched.rates_at(1)[2] == pytest.approx(10**-1.5 + 0.25 * (0.1 - 10**-1.5))
    assert sched.rates_at(4) == [0.1] * 5


def test_anti_lerac_starts_deeper_layers_higher():
    opt = optimizer_with_layers(5, lr=0.1)
    sched = LeRaC(opt, total_steps=4, lr_first=1e-1, lr_last=1e-2, anti=True)
    assert exps(sched.get_last_lr()) == pytest.approx([-2.0, -1.75, -1.5, -1.25, -1.0])
    assert sched.rates_at(4) == [0.1] * 5


def test_step_update_follows_the_released_code():
    # 10x lower per layer down to the floor, then x10 every 3 steps while <= base.
    assert released_start_rates(5, 1e-1, 1e-4) == pytest.approx([1e-1, 1e-2, 1e-3, 1e-4, 1e-4])
    opt = optimizer_with_layers(5, lr=0.1)
    sched = LeRaC(opt, None, lr_first=1e-1, lr_last=1e-4, update="step", step_every=3)
    assert sched.total_steps == 9  # the floor needs 3 rises
    assert exps(sched.rates_at(2)) == [-1, -2, -3, -4, -4]
    assert exps(sched.rates_at(3)) == [-1, -1, -2, -3, -3]
    assert exps(sched.rates_at(6)) == [-1, -1, -1, -2, -2]
    assert exps(sched.rates_at(9)) == [-1, -1, -1, -1, -1]


def test_step_update_stops_below_the_cap_like_the_released_code():
    # Base 1e-4 and floor 5e-8 (DenseNet-121 in Table 1): 5e-8 -> 5e-5, one more x10 would
    # pass the base, so that layer never reaches it: each layer stops at its own time.
    opt = optimizer_with_layers(5, lr=1e-4)
    sched = LeRaC(opt, None, lr_first=1e-4, lr_last=5e-8, update="step", step_every=1)
    assert sched.rates_at(100) == pytest.approx([1e-4, 1e-4, 1e-4, 1e-4, 5e-5])


def test_step_update_at_given_points_and_with_the_released_cap():
    # Points after 3, 5 and 9 steps: the rates rise at steps 3, 5, 9; three rises take the
    # floor 1e-4 to the base 1e-1, so the curriculum ends at the third point.
    opt = optimizer_with_layers(4, lr=0.1)
    points = iter([3, 5, 9, 100])  # any iterable; only the points needed are read
    sched = LeRaC(opt, None, 1e-1, 1e-4, update="step", update_points=points)
    assert sched.total_steps == 9 and next(points) == 100
    assert [exps(sched.rates_at(s))[-1] for s in (2, 3, 4, 5, 8, 9, 50)] == [
        -4, -3, -3, -2, -2, -1, -1
    ]  # fmt: skip
    # A window that closes after one point stops every rate there.
    closed = LeRaC(optimizer_with_layers(4), None, 1e-1, 1e-4, update="step", update_points=[2])
    assert closed.total_steps == 2 and exps(closed.rates_at(10)) == [-1, -1, -2, -3]
    # A rate 1.05x a power of ten below the base passes the base by 5% on its last rise:
    # the released cap (stop_lr = 1.1 x base) lets it, the base alone does not.
    for cap, last in ((None, 1.05e-2), (1.1, 1.05e-1)):
        opt = optimizer_with_layers(1, lr=0.1)
        one = LeRaC(opt, None, 0.1, 1e-3, update="step", step_every=1, start_lrs=[1.05e-3],
                    cap_ratio=cap)  # fmt: skip
        assert one.rates_at(10) == pytest.approx([last], rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({}, "step_every > 0"),
        ({"step_every": 2, "update_points": [2]}, "not both"),
        ({"update_points": [2, 2, 5]}, "increasing"),
        ({"step_every": 0}, "positive number of steps"),
    ],
)
def test_the_step_update_needs_one_kind_of_points(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        LeRaC(optimizer_with_layers(3), None, 1e-1, 1e-3, update="step", **kwargs)


def test_the_released_regime_runs_the_core_step_rule():
    from lerac.engine.released import StepCurriculum

    regime = StepCurriculum(lr_first=1e-1, floor=1e-4, units="module")
    curriculum = regime.curriculum(optimizer_with_layers(4), steps_per_epoch=5)
    assert isinstance(curriculum, LeRaC) and curriculum.update == "step"
    assert curriculum.update_points == [5, 10, 15] and curriculum.cap_ratio == 1.1


def test_state_round_trip_in_the_middle_of_the_curriculum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2))
    groups = lambda m: [{"params": layer.parameters()} for layer in m if list(layer.parameters())]  # noqa: E731
    opt = torch.optim.SGD(groups(model), lr=0.1, momentum=0.9)
    sched = LeRaC(opt, total_steps=10, lr_first=0.1, lr_last=1e-6)
    for _ in range(4):
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        sched.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()

    clone = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2))
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.SGD(groups(clone), lr=0.1, momentum=0.9)
    sched2 = LeRaC(opt2, total_steps=10, lr_first=0.1, lr_last=1e-6)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert sched2.last_epoch == 4
    assert sched2.get_last_lr() == sched.get_last_lr()
    for _ in range(8):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert sched2.finished and sched2.get_last_lr() == [0.1] * 3


def test_a_training_loop_with_the_scheduler_raises_no_warning():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    opt = torch.optim.Adam([{"params": m.parameters()} for m in model], lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = LeRaC(opt, total_steps=3, lr_first=1e-3, lr_last=1e-7)
        for _ in range(5):
            model(torch.randn(2, 4)).sum().backward()
            opt.step()
            sched.step()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(total_steps=5, lr_first=1e-8, lr_last=1e-1), ["lr_last", "above", "swap"]),
        (dict(total_steps=0, lr_first=1e-1, lr_last=1e-8), ["total_steps", "positive"]),
        (
            dict(total_steps=5, lr_first=1e-1, lr_last=1e-8, update="cosine"),
            ["'cosine' is not an option", "exponential"],
        ),
        (dict(total_steps=5, lr_first=1.0, lr_last=1e-8), ["above the base lr", "lr_first"]),
        (dict(total_steps=5, lr_first=1e-1, lr_last=0.0), ["positive"]),
        (dict(total_steps=None, lr_first=1e-1, lr_last=1e-8, update="step"), ["step_every"]),
    ],
)
def test_bad_settings_name_the_problem(kwargs, words):
    with pytest.raises(ConfigError) as err:
        LeRaC(optimizer_with_layers(3), **kwargs)
    for word in words:
        assert word in str(err.value)
    assert "regime." not in str(err.value)  # the library names its Python arguments
