"""The report beside the paper: the transcribed tables, McNemar's test, and cells built
from run directories as a crash or a preemption leaves them."""

import json
from pathlib import Path

import pytest

from lerac.suite.grid import GridRun, enumerate_runs, load_experiment
from lerac.suite.report import (
    build_table,
    cell_tag,
    format_markdown,
    mcnemar,
    read_paper_table,
    scan_runs,
)

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "results" / "paper"
TABLES = {2: 45, 3: 18, 4: 12, 5: 15, 9: 23, 10: 12, 11: 9, 12: 6, 13: 4}


def test_mcnemar_exact_on_a_hand_computed_case():
    # 10 examples; A right and B wrong on 1, A wrong and B right on 9, both right on the
    # rest of the examples: p = 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024.
    targets = [0] * 14
    a = [0] + [1] * 9 + [0] * 4
    b = [1] + [0] * 9 + [0] * 4
    assert mcnemar(targets, a, b) == (1, 9, pytest.approx(22 / 1024))
    assert mcnemar(targets, b, a)[2] == pytest.approx(22 / 1024)  # symmetric
    assert mcnemar([1, 2], [1, 2], [1, 2]) == (0, 0, 1.0)  # never disagree


@pytest.mark.parametrize("table, rows", TABLES.items())
def test_paper_tables_parse_with_a_citation(table, rows):
    path = PAPER / f"table{table}.csv"
    assert path.read_text().startswith(f"# Paper Table {table} (")
    parsed = read_paper_table(path)
    assert len(parsed) == rows
    for row in parsed:
        assert float(row["mean"]) > float(row["std"]) >= 0
        assert len(row["mean"].split(".")[1]) == 2  # as printed: two decimals


def _cell(table, model, dataset, regime, tag=""):
    rows = read_paper_table(PAPER / f"table{table}.csv")
    (row,) = [
        r
        for r in rows
        if (r["model"], r["dataset"], r["regime"], r["tag"]) == (model, dataset, regime, tag)
    ]
    return row["mean"], row["std"]


def test_paper_tables_match_the_paper_on_spot_checks():
    assert _cell(2, "resnet18", "cifar10", "conventional") == ("89.20", "0.43")
    assert _cell(2, "wide_resnet50", "tiny_imagenet", "cbs") == ("48.30", "1.53")
    assert _cell(2, "cvt13", "imagenet200", "lerac") == ("70.87", "0.13")
    assert _cell(2, "cvt13_pretrained", "cifar100", "lerac") == ("78.93", "0.05")
    assert not [
        r
        for r in read_paper_table(PAPER / "table2.csv")
        if r["model"] == "cvt13_pretrained" and r["dataset"] == "imagenet200"
    ]
    assert _cell(3, "lstm", "rte", "conventional") == ("54.12", "1.60")
    assert _cell(4, "densenet121", "esc50", "lerac") == ("90.02", "0.10")
    assert _cell(5, "cvt13", "cifar100", "cbs_lerac") == ("44.90", "0.41")
    assert _cell(9, "septr", "crema_d", "lerac", "lr1e-5_1e-8") == ("70.32", "0.57")
    assert _cell(9, "wide_resnet50", "cifar100", "lerac", "lr1e-1_1e-10") == ("69.66", "0.34")
    assert _cell(10, "resnet18", "cifar100", "lerac", "k8") == ("66.91", "0.23")
    assert _cell(11, "septr", "crema_d", "anti_lerac") == ("68.33", "0.61")
    assert _cell(12, "wide_resnet50", "cifar100", "conventional", "adam") == ("66.48", "0.50")
    assert _cell(13, "wide_resnet50", "cifar100", "lerac", "aug") == ("67.00", "0.55")
    # A cell shared between tables carries the same number everywhere.
    for table in (2, 9, 10, 11, 12):
        assert _cell(table, "resnet18", "cifar100", "lerac") == ("66.02", "0.17")


@pytest.mark.parametrize("table", TABLES)
def test_each_experiment_runs_exactly_the_paper_cells(table):
    experiment = load_experiment(f"table{table}")
    runs = enumerate_runs(experiment, compose_each=False)
    cells = {(r.model, r.dataset, r.regime, cell_tag(r.tag)) for r in runs}
    paper = {
        (r["model"], r["dataset"], r["regime"], r["tag"])
        for r in read_paper_table(PAPER / f"table{table}.csv")
    }
    assert cells == paper
    assert len(runs) == 5 * len(paper)  # 5 seeds, or ESC-50's 5 folds
    assert len({r.key for r in runs}) == len(runs)


def test_controls_and_demo_declare_their_grids():
    controls = enumerate_runs(load_experiment("controls"), compose_each=False)
    cells = {(r.model, r.dataset) for r in controls}
    assert cells == {("resnet18", "cifar100"), ("septr", "crema_d"), ("resnet18", "digits")}
    assert len({r.regime for r in controls}) == 6 and len(controls) == 6 * 3 * 5
    demo = enumerate_runs(load_experiment("demo"), compose_each=False)
    assert sorted({r.regime for r in demo}) == ["conventional", "lerac"] and len(demo) == 10


# --- cells from run directories --------------------------------------------------------


def _write_run(root, dataset, model, regime, seed, acc, preds=None, tag="", status="completed"):
    key = "_".join(p for p in (dataset, model, regime, tag) if p) + f"_seed{seed}"
    run_dir = root / key
    run_dir.mkdir(parents=True)
    metrics = dict(dataset=dataset, model=model, regime=regime, seed=seed, tag=tag, status=status)
    if status == "completed":
        metrics.update(test_acc=acc, val_acc=acc)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if preds is not None:
        lines = ["index,target,prediction"] + [f"{i},0,{p}" for i, p in enumerate(preds)]
        (run_dir / "predictions.csv").write_text("\n".join(lines) + "\n")
    return GridRun(
        block="main", overrides=[], key=key, group="", seed=seed, run_dir=run_dir,
        status=status, epochs=1, dataset=dataset, model=model, regime=regime, tag=tag,
    )  # fmt: skip


