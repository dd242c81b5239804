"""Each example under examples/ runs, on tiny models and data the examples make: the plain
loop and the timm model follow Eq. 8 for k steps; the HF Trainer and Lightning runs resume
from a checkpoint taken mid-curriculum with the same rates; in Lightning each plateau cut
after the curriculum holds for its whole epoch."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from lerac import initial_rates

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def eq8(start: float, target: float, step: int, k: int) -> float:
    """Eq. 8 with c = 10, written as the ratio it reduces to."""
    return start * (target / start) ** (min(step, k) / k)


def test_plain_loop_follows_eq8_then_cosine():
    plain = example("plain_loop")
    seen = plain.main(["--epochs", "4", "--k", "2", "--cbs-sigma", "1.0"])
    model, data = plain.small_cnn(), plain.batches()
    ranks = [g["layer_rank"] for g in plain.layer_param_groups(model, data[0][0], 5e-4)]
    start = initial_rates(max(ranks) + 1, 0.1, 1e-6)  # conv, norm, conv, linear
    k = 2 * len(data)
    for step in range(k + 1):
        expected = [eq8(start[rank], 0.1, step, k) for rank in ranks]
        assert seen[step] == pytest.approx(expected, rel=1e-9), step
    cosine = [0.05 * (1 + math.cos(math.pi * t / k)) for t in range(k)]
    assert [rates[0] for rates in seen[k:]] == pytest.approx(cosine, rel=1e-9)


@pytest.mark.parametrize("layer_decay", [None, 0.75])
def test_timm_model_follows_eq8(layer_decay):
    timm_example = example("timm_model")
    lr_first = 1e-3 if layer_decay else 0.1
    lerac, seen = timm_example.train("resnet10t", 2, 3, layer_decay, lr_first)
    groups = lerac.optimizer.param_groups
    ranks = sorted({g["layer_rank"] for g in groups})
    position = [ranks.index(g["layer_rank"]) for g in groups]
    start = initial_rates(len(ranks), lr_first, 1e-6)
    targets = [0.1 * g.get("lr_scale", 1.0) for g in groups]
    # Our groups: every module with parameters; timm's: stem, 4 stages, head.
    assert len(ranks) > 10 if layer_decay is None else len(ranks) == 6
    assert (layer_decay is None) == (targets == [0.1] * len(groups))
    k = lerac.total_steps
    assert k == 6
    for step in range(len(seen)):
        expected = [eq8(start[p], t, step, k) for p, t in zip(position, targets)]
        assert seen[step] == pytest.approx(expected, rel=1e-9), step


@pytest.fixture(scope="module")
def hf_full(tmp_path_factory):
    return example("hf_trainer").main(["--out", str(tmp_path_factory.mktemp("hf_full"))])


def test_hf_trainer_resumes_mid_curriculum_with_the_same_rates(hf_full, tmp_path):
    hf = example("hf_trainer")
    full = hf_full
    assert sorted(full) == list(range(1, 13))  # 3 epochs of 4 steps
    # The rates each step trained with: k = 8 steps, so step 9 is the first at the base rate.
    assert full[8]["lr/classifier"] < full[9]["lr/classifier"] == 1e-3
    assert "lr/classifier.no_decay" not in full[4]  # one rate per layer
    assert full[11]["lr/classifier"] == pytest.approx(0.5e-3)  # then HF's linear decay
    interrupted = hf.main(["--out", str(tmp_path), "--stop-at", "4"])
    assert sorted(interrupted) == [1, 2, 3, 4] and (tmp_path / "checkpoint-4").is_dir()
    resumed = hf.main(["--out", str(tmp_path), "--resume"])
    assert sorted(resumed) == list(range(1, 13))  # steps 5-12 trained after the resume
    assert {s: resumed[s] for s in range(5, 13)} == {s: full[s] for s in range(5, 13)}
    with pytest.raises(SystemExit) as done:  # nothing left: refused, not 0 steps trained
        hf.main(["--out", str(tmp_path), "--resume"])
    assert done.value.code == 2


def test_the_hf_example_is_a_plain_trainer_script_with_two_lines_changed(hf_full, tmp_path):
    source = (EXAMPLES / "hf_trainer.py").read_text().splitlines()
    changed = [i for i, line in enumerate(source) if line.endswith(("# LeRaC 1/2", "# LeRaC 2/2"))]
    assert len(changed) == 2
    plain = list(source)
    plain[changed[0]] = "from transformers import Trainer"
    del plain[changed[1]]  # the lerac={...} argument
    path = tmp_path / "hf_plain.py"
    path.write_text("\n".join(plain))
    spec = importlib.util.spec_from_file_location("hf_plain", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trainer = module.build(str(tmp_path / "out"))
    assert type(trainer).__name__ == "Trainer"
    trainer.train()
    learning_rates = [row["learning_rate"] for row in trainer.state.log_history if "loss" in row]
    # Plain HF: one rate for every layer, decaying linearly from the first step.
    assert learning_rates[:3] == pytest.approx([1e-3, 1e-3 * 11 / 12, 1e-3 * 10 / 12])
    assert len(trainer.optimizer.param_groups) == 2  # HF's own decay and no-decay groups
    assert hf_full[1]["lr/bert.embeddings.word_embeddings"] > 100 * hf_full[1]["lr/classifier"]


def tiny_trainer(tmp_path, **arguments):
    """The example's tiny BERT and data in a LeRaCTrainer with these TrainingArguments."""
    from transformers import TrainingArguments

    from lerac.integrations.hf import LeRaCTrainer

    hf = example("hf_trainer")
    options = dict(output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=8)
    options |= dict(learning_rate=1e-3)
    options |= dict(report_to="none", use_cpu=True, save_strategy="no", logging_steps=1)
    return LeRaCTrainer(
        model=hf.tiny_bert(),
        args=TrainingArguments(**(options | arguments)),
        train_dataset=hf.TokenTask(),
        eval_dataset=hf.TokenTask(8, seed=1),
        lerac={"k_epochs": 1, "lr_first": 1e-3, "lr_last": 1e-7},
    )


