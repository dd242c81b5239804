"""The released code's recipe, exact: rate tables derived by hand from the released rules
(CroitoruAlin/LeRaC, experiments/r18_experiments.py and train/resnet_train.py), the
protocol keys, and real ResNet-18 runs on CIFAR-format data through the entrypoint."""

import csv
import json
import warnings
from dataclasses import dataclass

import pytest
import torch
from omegaconf import OmegaConf

from lerac.engine.rates import LearningRates
from lerac.engine.released import StepCurriculum
from lerac.engine.schedules import MultiStep
from lerac.errors import ConfigError
from lerac.layers import find_layers
from lerac.suite.build import build
from lerac.suite.models.resnet import ResNet18
from lerac.suite.protocol import KEYS, ProtocolWarning, resolve_protocol
from lerac.suite.recipes import RECIPES
from lerac.suite.train import main, train
from lerac.units import rate_units
from tests.conftest import TINY, compose_config

UNITS = ["conv1+bn1"] + [f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)] + ["fc"]

# By hand from the released rules. Start: the stem at initial_learning_rate 1e-1; the
# blocks from 1e-1 x 1e-1 = 1e-2, 10x lower per block while the running value is above
# min_lr; in floats 1e-1 x 1e-1 x ... reaches 1.0000000000000004e-05 after four steps,
# which is above min_lr = 1e-5, so one more step gives 1e-6 (CIFAR-10); with min_lr 1e-6
# the same happens one block later (CIFAR-100: 1e-7). The head (linear) starts at
# 1e-1 x clf_lr (1e-3: 1e-4; 1e-5: 1e-6). After epoch e < 20 every rate is x10 while the
# result stays below stop_lr = 0.11, so a rate 10^-a reaches 1e-1 in epoch a. Exponents
# of 10 per unit (order of UNITS), epoch by epoch:
CIFAR10_CURRICULUM = {
    1: [-1, -2, -3, -4, -5, -6, -6, -6, -6, -4],
    2: [-1, -1, -2, -3, -4, -5, -5, -5, -5, -3],
    3: [-1, -1, -1, -2, -3, -4, -4, -4, -4, -2],
    4: [-1, -1, -1, -1, -2, -3, -3, -3, -3, -1],
    5: [-1, -1, -1, -1, -1, -2, -2, -2, -2, -1],
    6: [-1] * 10,
}
CIFAR100_CURRICULUM = {
    1: [-1, -2, -3, -4, -5, -6, -7, -7, -7, -6],
    2: [-1, -1, -2, -3, -4, -5, -6, -6, -6, -5],
    3: [-1, -1, -1, -2, -3, -4, -5, -5, -5, -4],
    4: [-1, -1, -1, -1, -2, -3, -4, -4, -4, -3],
    5: [-1, -1, -1, -1, -1, -2, -3, -3, -3, -2],
    6: [-1, -1, -1, -1, -1, -1, -2, -2, -2, -1],
    7: [-1] * 10,
}
# Then at the start of epochs decay_epoch, +30, ... below stop_decay_epoch every rate above
# 1e-4 is divided by 10: CIFAR-10 35, 65, 95 (stop 96); CIFAR-100 36, 66, 96 (stop 97).
# 200 epochs (num_epochs), no early stopping.


def after_curriculum(first_milestone):
    def exponent(epoch):
        return -1 - sum(epoch >= first_milestone + 30 * i for i in range(3))

    return exponent


def table(curriculum, first_milestone, epochs=200):
    last = max(curriculum)
    return {
        e: curriculum[e] if e <= last else [after_curriculum(first_milestone)(e)] * 10
        for e in range(1, epochs + 1)
    }


def resolved(overrides):
    """The config a run of ``overrides`` trains with: composed, its protocol resolved."""
    return resolve_protocol(compose_config(overrides), overrides)[0]


def started(cfg, steps_per_epoch):
    """The regime and schedule of ``cfg`` started on a real width-4 ResNet-18."""
    regime, schedule = build(cfg.regime), build(cfg.schedule)
    model = ResNet18(num_classes=10, width=4)
    units = regime.units(find_layers(model, torch.randn(2, 3, 32, 32)), model)
    optimizer = build(cfg.optimizer, _partial_=True)(regime.param_groups(units))
    rates = LearningRates(
        optimizer,
        curriculum=regime.curriculum(optimizer, steps_per_epoch),
        schedule=schedule,
        steps_per_epoch=steps_per_epoch,
        max_epochs=cfg.trainer.max_epochs,
    )
    return rates, optimizer, [u.name for u in units]


