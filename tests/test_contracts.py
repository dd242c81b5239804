"""The scheduler contract LeRaC keeps, checked the way PyTorch checks its own schedulers
(test/optim/test_lrscheduler.py in pytorch/pytorch: warnings on the call order, the closed
form, get_last_lr, state dicts through torch.save, tensor rates, no reference cycles) and
the way HuggingFace checks its schedules (a state saved and reloaded half way gives the
same rates), plus the contracts a per-layer curriculum adds: one tensor per group, groups
added later, other schedulers meddling during the curriculum."""

import copy
import gc
import pickle
import types
import warnings
import weakref

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import (
    EPOCH_DEPRECATION_WARNING,
    ChainedScheduler,
    ExponentialLR,
    SequentialLR,
)
from transformers import get_scheduler

from lerac import LeRaC
from lerac.errors import ConfigError

K = 6  # curriculum steps


def two_layer_optimizer(tensor_lr: bool = True) -> torch.optim.SGD:
    """torch's own set-up: two layers, the first at a float lr 0.05, the second at a
    tensor lr 0.5 (or a float 0.5)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1))
    second = torch.tensor(0.5) if tensor_lr else 0.5
    return torch.optim.SGD(
        [{"params": net[0].parameters()}, {"params": net[1].parameters(), "lr": second}], lr=0.05
    )


def lerac(optimizer=None, **options) -> LeRaC:
    optimizer = optimizer if optimizer is not None else two_layer_optimizer()
    return LeRaC(optimizer, **({"total_steps": K, "lr_first": 0.01, "lr_last": 1e-4} | options))


def rates(optimizer) -> list[float]:
    return [float(group["lr"]) for group in optimizer.param_groups]


def same(a, b) -> bool:
    """Equal values, tensors compared by value (state dicts mix floats and tensors)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


# PyTorch's contract ---------------------------------------------------------------------


def test_a_dropped_scheduler_leaves_no_reference_to_the_optimizer():
    optimizer = two_layer_optimizer()
    scheduler = lerac(optimizer)
    del scheduler
    assert len(gc.get_referrers(optimizer)) == 0
    gc.collect()
    del optimizer
    assert gc.collect() == 0


def test_a_stepped_scheduler_is_freed_without_the_garbage_collector():
    def run():
        optimizer = two_layer_optimizer()
        scheduler = lerac(optimizer)
        optimizer.step()
        scheduler.step()
        return weakref.ref(scheduler)

    gc.disable()
    try:
        assert run()() is None
    finally:
        gc.enable()


def old_pattern(scheduler, steps: int = 3) -> None:
    for _ in range(steps):
        scheduler.step()
        scheduler.optimizer.step()


@pytest.mark.parametrize("last_epoch", [-1, 2, K + 4], ids=["fresh", "resumed", "resumed-past-k"])
def test_scheduler_step_before_optimizer_step_warns(last_epoch):
    optimizer = two_layer_optimizer()
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]  # as a loaded checkpoint has it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building it warns nothing
        scheduler = lerac(optimizer, last_epoch=last_epoch)
    with pytest.warns(UserWarning, match="how-to-adjust-learning-rate"):
        old_pattern(scheduler)


@pytest.mark.parametrize("last_epoch", [-1, K + 4], ids=["fresh", "resumed-past-k"])
def test_an_overridden_optimizer_step_warns(last_epoch):
    optimizer = two_layer_optimizer()
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    scheduler = lerac(optimizer, last_epoch=last_epoch)
    step = optimizer.step
    optimizer.step = types.MethodType(lambda _self, *a, **kw: step(*a, **kw), optimizer)
    with pytest.warns(UserWarning, match="has been overridden"):
        for _ in range(3):
            optimizer.step()
            scheduler.step()


def test_the_right_order_warns_nothing_during_and_after_the_curriculum():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler = lerac()
        for _ in range(3 * K):
            scheduler.optimizer.step()
            scheduler.step()


def test_a_constant_epoch_gives_a_constant_rate():
    scheduler = lerac()
    seen = []
    for _ in range(5):
        scheduler.optimizer.step()
        with pytest.warns(UserWarning) as caught:
            scheduler.step(2)
        assert [str(w.message) for w in caught] == [EPOCH_DEPRECATION_WARNING]
        seen.append(rates(scheduler.optimizer))
    assert seen == [seen[0]] * 5 and seen[0] == pytest.approx(scheduler.rates_at(2))


