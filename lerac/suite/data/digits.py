"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), shipped offline.

It has no official split, so a fixed ``test_fraction`` is held out as test and then
``val_fraction`` of the rest as validation, both with ``split_seed`` (the same for every
run seed, so all regimes and seeds share one split).
"""

from __future__ import annotations

import torch

from lerac.engine.batches import Splits
from lerac.suite.data.base import hold_out, image_splits


def load_digits(
    test_fraction: float = 0.2, val_fraction: float = 0.1, split_seed: int = 0
) -> Splits:
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.tensor(digits.target, dtype=torch.long)
    (train_x, train_y), (test_x, test_y) = hold_out(images, labels, test_fraction, split_seed)
    return image_splits(train_x, train_y, test_x, test_y, 10, val_fraction, split_seed)