def rates_by_epoch(owner, optimizer, epochs, steps_per_epoch):
    """Each epoch's rates per unit; asserts they stay the same inside the epoch."""
    seen, step = {}, 0
    for epoch in range(1, epochs + 1):
        for batch in range(steps_per_epoch):
            owner.before_step(step)
            rates = [g["lr"] for g in optimizer.param_groups]
            if batch == 0:
                seen[epoch] = rates
            assert rates == seen[epoch], (epoch, batch)
            optimizer.step()
            step += 1
    return seen


def check_table(seen, expected):
    for epoch, exponents in expected.items():
        assert seen[epoch] == pytest.approx([10.0**x for x in exponents], rel=1e-9), epoch


@pytest.mark.parametrize(
    "dataset, curriculum, milestone",
    [("cifar10", CIFAR10_CURRICULUM, 35), ("cifar100", CIFAR100_CURRICULUM, 36)],
)
def test_released_protocol_gives_resnet18_the_released_rates_for_200_epochs(
    dataset, curriculum, milestone
):
    cfg = resolved(["protocol=released", "regime=lerac", f"dataset={dataset}"])
    assert cfg.schedule.id == "multistep" and cfg.trainer.max_epochs == 200
    assert cfg.trainer.early_stopping_patience == 200  # never reached
    owner, optimizer, names = started(cfg, steps_per_epoch=3)
    assert names == UNITS
    assert owner.curriculum_steps == (max(curriculum) - 1) * 3  # the last rise
    check_table(rates_by_epoch(owner, optimizer, 200, 3), table(curriculum, milestone))


@pytest.mark.parametrize(
    "dataset, curriculum", [("cifar10", CIFAR10_CURRICULUM), ("cifar100", CIFAR100_CURRICULUM)]
)
def test_regime_lerac_step_alone_gives_the_released_curriculum(dataset, curriculum):
    cfg = compose_config(["regime=lerac_step", f"dataset={dataset}"])
    owner, optimizer, names = started(cfg, steps_per_epoch=4)
    assert names == UNITS and cfg.schedule.id == "plateau"  # the paper's after it
    check_table(rates_by_epoch(owner, optimizer, max(curriculum), 4), curriculum)
    assert not owner.in_curriculum(owner.curriculum_steps)


def test_four_updates_per_epoch_at_the_released_batches_tiny_imagenet():
    # train_tinyimagenet: min_lr 1e-7 (floor 1e-8 by the float step), clf_lr 1e-7 (head
    # 1e-1 x 1e-7 = 1e-8), update_per_epoch 4. With L = 10 batches the in-epoch points are
    # after batches 10//4 = 2, 10//2 = 5 and 3*10//4 = 7, then the end of the epoch (10).
    cfg = compose_config(["regime=lerac_step", "dataset=tiny_imagenet"])
    owner, optimizer, _ = started(cfg, steps_per_epoch=10)
    start = [-1, -2, -3, -4, -5, -6, -7, -8, -8, -8]
    updates_before = {0: 0, 1: 0, 2: 1, 4: 1, 5: 2, 6: 2, 7: 3, 9: 3, 10: 4, 12: 5, 15: 6}
    for step in range(16):
        owner.before_step(step)
        if step in updates_before:
            done = updates_before[step]
            expected = [10.0 ** min(a + done, -1) for a in start]
            assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(expected), step
    # The 7 rises of the 1e-8 units end with the 7th point: after batch 7 of epoch 2.
    assert owner.curriculum_steps == 17


def test_protocol_released_lerac_is_regime_lerac_step():
    released = resolved(["protocol=released", "dataset=cifar10"])
    step = compose_config(["regime=lerac_step", "dataset=cifar10"])
    a = OmegaConf.to_container(released.regime, resolve=True)
    b = OmegaConf.to_container(step.regime, resolve=True)
    assert a.pop("id") == "lerac" and b.pop("id") == "lerac_step"
    assert a == b


