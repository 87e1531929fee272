"""Eager references for the first-order (finite-difference) R1/R2 penalties."""
from typing import Optional, Tuple

import torch


def perturb(x: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x + sigma * noise`` (noise a constant: not differentiated)."""
    return x + sigma * noise.detach()


def finite_difference_penalty(perturbed: torch.Tensor, outputs: torch.Tensor, sigma: float,
                              weight: float) -> torch.Tensor:
    """``weight / B * sum ((perturbed - outputs) / sigma)^2`` over all elements: (B, ...) -> ()."""
    return weight / perturbed.shape[0] * ((perturbed - outputs) / sigma).square().sum()


def finite_difference_penalty_backward(grad_loss: torch.Tensor, perturbed: torch.Tensor, outputs: torch.Tensor,
                                       sigma: float, weight: float, need_perturbed: bool,
                                       need_outputs: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(c q, -c q)`` with ``q = (p - o) / sigma`` and ``c = 2 u weight / (B sigma)``."""
    grad = 2 * grad_loss * weight / (perturbed.shape[0] * sigma) * ((perturbed - outputs) / sigma)
    empty = perturbed.new_empty(0)
    return (grad if need_perturbed else empty), (-grad if need_outputs else empty)


def approximate_r1_penalty(critic, real: torch.Tensor, noise: torch.Tensor, gamma: float = 10.0,
                           sigma: float = 0.01, outputs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``gamma / 2 * mean_b sum_o ((D(x_b + sigma eps_b) - D(x_b)) / sigma)^2`` (R2: on fakes)."""
    out = critic(real) if outputs is None else outputs
    return finite_difference_penalty(critic(perturb(real, noise, sigma)), out, sigma, gamma / 2)
