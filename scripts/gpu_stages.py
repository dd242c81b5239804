"""The stages of the GPU check (scripts/gpu_check.py runs each in its own process).

    python scripts/gpu_stages.py STAGE --device cuda|cpu --work DIR --out DIR --result FILE

Every stage trains or restores through the suite's own code (conf/ composed by Hydra,
``lerac.suite.build``, ``Trainer.fit``, ``python -m lerac.suite.train``) and writes its
figures and checks to ``--result`` as JSON: ``{"ok": bool, "checks": {name: bool},
"error": "...", figures...}``. On ``cpu`` the same code runs at a tiny size (the
rehearsal); on ``cuda`` at the families' own sizes for a few batches.

- ``family_*``: two epochs of one model family on synthetic inputs of its family's shape
  (images, token ids, spectrograms: no hub, no data set), bf16, compiled (inductor; the
  ``eager`` backend on the CPU) but for DenseNet-121 on audio, which takes the default
  uncompiled path, LeRaC with k = 1 (CBS too for DenseNet-121, the LSTM and BERT). Per
  step of the second epoch: host syncs by site (lerac/engine/counters.py); recompiles,
  graphs, graph breaks; the loss finite; the LSTM's compute dtype.
- ``resume``: a deterministic 3-epoch run against the same run stopped by SIGTERM after
  epoch 1 and resumed, through ``python -m lerac.suite.train``: history, learning rates,
  predictions and final parameters bit for bit; cuDNN autotuning off inside ``fit``.
- ``flags``: cuDNN autotuning and TF32 inside ``fit`` per precision and determinism; a
  training step of each model family under ``torch.use_deterministic_algorithms``.
- ``rng``: a checkpoint holding two CUDA generator states loads on one GPU.
- ``bench``: ``scripts/bench.py`` (``make bench``) on the device, into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import runpy
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts (flags)
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def python_path() -> str:
    """This repository first on the path of the processes a stage starts."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def tiny(device: str) -> bool:
    return device == "cpu"


def check_result(checks: dict[str, bool], **figures: Any) -> dict[str, Any]:
    """A stage's result: ok when every check holds; the failed ones named in ``error``."""
    failed = [name for name, held in checks.items() if not held]
    error = f"failed checks: {', '.join(failed)}" if failed else ""
    return {"ok": not failed, "checks": checks, "error": error, **figures}


# -- synthetic inputs of each family's shape -------------------------------------------------


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def split_three(inputs: Any, labels: torch.Tensor, n_train: int, n_eval: int) -> tuple:
    from lerac.engine.batches import take

    cuts = (slice(0, n_train), slice(n_train, n_train + n_eval), slice(n_train + n_eval, None))
    return tuple((take(inputs, torch.arange(len(labels))[c]), labels[c]) for c in cuts)


def image_data(n_train: int, n_eval: int, size: int, classes: int = 10) -> Any:
    """uint8 RGB images as CIFAR stores them, normalised per channel, Table 13's
    augmentation on training batches."""
    from lerac.engine.batches import Splits
    from lerac.suite.data.augment import table13
    from lerac.suite.data.base import channel_stats, image_input

    n = n_train + 2 * n_eval
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator())
    labels = torch.randint(0, classes, (n,), generator=generator())
    train, val, test = split_three(images, labels, n_train, n_eval)
    mean, std = channel_stats(train[0])
    return Splits(train, val, test, classes, image_input(3, size), mean, std, augment=table13())