@dataclass
class HeldRates:
    """A curriculum (lerac.engine.rates.Curriculum) holding ``rates`` for ``total_steps``."""

    total_steps: int
    rates: list[float]

    def rates_at(self, step: int) -> list[float]:
        return list(self.rates)


def test_multistep_divides_only_rates_above_the_threshold_after_the_curriculum():
    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": [layer.weight]}, {"params": [layer.bias]}], lr=0.1)
    ends = HeldRates(total_steps=2, rates=[0.1, 1e-4])  # the rates a curriculum ended on
    schedule = MultiStep([3, 5], above=1e-4)
    owner = LearningRates(
        optimizer, curriculum=ends, schedule=schedule, steps_per_epoch=2, max_epochs=6
    )
    seen = []
    for step in range(12):
        owner.before_step(step)
        seen.append([g["lr"] for g in optimizer.param_groups])
    # Epochs 1-2 at 0.1; the start of epoch 3 (step 4): /10; of epoch 5 (step 8): /10.
    assert seen[0] == [0.1, 1e-4] and seen[3] == [0.1, 1e-4]
    assert seen[4] == pytest.approx([1e-2, 1e-4]) and seen[8] == pytest.approx([1e-3, 1e-4])
    state = schedule.state_dict()
    again = MultiStep([3, 5], above=1e-4)
    owner = LearningRates(
        optimizer, curriculum=ends, schedule=again, steps_per_epoch=2, max_epochs=6
    )
    owner.load_state_dict(state)
    owner.before_step(9)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-4])


def test_bert_scope_only_the_head_starts_low_and_rises_after_every_epoch():
    # bert_experiments.py: body at 5e-5, pooler + classifier at 5e-5 x clf_lr 1e-3 = 5e-8,
    # x10 after every epoch (bert_train.py) while below stop_lr 4.9e-4: 5e-7, 5e-6, 5e-5.
    recipe = RECIPES[("bert_large", "qnli")]
    regime = StepCurriculum(
        recipe.lr_first,
        recipe.floor,
        recipe.head_lr,
        scope="head",
        updates_per_epoch=1,
        rise_until=3,
        end_rise_until=None,
        cap_ratio=recipe.cap_ratio,
    )
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    optimizer = torch.optim.Adamax([{"params": [p]} for p in params], lr=5e-5)
    owner = LearningRates(
        optimizer,
        curriculum=regime.curriculum(optimizer, steps_per_epoch=2),
        steps_per_epoch=2,
        max_epochs=5,
    )
    by_epoch = {1: 5e-8, 2: 5e-7, 3: 5e-6, 4: 5e-5, 5: 5e-5}
    for epoch, head in by_epoch.items():
        owner.before_step((epoch - 1) * 2)
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-5, 5e-5, head])
    assert owner.curriculum_steps == 6


def test_block_units_on_a_transformer_name_blocks_and_merged_leaves():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16,
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    inputs = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3)}
    units = rate_units(model, find_layers(model, inputs), "block")
    assert [u.name for u in units] == [
        "bert.embeddings",
        "bert.encoder.layer.0",
        "bert.encoder.layer.1",
        "bert.pooler.dense+classifier",
    ]
    assert sum(u.numel for u in units) == sum(p.numel() for p in model.parameters())


def test_no_recipe_keeps_the_paper_and_says_so():
    cfg = compose_config(["protocol=released", "model=lstm", "dataset=boolq"])
    applied, protocol = resolve_protocol(cfg)
    with pytest.warns(ProtocolWarning, match="no recipe for model=lstm"):
        protocol.warn()
    assert protocol.selected_on == "val"
    assert all(applied.protocol[key] == "paper" for key in KEYS)
    assert applied.regime == cfg.regime and applied.schedule == cfg.schedule


def test_released_composes_for_every_model_and_data_set_of_tables_2_to_4():
    from lerac.suite.grid import expand, load_experiment

    cells = set()
    for table in ("table2", "table3", "table4"):
        for params in load_experiment(table).blocks.values():
            for job in expand(params):
                items = dict(o.split("=", 1) for o in job)
                cells.add((items["model"], items["dataset"]))
    assert len(cells) >= 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProtocolWarning)
        for model, dataset in sorted(cells):
            cfg = resolved([f"model={model}", f"dataset={dataset}", "protocol=released"])
            OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
            if (model, dataset) in RECIPES:
                assert cfg.trainer.max_epochs == RECIPES[(model, dataset)].epochs


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


