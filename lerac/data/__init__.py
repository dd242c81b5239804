"""Data families. Each family is one module (digits.py, cifar.py, ...) whose loader
returns :class:`lerac.data.base.Splits`; configs live in conf/dataset/."""

from lerac.data.base import Splits, TensorLoader

__all__ = ["Splits", "TensorLoader"]
