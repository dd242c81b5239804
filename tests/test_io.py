"""lerac.io: whole files or none, caches keyed by their inputs, parallel writers."""

import multiprocessing
import os
import pickle

import pytest
import torch

from lerac.io import (
    atomic_open,
    cache_key,
    cached,
    load_torch,
    remove_temporaries,
    save_torch,
    write_json,
)


def _fill_cache(file, barrier, value, results):
    """A job of a parallel sweep: build the cache (meeting the other job inside the build,
    so both write at once), then report what it read back."""

    def build():
        barrier.wait(timeout=60)
        return {"x": torch.full((50_000,), float(value))}

    try:
        results.put((value, cached(file, build)["x"].unique().tolist()))
    except Exception as err:  # reported to the test, which fails on it
        results.put((value, repr(err)))


def test_two_processes_filling_one_cache_at_once_both_succeed(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    file = tmp_path / "cache" / "shared.pt"
    jobs = [context.Process(target=_fill_cache, args=(file, barrier, v, results)) for v in (1, 2)]
    for job in jobs:
        job.start()
    outcomes = dict(results.get(timeout=120) for _ in jobs)
    for job in jobs:
        job.join(timeout=60)
    # Each job got the tensors it built, and the file left is one of them, whole.
    assert outcomes == {1: [1.0], 2: [2.0]}
    assert load_torch(file)["x"].unique().tolist() in ([1.0], [2.0])
    assert sorted(p.name for p in file.parent.iterdir()) == ["shared.pt"]


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
    remove_temporaries(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "other.pt.1-1.tmp"]


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
