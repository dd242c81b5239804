"""Which GPU a job of a local multirun sees: conf/hydra/launcher/gpus.yaml spreads jobs.

``${lerac_gpu:${hydra:job.num}}`` is job i's CUDA_VISIBLE_DEVICES: the (i mod n)-th of the
n GPUs the launching process sees (its own CUDA_VISIBLE_DEVICES list, else every GPU).
Registered with the suite's other resolvers (lerac.suite.compose).
"""

from __future__ import annotations

import os


def visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_for_job(job_num: int | str | None) -> str:
    """The GPU of job ``job_num``; '' (no GPU: the run trains on the CPU) when none."""
    gpus = visible_gpus()
    return gpus[int(job_num or 0) % len(gpus)] if gpus else ""