def test_cells_beside_the_paper_tolerate_broken_runs(tmp_path):
    right, flips = [0] * 40, [1] * 20 + [0] * 20  # conventional right on all, lerac on half
    runs = [
        _write_run(tmp_path, "cifar10", "resnet18", "conventional", s, acc, right)
        for s, acc in ((0, 90.0), (1, 92.0))
    ]
    runs += [
        _write_run(tmp_path, "cifar10", "resnet18", "lerac", s, acc, flips)
        for s, acc in ((0, 50.0), (1, 51.0))
    ]
    runs.append(_write_run(tmp_path, "cifar10", "resnet18", "lerac", 2, 0, status="failed"))
    corrupt = _write_run(tmp_path, "cifar10", "resnet18", "cbs", 0, 1.0)
    (corrupt.run_dir / "metrics.json").write_text('{"status": "compl')  # cut by a crash
    partial = tmp_path / "cifar10_resnet18_cbs_seed1"
    partial.mkdir()
    (partial / "config.yaml").write_text("seed: 1\n")
    (partial / "history.csv").write_text("epoch\n1\n")
    runs.append(
        GridRun(
            block="main",
            overrides=[],
            key=partial.name,
            group="",
            seed=1,
            run_dir=partial,
            status="missing",
            epochs=1,
            dataset="cifar10",
            model="resnet18",
            regime="cbs",
        )  # fmt: skip
    )
    runs.append(corrupt)

    found, problems = scan_runs(tmp_path)
    assert sorted(Path(p).name for p, _ in problems) == [corrupt.key, partial.name]
    assert any("corrupt" in why for _, why in problems) and any(
        "partial" in why for _, why in problems
    )

    paper = [
        {
            "model": "resnet18",
            "dataset": "cifar10",
            "regime": r,
            "tag": "",
            "paper_row": r,
            "mean": m,
            "std": "0.10",
        }
        for r, m in (("conventional", "89.20"), ("lerac", "89.56"), ("cbs", "89.53"))
    ]
    rows = {r["regime"]: r for r in build_table(paper, runs, found)}
    lerac = rows["lerac"]
    assert (lerac["ours_mean"], lerac["ours_std"], lerac["seeds_done"], lerac["failed"]) == (
        50.5,
        0.71,
        2,
        1,
    )
    assert lerac["diff"] == pytest.approx(50.5 - 89.56, abs=0.01)
    assert lerac["diff_reference"] == -40.5 and lerac["reference"] == "conventional"
    assert (lerac["paper_beats_reference"], lerac["ours_beats_reference"], lerac["agrees"]) == (
        True,
        False,
        False,
    )
    # 20 discordant examples, all one way: p = 2 / 2**20 for each seed pair.
    assert lerac["mcnemar_significant"] == "2/2" and lerac["mcnemar_p"] == "1.9e-06;1.9e-06"
    assert rows["cbs"]["ours_mean"] is None and rows["cbs"]["seeds_done"] == 0

    missing = [r.key for r in runs if r.status != "completed"]
    md = format_markdown("T", list(rows.values()), "conventional", missing, problems, "src")
    assert "| resnet18 | cifar10 | cbs | missing | 0/2 | 89.53 ± 0.10 |" in md
    assert "| 2/3 (1 failed) | 89.56 ± 0.10 | -39.06 | -40.50 | yes / no |" in md
    assert "cifar10_resnet18_lerac_seed2" in md.split("## Missing runs")[1]
    assert "corrupt metrics.json" in md and "partial" in md


def test_esc50_folds_are_the_runs_of_one_cell(tmp_path):
    runs = [
        _write_run(tmp_path, "esc50", "septr", regime, 0, 80.0 + fold + bonus, tag=f"fold{fold}")
        for regime, bonus in (("conventional", 0), ("lerac", 1))
        for fold in range(1, 6)
    ]
    found, _ = scan_runs(tmp_path)
    rows = {r["regime"]: r for r in build_table([], runs, found)}
    assert cell_tag("fold3") == "" and cell_tag("aug_fold3") == "aug"
    assert rows["lerac"]["tag"] == "" and rows["lerac"]["seeds_done"] == 5
    assert rows["lerac"]["ours_mean"] == 84.0 and rows["lerac"]["ours_beats_reference"]
    # Paired by fold: every difference is +1, so the t-test has no spread to test.
    assert rows["lerac"]["paired_t_p"] is None


def test_wandb_gets_every_layer_lr_thinned_and_no_offline_report(tmp_path):
    from omegaconf import OmegaConf

    from lerac.suite.loggers import log_report_table, lr_schedule_rows

    rows = ["step,layer,lr"] + [f"{s},{j},{1e-8 * (j + 1)}" for s in range(100) for j in range(3)]
    (tmp_path / "lr_schedule.csv").write_text("\n".join(rows) + "\n")
    assert len(lr_schedule_rows(tmp_path)) == 300  # all of it when it fits
    thinned = lr_schedule_rows(tmp_path, limit=30)
    steps = sorted({r[0] for r in thinned})
    assert len(steps) == 10 and steps[0] == 0 and steps[-1] == 99
    assert {r[1] for r in thinned} == {0, 1, 2}  # every layer at every kept step
    offline = OmegaConf.create({"mode": "offline", "project": "lerac"})
    assert log_report_table([{"model": "resnet18"}], "table2", offline) is False
