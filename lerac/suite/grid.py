"""Run a paper table (or any experiment) as a grid: list it, run what is missing, report.

    python -m lerac.suite.grid table2            # run every missing run, then the report
    python -m lerac.suite.grid table2 --dry      # list the runs and a GPU-hours estimate
    python -m lerac.suite.grid table2 --smoke    # every run, 2 batches, 2 epochs (k=1), own folder
    python -m lerac.suite.grid demo hydra/launcher=submitit_local   # any Hydra launcher
    python -m lerac.suite.grid controls --block digits trainer.device=cpu   # one block only

An experiment (conf/experiment/<name>.yaml) declares its grid with Hydra's sweeper params
(``hydra.sweeper.params``), so ``lerac-train -m experiment=<name>`` runs its main block.
Hydra's basic sweeper takes one cartesian product; a table with exceptions (no
pre-trained CvT on ImageNet-200, ESC-50's folds, per-model lr ranges) adds named blocks
under ``grid.blocks``. A block lists only what differs from the main params (Hydra lets
command-line sweeps replace the file's params key by key) and runs as one more multirun
of the same experiment. The table is the union of the main block and its blocks.

The grid sends only the runs whose metrics.json does not say completed to the launcher
(``hydra/launcher=...``, one multirun for every selected block), so running a table
again after a crash or a preemption costs nothing for the finished runs; an unfinished
run resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lerac.engine.store import read_metrics, run_group, run_key
from lerac.errors import ConfigError
from lerac.suite.compose import register_resolvers
from lerac.suite.config import CONF_DIR, REPO, RESULTS_DIR

BENCHMARK = RESULTS_DIR / "benchmark.json"
MAIN = "main"
# Overrides SMOKE=1 adds: the whole grid at two batches per epoch and two epochs, with a
# curriculum of one epoch (regime.k must stay below trainer.max_epochs), so every regime
# runs its curriculum and what comes after it.
SMOKE_K = "1"
SMOKE = [
    "trainer.limit_train_batches=2",
    "trainer.limit_eval_batches=2",
    "trainer.max_epochs=2",
    f"model.table1.lerac_k={SMOKE_K}",
]
# Training examples per epoch (official training split, before the 10% validation split),
# for the GPU-hours estimate only. Sources: paper section 4.1 and each data set's official release.
TRAIN_EXAMPLES = {
    "digits": 1_437,
    "cifar10": 50_000,
    "cifar100": 50_000,
    "tiny_imagenet": 100_000,
    "imagenet200": 260_000,  # ~1,300 per class x 200 (ImageNet-1k train)
    "boolq": 9_427,
    "rte": 2_490,
    "qnli": 104_743,
    "crema_d": 5_209,  # 70% of 7,442
    "esc50": 1_600,  # four of the five folds
    "fashion_mnist": 60_000,  # Fashion-MNIST's release (not in the paper)
}


@dataclass
class Run:
    """One run of a grid: its block, its overrides and where its results go."""

    block: str
    overrides: list[str]
    key: str
    group: str
    seed: int
    run_dir: Path
    status: str = "missing"  # completed | failed | missing
    epochs: int | None = None
    dataset: str = ""
    model: str = ""
    regime: str = ""
    tag: str = ""
    note: str = ""  # why the config could not be composed on this checkout

    @property
    def done(self) -> bool:
        return self.status == "completed"


@dataclass
class Experiment:
    name: str
    cfg: DictConfig  # composed with the hydra node
    blocks: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def grid(self) -> DictConfig:
        return self.cfg.get("grid") or OmegaConf.create({})

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.paths.output_dir)


def _compose(overrides: Sequence[str]) -> DictConfig:
    register_resolvers()
    return compose("train", overrides=list(overrides), return_hydra_config=True)


def load_experiment(name: str, overrides: Sequence[str] = ()) -> Experiment:
    """Compose ``experiment=<name>`` and read its blocks (main first)."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = _compose([f"experiment={name}", *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        options = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        raise ConfigError(
            f"experiment={name} does not compose ({str(err).splitlines()[0]}); "
            f"experiments in conf/experiment: {', '.join(options)}"
        ) from err
    main = _strings(cfg.hydra.sweeper.params)
    if not main:
        raise ConfigError(
            f"experiment={name} declares no grid: add hydra.sweeper.params to "
            f"conf/experiment/{name}.yaml"
        )
    blocks = {MAIN: main}
    for block, params in _strings(OmegaConf.select(cfg, "grid.blocks")).items():
        blocks[block] = {**main, **params}
    return Experiment(name, cfg, blocks)


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _strings(node: Any) -> dict[str, Any]:
    """A config node as plain strings (one level of nesting for blocks). An interpolation
    escaped in the file (``\\${dataset.fold}``) stays ``${dataset.fold}`` for the job."""
    if node is None:
        return {}
    container = OmegaConf.to_container(node, resolve=True)
    return {
        str(k): {str(a): _text(b) for a, b in v.items()} if isinstance(v, dict) else _text(v)
        for k, v in container.items()
    }