def text_data(n_train: int, n_eval: int, width: int, vocab: int, segments: bool) -> Any:
    """Right-padded token ids as the text family stores them (int32 ids, int8 masks),
    many short texts and a few long ones, cut per batch by the family's own trim."""
    from lerac.engine.batches import Splits
    from lerac.suite.data.base import text_input
    from lerac.suite.data.tokenize import token_lengths, trim_padding

    n, g = n_train + 2 * n_eval, generator()
    lengths = (width * torch.rand(n, generator=g) ** 3).long().clamp(2, width)
    mask = torch.arange(width) < lengths[:, None]
    ids = torch.randint(3, vocab, (n, width), dtype=torch.int32, generator=g) * mask
    inputs = {"input_ids": ids, "attention_mask": mask.to(torch.int8)}
    if segments:  # BERT pairs: the second half of each text is segment 1
        second = torch.arange(width) >= (lengths[:, None] // 2)
        inputs["token_type_ids"] = (second & mask).to(torch.int8)
    labels = torch.randint(0, 2, (n,), generator=g)
    train, val, test = split_three(inputs, labels, n_train, n_eval)
    return Splits(
        train, val, test, 2, text_input(vocab, width), trim=trim_padding, host_facts=token_lengths
    )


def audio_data(n_train: int, n_eval: int, mels: int, frames: int, classes: int = 10) -> Any:
    """One-channel float16 log-mel maps on [0, 1] as the audio family caches them, with
    the paper's five augmentations as conf/audio/augment.yaml sets them."""
    from omegaconf import OmegaConf

    from lerac.engine.batches import Splits
    from lerac.suite.compose import compose_config
    from lerac.suite.data.audio_augment import build_augment
    from lerac.suite.data.base import image_input
    from lerac.suite.data.spectrogram import to_unit

    n = n_train + 2 * n_eval
    maps = torch.rand(n, 1, mels, frames, generator=generator()).half()
    labels = torch.randint(0, classes, (n,), generator=generator())
    train, val, test = split_three(maps, labels, n_train, n_eval)
    settings = OmegaConf.to_container(compose_config(["dataset=esc50"]).dataset.augment)
    augment = build_augment(settings, classes)
    return Splits(
        train, val, test, classes, image_input(1, (mels, frames)), prepare=to_unit, augment=augment
    )


def write_bert(folder: Path, width: int, small: bool) -> Path:
    """A BERT for sequence classification from a small config, written by save_pretrained
    (no hub): what ``model.pretrained`` reads."""
    from transformers import BertConfig, BertForSequenceClassification

    hidden, layers = (32, 1) if small else (256, 4)
    config = BertConfig(
        vocab_size=1000,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=4 * hidden,
        max_position_embeddings=width,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@dataclass
class Family:
    """One model family of the check: its conf/model file, regime, synthetic inputs
    (``data(n_train, n_eval, small)``) and the model settings of the CPU size."""

    model: str
    regime: str
    modality: str
    data: Callable[[int, int, bool], Any]
    small_model: tuple[str, ...] = ()
    compiled: bool = True  # False: the default eager path (and its syncs) instead


FAMILIES = {
    "resnet18": Family(
        "resnet18", "lerac", "image", lambda n, e, s: image_data(n, e, 32), ("model.width=4",)
    ),
    "densenet121": Family(
        "densenet121", "cbs_lerac", "image", lambda n, e, s: image_data(n, e, 32)
    ),
    "lstm": Family(
        "lstm",
        "cbs_lerac",
        "text",
        lambda n, e, s: text_data(n, e, 150 if s else 200, 5000, segments=False),
        ("model.embedding_dim=16", "model.hidden_size=16", "model.fc_size=16"),
    ),
    "bert": Family(
        "hf_text",
        "cbs_lerac",
        "text",
        lambda n, e, s: text_data(n, e, 128 if s else 256, 1000, segments=True),
    ),
    "septr": Family(
        "septr",
        "lerac",
        "audio",
        lambda n, e, s: audio_data(n, e, 32 if s else 128, 32 if s else 256),
        ("model.dim=16", "model.depth=1", "model.heads=2", "model.dim_head=8", "model.mlp_dim=16"),
    ),
    "densenet121_audio": Family(
        "densenet121",
        "lerac",
        "audio",
        lambda n, e, s: audio_data(n, e, 32 if s else 128, 32 if s else 256),
        compiled=False,
    ),
}
DATASETS = {"image": "cifar10", "text": "text_files", "audio": "audio_folder"}


# -- the family stages ------------------------------------------------------------------------


class StepWindows:
    """The regime the trainer is given, passing everything on. From the start of epoch
    ``measured`` (0-based) it marks each optimizer step's start (a step pre-hook on the
    optimizer its curriculum is built for): a window runs from one step's start to the next
    (the update, then the next batch's loading and forward), with its host syncs by site,
    its recompiles and its host time."""

    def __init__(self, regime: Any, device: str, recompiles: Any, measured: int = 1) -> None:
        from lerac.engine.counters import SyncCounter

        self._regime, self._recompiles, self._measured = regime, recompiles, measured
        self.syncs = SyncCounter(device)
        self.windows: list[dict[str, Any]] = []
        self._mark: tuple | None = None
        self._counting = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._regime, name)

    def on_epoch_start(self, epoch: int, model: Any) -> None:
        self._regime.on_epoch_start(epoch, model)
        self._mark = None  # the previous epoch's last step had no next step
        if epoch == self._measured and not self._counting:
            self.syncs.__enter__()
            self._counting = True

    def curriculum(self, optimizer: Any, steps_per_epoch: int) -> Any:
        optimizer.register_step_pre_hook(lambda *_: self.mark_step())
        return self._regime.curriculum(optimizer, steps_per_epoch)

    def mark_step(self) -> None:
        if self._counting:
            now = (time.perf_counter(), Counter(self.syncs.sites), Counter(self.syncs.ours))
            now += (self._recompiles.recompiles,)
            if self._mark is not None:
                self.windows.append(
                    {
                        "seconds": now[0] - self._mark[0],
                        "sites": now[1] - self._mark[1],
                        "ours": now[2] - self._mark[2],
                        "recompiles": now[3] - self._mark[3],
                    }
                )
            self._mark = now

    def close(self) -> None:
        if self._counting:
            self.syncs.__exit__(None, None, None)
            self._counting = False


def family_config(name: str, device: str, work: Path) -> tuple[Any, Any]:
    """The family's config (conf/ composed with the check's overrides, validated) and its
    synthetic splits."""
    from lerac.suite.compose import compose_config
    from lerac.suite.validate import validate

    family, small = FAMILIES[name], tiny(device)
    steps, evals = (4, 1) if small else (8, 2)
    overrides = [f"model={family.model}", f"regime={family.regime}", "regime.k=1"]
    overrides += [f"dataset={DATASETS[family.modality]}", f"paths.data_dir={work / 'data'}"]
    overrides += ["logger=none", f"trainer.device={device}", "trainer.precision=bf16"]
    backend = ("eager" if small else "true") if family.compiled else "false"
    overrides += [f"trainer.compile={backend}", "trainer.max_epochs=2"]
    overrides += [f"trainer.limit_train_batches={steps}", "trainer.progress=false"]
    overrides += list(family.small_model if small else ())
    if family.modality == "audio":
        overrides.append(f"dataset.path={work / 'data'}")
    width = 128 if small else 256
    if name == "bert":
        bert = write_bert(work / "bert", width, small)
        overrides += [f"model.pretrained={bert}", f"model.tokenizer.max_length={width}"]
    (work / "data" / "text_files").mkdir(parents=True, exist_ok=True)
    cfg = compose_config(overrides)
    batch = min(cfg.trainer.batch_size, 8) if small else cfg.trainer.batch_size
    cfg.trainer.batch_size = batch
    validate(cfg)
    return cfg, family.data(batch * steps, batch * evals, small)


def rnn_dtypes(model: Any, splits: Any, accel: Any) -> list[str]:
    """The output dtype of every recurrent layer in one eager forward under the run's
    precision (autocast), as training computes it."""
    from lerac.layers import call_model

    seen: list[str] = []
    rnns = [m for m in model.modules() if isinstance(m, torch.nn.RNNBase)]
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(str(o[0].dtype))) for m in rnns]
    inputs = next(iter(splits.loaders(2, accel.device)[1]))[0]
    try:
        with torch.no_grad(), torch.compiler.set_stance("force_eager"), accel.autocast():
            call_model(model, inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def channels_last(model: Any) -> bool | None:
    """Whether the model's convolution weights are NHWC (None: no k x k convolution); the
    weights whose layout tells (k > 1, more than one input channel)."""
    weights = [w for w in model.parameters() if w.ndim == 4 and w.shape[1] > 1 and w.shape[-1] > 1]
    if not weights:
        return None
    return all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)


