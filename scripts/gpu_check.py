"""The GPU check's driver (scripts/gpu_check.sh runs it): every stage of
scripts/gpu_stages.py in its own process, under one overall deadline, and a summary.

Standard library only, so that it can say which packages are missing where they are.
Stages run in the order of :data:`STAGES` (ResNet-18 first), up to ``GPU_CHECK_JOBS`` at
a time (on CUDA 4: compiling is CPU work and the machine has 16 cores; timings that must
not share the GPU, the benchmark, run alone). A stage gets the smaller of its
budget and the time left; one that overruns is killed and failed, one that cannot start
before the deadline is skipped. What comes back (at most 3 files, flat under ``--out``):

    status.json      {"stages": {name: {"status": "ok" | "failed" | "skipped",
                      "seconds": ..., figures...}}, "ok": ..., the machine, the versions}
    benchmark.json   scripts/bench.py on the device
    logs.tar.gz      every stage's output

The exit status is 0 only when every stage is ok within the deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 420.0


@dataclass
class Stage:
    name: str
    budget_s: float  # on CUDA; the CPU rehearsal's budgets are the same
    alone: bool = False  # runs with nothing beside it (timings)


STAGES = [  # in order of start: ResNet-18 first, the slowest to compile early
    Stage("imports", 90, alone=True),
    Stage("family_resnet18", 180),
    Stage("family_densenet121", 240),
    Stage("resume", 150),
    Stage("flags", 120),
    Stage("rng", 60),
    Stage("family_lstm", 180),
    Stage("family_bert", 180),
    Stage("family_septr", 180),
    Stage("family_densenet121_audio", 180),
    Stage("bench", 180, alone=True),
]
# The modules the stages import, by the distribution that provides them.
MODULES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "torchaudio": "torchaudio",
    "transformers": "transformers",
    "timm": "timm",
    "sklearn": "scikit-learn",
    "numpy": "numpy",
    "scipy": "scipy",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
    "tokenizers": "tokenizers",
    "antlr4": "antlr4-python3-runtime",
    "omegaconf": "omegaconf",
    "hydra": "hydra-core",
}
IMPORTS = """
import importlib, json, platform, sys
missing, versions = {}, {}
for module, dist in MODULES.items():
    try:
        versions[dist] = getattr(importlib.import_module(module), "__version__", "?")
    except Exception as err:
        missing[dist] = f"{type(err).__name__}: {err}"