def expand(params: dict[str, str]) -> list[list[str]]:
    """The jobs of one sweep, each a list of ``key=value``, as Hydra's basic sweeper
    makes them (same grammar: ``a,b``, ``range(5)``, ``choice(...)``)."""
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    return jobs


def _resolve_missing(job: dict[str, str], value: str) -> str:
    # Without a composable config (a model not on this checkout) fill ${a.b} from the job.
    return re.sub(r"\$\{([^}]+)\}", lambda m: job.get(m[1], m[0]), value)


def enumerate_runs(
    experiment: Experiment,
    overrides: Sequence[str] = (),
    output_dir: Path | None = None,
    compose_each: bool = True,
) -> list[Run]:
    """Every run of the experiment (main block and blocks, duplicates once), with its
    status read from the output folder. Each cell's config is composed for its exact key
    and epochs; ``compose_each=False`` takes the ids from the option names (group ids are
    their file stems), which is fast and works before every model is on the checkout."""
    runs: dict[str, Run] = {}
    cache: dict[tuple, DictConfig | str] = {}
    base_tag = str(experiment.cfg.get("tag", ""))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for block, params in experiment.blocks.items():
            for job in expand(params):
                # Hydra escapes special characters in the values it expands (``$\{``).
                items = {k: re.sub(r"\\(.)", r"\1", v) for k, v in (o.split("=", 1) for o in job)}
                # Seeds never change a config's ids or epochs: compose once per cell.
                cell = tuple(o for o in job if not o.startswith("seed="))
                if cell not in cache and not compose_each:
                    cache[cell] = "not composed"
                if cell not in cache:
                    try:
                        cache[cell] = _compose([f"experiment={experiment.name}", *job, *overrides])
                    except (HydraException, OmegaConfBaseException) as err:
                        cache[cell] = str(err).splitlines()[0]
                cfg = cache[cell]
                seed = int(items.get("seed", experiment.cfg.seed))
                if isinstance(cfg, DictConfig):
                    ids = (cfg.dataset.id, cfg.model.id, cfg.regime.id)
                    tag, epochs, note = str(cfg.tag), int(cfg.trainer.max_epochs), ""
                    root = output_dir or Path(cfg.paths.output_dir)
                else:
                    ids = tuple(
                        items.get(g, experiment.cfg[g].id) for g in ("dataset", "model", "regime")
                    )
                    tag = _resolve_missing(items, items.get("tag", base_tag))
                    epochs, note = None, cfg
                    root = output_dir or experiment.output_dir
                key = run_key(*ids, seed, tag)
                if key in runs:
                    continue
                metrics = _read(root / key)
                status = (metrics or {}).get("status", "missing")
                runs[key] = Run(
                    block,
                    list(job),
                    key,
                    run_group(*ids, tag),
                    seed,
                    root / key,
                    status if status in ("completed", "failed") else "missing",
                    epochs,
                    *ids,
                    tag,
                    note,
                )
    return list(runs.values())


