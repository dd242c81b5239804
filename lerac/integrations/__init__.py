"""Thin helpers for trainers that already exist (docs/library.md). Each module imports its
trainer's package, so none of them is imported by ``import lerac``:

- :mod:`lerac.integrations.hf`: HuggingFace ``Trainer`` (``pip install "lerac[hf]"``).
- :mod:`lerac.integrations.lightning`: PyTorch Lightning (``pip install "lerac[lightning]"``).
- :mod:`lerac.integrations.timm`: a timm scheduler for timm's train loop
  (``pip install "lerac[timm]"``).
"""
