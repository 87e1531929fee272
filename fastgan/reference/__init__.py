"""Eager PyTorch references for every fastgan op: the ground truth each backend
is tested against and the ``backend="reference"`` implementation."""
from .clip import clip_, rmsprop_clip_

__all__ = ["clip_", "rmsprop_clip_"]
from .bias_act import bias_act  # noqa: E402

__all__ += ["bias_act"]