def test_stepping_by_epoch_matches_stepping_in_order():
    closed = lerac()
    by_epoch = []
    for epoch in range(2 * K):
        closed.optimizer.step()
        with pytest.warns(UserWarning, match="epoch parameter"):
            closed.step(epoch)
        by_epoch.append(rates(closed.optimizer))
    chained = lerac()
    in_order = [rates(chained.optimizer)]
    for _ in range(2 * K - 1):
        chained.optimizer.step()
        chained.step()
        in_order.append(rates(chained.optimizer))
    assert sum(in_order, []) == pytest.approx(sum(by_epoch, []), rel=1e-6)


def test_get_last_lr_is_each_groups_rate_and_a_copy():
    scheduler = lerac()
    optimizer = scheduler.optimizer
    for _ in range(2 * K):  # through the curriculum and after it
        last = scheduler.get_last_lr()
        assert [float(x) for x in last] == rates(optimizer)
        assert isinstance(last[1], torch.Tensor)  # the type of the group's lr
        assert last[1] is not optimizer.param_groups[1]["lr"]
        before = rates(optimizer)
        last[1].mul_(100)  # the caller's copy: training keeps its rate
        assert rates(optimizer) == before
        optimizer.step()
        scheduler.step()


def test_resuming_by_last_epoch_without_initial_lr_is_a_key_error():
    with pytest.raises(KeyError, match="initial_lr"):
        lerac(two_layer_optimizer(), last_epoch=3)


def test_a_loaded_state_restores_every_attribute():
    scheduler = lerac()
    for _ in range(K - 2):
        scheduler.optimizer.step()
        scheduler.step()
    copy_ = lerac()
    copy_.load_state_dict(scheduler.state_dict())
    for key, value in scheduler.__dict__.items():
        if key != "optimizer":
            assert same(copy_.__dict__[key], value), key
    assert same(copy_.get_last_lr(), scheduler.get_last_lr())


@pytest.mark.parametrize("weights_only", [True, False])
def test_the_state_survives_torch_save_and_load(tmp_path, weights_only):
    scheduler = lerac()
    scheduler.optimizer.step()
    scheduler.step()
    torch.save(scheduler.state_dict(), tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=weights_only)
    assert same(loaded, scheduler.state_dict())
    again = lerac()
    again.load_state_dict(loaded)
    assert same(again.state_dict(), scheduler.state_dict())


def test_a_tensor_lr_changed_later_leaves_initial_lr_and_base_lrs_alone():
    lr = torch.tensor(0.1)
    optimizer = torch.optim.SGD([nn.Parameter(torch.randn(1))], lr=lr)
    scheduler = LeRaC(optimizer, K, 0.1, 1e-4)
    groups = copy.deepcopy(optimizer.param_groups)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
        lr.mul_(0.1)
        assert same(optimizer.param_groups[0]["initial_lr"], groups[0]["initial_lr"])
        assert same(scheduler.base_lrs, [0.1])
        assert scheduler.base_lrs[0] is not optimizer.param_groups[0]["initial_lr"]


def test_a_checkpointed_optimizer_resumes_by_last_epoch():
    model = nn.Linear(3, 3)
    groups = [{"params": [model.weight]}, {"params": [model.bias]}]
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    scheduler = LeRaC(optimizer, K, 1e-3, 1e-6)
    optimizer.step()
    scheduler.step()
    resumed = torch.optim.AdamW([{"params": [model.weight]}, {"params": [model.bias]}], lr=1e-3)
    resumed.load_state_dict(optimizer.state_dict())
    again = LeRaC(resumed, K, 1e-3, 1e-6, last_epoch=0)
    assert again.get_last_lr() == pytest.approx(rates(optimizer))


def test_a_scheduler_pickles_with_its_optimizer():
    scheduler = lerac()
    scheduler.optimizer.step()
    scheduler.step()
    copy_ = pickle.loads(pickle.dumps(scheduler))
    assert same(copy_.get_last_lr(), scheduler.get_last_lr()) and copy_.last_epoch == 1
    copy_.optimizer.step()
    copy_.step()
    assert rates(copy_.optimizer) == pytest.approx(copy_.rates_at(2))


def test_sequential_lr_hands_over_without_a_warning():
    optimizer = two_layer_optimizer()
    first = lerac(optimizer)
    then = ExponentialLR(optimizer, gamma=0.5)
    scheduler = SequentialLR(optimizer, [first, then], milestones=[K])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(K + 2):
            optimizer.step()
            scheduler.step()
    assert rates(optimizer) == pytest.approx([0.05 * 0.25, 0.5 * 0.25])


