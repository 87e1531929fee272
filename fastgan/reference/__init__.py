"""Eager PyTorch references for every fastgan op: the ground truth each backend
is tested against and the ``backend="reference"`` implementation."""
from .clip import clip_, rmsprop_clip_
from .penalty import critic_input_gradients, grad_norm_penalty, gradient_penalty, interpolate, r1_penalty

__all__ = ["clip_", "critic_input_gradients", "grad_norm_penalty", "gradient_penalty", "interpolate",
           "r1_penalty", "rmsprop_clip_"]
from .bias_act import bias_act  # noqa: E402

__all__ += ["bias_act"]
