"""LeRaC inside PyTorch Lightning (``pip install "lerac[lightning]"``).

In ``configure_optimizers``::

    optimizer = torch.optim.SGD(layer_param_groups(self, example.to(self.device)), lr=0.1)
    return {"optimizer": optimizer, "lr_scheduler": lerac_scheduler_config(
        LeRaC(optimizer, curriculum_steps(k, batches_per_epoch), 0.1, 1e-8))}

Lightning moves the module to its device before ``configure_optimizers``, so the example
batch must be moved there. ``LearningRateMonitor`` logs every group under its ``name``
(one curve per layer). A scheduler for after the curriculum (ReduceLROnPlateau, ...) goes
in the same list with ``interval: "epoch"``: see :func:`after_curriculum_config`.
"""

from __future__ import annotations

from typing import Any

from torch.optim.lr_scheduler import ReduceLROnPlateau

from lerac.curriculum import LeRaC
from lerac.errors import ConfigError


def lerac_scheduler_config(scheduler: LeRaC) -> dict[str, Any]:
    """LeRaC stepped after every optimizer step (Eq. 8 is per iteration)."""
    return {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lerac"}


def after_curriculum_config(scheduler: Any, monitor: str | None = None) -> dict[str, Any]:
    """A scheduler stepped once per epoch beside LeRaC. While the curriculum runs, LeRaC
    sets the rates at every step; after it LeRaC's ``step()`` changes nothing, so each
    change this scheduler makes (a plateau cut, a decay) lasts. ReduceLROnPlateau needs
    the logged metric it watches as ``monitor``."""
    if isinstance(scheduler, ReduceLROnPlateau) and monitor is None:
        raise ConfigError(
            "after_curriculum_config(ReduceLROnPlateau) needs monitor=<a logged metric>"
        )
    config = {"scheduler": scheduler, "interval": "epoch", "frequency": 1}
    return config if monitor is None else {**config, "monitor": monitor}
