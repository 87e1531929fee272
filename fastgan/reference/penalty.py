"""Eager references for the gradient penalties (docs/theory.md §3)."""
from typing import Optional, Tuple

import torch

REDUCTIONS = ("none", "mean", "sum")


def _per_sample(eps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return eps.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``x_hat = eps_b * real + (1 - eps_b) * fake`` with ``eps`` of shape (B,)."""
    e = _per_sample(eps, real)
    return e * real + (1 - e) * fake


def interpolate_backward(grad: torch.Tensor, eps: torch.Tensor, need_real: bool,
                         need_fake: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    e = _per_sample(eps, grad)
    empty = grad.new_empty(0)
    return (e * grad if need_real else empty), ((1 - e) * grad if need_fake else empty)


def grad_norm_penalty(grads: torch.Tensor, center: float = 1.0, weight: float = 1.0, one_sided: bool = False,
                      reduction: str = "mean") -> torch.Tensor:
    """``weight * (||g_b|| - center)^2`` per sample (one-sided: ``max(0, .)^2``), with the
    norm over all non-batch dims, reduced by mean, sum or none: (B, ...) -> () or (B,)."""
    norms = torch.linalg.vector_norm(grads.reshape(grads.shape[0], -1), dim=1)
    gap = norms - center
    if one_sided:
        gap = gap.clamp_min(0)
    terms = weight * gap.square()
    if reduction == "none":
        return terms
    return terms.mean() if reduction == "mean" else terms.sum()


def critic_input_gradients(critic, inputs: torch.Tensor) -> torch.Tensor:
    """``∇_x sum(critic(x))`` at ``inputs``, with a graph for the double backward."""
    (grads,) = torch.autograd.grad(critic(inputs).sum(), inputs, create_graph=True)
    return grads


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor, weight: float = 10.0,
                     center: float = 1.0, one_sided: bool = False) -> torch.Tensor:
    """WGAN-GP (one-sided: WGAN-LP) in plain autograd:
    ``weight * mean_b (||∇_x f(x_hat_b)|| - center)^2`` at ``x_hat = interpolate(real, fake, eps)``."""
    x_hat = interpolate(real.detach(), fake.detach(), eps).requires_grad_(True)
    grads = critic_input_gradients(critic, x_hat)
    return grad_norm_penalty(grads, center=center, weight=weight, one_sided=one_sided)


def r1_penalty(critic, real: torch.Tensor, gamma: float = 10.0, outputs: Optional[torch.Tensor] = None):
    """``gamma / 2 * mean_b ||∇_x D(x_b)||^2`` on reals (R2: the same on fakes)."""
    x = real.detach().requires_grad_(True) if outputs is None else real
    out = critic(x) if outputs is None else outputs
    (grads,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad_norm_penalty(grads, center=0.0, weight=gamma / 2)