def test_a_chained_scheduler_meddling_during_the_curriculum_warns():
    optimizer = two_layer_optimizer()
    scheduler = ChainedScheduler([lerac(optimizer), ExponentialLR(optimizer, gamma=0.5)])
    with pytest.warns(UserWarning, match="ChainedScheduler .*SequentialLR"):
        for _ in range(2):
            optimizer.step()
            scheduler.step()


def test_a_non_optimizer_is_a_type_error():
    with pytest.raises(TypeError, match="LeRaC needs a torch.optim.Optimizer, got object"):
        LeRaC(object(), K, 0.1, 1e-4)


# HuggingFace's contract: save and reload half way ----------------------------------------


def rates_with_reload(make, steps: int, reload_at: int | None, path) -> list[list[float]]:
    """Every group's rate before each step; at ``reload_at`` the state goes through
    torch.save and torch.load (weights only, as the HF Trainer loads scheduler.pt) into
    the same scheduler."""
    scheduler = make()
    seen = []
    for step in range(steps):
        seen.append(rates(scheduler.optimizer))
        scheduler.optimizer.step()
        scheduler.step()
        if step == reload_at:
            torch.save(scheduler.state_dict(), path)
            scheduler.load_state_dict(torch.load(path, weights_only=True))
    return seen


def lerac_then_linear(update: str = "exponential") -> SequentialLR:
    optimizer = two_layer_optimizer()
    first = lerac(optimizer, update=update)
    decay = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=K)
    return SequentialLR(optimizer, [first, decay], milestones=[first.total_steps])


@pytest.mark.parametrize(
    "make",
    [
        lerac,
        lambda: lerac(update="linear"),
        lambda: lerac(update="step", step_every=2),
        lerac_then_linear,
    ],
    ids=["exponential", "linear", "step", "lerac-then-hf-linear"],
)
def test_a_state_saved_and_reloaded_half_way_gives_the_same_rates(make, tmp_path):
    steps = 2 * K + 2
    straight = rates_with_reload(make, steps, None, tmp_path / "s.pt")
    reloaded = rates_with_reload(make, steps, steps // 2, tmp_path / "s.pt")
    assert reloaded == straight
    assert straight[0] != straight[-1]  # the rates did move


# What a per-layer curriculum adds ------------------------------------------------------


def test_a_shared_tensor_lr_becomes_one_tensor_per_group():
    params = [nn.Parameter(torch.randn(2)) for _ in range(3)]
    optimizer = torch.optim.SGD([{"params": [p]} for p in params], lr=torch.tensor(0.1))
    scheduler = LeRaC(optimizer, K, 0.1, 1e-4)
    lrs = [group["lr"] for group in optimizer.param_groups]
    assert all(isinstance(lr, torch.Tensor) for lr in lrs)
    assert len({id(lr) for lr in lrs}) == 3
    for step in range(K + 1):
        assert rates(optimizer) == pytest.approx(scheduler.rates_at(step), rel=1e-6)
        optimizer.step()
        scheduler.step()
    # A group added later gets a tensor of its own too, not the optimizer's default.
    optimizer.add_param_group({"params": [nn.Parameter(torch.randn(2))]})
    with pytest.warns(UserWarning, match="added to the optimizer"):
        scheduler.step()
    assert optimizer.param_groups[-1]["lr"] is not optimizer.defaults["lr"]


def test_a_group_added_mid_curriculum_trains_at_its_own_rate():
    optimizer = two_layer_optimizer(tensor_lr=False)
    scheduler = lerac(optimizer)
    optimizer.step()
    scheduler.step()
    optimizer.add_param_group({"params": [nn.Parameter(torch.randn(2))], "lr": 0.02})
    with pytest.warns(UserWarning, match="1 param group.* outside the curriculum"):
        optimizer.step()
        scheduler.step()
    for step in range(2, K + 2):
        assert rates(optimizer)[:2] == pytest.approx(scheduler.rates_at(step))
        assert rates(optimizer)[2] == 0.02
        optimizer.step()
        scheduler.step()


def test_a_removed_group_is_refused():
    scheduler = lerac()
    scheduler.optimizer.param_groups.pop()
    with pytest.raises(ConfigError, match="1 param groups but LeRaC was built on 2"):
        scheduler.step()
