"""scripts/gpu_check.sh, rehearsed on the CPU: what comes back fits the device's limits,
a missing package or an overrun stage fails the check loudly."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def driver():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look it up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def gpu_check(out: Path, stages: str, python_path: str = "") -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_STAGES": stages,
        "GPU_CHECK_WHEELS": str(out / "no-wheels"),
        "OUT": str(out / "out"),
        "PYTHON": sys.executable,
        "PYTHONPATH": python_path,
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_stage_rehearses_on_the_cpu_into_at_most_three_flat_files(tmp_path):
    done = gpu_check(tmp_path, "rng")
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["logs.tar.gz", "status.json"]
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)  # at most 2 folders down
    status = json.loads((out / "status.json").read_text())
    assert status["ok"] and status["device"] == "cpu" and status["finished"]
    assert {name: s["status"] for name, s in status["stages"].items()} == {
        "imports": "ok",
        "rng": "ok",
    }
    assert status["stages"]["rng"]["checks"]["generator_continues_as_saved"]
    assert all(isinstance(s["seconds"], float) for s in status["stages"].values())
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert {"logs/imports.log", "logs/rng.log"} <= set(tar.getnames())


def test_missing_packages_are_named_and_fail_the_check(tmp_path):
    stubs = tmp_path / "stubs"  # the GPU machine as it comes: no Hydra, no OmegaConf
    for module in ("hydra", "omegaconf"):
        (stubs / module).mkdir(parents=True)
        (stubs / module / "__init__.py").write_text(f"raise ImportError('no {module} here')\n")
    done = gpu_check(tmp_path, "rng", python_path=str(stubs))
    assert done.returncode != 0
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    imports = status["stages"]["imports"]
    assert imports["status"] == "failed" and imports["missing"] == ["omegaconf", "hydra-core"]
    assert "make gpu-wheels" in imports["error"] and "make gpu-wheels" in done.stdout
    assert status["stages"]["rng"]["status"] == "skipped" and not status["ok"]


def test_a_stage_past_its_limit_is_killed_and_what_follows_is_skipped(
    tmp_path, driver, monkeypatch
):
    check = driver.Check(tmp_path, tmp_path, "cpu", time.time() + 16, jobs=1)
    (tmp_path / "logs").mkdir()

    def sleeper(check, stage, limit):  # a stage that never ends
        process = subprocess.Popen(["sleep", "60"], start_new_session=True)
        return driver.Run(stage, process, time.time(), limit, tmp_path / "x.log", tmp_path / "x")

    monkeypatch.setattr(driver, "start", sleeper)
    started = time.time()
    driver.run_stages(check, [driver.Stage("slow", 1.5), driver.Stage("next", 30)])
    assert time.time() - started < 10
    stages = check.stages
    assert stages["slow"]["status"] == "failed" and "killed at its limit" in stages["slow"]["error"]
    assert stages["next"]["status"] == "skipped" and "deadline" in stages["next"]["error"]
    assert not driver.write_status(check)
