"""Eager PyTorch references for every fastgan op: the ground truth each backend
is tested against and the ``backend="reference"`` implementation."""
from .clip import clip_, rmsprop_clip_

__all__ = ["clip_", "rmsprop_clip_"]