RUN = TINY + ["trainer.batch_size=25", "regime=lerac"]


def test_released_resnet18_run_on_cifar_through_the_entrypoint(cifar_root, tmp_path):
    cfg = compose_config(
        RUN
        + [
            "dataset=cifar10",
            f"paths.data_dir={cifar_root}",
            "protocol=released",
            "protocol.time_scale=0.01",  # 200 epochs x 0.01 = 2
        ]
    )
    with pytest.warns(ProtocolWarning, match="TEST split"):
        metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert metrics["selected_on"] == "test"
    # All 5 x 20 training images, the 30 test images stand in for validation.
    assert metrics["data_sizes"] == {"train": 100, "val": 30, "test": 30}
    assert metrics["test_acc"] == pytest.approx(metrics["val_acc"])  # selected on test
    layers = read_csv(tmp_path / "run" / "layers.csv")
    assert [r["name"] for r in layers] == UNITS
    assert [float(r["initial_lr"]) for r in layers] == pytest.approx(
        [10.0**x for x in CIFAR10_CURRICULUM[1]]
    )
    history = read_csv(tmp_path / "run" / "history.csv")
    assert [float(r["lr_min"]) for r in history] == pytest.approx([1e-6, 1e-5])
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.optimizer.weight_decay == 1e-4 and saved.schedule.id == "multistep"
    assert saved.regime._target_ == "lerac.engine.released.StepCurriculum"
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["selected_on"] == "test"


def test_paper_run_selects_on_validation(cifar_root, tmp_path):
    cfg = compose_config(RUN + ["dataset=cifar10", f"paths.data_dir={cifar_root}"])
    metrics = train(cfg, tmp_path / "run")
    assert metrics["selected_on"] == "val"
    assert metrics["data_sizes"] == {"train": 90, "val": 10, "test": 30}


