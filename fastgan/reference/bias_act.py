"""Eager reference of the fused bias + activation op: ``y = gain * act(x + b)``,
with ``b`` broadcast along ``dim`` (StyleGAN's ``bias_act``). Plain autograd gives
its first and second derivatives."""
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

# name -> (f(z, alpha), default alpha)
ACTIVATIONS: Dict[str, Tuple[Callable[[torch.Tensor, float], torch.Tensor], float]] = {
    "linear": (lambda z, alpha: z, 0.0),
    "relu": (lambda z, alpha: F.relu(z), 0.0),
    "lrelu": (lambda z, alpha: F.leaky_relu(z, alpha), 0.2),
    "tanh": (lambda z, alpha: torch.tanh(z), 0.0),
    "sigmoid": (lambda z, alpha: torch.sigmoid(z), 0.0),
    "silu": (lambda z, alpha: F.silu(z), 0.0),
    "elu": (lambda z, alpha: F.elu(z, alpha), 1.0),
}


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, act: str = "lrelu", alpha: Optional[float] = None,
             gain: float = 1.0, dim: int = 1) -> torch.Tensor:
    """``gain * act(x + b.view(shape broadcast along dim))``: what a critic's
    ``Linear/Conv2d(bias=True)`` followed by ``LeakyReLU`` (etc.) and a scale computes."""
    fn, default_alpha = ACTIVATIONS[act]
    alpha = default_alpha if alpha is None else float(alpha)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    y = fn(x, alpha)
    if gain != 1:
        y = y * gain
    return y
