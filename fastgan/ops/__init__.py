"""fastgan's fused training primitives. Each op takes ``backend=`` (see
:func:`fastgan.set_backend`) and is tested against its eager reference in
:mod:`fastgan.reference`."""
from .clip import clip_weights_, rmsprop_clip_
from .penalty import (grad_norm_penalty, gradient_penalty, input_gradients, interpolate, r1_penalty,
                      r2_penalty)

__all__ = ["clip_weights_", "grad_norm_penalty", "gradient_penalty", "input_gradients", "interpolate",
           "r1_penalty", "r2_penalty", "rmsprop_clip_"]
from .bias_act import bias_act  # noqa: E402

__all__ += ["bias_act"]
