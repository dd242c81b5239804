"""What `make test-wheels` runs inside its fresh virtual environment (scripts/check_wheels.sh).

    python wheel_check.py core README.md   # after `pip install lerac-*.whl`
    python wheel_check.py suite OUT_DIR    # after `pip install "<wheel>[suite]"`, lerac-train

``core``: lerac comes from the environment, not a checkout; the README's scheduler example
runs on a tiny network; no suite package is loaded; ``lerac-train`` says which extra it
needs and exits 2. ``suite``: the run that lerac-train wrote to OUT_DIR completed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SUITE_PACKAGES = ("hydra", "omegaconf", "wandb", "transformers", "timm", "torchvision")


def core(readme: Path) -> None:
    import torch
    from torch import nn

    import lerac

    assert "site-packages" in lerac.__file__, f"lerac imported from {lerac.__file__}"
    example = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)[0]
    images, labels = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    namespace = {
        "MyNet": lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 4)),
        "example_batch_inputs": images[:2],
        "train_loader": [(images[i : i + 8], labels[i : i + 8]) for i in (0, 8)],
        "criterion": nn.CrossEntropyLoss(),
        "epochs": 8,
    }
    exec(example, namespace)  # the checkout's own README, the snippet a user would paste
    assert namespace["scheduler"].finished, "the README's curriculum did not finish"
    loaded = [name for name in SUITE_PACKAGES if name in sys.modules]
    assert not loaded, f"the core library loaded {loaded}"
    train = Path(sys.executable).with_name("lerac-train")
    run = subprocess.run([str(train)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "pip install '.[suite]'" in run.stderr, run.stderr
    print(f"core wheel: README example ran, lerac from {Path(lerac.__file__).parent}")


def suite(out: Path) -> None:
    metrics = [json.loads(path.read_text()) for path in out.glob("*/metrics.json")]
    assert [m["status"] for m in metrics] == ["completed"], metrics
    print(f"suite wheel: lerac-train completed {metrics[0]['key']} ({metrics[0]['epochs']} epoch)")


if __name__ == "__main__":
    {"core": core, "suite": suite}[sys.argv[1]](Path(sys.argv[2]))
