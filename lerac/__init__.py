"""LeRaC (Learning Rate Curriculum): reproduction suite and a reusable LR scheduler.

The scheduler on any model: ``from lerac import LeRaC, layer_param_groups`` (README).
"""

from lerac.curriculum import LeRaC, initial_rates
from lerac.layers import find_layers, layer_param_groups

__all__ = ["LeRaC", "find_layers", "initial_rates", "layer_param_groups"]
