"""lerac.engine.io: whole files or none, caches keyed by their inputs, parallel writers."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from lerac.engine.io import (
    atomic_open,
    cache_key,
    cached,
    load_torch,
    remove_temporaries,
    save_torch,
    write_json,
)

# A job of a parallel sweep, run as its own interpreter (a forked child of a process that
# already ran torch can deadlock in torch's thread pool). Both jobs meet inside the build,
# through files, so they write the cache at once; each prints what it read back.
FILL_CACHE = """
import json, sys, time
from pathlib import Path
import torch
from lerac.engine.io import cached

file, value = Path(sys.argv[1]), int(sys.argv[2])

def build():
    (file.parent / f"ready-{value}").touch()
    deadline = time.monotonic() + 60
    while len(list(file.parent.glob("ready-*"))) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the other job never started its build")
        time.sleep(0.01)
    return {"x": torch.full((50_000,), float(value))}

print(json.dumps(cached(file, build)["x"].unique().tolist()))
"""


def test_two_processes_filling_one_cache_at_once_both_succeed(tmp_path):
    file = tmp_path / "cache" / "shared.pt"
    file.parent.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = {
        v: subprocess.Popen(
            [sys.executable, "-c", FILL_CACHE, str(file), str(v)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for v in (1, 2)
    }
    try:
        outcomes = {v: job.communicate(timeout=180) for v, job in jobs.items()}
    finally:
        for job in jobs.values():
            job.kill()
    # Each job got the tensors it built, and the file left is one of them, whole.
    for v, (out, err) in outcomes.items():
        assert jobs[v].returncode == 0, err
        assert json.loads(out) == [float(v)]
    assert load_torch(file)["x"].unique().tolist() in ([1.0], [2.0])
    left = sorted(p.name for p in file.parent.iterdir() if not p.name.startswith("ready-"))
    assert left == ["shared.pt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_open(target) as f:
            f.write('{"epoch": 2, "half')
            raise RuntimeError("disk full")
    assert target.read_text() == '{\n  "epoch": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_temporaries_of_a_killed_writer_are_removed(tmp_path):
    target = tmp_path / "checkpoint.pt"
    save_torch(target, {"w": torch.ones(2)})
    (tmp_path / "checkpoint.pt.123-456.tmp").write_bytes(b"half")
    (tmp_path / "other.pt.1-1.tmp").write_bytes(b"not ours")
    remove_temporaries(tmp_path, of=target.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "other.pt.1-1.tmp"]
    remove_temporaries(tmp_path)  # every file's: a run folder under its lock
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_the_cache_key_follows_settings_and_files(tmp_path):
    data = tmp_path / "a.bin"
    data.write_bytes(b"12")
    key = cache_key({"size": 32}, [data])
    assert key == cache_key({"size": 32}, [data]) and len(key) == 16
    assert key != cache_key({"size": 64}, [data])
    data.write_bytes(b"123")  # another size: the cache is stale
    assert key != cache_key({"size": 32}, [data])


def test_a_cache_is_built_once_and_read_back_without_code(tmp_path):
    file, builds = tmp_path / "c.pt", []

    def build():
        builds.append(1)
        return {"x": torch.arange(3)}

    assert cached(file, build)["x"].tolist() == [0, 1, 2]
    assert cached(file, build)["x"].tolist() == [0, 1, 2]
    assert builds == [1]
    # weights_only: a cache file holding arbitrary objects is refused, never executed.
    with open(file, "wb") as f:
        pickle.dump(os.system, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        load_torch(file)
