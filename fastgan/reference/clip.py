"""Eager references for weight clipping and the clipped RMSprop step (docs/theory.md §3)."""
from typing import List, Optional

import torch


def clip_(tensors: List[torch.Tensor], clip_value: float) -> None:
    """``t.clamp_(-c, c)`` for each tensor: the per-parameter loop WGAN code runs."""
    for tensor in tensors:
        tensor.clamp_(-clip_value, clip_value)


def rmsprop_clip_(params: List[torch.Tensor], grads: List[torch.Tensor], square_avgs: List[torch.Tensor],
                  grad_avgs: List[torch.Tensor], momentum_buffers: List[torch.Tensor], lr: float, alpha: float,
                  eps: float, weight_decay: float, momentum: float, centered: bool, maximize: bool,
                  clip_value: float, lr_tensor: Optional[torch.Tensor] = None) -> None:
    """torch.optim.RMSprop's single-tensor step (torch/optim/rmsprop.py), then clamp_
    (with ``lr_tensor``, its value is the learning rate, applied with tensor arithmetic
    as torch's capturable foreach step does):

        g = -grad if maximize else grad;  g += weight_decay * p
        v = alpha * v + (1 - alpha) * g^2
        m = lerp(m, g, 1 - alpha);  den = sqrt(v - m^2) + eps     (centered)
        den = sqrt(v) + eps                                        (otherwise)
        b = momentum * b + g / den;  p -= lr * b                   (momentum > 0)
        p -= lr * g / den                                          (otherwise)
        p.clamp_(-c, c)
    """
    step_size = None if lr_tensor is None else -lr_tensor.reshape(())
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        square_avg = square_avgs[i]
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            grad_avg = grad_avgs[i]
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if momentum > 0:
            buf = momentum_buffers[i]
            buf.mul_(momentum).addcdiv_(grad, avg)
            param.add_(buf, alpha=-lr) if step_size is None else param.add_(buf * step_size)
        elif step_size is None:
            param.addcdiv_(grad, avg, value=-lr)
        else:
            param.add_(grad / avg * step_size)
        param.clamp_(-clip_value, clip_value)