def _read(run_dir: Path) -> dict[str, Any] | None:
    try:
        return read_metrics(run_dir)
    except (OSError, ValueError):
        return None  # corrupt: counts as missing and is trained again


def _numbers(node: Any, path: str = "") -> dict[str, float]:
    if isinstance(node, dict):
        out: dict[str, float] = {}
        for key, value in node.items():
            out.update(_numbers(value, f"{path}.{key}" if path else str(key)))
        return out
    return {path: float(node)} if isinstance(node, (int, float)) else {}


# --- the plan: GPU-hours from each model's FLOPs, and the data each block needs ----------

# Peak dense bf16 tensor throughput (NVIDIA's data sheets: H100 SXM and H200 989 TFLOP/s,
# A100 312 TFLOP/s) and the share of it a training run sustains (assumed: small models at
# the paper's batch sizes keep a large GPU partly idle; `make bench` on the GPU replaces
# the assumption with a measurement).
GPUS = {"h100": 989e12, "h200": 989e12, "a100": 312e12}
UTILISATION = 0.3


def measured_rate(gpu: str, benchmark: Path | None = None) -> tuple[float, str] | None:
    """Sustained training FLOP/s on ``gpu`` from ``make bench``'s ResNet-18 throughput
    (samples/s x ResNet-18's training FLOPs per example at the benchmark's size)."""
    benchmark = Path(benchmark or BENCHMARK)
    try:
        report = json.loads(benchmark.read_text())
    except (OSError, ValueError):
        return None
    for device, figures in (report.get("throughput") or {}).items():
        figure = figures.get("bf16") or figures.get("fp32") or {}
        if gpu in device.lower().replace(" ", "") and figure.get("samples_per_s"):
            from lerac.suite.flops import training_flops

            width = (report.get("setup") or {}).get("width", 64)
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = _compose(["model=resnet18", "dataset=cifar10", f"model.width={width}"])
            rate = figure["samples_per_s"] * training_flops(cfg)
            return rate, (
                f"measured {rate / 1e12:.1f} TFLOP/s: ResNet-18 at "
                f"{figure['samples_per_s']:.0f} samples/s on {device}, {benchmark.name}"
            )
    return None


def gpu_rate(gpu: str, utilisation: float = UTILISATION, benchmark: Path | None = None):
    """Sustained FLOP/s assumed (or measured) on ``gpu``, and how it was found."""
    if gpu not in GPUS:
        raise ConfigError(f"--gpu {gpu}: choose {', '.join(GPUS)}")
    measured = measured_rate(gpu, benchmark)
    if measured:
        return measured
    rate = GPUS[gpu] * utilisation
    return rate, f"{GPUS[gpu] / 1e12:.0f} TFLOP/s bf16 x {utilisation:.0%} assumed"


def cell_flops(experiment: Experiment, runs: list[Run], overrides: Sequence[str] = ()):
    """Training FLOPs per example of each (dataset, model) cell, or why there is none."""
    from lerac.suite.flops import training_flops

    cells: dict[tuple[str, str], float | str] = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for run in runs:
            cell = (run.dataset, run.model)
            if cell in cells:
                continue
            job = [o for o in run.overrides if not o.startswith("seed=")]
            try:
                cfg = _compose([f"experiment={experiment.name}", *job, *overrides])
                cells[cell] = training_flops(cfg)
            except (HydraException, OmegaConfBaseException, ConfigError) as err:
                cells[cell] = str(err).splitlines()[0]
    return cells


def estimate_hours(
    runs: list[Run], flops: dict[tuple[str, str], float | str], rate: float
) -> tuple[float | None, int]:
    """GPU-hours of the missing runs: max epochs x training examples x FLOPs per example
    over ``rate`` FLOP/s (an upper bound: early stopping ends runs sooner); and how many
    runs have no estimate."""
    seconds, unknown = 0.0, 0
    for run in runs:
        if run.done:
            continue
        per_example = flops.get((run.dataset, run.model))
        if run.epochs is None or run.dataset not in TRAIN_EXAMPLES or isinstance(per_example, str):
            unknown += 1
            continue
        seconds += run.epochs * TRAIN_EXAMPLES[run.dataset] * per_example / rate
    return (seconds / 3600 if seconds or not unknown else None), unknown


