"""Run a paper table (or any experiment) as a grid: list it, run what is missing, report.

    lerac-grid table2            # run every missing run, then the report
    lerac-grid table2 --dry      # list the runs and a GPU-hours estimate
    lerac-grid table2 --smoke    # every run, 2 batches, 2 epochs (k=1), own folder
    lerac-grid table2 --smoke --synthetic   # the same on small synthetic data
    lerac-grid demo hydra/launcher=submitit_local   # any Hydra launcher
    lerac-grid controls --block digits trainer.device=cpu   # one block only

An experiment (conf/experiment/<name>.yaml) declares its grid with Hydra's sweeper params
(``hydra.sweeper.params``), so ``lerac-train -m experiment=<name>`` runs its main block.
Hydra's basic sweeper takes one cartesian product; a table with exceptions (no
pre-trained CvT on ImageNet-200, ESC-50's folds, per-model lr ranges) adds named blocks
under ``grid.blocks``. A block lists only what differs from the main params (Hydra lets
command-line sweeps replace the file's params key by key) and runs as one more multirun
of the same experiment. The table is the union of the main block and its blocks.

Before any run starts, the data they read is checked once (``lerac-fetch --check``): a
missing set stops the grid with one line naming it and the command that fetches it.
The grid sends only the runs whose metrics.json does not say completed to the launcher
(``hydra/launcher=...``, one multirun for every selected block), so running a table
again after a crash or a preemption costs nothing for the finished runs; an unfinished
run resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lerac.engine.store import read_metrics, run_group, run_key
from lerac.errors import ConfigError, first_line, one_line
from lerac.suite.compose import register_resolvers
from lerac.suite.config import CONF_DIR, REPO, RESULTS_DIR
from lerac.suite.overrides import explain
from lerac.suite.protocol import resolve_protocol

BENCHMARK = RESULTS_DIR / "benchmark.json"
MAIN = "main"
# Models that read a pre-trained checkpoint, and its name in lerac/suite/sources.yaml.
WEIGHTS = {"cvt13_pretrained": "cvt-13", "bert_large": "bert-large-uncased"}
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


@dataclass(kw_only=True)
class GridRun:
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


def compose_cell(name: str, job: Sequence[str], overrides: Sequence[str]) -> DictConfig:
    """A cell's config as its run trains with it: composed, its protocol resolved (the
    cell's and the extra overrides are what the run sets explicitly, as in its job)."""
    args = [f"experiment={name}", *job, *overrides]
    return resolve_protocol(_compose(args), args)[0]


