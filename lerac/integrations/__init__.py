"""Thin helpers for trainers that already exist (docs/library.md). Each module imports its
trainer's package, so none of them is imported by ``import lerac``; each needs its extra
(``pip install ".[hf]"`` in a checkout, and so on):

- :mod:`lerac.integrations.hf`: HuggingFace ``Trainer`` (extra ``hf``).
- :mod:`lerac.integrations.lightning`: PyTorch Lightning (extra ``lightning``).
- :mod:`lerac.integrations.timm`: a timm scheduler for timm's train loop (extra ``timm``).
"""