info = {"python": platform.python_version(), "versions": versions, "missing": missing}
if not missing:
    try:
        importlib.import_module("lerac.suite.train")  # the whole suite's imports
    except Exception as err:
        missing["lerac.suite.train"] = f"{type(err).__name__}: {err}"
    import torch
    info["cuda_available"] = torch.cuda.is_available()
    info["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = list(torch.cuda.get_device_capability(0))
        info["cudnn"] = torch.backends.cudnn.version()
print(json.dumps(info))
"""


@dataclass
class Run:
    stage: Stage
    process: subprocess.Popen
    started: float
    limit: float
    log: Path
    result: Path


@dataclass
class Check:
    out: Path
    work: Path
    device: str
    deadline: float
    jobs: int
    started: float = field(default_factory=time.time)
    python: str = sys.executable
    stages: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def write_status(check: Check, final: bool = False) -> bool:
    """status.json as it stands (written after every stage, so a run cut short keeps what
    it found); True when every stage is ok."""
    late = time.time() > check.deadline
    ok = not late and all(s["status"] == "ok" for s in check.stages.values())
    summary = {
        "ok": ok,
        "past_deadline": late,
        "device": check.device,
        "deadline_s": round(check.deadline - check.started, 1),
        "seconds": round(time.time() - check.started, 1),
        "finished": final,
        "machine": check.info,
        "stages": check.stages,
    }
    (check.out / "status.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return ok


def record(check: Check, name: str, status: str, seconds: float, **figures) -> None:
    check.stages[name] = {"status": status, "seconds": round(seconds, 1), **figures}
    line = figures.get("error") or ""
    print(f"gpu_check: {name:<26} {status:<7} {seconds:6.1f}s {line}"[:400], flush=True)
    write_status(check)


def run_imports(check: Check) -> bool:
    """Every module the stages need, the suite's own imports, the device; True when all
    are there."""
    started, log = time.time(), check.work / "logs" / "imports.log"
    code = f"MODULES = {MODULES!r}\n{IMPORTS}"
    try:
        done = subprocess.run(
            [check.python, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=90
        )
        stdout, text, rc = done.stdout, done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        stdout, text, rc = "", str(err), -1
    log.write_text(text)
    lines = stdout.strip().splitlines() if rc == 0 else []
    info = json.loads(lines[-1]) if lines else {}
    missing = info.pop("missing", {}) if info else {"python": text.strip()[-300:]}
    check.info = info
    error = ""
    if missing:
        error = (
            f"missing: {', '.join(missing)}; build them with `make gpu-wheels` and carry "
            f".gpu-wheels ({'; '.join(missing.values())})"
        )[:700]
    elif check.device == "cuda" and not info.get("cuda_available"):
        error = "no CUDA device is visible (GPU_CHECK_DEVICE=cpu rehearses on the CPU)"
    status = "failed" if error else "ok"
    record(check, "imports", status, time.time() - started, error=error, missing=list(missing))
    return not error


def start(check: Check, stage: Stage, limit: float) -> Run:
    log = check.work / "logs" / f"{stage.name}.log"
    result = check.work / f"{stage.name}.json"
    command = [check.python, "scripts/gpu_stages.py", stage.name, "--device", check.device]
    command += ["--work", str(check.work / stage.name), "--out", str(check.out)]
    command += ["--result", str(result)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if check.device == "cpu":  # tiny models on shared cores: threads only wait on each other
        env.setdefault("OMP_NUM_THREADS", "1")
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole at its limit
        )
    print(f"gpu_check: {stage.name:<26} started (limit {limit:.0f}s)", flush=True)
    return Run(stage, process, time.time(), limit, log, result)


def tail(path: Path, lines: int = 6) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return " | ".join(text[-lines:])[-600:]


def finished(check: Check, run: Run) -> bool:
    """Whether ``run`` is over (recorded), killing it past its limit."""
    seconds = time.time() - run.started
    if run.process.poll() is None:
        if seconds <= run.limit:
            return False
        os.killpg(run.process.pid, signal.SIGKILL)
        run.process.wait()
        error = f"killed at its limit of {run.limit:.0f}s; last output: {tail(run.log)}"
        record(check, run.stage.name, "failed", seconds, error=error)
        return True
    figures = json.loads(run.result.read_text()) if run.result.is_file() else {}
    ok = run.process.returncode == 0 and figures.pop("ok", False)
    if not ok and not figures.get("error"):
        figures["error"] = f"exit {run.process.returncode}: {tail(run.log)}"
    record(check, run.stage.name, "ok" if ok else "failed", seconds, **figures)
    return True


def may_start(stage: Stage, running: list[Run], jobs: int) -> bool:
    if stage.alone:
        return not running
    return not any(r.stage.alone for r in running) and len(running) < jobs


def run_stages(check: Check, stages: list[Stage]) -> None:
    """Start stages in order as places free up; skip what the deadline leaves no time for."""
    pending, running = list(stages), []
    while pending or running:
        running = [r for r in running if not finished(check, r)]
        while pending and may_start(pending[0], running, check.jobs):
            stage = pending.pop(0)
            left = check.deadline - time.time()
            if left < 15:
                record(check, stage.name, "skipped", 0, error="no time left before the deadline")
                continue
            running.append(start(check, stage, min(stage.budget_s, left)))
        time.sleep(0.2)


def pack_logs(check: Check) -> None:
    with tarfile.open(check.out / "logs.tar.gz", "w:gz") as tar:
        tar.add(check.work / "logs", arcname="logs")


def parse(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=env("OUT", "outputs/gpu_check"))
    parser.add_argument(
        "--device", default=env("GPU_CHECK_DEVICE", "cuda"), choices=["cuda", "cpu"]
    )
    parser.add_argument(
        "--deadline", type=float, default=float(env("GPU_CHECK_DEADLINE_S", DEADLINE_S))
    )
    parser.add_argument(
        "--stages", default=env("GPU_CHECK_STAGES", ""), help="comma list (default all)"
    )
    parser.add_argument("--jobs", type=int, default=int(env("GPU_CHECK_JOBS", "0")) or None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    wanted = {s for s in args.stages.split(",") if s} or {s.name for s in STAGES}
    unknown = wanted - {s.name for s in STAGES}
    if unknown:
        print(
            f"error: unknown stage(s) {', '.join(sorted(unknown))}; the stages are "
            f"{', '.join(s.name for s in STAGES)}",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        check = Check(
            out,
            Path(work),
            args.device,
            started + args.deadline,
            args.jobs or (4 if args.device == "cuda" else 1),
            started,
        )
        (check.work / "logs").mkdir()
        print(
            f"gpu_check: device={args.device} deadline={args.deadline:.0f}s out={out}", flush=True
        )
        stages = [s for s in STAGES[1:] if s.name in wanted]
        if run_imports(check):
            run_stages(check, stages)
        else:
            for stage in stages:
                record(check, stage.name, "skipped", 0, error="imports failed")
        pack_logs(check)
        ok = write_status(check, final=True)
    print(
        f"gpu_check: {'ok' if ok else 'FAILED'} in {time.time() - started:.0f}s; {out}/status.json",
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