def test_lerac_trainer_builds_the_optimizer_the_arguments_name(tmp_path):
    from lerac.integrations.hf import lerac_optimizers

    trainer = tiny_trainer(tmp_path, optim="sgd", learning_rate=1e-2, weight_decay=0.01)
    trainer.train()
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(inner) is torch.optim.SGD
    groups = inner.param_groups
    assert len(groups) > 20 and groups[0]["name"] == "bert.embeddings.word_embeddings"
    assert {g["weight_decay"] for g in groups} == {0.01, 0.0}
    # The older helper honours optim= too (it built AdamW whatever the arguments said).
    hf = example("hf_trainer")
    args = trainer.args.__class__(output_dir=str(tmp_path), optim="adafactor", report_to="none")
    inputs = {"input_ids": hf.TokenTask().ids[:2]}
    optimizer, _ = lerac_optimizers(
        hf.tiny_bert(), args, inputs, train_batches=4, k_epochs=1, lr_first=1e-5, lr_last=1e-8
    )
    assert type(optimizer).__name__ == "Adafactor"


def test_lerac_trainer_refuses_a_warm_up(tmp_path):
    from lerac.errors import ConfigError

    trainer = tiny_trainer(tmp_path, warmup_steps=2)
    with pytest.raises(ConfigError, match="the curriculum is the warm-up"):
        trainer.train()


def test_lerac_trainer_hands_over_to_a_plateau_counted_from_the_curriculum_end(tmp_path):
    from lerac.plateau import PlateauAfterCurriculum

    trainer = tiny_trainer(
        tmp_path,
        lr_scheduler_type="reduce_lr_on_plateau",
        lr_scheduler_kwargs={"patience": 0, "threshold": 10.0, "threshold_mode": "abs"},
        eval_strategy="epoch",
    )
    trainer.train()
    assert isinstance(trainer.lr_scheduler, PlateauAfterCurriculum)
    rates = {
        row["step"]: row["lr/classifier"] for row in trainer.state.log_history if "loss" in row
    }
    # k = 4 steps (epoch 0); the end of epoch 0 sets the best loss; epoch 1's end cuts.
    assert rates[1] < rates[4] < 1e-3
    assert [rates[s] for s in (5, 8)] == pytest.approx([1e-3, 1e-3])
    assert [rates[s] for s in (9, 12)] == pytest.approx([1e-4, 1e-4])


NEVER_CUTS = {"factor": 0.1, "patience": 100}


@pytest.fixture(scope="module")
def lightning_full(tmp_path_factory):
    out = tmp_path_factory.mktemp("lightning_full")
    return out, example("lightning_module").fit(str(out), epochs=3, plateau=NEVER_CUTS)


def test_lightning_resumes_mid_curriculum_with_the_same_rates(lightning_full, tmp_path):
    out, full = lightning_full
    pl = example("lightning_module")
    resumed = pl.fit(str(tmp_path), epochs=3, resume=str(out / "epoch=0.ckpt"), plateau=NEVER_CUTS)
    by_step = {step: rates for _epoch, step, rates in full.seen}
    assert [step for _e, step, _r in resumed.seen] == list(range(5, 15))
    for _epoch, step, rates in resumed.seen:
        assert rates == by_step[step], step
    assert by_step[5][-1] < 0.1 and by_step[10] == [0.1] * len(by_step[10])  # k = 10 steps
    logged = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    curves = [column for column in logged.split(",") if "/" in column]
    assert curves == ["lerac/conv", "lerac/head", "lerac/norm"]  # one curve per layer