def load_experiment(name: str, overrides: Sequence[str] = ()) -> Experiment:
    """Compose ``experiment=<name>`` and read its blocks (main first)."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = _compose([f"experiment={name}", *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        if getattr(err, "missing_cfg_file", None) == f"experiment/{name}":
            options = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
            raise ConfigError(
                f"experiment={name} does not compose ({first_line(err)}); "
                f"experiments in conf/experiment: {', '.join(options)}"
            ) from err
        raise ConfigError(explain(err, [f"experiment={name}", *overrides], "train")) from err
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
    """The jobs of one sweep, each a list of ``key=value``: the cartesian product Hydra's
    basic sweeper makes, read with Hydra's override grammar (``a,b``, ``range(5)``,
    ``choice(...)``)."""
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ConfigError(f"{key}: a grid takes lists, range() or choice(), not intervals")
    return [list(job) for job in itertools.product(*axes.values())]


def _resolve_missing(job: dict[str, str], value: str) -> str:
    # Without a composable config (a model not on this checkout) fill ${a.b} from the job.
    return re.sub(r"\$\{([^}]+)\}", lambda m: job.get(m[1], m[0]), value)


def enumerate_runs(
    experiment: Experiment,
    overrides: Sequence[str] = (),
    output_dir: Path | None = None,
    compose_each: bool = True,
) -> list[GridRun]:
    """Every run of the experiment (main block and blocks, duplicates once), with its
    status read from the output folder. Each cell's config is composed for its exact key
    and epochs; ``compose_each=False`` takes the ids from the option names (group ids are
    their file stems), which is fast and works before every model is on the checkout."""
    runs: dict[str, GridRun] = {}
    cache: dict[tuple, DictConfig | str] = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for block, params in experiment.blocks.items():
            for job in expand(params):
                # Seeds never change a config's ids or epochs: compose once per cell.
                cell = tuple(o for o in job if not o.startswith("seed="))
                if cell not in cache and not compose_each:
                    cache[cell] = "not composed"
                if cell not in cache:
                    try:
                        cache[cell] = compose_cell(experiment.name, job, overrides)
                    except (HydraException, OmegaConfBaseException, ConfigError) as err:
                        cache[cell] = str(err).splitlines()[0]
                run = grid_run(experiment, block, job, cache[cell], output_dir)
                runs.setdefault(run.key, run)
    return list(runs.values())


def grid_run(
    experiment: Experiment,
    block: str,
    job: Sequence[str],
    cfg: DictConfig | str,
    output_dir: Path | None,
) -> GridRun:
    """One job of a block as a run: its ids, epochs and folder from its cell's config, or
    from the option names when the cell did not compose (``cfg`` then says why)."""
    # Hydra escapes special characters in the values it expands (``$\{``).
    items = {k: re.sub(r"\\(.)", r"\1", v) for k, v in (o.split("=", 1) for o in job)}
    seed = int(items.get("seed", experiment.cfg.seed))
    if isinstance(cfg, DictConfig):
        ids = (cfg.dataset.id, cfg.model.id, cfg.regime.id)
        tag, epochs, note = str(cfg.tag), int(cfg.trainer.max_epochs), ""
        root = output_dir or Path(cfg.paths.output_dir)
    else:
        ids = tuple(items.get(g, experiment.cfg[g].id) for g in ("dataset", "model", "regime"))
        tag = _resolve_missing(items, items.get("tag", str(experiment.cfg.get("tag", ""))))
        epochs, note = None, cfg
        root = output_dir or experiment.output_dir
    key = run_key(*ids, seed, tag)
    status = (_read(root / key) or {}).get("status", "missing")
    return GridRun(
        block=block,
        overrides=list(job),
        key=key,
        group=run_group(*ids, tag),
        seed=seed,
        run_dir=root / key,
        status=status if status in ("completed", "failed") else "missing",
        epochs=epochs,
        dataset=ids[0],
        model=ids[1],
        regime=ids[2],
        tag=tag,
        note=note,
    )


def _read(run_dir: Path) -> dict[str, Any] | None:
    try:
        return read_metrics(run_dir)
    except (OSError, ValueError):
        return None  # corrupt: counts as missing and is trained again


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


@dataclass(frozen=True)
class CellCost:
    """What one epoch of a (dataset, model) cell costs: training FLOPs per example (the
    model built as training builds it) and training examples (``dataset.facts``)."""

    flops: float
    train_examples: int


def cell_costs(
    experiment: Experiment, runs: list[GridRun], overrides: Sequence[str] = ()
) -> dict[tuple[str, str], CellCost | str]:
    """The cost of each (dataset, model) cell of ``runs``, or why there is none."""
    from lerac.suite.data.facts import dataset_facts
    from lerac.suite.flops import training_flops

    cells: dict[tuple[str, str], CellCost | str] = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for run in runs:
            cell = (run.dataset, run.model)
            if cell in cells:
                continue
            job = [o for o in run.overrides if not o.startswith("seed=")]
            try:
                cfg = compose_cell(experiment.name, job, overrides)
                examples = dataset_facts(cfg).need("train_examples")
                cells[cell] = CellCost(training_flops(cfg), examples)
            except (HydraException, OmegaConfBaseException, ConfigError) as err:
                cells[cell] = str(err).splitlines()[0]
    return cells


def estimate_hours(
    runs: list[GridRun], costs: dict[tuple[str, str], CellCost | str], rate: float
) -> tuple[float | None, int]:
    """GPU-hours of the missing runs: max epochs x training examples x FLOPs per example
    over ``rate`` FLOP/s (an upper bound: early stopping ends runs sooner); and how many
    runs have no estimate."""
    seconds, unknown = 0.0, 0
    for run in runs:
        if run.done:
            continue
        cost = costs.get((run.dataset, run.model))
        if run.epochs is None or not isinstance(cost, CellCost):
            unknown += 1
            continue
        seconds += run.epochs * cost.train_examples * cost.flops / rate
    return (seconds / 3600 if seconds or not unknown else None), unknown


def needed_data(runs: list[GridRun], sources: dict[str, Any]) -> list[str]:
    """The data sets and checkpoints (sources.yaml names) the runs read, in order."""
    names = (name for r in runs for name in (r.dataset, WEIGHTS.get(r.model)))
    return list(dict.fromkeys(name for name in names if name in sources))


def incomplete_data(names: list[str], data_dir: Path, sources: dict[str, Any]) -> list[str]:
    """Those of ``names`` whose copy under ``data_dir`` is not complete (lerac-fetch --check)."""
    from lerac.suite.datacheck import check
    from lerac.suite.fetch import target

    return [n for n in names if not check(n, sources[n], target(data_dir, sources[n])).complete]


def how_to_fetch(names: list[str], sources: dict[str, Any], make: bool = False) -> str:
    """The README's commands for ``names``: lerac-fetch (and ``make data``), and the
    commands of those that need the user's own copy."""
    from lerac.suite.fetch import manual

    fetchable = " ".join(n for n in names if not manual(sources[n]))
    how = [f"lerac-fetch {fetchable}"] if fetchable else []
    if fetchable and make:
        how = [f'{how[0]} (or make data DATASETS="{fetchable}")']
    return "; ".join(how + [sources[n]["how"] for n in names if manual(sources[n])])


