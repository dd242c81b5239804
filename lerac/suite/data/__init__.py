"""Data families. Each family is one module (digits.py, cifar.py, ...) whose loader
returns :class:`lerac.engine.batches.Splits`; configs live in conf/dataset/."""