def window_figures(probe: StepWindows) -> dict[str, Any]:
    """Per-step syncs (all, and in this repository's code), recompiles and host time of the
    measured epoch's complete windows."""
    windows = probe.windows
    sites, ours = Counter(), Counter()
    for window in windows:
        sites.update(window["sites"])
        ours.update(window["ours"])
    per_step = [sum(w["sites"].values()) for w in windows]
    return {
        "measured_steps": len(windows),
        "syncs_per_step": statistics.median(per_step) if per_step else None,
        "syncs_per_step_max": max(per_step, default=None),
        "sync_sites": dict(sites.most_common(12)),
        "syncs_in_suite_code_per_step": sum(ours.values()) / max(len(windows), 1),
        "recompiles_in_measured_steps": sum(w["recompiles"] for w in windows),
        "step_host_ms_median": round(1e3 * statistics.median(w["seconds"] for w in windows), 2)
        if windows
        else None,
    }


def epoch_rows() -> Any:
    from lerac.engine.store import NoStore

    class EpochRows(NoStore):
        """Keeps the epochs' history rows in memory."""

        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []

        def log_epoch(self, row: dict[str, Any]) -> None:
            self.rows.append(row)

    return EpochRows()


def stage_family(name: str, device: str, work: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from lerac.engine.counters import RecompileCounter
    from lerac.engine.loop import Trainer
    from lerac.engine.settings import TrainerSettings
    from lerac.suite.build import build, build_model

    cfg, splits = family_config(name, device, work)
    settings = TrainerSettings.from_config(OmegaConf.to_container(cfg.trainer, resolve=True))
    torch.manual_seed(0)
    model = build_model(cfg.model, splits.num_classes, splits.input_spec)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with RecompileCounter() as recompiles:
        probe = StepWindows(build(cfg.regime), device, recompiles)
        history = epoch_rows()
        schedule = build(cfg.schedule)
        trainer = Trainer(settings, regime=probe, schedule=schedule, store=history, seed=0)
        try:
            result = trainer.fit(model, splits, build(cfg.optimizer, _partial_=True))
        finally:
            probe.close()
    history = history.rows
    figures = {
        "model": cfg.model.id,
        "regime": cfg.regime.id,
        "batch_size": settings.batch_size,
        "params": sum(p.numel() for p in model.parameters()),
        "compile": str(settings.compile),
        "channels_last": channels_last(model),
        "epoch_seconds": [row["seconds"] for row in history],
        "train_loss": [row["train_loss"] for row in history],
        "test_loss": round(result.test_loss, 5),
        "recompiles": recompiles.recompiles,
        "recompile_reasons": recompiles.reasons[:8],
        "recompile_limit_hits": recompiles.limit_hits,
        "graphs": recompiles.graphs,
        "graph_breaks": recompiles.graph_breaks,
        **window_figures(probe),
    }
    if device == "cuda":
        figures["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if name == "lstm":
        figures["lstm_dtypes"] = rnn_dtypes(model, splits, trainer.accel)
    checks = {
        "loss_finite": all(math.isfinite(x) for x in figures["train_loss"] + [result.test_loss]),
        "steps_measured": figures["measured_steps"] >= 2,
        "no_syncs_in_suite_code": figures["syncs_in_suite_code_per_step"] == 0,
        "no_recompile_limit_hit": not recompiles.limit_hits,
    }
    if name == "lstm":
        checks["lstm_runs_float32"] = set(figures["lstm_dtypes"]) == {"torch.float32"}
    if device == "cuda" and figures["channels_last"] is not None:
        checks["channels_last_on_cuda"] = figures["channels_last"]
    return check_result(checks, **figures)


# -- resume: bit for bit through the entrypoint -------------------------------------------------


def sigterm_run(record: Path, overrides: list[str]) -> None:
    """``python -m lerac.suite.train OVERRIDES`` whose first checkpoint, once on disk, writes
    the backend flags as ``fit`` set them to ``record`` and sends the process SIGTERM: a
    stop from inside the run at a known point, no polling."""
    from lerac.engine.checkpoint import Checkpoint

    save = Checkpoint.save

    def save_then_stop(self: Any, state: dict[str, Any]) -> None:
        save(self, state)
        if not record.exists():
            flags = {
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
                "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            }
            record.write_text(json.dumps(flags))
            os.kill(os.getpid(), signal.SIGTERM)

    Checkpoint.save = save_then_stop
    sys.argv = ["lerac.suite.train", *overrides]
    runpy.run_module("lerac.suite.train", run_name="__main__")


def run_files(out: Path) -> dict[str, Any]:
    """A run's history, learning rates and predictions (as text, ``seconds`` left out),
    metrics without timings, and its final checkpoint."""
    from lerac.engine.io import load_torch
    from lerac.engine.store import read_metrics

    run_dir = next(out.glob("*/metrics.json")).parent
    with open(run_dir / "history.csv", newline="") as f:
        history = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]
    metrics = read_metrics(run_dir)
    timing = ("train_seconds", "resumed_from_epoch")
    return {
        "history": history,
        "lrs": (run_dir / "lr_schedule.csv").read_text(),
        "predictions": (run_dir / "predictions.csv").read_text(),
        "metrics": {k: v for k, v in metrics.items() if k not in timing},
        "resumed_from_epoch": metrics.get("resumed_from_epoch"),
        "checkpoint": load_torch(run_dir / "checkpoint.pt"),
    }


def same_tensors(a: Any, b: Any) -> bool:
    """Nested containers equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    return a == b


def resume_overrides(device: str, out: Path) -> list[str]:
    small = tiny(device)
    return [
        "dataset=digits",
        "model=resnet18",
        f"model.width={4 if small else 64}",
        "regime=lerac",
        "regime.k=1",
        "logger=none",
        f"trainer.device={device}",
        "trainer.deterministic=true",
        "trainer.max_epochs=3",
        f"trainer.limit_train_batches={3 if small else 10}",
        "trainer.limit_eval_batches=2",
        "trainer.batch_size=32",
        "trainer.progress=false",
        "trainer.keep_checkpoint=true",
        f"paths.output_dir={out}",
    ]


def stage_resume(device: str, work: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": python_path()}
    train = [sys.executable, "-m", "lerac.suite.train"]
    record = work / "flags_inside_fit.json"
    stop = [sys.executable, __file__, "sigterm-run", "--record", str(record), "--"]
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs = {  # the uninterrupted run and the stopped one side by side
        "reference": subprocess.Popen(
            train + resume_overrides(device, work / "reference"), env=env
        ),
        "stopped": subprocess.Popen(stop + resume_overrides(device, work / "resumed"), env=env),
    }
    codes = {name: run.wait() for name, run in runs.items()}
    codes["resumed"] = subprocess.run(
        train + resume_overrides(device, work / "resumed"), env=env
    ).returncode
    if codes != {"reference": 0, "stopped": 3, "resumed": 0}:
        return check_result({"exit_codes_0_3_0": False}, exit_codes=codes)
    ref, res = run_files(work / "reference"), run_files(work / "resumed")
    flags = json.loads(record.read_text())
    checks = {
        "exit_codes_0_3_0": True,
        "resumed_after_epoch_1": res["resumed_from_epoch"] == 1,
        "history_equal": ref["history"] == res["history"],
        "lrs_equal": ref["lrs"] == res["lrs"],
        "predictions_equal": ref["predictions"] == res["predictions"],
        "metrics_equal": ref["metrics"] == res["metrics"],
        "parameters_equal": same_tensors(ref["checkpoint"]["model"], res["checkpoint"]["model"]),
        "optimizer_state_equal": same_tensors(
            ref["checkpoint"]["optimizer"], res["checkpoint"]["optimizer"]
        ),
        "cudnn_benchmark_off_inside_fit": flags["cudnn_benchmark"] is False,
        "deterministic_algorithms_inside_fit": flags["deterministic_algorithms"] is True,
    }
    figures = {"flags_inside_fit": flags, "test_acc": ref["metrics"].get("test_acc")}
    figures["seconds_three_runs"] = round(time.perf_counter() - started, 1)
    return check_result(checks, **figures)


# -- flags: autotuning and TF32 inside fit, deterministic algorithms per family ----------------


def backend_flags() -> dict[str, bool]:
    return {
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
    }


def flags_inside_fit(device: str, precision: str, deterministic: bool) -> dict[str, bool]:
    """The backend flags at the first training step of a small run, under the entrypoint's
    ``deterministic`` switch as ``lerac.suite.train`` sets it."""
    from lerac.engine.loop import Trainer
    from lerac.engine.regimes import Conventional
    from lerac.engine.settings import TrainerSettings
    from lerac.suite.models.resnet import ResNet18
    from lerac.suite.train import deterministic as entrypoint_switch

    seen: dict[str, bool] = {}

    class FlagsAtFirstStep(Conventional):
        def curriculum(self, optimizer: Any, steps_per_epoch: int) -> None:
            hook = optimizer.register_step_pre_hook(lambda *_: seen.update(backend_flags()))
            optimizer.register_step_post_hook(lambda *_: hook.remove())  # the first step only

    splits = image_data(16, 8, 8)
    settings = TrainerSettings(
        max_epochs=1,
        batch_size=8,
        device=device,
        progress=False,
        precision=precision,
        deterministic=deterministic,
    )
    with entrypoint_switch(deterministic):
        trainer = Trainer(settings, regime=FlagsAtFirstStep())
        trainer.fit(ResNet18(10, 3, 8, 4), splits, lambda g: torch.optim.SGD(g, lr=0.01))
    return seen


def deterministic_step(name: str, device: str, work: Path) -> str:
    """One training step of the family's model (CBS attached) with PyTorch's deterministic
    algorithms on: "ok", or the first line of the error an operator raised."""
    from lerac.layers import call_model
    from lerac.suite.build import build, build_model

    cfg, splits = family_config(name, device, work)
    model = build_model(cfg.model, splits.num_classes, splits.input_spec).to(device)
    if "cbs" in cfg.regime.id:
        regime = build(cfg.regime)
        regime.prepare(model)
        regime.on_epoch_start(0, model)
    inputs, targets = next(iter(splits.loaders(4, device)[0]))
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.nn.functional.cross_entropy(call_model(model, inputs).float(), targets).backward()
        return "ok"
    except RuntimeError as err:
        return str(err).splitlines()[0][:300]
    finally:
        torch.use_deterministic_algorithms(before)


def stage_flags(device: str, work: Path) -> dict[str, Any]:
    before = backend_flags()
    cases = {"fp32": ("fp32", False), "fp32_deterministic": ("fp32", True)}
    cases |= {"tf32": ("tf32", False), "bf16": ("bf16", False)}
    seen = {case: flags_inside_fit(device, *setting) for case, setting in cases.items()}
    checks = {"restored_after_fit": backend_flags() == before}
    for case, (precision, deterministic) in cases.items():
        tf32 = precision != "fp32"
        checks[f"{case}_benchmark"] = seen[case]["cudnn_benchmark"] == (
            device == "cuda" and not deterministic
        )
        checks[f"{case}_tf32"] = seen[case]["matmul_tf32"] == seen[case]["cudnn_tf32"] == tf32
    steps = {name: deterministic_step(name, device, work / name) for name in FAMILIES}
    checks |= {f"deterministic_{name}": outcome == "ok" for name, outcome in steps.items()}
    return check_result(checks, flags_inside_fit=seen, deterministic_steps=steps)


# -- rng: a checkpoint of two CUDA generator states on one GPU ---------------------------------


def stage_rng(device: str, work: Path) -> dict[str, Any]:
    """A checkpoint whose RNG part holds two CUDA states, as a process that saw two GPUs
    wrote it, restored on this one device (on the CPU: two fabricated states, ignored)."""
    from lerac.engine.checkpoint import Checkpoint, rng_state, set_rng_state

    dev = torch.device(device)
    torch.manual_seed(1)
    saved = rng_state(dev)
    figures: dict[str, Any] = {"states_saved_by_this_version": len(saved["cuda"])}
    if dev.type == "cuda":
        first = torch.cuda.get_rng_state(dev)
        expected = torch.rand(4, device=dev).cpu()
        torch.cuda.manual_seed(7)
        saved["cuda"] = [first, torch.cuda.get_rng_state(dev)]
        figures["visible_gpus"] = torch.cuda.device_count()
    else:
        saved["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
        expected = torch.rand(4)
    Checkpoint(work).save({"rng": saved, "progress": {"epoch": 1}})
    state = Checkpoint(work).load()
    torch.manual_seed(99)
    if dev.type == "cuda":
        torch.cuda.manual_seed(99)
    set_rng_state(state["rng"], dev)
    after = torch.rand(4, device=dev).cpu() if dev.type == "cuda" else torch.rand(4)
    if dev.type == "cuda" and torch.cuda.device_count() == 1:
        try:  # what resuming did before: every saved state onto every visible GPU
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
            figures["restoring_all_states"] = "no error"
        except Exception as err:
            figures["restoring_all_states"] = f"{type(err).__name__}: {err}"[:200]
    checks = {
        "loaded": True,
        "generator_continues_as_saved": torch.equal(after, expected),
        "one_state_saved": figures["states_saved_by_this_version"] == (dev.type == "cuda"),
    }
    return check_result(checks, **figures)


# -- bench -------------------------------------------------------------------------------------


def stage_bench(device: str, work: Path, out: Path) -> dict[str, Any]:
    """``make bench`` (scripts/bench.py) on the device into ``out``/benchmark.json; its
    headline figures. CPU throughput is left to CPU machines."""
    target = out / "benchmark.json"
    size = "test" if tiny(device) else "full"
    command = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--size", size]
    command += ["--device", device, "--out", str(target), "--throughput-on", "device"]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": python_path()})
    if done.returncode != 0 or not target.is_file():
        return check_result({"bench_ran": False}, exit_code=done.returncode)
    report = json.loads(target.read_text())
    keys = [k for k in report if k.endswith("_ratio") or k.endswith("_ratio_many_layers")]
    figures = {k: report[k] for k in keys + ["device_loader_speedup", "throughput", "size"]}
    return check_result({"bench_ran": True}, **figures)


STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "resume": stage_resume,
    "flags": stage_flags,
    "rng": stage_rng,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--work", type=Path, default=Path("outputs/gpu_check_work"))
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check"))
    parser.add_argument("--result", type=Path)
    parser.add_argument("--record", type=Path, help="sigterm-run: where the flags go")
    args, rest = parser.parse_known_args()
    if args.stage == "sigterm-run":
        return sigterm_run(args.record, [a for a in rest if a != "--"])
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        if args.stage.startswith("family_"):
            result = stage_family(args.stage.removeprefix("family_"), args.device, args.work)
        elif args.stage == "bench":
            result = stage_bench(args.device, args.work, args.out)
        else:
            result = STAGES[args.stage](args.device, args.work)
    except Exception as err:
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(err).__name__}: {err}"[:600]}
    result["stage_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1, default=str))
    if args.result:
        args.result.write_text(json.dumps(result, default=str))
    sys.exit(0 if result.get("ok") else 1)


if __name__ == "__main__":
    main()
