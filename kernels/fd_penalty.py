"""Triton kernels for the finite-difference (first-order approximate) R1/R2 penalties
(math: csrc/fd_penalty_math.h):

    perturb:   x + sigma * noise, elementwise
    penalty:   P = w / B * sum_i ((p_i - o_i) / sigma)^2, one program (critic outputs are few),
               accumulated in a fixed order in the compute type
    backward:  dP/dp = -dP/do = c * (p - o) / sigma,  c = 2 u w / (B sigma), one launch for both
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

from .._layout import batch_major_pair
from ._common import TL_DTYPES, acc_dtype, as_acc, cdiv, div_rn

BLOCK = 1024


@triton.jit
def _perturb_kernel(out, x, noise, sigma: tl.float64, n, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    s = as_acc(sigma, ACC)
    v = tl.load(x + offsets, mask=mask).to(ACC)
    e = tl.load(noise + offsets, mask=mask).to(ACC)
    tl.store(out + offsets, (v + s * e).to(out.dtype.element_ty), mask=mask)


@triton.jit
def _fd_penalty_kernel(loss, p, o, sigma: tl.float64, weight: tl.float64, n, rows, ACC: tl.constexpr,
                       BLOCK: tl.constexpr):
    s = as_acc(sigma, ACC)
    total = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, n, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < n
        a = tl.load(p + offsets, mask=mask, other=0.0).to(ACC)
        b = tl.load(o + offsets, mask=mask, other=0.0).to(ACC)
        q = div_rn(a - b, s)
        total += q * q
    scale = div_rn(as_acc(weight, ACC), as_acc(rows, ACC))
    tl.store(loss, (scale * tl.sum(total, axis=0)).to(loss.dtype.element_ty))


@triton.jit
def _fd_penalty_backward_kernel(grad_p, grad_o, grad_loss, p, o, sigma: tl.float64, weight: tl.float64, n, rows,
                                ACC: tl.constexpr, NEED_P: tl.constexpr, NEED_O: tl.constexpr,
                                BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    s = as_acc(sigma, ACC)
    upstream = tl.load(grad_loss).to(ACC)
    coef = div_rn(2 * upstream * as_acc(weight, ACC), as_acc(rows, ACC) * s)
    a = tl.load(p + offsets, mask=mask).to(ACC)
    b = tl.load(o + offsets, mask=mask).to(ACC)
    g = coef * div_rn(a - b, s)
    if NEED_P:
        tl.store(grad_p + offsets, g.to(grad_p.dtype.element_ty), mask=mask)
    if NEED_O:
        tl.store(grad_o + offsets, (-g).to(grad_o.dtype.element_ty), mask=mask)


def perturb(x: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    x, noise = batch_major_pair(x, noise)
    out = torch.empty_like(x)
    n = x.numel()
    _perturb_kernel[(cdiv(n, BLOCK),)](out, x, noise, sigma, n, ACC=TL_DTYPES[acc_dtype(x.dtype)],
                                              BLOCK=BLOCK)
    return out


def finite_difference_penalty(perturbed: torch.Tensor, outputs: torch.Tensor, sigma: float,
                              weight: float) -> torch.Tensor:
    p, o = batch_major_pair(perturbed, outputs)
    loss = p.new_empty(())
    _fd_penalty_kernel[(1,)](loss, p, o, sigma, weight, p.numel(), p.shape[0], ACC=TL_DTYPES[acc_dtype(p.dtype)],
                             BLOCK=BLOCK)
    return loss


def finite_difference_penalty_backward(grad_loss: torch.Tensor, perturbed: torch.Tensor, outputs: torch.Tensor,
                                       sigma: float, weight: float, need_perturbed: bool,
                                       need_outputs: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    p, o = batch_major_pair(perturbed, outputs)
    grad_p = torch.empty_like(p) if need_perturbed else p.new_empty(0)
    grad_o = torch.empty_like(p) if need_outputs else p.new_empty(0)
    n = p.numel()
    if need_perturbed or need_outputs:
        _fd_penalty_backward_kernel[(cdiv(n, BLOCK),)](
            grad_p if need_perturbed else p, grad_o if need_outputs else p, grad_loss, p, o, sigma, weight, n,
            p.shape[0], ACC=TL_DTYPES[acc_dtype(p.dtype)], NEED_P=need_perturbed, NEED_O=need_outputs, BLOCK=BLOCK,
        )
    return grad_p, grad_o