def data_lines(runs: list[GridRun], data_dir: Path) -> list[str]:
    """Per block: which data sets and checkpoints are missing, and the command."""
    from lerac.suite.fetch import load_sources

    sources = load_sources()
    lines = []
    for block in dict.fromkeys(r.block for r in runs):
        needed = needed_data([r for r in runs if r.block == block], sources)
        absent = incomplete_data(needed, data_dir, sources)
        if absent:
            how = how_to_fetch(absent, sources)
            lines.append(f"data [{block}]: {', '.join(absent)} not complete: {how}")
    return lines


def check_data(runs: list[GridRun], data_dir: Path) -> None:
    """Before any run starts: every data set and checkpoint the runs read is complete
    under ``data_dir``, else one error naming what is missing and how to get it."""
    from lerac.suite.fetch import load_sources

    sources = load_sources()
    absent = incomplete_data(needed_data(runs, sources), data_dir, sources)
    if absent:
        raise ConfigError(
            f"the grid reads data that is not complete under {data_dir}: {', '.join(absent)}; "
            f"get it with {how_to_fetch(absent, sources, make=True)} (docs/data.md), or check "
            "the set-up first on synthetic data: SMOKE=synthetic (--smoke --synthetic)"
        )


def summary_line(runs: list[GridRun], hours: float | None, gpu: str = "", how: str = "") -> str:
    done = sum(r.done for r in runs)
    estimate = f"~{hours:.1f}" if hours is not None else "~?"
    where = f" ({gpu}, {how})" if gpu else ""
    return (
        f"runs: {len(runs)} total, {done} done, {len(runs) - done} to run, "
        f"{estimate} GPU-hours{where}"
    )


def plan(
    experiment: Experiment,
    runs: list[GridRun],
    overrides: Sequence[str] = (),
    gpu: str = "h100",
    utilisation: float = UTILISATION,
    benchmark: Path | None = None,
) -> str:
    """DRY=1: every run with its status, per-cell FLOPs, missing data, GPU-hours."""
    rate, how = gpu_rate(gpu, utilisation, benchmark)
    costs = cell_costs(experiment, [r for r in runs if not r.done], overrides)
    hours, unknown = estimate_hours(runs, costs, rate)
    lines = [
        f"{r.status:9s} [{r.block}] {r.key}" + (f"  ({r.note})" if r.note else "") for r in runs
    ]
    for (dataset, model), cost in costs.items():
        per = f"{cost.flops / 1e9:.2f} GFLOP" if isinstance(cost, CellCost) else f"? ({cost})"
        lines.append(f"flops: {model} on {dataset}: {per} per training example (x3 forward)")
    lines += data_lines(runs, Path(experiment.cfg.paths.data_dir))
    extra = f"; {unknown} runs without an estimate" if unknown else ""
    lines.append(f"estimate: max epochs x training examples x FLOPs / {how}{extra}")
    lines.append(summary_line(runs, hours, gpu, how))
    return "\n".join(lines)


def submit(experiment: Experiment, runs: list[GridRun], overrides: Sequence[str]) -> int:
    """Send exactly ``runs`` to the configured Hydra launcher (basic, joblib ``gpus``,
    submitit local or SLURM) as one multirun, completed runs left out; 1 if any failed.

    The launcher receives the jobs a sweep would make (the experiment, the cell, the extra
    overrides) and ``lerac.suite.train.job`` as the task, which pickles by name."""
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobStatus, configure_log

    from lerac.suite.train import job

    if not runs:
        return 0
    # A job started elsewhere (submitit, joblib) imports this process's lerac package.
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), path) if p)
    name = f"experiment={experiment.name}"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = _compose([name, "hydra.mode=MULTIRUN", *overrides])
        configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)  # "Launching N jobs"
        extra = list(cfg.hydra.overrides.task)[1:]  # the task overrides after experiment=
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context(cfg), task_function=job, config=cfg
        )
        print(f"submitting {len(runs)} runs to {cfg.hydra.launcher._target_}", flush=True)
        try:
            results = launcher.launch([[name, *r.overrides, *extra] for r in runs], 0)
        except Exception as err:  # a job that died (killed, out of memory) stops the wait
            print(
                f"error: the launcher stopped: {type(err).__name__}: {one_line(err)}",
                file=sys.stderr,
            )
            return 1
    failed = [(r, res) for r, res in zip(runs, results) if res.status != JobStatus.COMPLETED]
    for run, res in failed:
        error = res._return_value
        print(f"failed: {run.key}: {type(error).__name__}: {error}", file=sys.stderr)
    return 1 if failed else 0