def data_lines(runs: list[Run], data_dir: Path) -> list[str]:
    """Per block: which data sets and checkpoints are missing, and the command."""
    from lerac.suite.datacheck import check
    from lerac.suite.fetch import load_sources

    sources = load_sources()
    weights = {"cvt13_pretrained": "cvt-13", "bert_large": "bert-large-uncased"}
    lines, states = [], {}
    for block in dict.fromkeys(r.block for r in runs):
        needed = dict.fromkeys(
            name
            for r in runs
            if r.block == block
            for name in (r.dataset, weights.get(r.model))
            if name in sources
        )
        for name in needed:
            if name not in states:
                states[name] = check(name, sources[name], data_dir / sources[name]["target"])
        absent = [n for n in needed if not states[n].complete]
        if absent:
            fetchable = [n for n in absent if sources[n]["kind"] not in ("manual", "imagenet")]
            how = [f"lerac-fetch {' '.join(fetchable)}"] if fetchable else []
            how += [sources[n]["how"] for n in absent if n not in fetchable]
            lines.append(f"data [{block}]: {', '.join(absent)} not complete: {'; '.join(how)}")
    return lines


def summary_line(runs: list[Run], hours: float | None, gpu: str = "", how: str = "") -> str:
    done = sum(r.done for r in runs)
    estimate = f"~{hours:.1f}" if hours is not None else "~?"
    where = f" ({gpu}, {how})" if gpu else ""
    return (
        f"runs: {len(runs)} total, {done} done, {len(runs) - done} to run, "
        f"{estimate} GPU-hours{where}"
    )


def plan(
    experiment: Experiment,
    runs: list[Run],
    overrides: Sequence[str] = (),
    gpu: str = "h100",
    utilisation: float = UTILISATION,
    benchmark: Path | None = None,
) -> str:
    """DRY=1: every run with its status, per-cell FLOPs, missing data, GPU-hours."""
    rate, how = gpu_rate(gpu, utilisation, benchmark)
    flops = cell_flops(experiment, [r for r in runs if not r.done], overrides)
    hours, unknown = estimate_hours(runs, flops, rate)
    lines = [
        f"{r.status:9s} [{r.block}] {r.key}" + (f"  ({r.note})" if r.note else "") for r in runs
    ]
    for (dataset, model), value in flops.items():
        per = f"{value / 1e9:.2f} GFLOP" if isinstance(value, float) else f"? ({value})"
        lines.append(f"flops: {model} on {dataset}: {per} per training example (x3 forward)")
    lines += data_lines(runs, Path(experiment.cfg.paths.data_dir))
    extra = f"; {unknown} runs without an estimate" if unknown else ""
    lines.append(f"estimate: max epochs x training examples x FLOPs / {how}{extra}")
    lines.append(summary_line(runs, hours, gpu, how))
    return "\n".join(lines)