def test_lightning_plateau_counts_from_the_end_of_the_curriculum(tmp_path):
    pl = example("lightning_module")
    # No loss ever counts as an improvement. The curriculum is epochs 0-1: the end of epoch
    # 1 sets the best loss, each later epoch end cuts, and each cut lasts its whole epoch.
    never_better = {"factor": 0.1, "patience": 0, "threshold": 10.0, "threshold_mode": "abs"}
    seen = pl.fit(str(tmp_path), epochs=5, plateau=never_better).seen
    per_epoch: dict[int, list[list[float]]] = {}
    for epoch, _step, rates in seen:
        per_epoch.setdefault(epoch, []).append(rates)
    for epoch, rate in ((2, 0.1), (3, 1e-2), (4, 1e-3)):
        assert len(per_epoch[epoch]) == pl.BATCHES
        for rates in per_epoch[epoch]:
            assert rates == pytest.approx([rate] * len(rates), rel=1e-9), epoch


def test_examples_need_only_their_extra():
    # The plain loop imports nothing but torch and lerac.
    source = (EXAMPLES / "plain_loop.py").read_text()
    imports = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imports <= {"__future__", "argparse", "json", "torch", "lerac"}
    assert torch.__version__  # the one dependency is there


# timm's train loop ------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_full():
    return example("timm_train").train("resnet10t", epochs=5, k=2, sched="cosine")


def test_timm_train_runs_lerac_then_cosine_through_timms_protocol(timm_full):
    from timm.scheduler import CosineLRScheduler
    from timm.scheduler.scheduler import Scheduler

    scheduler, seen = timm_full
    assert isinstance(scheduler, Scheduler) and isinstance(scheduler.after, CosineLRScheduler)
    groups = scheduler.optimizer.param_groups
    ranks = sorted({g["layer_rank"] for g in groups})
    start = initial_rates(len(ranks), 0.1, 1e-6)
    k = scheduler.total_steps
    assert k == 6 and sorted(seen) == list(range(15))  # 3 updates an epoch, 5 epochs
    for update in range(k + 1):  # Eq. 8 per update, then the base rate
        expected = [eq8(start[ranks.index(g["layer_rank"])], 0.1, update, k) for g in groups]
        assert seen[update] == pytest.approx(expected, rel=1e-9), update
    # Cosine over the 3 epochs left, from its time 0 at the first epoch after the curriculum.
    for epoch, t in ((2, 0), (3, 1), (4, 2)):
        cosine = 0.05 * (1 + math.cos(math.pi * t / 3))
        for update in range(3 * epoch, 3 * epoch + 3):
            assert seen[update] == pytest.approx([cosine] * len(groups), rel=1e-9), update


@pytest.mark.parametrize("start_epoch", [1, 3], ids=["mid-curriculum", "after-it"])
def test_timm_resume_by_start_epoch_gives_the_same_rates(timm_full, start_epoch):
    _scheduler, full = timm_full
    _scheduler, resumed = example("timm_train").train(epochs=5, k=2, start_epoch=start_epoch)
    assert sorted(resumed) == list(range(3 * start_epoch, 15))
    assert resumed == {update: full[update] for update in resumed}


def test_timm_plateau_counts_from_the_end_of_the_curriculum():
    from timm.scheduler import PlateauLRScheduler

    from lerac.integrations.timm import LeRaCScheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    with pytest.warns(FutureWarning):  # timm deprecates its plateau scheduler
        plateau = PlateauLRScheduler(optimizer, decay_rate=0.1, patience_t=1, mode="min")
    scheduler = LeRaCScheduler(optimizer, 4, 0.1, 1e-4, updates_per_epoch=2, after=plateau)
    rate_per_epoch = []
    for epoch in range(7):  # a flat loss; the curriculum is epochs 0-1
        rate_per_epoch.append(optimizer.param_groups[0]["lr"])
        for update in range(2 * epoch + 1, 2 * epoch + 3):
            scheduler.step_update(update, 1.0)
        scheduler.step(epoch + 1, 1.0)
    # Epoch 2 is the plateau's time 0; the ends of epochs 2 (best), 3 and 4 (bad) then cut.
    assert rate_per_epoch == pytest.approx([0.1] * 5 + [0.01] * 2)


def test_timm_scheduler_refuses_what_it_cannot_hand_over_to():
    from timm.scheduler import CosineLRScheduler

    from lerac.errors import ConfigError
    from lerac.integrations.timm import LeRaCScheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    warm = CosineLRScheduler(optimizer, t_initial=5, warmup_t=2)
    with pytest.raises(ConfigError, match="the curriculum is the warm-up"):
        LeRaCScheduler(optimizer, 4, 0.1, 1e-4, updates_per_epoch=2, after=warm)
    other = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    cosine = CosineLRScheduler(optimizer, t_initial=5)
    with pytest.raises(ConfigError, match="another optimizer"):
        LeRaCScheduler(other, 4, 0.1, 1e-4, updates_per_epoch=2, after=cosine)
    with pytest.raises(ConfigError, match="updates_per_epoch must be a positive integer"):
        LeRaCScheduler(optimizer, 4, 0.1, 1e-4, updates_per_epoch=0)