def hydra_context(cfg: DictConfig) -> Any:
    """What a launcher needs besides the config: the config loader it composes each job
    with (public, GlobalHydra) and the callbacks the config names. Hydra has no public way
    to build the callbacks (its entrypoint does it internally), so this uses
    ``hydra._internal.callbacks``: pyproject.toml pins hydra-core below 1.4 for it, and
    tests/test_grid.py launches a real grid through it."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import HydraContext

    loader = GlobalHydra.instance().config_loader()
    return HydraContext(config_loader=loader, callbacks=Callbacks(cfg))


def smoke(experiment: Experiment) -> Experiment:
    """SMOKE for every regime: a block's own curriculum length becomes the SMOKE one
    (k = 1 of 2 epochs), so each cell runs its curriculum to the end in seconds."""
    for params in experiment.blocks.values():
        if "regime.k" in params:
            params["regime.k"] = SMOKE_K
    return experiment


def resumed(runs: list[GridRun]) -> list[str]:
    """``<key> resumed after epoch N`` for each run that continued from a checkpoint."""
    lines = []
    for run in runs:
        epoch = (_read(run.run_dir) or {}).get("resumed_from_epoch") or 0
        if run.done and epoch:
            lines.append(f"{run.key} resumed after epoch {epoch}")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="conf/experiment/<name>.yaml, e.g. table2")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    parser.add_argument("--dry", action="store_true", help="list the runs; train nothing")
    parser.add_argument("--smoke", action="store_true", help="2 batches, 2 epochs, k=1, own dir")
    parser.add_argument(
        "--synthetic", action="store_true", help="--smoke on small synthetic data (own dir)"
    )
    parser.add_argument(
        "--no-data-check", action="store_true", help="start runs whose data is not complete"
    )
    parser.add_argument("--block", action="append", help="only these blocks (main, ...)")
    parser.add_argument("--no-report", action="store_true", help="train only")
    parser.add_argument("--report-only", action="store_true", help="write the report only")
    parser.add_argument("--gpu", default="h100", help=f"DRY estimate on: {', '.join(GPUS)}")
    parser.add_argument(
        "--utilisation", type=float, default=UTILISATION, help="of the GPU's peak, assumed"
    )
    args = parser.parse_intermixed_args(argv)
    args.smoke = args.smoke or args.synthetic
    return args


def prepare(args: argparse.Namespace) -> tuple[Experiment, list[str], list[GridRun], list[str]]:
    """The experiment (SMOKE's settings added), the overrides, its runs, the chosen blocks."""
    overrides = list(args.overrides)
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
    runs = enumerate_runs(experiment, overrides)
    return experiment, overrides, runs, args.block or list(experiment.blocks)


def ready_data(
    args: argparse.Namespace, experiment: Experiment, todo: list[GridRun], overrides: list[str]
) -> list[str]:
    """The data the runs read, before any starts: written synthetic (``--synthetic``, under
    ``<output_dir>/data``, the overrides pointing there) or checked complete."""
    from lerac.suite.fetch import load_sources

    if args.synthetic:
        from lerac.suite.synthetic import write_synthetic

        data_dir = (experiment.output_dir / "data").resolve()
        written = write_synthetic(needed_data(todo, load_sources()), data_dir)
        print(f"synthetic data: {len(written)} data sets and checkpoints in {data_dir}")
        os.environ["LERAC_DATA_DIR"] = str(data_dir)  # where a model finds its checkpoint
        return [*overrides, f"paths.data_dir={data_dir}"]
    if not args.no_data_check:
        check_data(todo, Path(experiment.cfg.paths.data_dir))
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from lerac.suite.report import write_experiment_report  # matplotlib and scipy: load late

    try:
        experiment, overrides, runs, blocks = prepare(args)
        if args.dry:
            chosen = [r for r in runs if r.block in blocks]
            print(plan(experiment, chosen, overrides, args.gpu, args.utilisation))
            return 0
        todo = [r for r in runs if r.block in blocks and not r.done]
        if not args.report_only:
            overrides = ready_data(args, experiment, todo, overrides)
    except ConfigError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2

    status = 0
    if not args.report_only:
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