def submit(experiment: Experiment, runs: list[Run], overrides: Sequence[str]) -> int:
    """Send exactly ``runs`` to the configured Hydra launcher (basic, joblib ``gpus``,
    submitit local or SLURM) as one multirun, completed runs left out; 1 if any failed.

    The launcher receives the jobs a sweep would make (the experiment, the cell, the extra
    overrides) and ``lerac.suite.train.job`` as the task, which pickles by name."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobStatus
    from hydra.types import HydraContext, RunMode

    from lerac.suite.train import job

    if not runs:
        return 0
    # A job started elsewhere (submitit, joblib) imports this process's lerac package.
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), path) if p)
    name = f"experiment={experiment.name}"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        cfg = hydra.compose_config(
            "train", [name, *overrides], run_mode=RunMode.MULTIRUN, with_log_configuration=True
        )
        extra = list(cfg.hydra.overrides.task)[1:]  # the task overrides after experiment=
        context = HydraContext(config_loader=hydra.config_loader, callbacks=_callbacks(cfg))
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=job, config=cfg
        )
        print(f"submitting {len(runs)} runs to {cfg.hydra.launcher._target_}", flush=True)
        try:
            results = launcher.launch([[name, *r.overrides, *extra] for r in runs], 0)
        except Exception as err:  # a job that died (killed, out of memory) stops the wait
            print(f"error: the launcher stopped: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
    failed = [(r, res) for r, res in zip(runs, results) if res.status != JobStatus.COMPLETED]
    for run, res in failed:
        error = res._return_value
        print(f"failed: {run.key}: {type(error).__name__}: {error}", file=sys.stderr)
    return 1 if failed else 0


def _callbacks(cfg: DictConfig) -> Any:
    from hydra._internal.callbacks import Callbacks

    return Callbacks(cfg)


def smoke(experiment: Experiment) -> Experiment:
    """SMOKE for every regime: a block's own curriculum length becomes the SMOKE one
    (k = 1 of 2 epochs), so each cell runs its curriculum to the end in seconds."""
    for params in experiment.blocks.values():
        if "regime.k" in params:
            params["regime.k"] = SMOKE_K
    return experiment


def resumed(runs: list[Run]) -> list[str]:
    """``<key> resumed after epoch N`` for each run that continued from a checkpoint."""
    lines = []
    for run in runs:
        epoch = (_read(run.run_dir) or {}).get("resumed_from_epoch") or 0
        if run.done and epoch:
            lines.append(f"{run.key} resumed after epoch {epoch}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="conf/experiment/<name>.yaml, e.g. table2")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    parser.add_argument("--dry", action="store_true", help="list the runs; train nothing")
    parser.add_argument("--smoke", action="store_true", help="2 batches, 2 epochs, k=1, own dir")
    parser.add_argument("--block", action="append", help="only these blocks (main, ...)")
    parser.add_argument("--no-report", action="store_true", help="train only")
    parser.add_argument("--report-only", action="store_true", help="write the report only")
    parser.add_argument("--gpu", default="h100", help=f"DRY estimate on: {', '.join(GPUS)}")
    parser.add_argument(
        "--utilisation", type=float, default=UTILISATION, help="of the GPU's peak, assumed"
    )
    args = parser.parse_intermixed_args(argv)

    from lerac.suite.report import write_experiment_report  # matplotlib and scipy: load late

    overrides = list(args.overrides)
    try:
        experiment = load_experiment(args.experiment, overrides)
        if args.smoke:
            overrides += [*SMOKE, f"paths.output_dir={experiment.output_dir}_smoke"]
            experiment = smoke(load_experiment(args.experiment, overrides))
        unknown = set(args.block or []) - set(experiment.blocks)
        if unknown:
            raise ConfigError(
                f"--block {sorted(unknown)}: experiment={args.experiment} has blocks "
                f"{list(experiment.blocks)}"
            )
        blocks = args.block or list(experiment.blocks)
        runs = enumerate_runs(experiment, overrides)
        if args.dry:
            chosen = [r for r in runs if r.block in blocks]
            print(plan(experiment, chosen, overrides, args.gpu, args.utilisation))
            return 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    status = 0
    if not args.report_only:
        todo = [r for r in runs if r.block in blocks and not r.done]
        print(f"runs: {len(todo)} to run, {sum(r.done for r in runs)} completed (not sent)")
        status = submit(experiment, todo, overrides)
        runs = enumerate_runs(experiment, overrides)
        for line in resumed(runs):
            print(line)
    if not args.no_report:
        for path in write_experiment_report(experiment, runs, smoke=args.smoke):
            print(path)
    done = sum(r.done for r in runs)
    print(f"runs: {len(runs)} total, {done} done, {len(runs) - done} missing or failed")
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main())