def test_full_train_split_without_test_selection_is_one_error_line(
    cifar_root, tmp_path, monkeypatch, capsys
):
    args = RUN + [
        "dataset=cifar10",
        f"paths.data_dir={cifar_root}",
        "protocol.train_split=released",
        f"paths.output_dir={tmp_path}",
    ]
    monkeypatch.setattr("sys.argv", ["lerac-train", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: protocol.train_split=released")
    with pytest.raises(ConfigError, match="protocol.selection=released"):
        resolved(args)


def test_each_protocol_option_is_the_paper_with_its_key_switched():
    paper = OmegaConf.to_container(compose_config(["protocol=paper"]).protocol)
    released = OmegaConf.to_container(compose_config(["protocol=released"]).protocol)
    assert all(paper[k] == "paper" and released[k] == "released" for k in KEYS)
    for key in KEYS:
        option = OmegaConf.to_container(compose_config([f"protocol={key}"]).protocol)
        changed = {k for k in KEYS if option[k] != paper[k]}
        # All of train leaves nothing to select on but test: the two go together.
        assert changed == ({key, "selection"} if key == "train_split" else {key}), key
        assert option["id"] == key


def test_cbs_under_the_released_protocol_takes_the_cbs_code_schedule_and_decay():
    cfg = resolved(["regime=cbs", "dataset=cifar10", "protocol=after_curriculum"])
    assert list(cfg.schedule.milestones) == [31, 61, 91] and cfg.schedule.above == 0.0
    cfg = resolved(["regime=cbs", "dataset=cifar10", "protocol=weight_decay"])
    assert cfg.optimizer.weight_decay == 5e-4
    cfg = resolved(["regime=lerac", "dataset=cifar10", "protocol=weight_decay"])
    assert cfg.optimizer.weight_decay == 1e-4


def test_time_scale_shortens_epochs_and_milestones_half_up():
    cfg = resolved(["dataset=cifar10", "protocol=after_curriculum", "protocol.time_scale=0.1"])
    assert cfg.trainer.max_epochs == 20 and list(cfg.schedule.milestones) == [4, 7, 10]


def test_bad_protocol_values_are_refused():
    with pytest.raises(ConfigError, match="protocol.rates='yes' is not an option"):
        resolved(["protocol.rates=yes"])
    with pytest.raises(ConfigError, match="protocol.recipe='resnet18/mnist' is not a recipe"):
        resolved(["protocol=rates", "protocol.recipe=resnet18/mnist"])
    with pytest.raises(ConfigError, match="schedule.milestones"):
        MultiStep([0, 5])


def test_reports_mark_runs_selected_on_test(cifar_root, tmp_path):
    from lerac.suite.report import format_table, scan_runs, summarize

    base = RUN + ["dataset=cifar10", f"paths.data_dir={cifar_root}"]
    train(compose_config(base + ["tag=paper"]), tmp_path / "paper")
    with pytest.warns(ProtocolWarning):
        train(compose_config(base + ["protocol=selection", "tag=selection"]), tmp_path / "sel")
    rows = {r["tag"]: r for r in summarize(scan_runs(tmp_path)[0])}
    assert rows["paper"]["selected_on"] == "val" and rows["selection"]["selected_on"] == "test"
    table = format_table(list(rows.values()))
    assert "lerac [selection] (selected on test)" in table
    assert "lerac [paper] (selected" not in table


def test_protocol_summary_shifts_and_margin_by_hand():
    from lerac.suite.protocol_report import summary_rows

    def run(tag, regime, seed, acc):
        return dict(dataset="digits", tag=tag, regime=regime, seed=seed, test_acc=acc)

    runs = [
        run("paper", "conventional", 0, 90.0), run("paper", "conventional", 1, 92.0),
        run("paper", "lerac", 0, 91.0), run("paper", "lerac", 1, 95.0),
        run("rates", "conventional", 0, 90.0), run("rates", "conventional", 1, 92.0),
        run("rates", "lerac", 0, 93.0), run("rates", "lerac", 1, 94.0),
    ]  # fmt: skip
    paper, rates = summary_rows(runs, ["paper", "rates"])
    assert paper["margin_mean"] == pytest.approx(2.0)  # (1 + 3) / 2
    assert rates["lerac_mean"] == pytest.approx(93.5) and rates["lerac_shift"] == pytest.approx(0.5)
    assert rates["conventional_shift"] == pytest.approx(0.0)
    assert rates["margin_mean"] == pytest.approx(2.5) and rates["margin_std"] == pytest.approx(
        0.7071, abs=1e-4
    )
    assert rates["seeds"] == 2 and rates["selected_on"] == "val"


def test_rate_units_alone_gives_the_paper_curriculum_one_rate_per_block():
    from lerac.curriculum import initial_rates

    cfg = resolved(["protocol=rate_units", "dataset=cifar10"])
    assert cfg.regime._target_ == "lerac.engine.regimes.LearningRateCurriculum"
    _, optimizer, names = started(cfg, steps_per_epoch=2)
    assert names == UNITS  # 10 units, Eq. 6 spread over them from 1e-1 to 1e-8
    rates = [g["lr"] for g in optimizer.param_groups]
    assert rates == pytest.approx(initial_rates(10, 1e-1, 1e-8), rel=1e-9)


def test_init_key_scales_images_to_minus_one_one_and_uses_the_released_init(cifar_root):
    args = ["protocol=init", "dataset=cifar10", f"paths.data_dir={cifar_root}"]
    cfg, protocol = resolve_protocol(compose_config(args), args)
    splits = protocol.adapt_splits(build(cfg.dataset))
    assert torch.equal(splits.mean, torch.full((1, 3, 1, 1), 127.5))
    assert torch.equal(splits.std, torch.full((1, 3, 1, 1), 127.5))
    batch = next(iter(splits.loaders(8, "cpu")[0]))[0]
    assert batch.min() >= -1 and batch.max() <= 1 and batch.min() < -0.9 and batch.max() > 0.9
    torch.manual_seed(0)
    model = protocol.adapt_model(ResNet18(num_classes=10, width=64))
    assert torch.equal(model.fc.bias, torch.zeros(10))
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    # 64 -> 128 channels: fan_in 64 * 3 * 3 (released), not fan_out 128 * 3 * 3 (paper's).
    conv = model.layer2[0].conv1.weight
    assert conv.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    paper, protocol = resolve_protocol(compose_config(args[1:]), args[1:])
    assert not torch.equal(protocol.adapt_splits(build(paper.dataset)).mean, splits.mean)


def test_an_explicit_override_of_a_protocol_value_wins_and_the_note_says_so():
    args = ["protocol=released", "dataset=cifar10", "trainer.max_epochs=37"]
    cfg, protocol = resolve_protocol(compose_config(args), args)
    assert cfg.trainer.max_epochs == 37
    # The protocol's other values stand: its schedule, no early stopping.
    assert cfg.schedule.id == "multistep" and cfg.trainer.early_stopping_patience == 200
    with pytest.warns(ProtocolWarning) as notes:
        protocol.warn()
    assert (
        "protocol: trainer.max_epochs=37 is set explicitly and stays; "
        "protocol.after_curriculum=released would set 200 (CroitoruAlin/LeRaC, "
        "experiments/r18_experiments.py train_cifar10: num_epochs)"
    ) in [str(n.message) for n in notes]
    # The same config without that override on the command line: the recipe's epochs.
    assert resolved(args[:2]).trainer.max_epochs == 200
    assert resolve_protocol(compose_config(args))[0].trainer.max_epochs == 200


def test_overrides_inside_a_replaced_regime_and_a_chosen_schedule_stay():
    args = [
        "protocol=released",
        "dataset=cifar10",
        "regime.units=module",  # a key the released rule has: stays
        "regime.k=3",  # regime=lerac's curriculum length: the released rule has none
        "schedule=plateau",  # a chosen schedule: after_curriculum gives way
    ]
    cfg, protocol = resolve_protocol(compose_config(args), args)
    assert cfg.regime._target_ == "lerac.engine.released.StepCurriculum"
    assert cfg.regime.units == "module" and "k" not in cfg.regime
    assert cfg.schedule.id == "plateau" and cfg.trainer.max_epochs == 200
    notes = "\n".join(protocol.notes)
    assert "regime.units=module is set explicitly and stays; protocol.rate_units" in notes
    assert "regime.k=3 is dropped: lerac.engine.released.StepCurriculum takes no k" in notes
    assert (
        "schedule=plateau is set explicitly and stays; protocol.after_curriculum=released "
        "would set multistep (CroitoruAlin/LeRaC, experiments/r18_experiments.py "
        "train_cifar10: decay_epoch 35, decay_step 30, stop_decay_epoch 96)"
    ) in notes
    assert build(cfg.regime).unit_kind == "module"
    # regime=lerac is what protocol.rates acts on, not an override of it.
    assert "regime=lerac is set explicitly" not in notes


def test_every_protocol_change_names_where_the_released_code_sets_it():
    _, protocol = resolve_protocol(compose_config(["protocol=released", "dataset=cifar100"]))
    keys = [c.key for c in protocol.changes]
    assert keys == [
        "regime",
        "regime.units",
        "regime.scope",
        "trainer.max_epochs",
        "trainer.early_stopping_patience",
        "schedule",
        "optimizer.weight_decay",
    ]
    for change in protocol.changes:
        assert change.where.startswith("CroitoruAlin/LeRaC, ") and ".py" in change.where
    for recipe in RECIPES.values():
        assert all(recipe.values[key].source for key in recipe.values)


def test_the_command_line_wins_over_the_protocol_through_the_entrypoint(tmp_path, monkeypatch):
    # ResNet-18 CIFAR-10's recipe on digits at x0.02: 200 -> 4 epochs, milestones 1, 1, 2;
    # TINY's trainer.max_epochs=2 on the command line wins.
    args = [
        *TINY,
        "protocol=after_curriculum",
        "protocol.recipe=resnet18/cifar10",
        "protocol.time_scale=0.02",
        f"paths.output_dir={tmp_path}",
    ]
    monkeypatch.setattr("sys.argv", ["lerac-train", *args])
    with pytest.warns(ProtocolWarning) as notes:
        main()
    assert any("trainer.max_epochs=2 is set explicitly" in str(n.message) for n in notes)
    run = tmp_path / "digits_resnet18_lerac_seed0"
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.trainer.max_epochs == 2 and list(saved.schedule.milestones) == [1, 1, 2]
