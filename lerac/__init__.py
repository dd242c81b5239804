"""LeRaC (Learning Rate Curriculum): reproduction suite and a reusable LR scheduler.

The library needs torch alone (docs/library.md)::

    from lerac import LeRaC, curriculum_steps, layer_param_groups

    groups = layer_param_groups(model, example_inputs, weight_decay=5e-4)
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    scheduler = LeRaC(optimizer, curriculum_steps(5, len(loader)), lr_first=0.1, lr_last=1e-8)

Nothing imported here loads the suite's packages (Hydra, W&B, transformers, timm, ...);
the suite's modules import them themselves.
"""

from lerac.curriculum import LeRaC, curriculum_steps, initial_rates
from lerac.layers import find_layers, layer_param_groups, layer_rates
from lerac.plateau import PlateauAfterCurriculum
from lerac.smoothing import SmoothingCurriculum, attach_smoothing, set_sigma

__all__ = [
    "LeRaC",
    "PlateauAfterCurriculum",
    "SmoothingCurriculum",
    "attach_smoothing",
    "curriculum_steps",
    "find_layers",
    "initial_rates",
    "layer_param_groups",
    "layer_rates",
    "set_sigma",
]
