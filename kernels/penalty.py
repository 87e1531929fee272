"""Triton kernels for the gradient penalties (math: csrc/penalty_math.h).

Work is cut into (row, tile) programs of BLOCK elements, so short rows (toy 2-D
data) and long rows (images) are handled alike:

    interpolate:     x_hat[b] = eps_b * real[b] + (1 - eps_b) * fake[b]
    penalty (2 launches: per-tile sums of squares, then one program that turns
                     them into norms, terms and the reduced loss in a fixed order)
                     n_b = ||g_b||,  P = w * (n_b - c)^2  (one-sided: max(0, .)^2), reduced
    penalty backward dP/dg_b = upstream_b * row_weight * coef(n_b) * g_b,
                     coef(n) = 2 (n - c) / n  (0 where flat, at n = 0 or where a tiny n overflows
                     the row's factor; 2 when c = 0)
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

from .._layout import batch_major, batch_major_pair
from ._common import TL_DTYPES, acc_dtype, as_acc, cdiv, div_rn, sqrt_rn

BLOCK = 4096
ROWS = 32  # rows per step of the finishing program

REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}


def _tiles(row_len: int) -> int:
    return max(1, cdiv(row_len, BLOCK))


@triton.jit
def _row_tile(row_len, tiles, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    row = pid // tiles
    offsets = (pid - row * tiles) * BLOCK + tl.arange(0, BLOCK)
    return row, row.to(tl.int64) * row_len, offsets, offsets < row_len


@triton.jit
def _interpolate_kernel(out, real, fake, eps, row_len, tiles, BLOCK: tl.constexpr):
    row, base, offsets, mask = _row_tile(row_len, tiles, BLOCK)
    e = tl.load(eps + row)
    r = tl.load(real + base + offsets, mask=mask).to(e.dtype)
    f = tl.load(fake + base + offsets, mask=mask).to(e.dtype)
    tl.store(out + base + offsets, (e * r + (1 - e) * f).to(out.dtype.element_ty), mask=mask)


@triton.jit
def _interpolate_backward_kernel(grad_real, grad_fake, grad, eps, row_len, tiles, NEED_REAL: tl.constexpr,
                                 NEED_FAKE: tl.constexpr, BLOCK: tl.constexpr):
    row, base, offsets, mask = _row_tile(row_len, tiles, BLOCK)
    e = tl.load(eps + row)
    g = tl.load(grad + base + offsets, mask=mask).to(e.dtype)
    if NEED_REAL:
        tl.store(grad_real + base + offsets, (e * g).to(grad_real.dtype.element_ty), mask=mask)
    if NEED_FAKE:
        tl.store(grad_fake + base + offsets, ((1 - e) * g).to(grad_fake.dtype.element_ty), mask=mask)


@triton.jit
def _sum_squares_kernel(partial, grads, row_len, tiles, BLOCK: tl.constexpr):
    row, base, offsets, mask = _row_tile(row_len, tiles, BLOCK)
    g = tl.load(grads + base + offsets, mask=mask).to(partial.dtype.element_ty)
    tl.store(partial + tl.program_id(0), tl.sum(g * g, axis=0))


@triton.jit
def _penalty_term(norm, center, ONE_SIDED: tl.constexpr):
    gap = norm - center
    if ONE_SIDED:
        gap = tl.where(gap < 0, 0.0, gap)  # a NaN norm stays NaN
    return gap * gap


@triton.jit
def _penalty_finish_kernel(loss, norms, partial, center: tl.float64, weight: tl.float64, rows, tiles,
                           ACC: tl.constexpr, ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr, ROWS: tl.constexpr,
                           TILES: tl.constexpr):
    center = as_acc(center, ACC)
    weight = as_acc(weight, ACC)
    total = tl.zeros([ROWS], dtype=partial.dtype.element_ty)
    for first in range(0, rows, ROWS):
        r = first + tl.arange(0, ROWS)
        squares = tl.zeros([ROWS], dtype=partial.dtype.element_ty)
        for t0 in range(0, tiles, TILES):
            t = t0 + tl.arange(0, TILES)
            block = tl.load(partial + r[:, None] * tiles + t[None, :], mask=(r[:, None] < rows) & (t[None, :] < tiles),
                            other=0.0)
            squares += tl.sum(block, axis=1)
        norm = sqrt_rn(squares)
        tl.store(norms + r, norm.to(norms.dtype.element_ty), mask=r < rows)
        term = tl.where(r < rows, _penalty_term(norm, center, ONE_SIDED), 0.0)
        if REDUCTION == 0:
            tl.store(loss + r, (weight * term).to(loss.dtype.element_ty), mask=r < rows)
        else:
            total += term
    if REDUCTION != 0:
        scale = weight
        if REDUCTION == 1:
            scale = div_rn(weight, as_acc(rows, ACC))
        tl.store(loss, (scale * tl.sum(total, axis=0)).to(loss.dtype.element_ty))


@triton.jit
def _penalty_backward_kernel(out, grads, grad_loss, norms, center: tl.float64, weight: tl.float64, rows, row_len,
                             tiles, ACC: tl.constexpr, ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr,
                             BLOCK: tl.constexpr):
    row, base, offsets, mask = _row_tile(row_len, tiles, BLOCK)
    center = as_acc(center, ACC)
    weight = as_acc(weight, ACC)
    norm = tl.load(norms + row)
    if REDUCTION == 0:
        upstream = tl.load(grad_loss + row).to(norm.dtype)
    else:
        upstream = tl.load(grad_loss).to(norm.dtype)
    if REDUCTION == 1:
        weight = div_rn(weight, as_acc(rows, ACC))
    safe_norm = tl.where(norm == 0, 1.0, norm)
    coef = tl.where(norm == 0, 0.0, div_rn(2 * (norm - center), safe_norm))
    if ONE_SIDED:
        coef = tl.where(norm <= center, 0.0, coef)
    coef = tl.where(center == 0, 2.0, coef)  # centers are >= 0: one-sided is two-sided at 0
    scale = upstream * weight * coef
    # as csrc/penalty_math.h's penalty_row_scale: 0 where a tiny norm made coef overflow
    inf = float("inf")
    overflowed = (tl.abs(scale) == inf) & (tl.abs(upstream) < inf) & (norm < inf)
    scale = tl.where(overflowed, 0.0, scale)
    g = tl.load(grads + base + offsets, mask=mask).to(norm.dtype)
    tl.store(out + base + offsets, (scale * g).to(out.dtype.element_ty), mask=mask)


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    real, fake = batch_major_pair(real, fake)
    eps = eps.contiguous()
    out = torch.empty_like(real)
    rows, row_len = real.shape[0], real[0].numel()
    tiles = _tiles(row_len)
    _interpolate_kernel[(rows * tiles,)](out, real, fake, eps, row_len, tiles, BLOCK=BLOCK)
    return out


def interpolate_backward(grad: torch.Tensor, eps: torch.Tensor, need_real: bool,
                         need_fake: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    grad, eps = batch_major(grad), eps.contiguous()
    grad_real = torch.empty_like(grad) if need_real else grad.new_empty(0)
    grad_fake = torch.empty_like(grad) if need_fake else grad.new_empty(0)
    rows, row_len = grad.shape[0], grad[0].numel()
    tiles = _tiles(row_len)
    if need_real or need_fake:
        _interpolate_backward_kernel[(rows * tiles,)](
            grad_real if need_real else grad, grad_fake if need_fake else grad, grad, eps, row_len, tiles,
            NEED_REAL=need_real, NEED_FAKE=need_fake, BLOCK=BLOCK,
        )
    return grad_real, grad_fake


def grad_norm_penalty(grads: torch.Tensor, center: float, weight: float, one_sided: bool,
                      reduction: int) -> Tuple[torch.Tensor, torch.Tensor]:
    grads = batch_major(grads)
    rows, row_len = grads.shape[0], grads[0].numel()
    tiles = _tiles(row_len)
    acc = acc_dtype(grads.dtype)
    partial = torch.empty(rows * tiles, dtype=acc, device=grads.device)
    norms = torch.empty(rows, dtype=acc, device=grads.device)
    loss = grads.new_empty((rows,) if reduction == 0 else ())
    _sum_squares_kernel[(rows * tiles,)](partial, grads, row_len, tiles, BLOCK=BLOCK)
    _penalty_finish_kernel[(1,)](loss, norms, partial, center, weight, rows, tiles, ACC=TL_DTYPES[acc],
                                 ONE_SIDED=one_sided, REDUCTION=reduction, ROWS=ROWS,
                                 TILES=min(triton.next_power_of_2(tiles), 128))
    return loss, norms


def grad_norm_penalty_backward(grad_loss: torch.Tensor, grads: torch.Tensor, norms: torch.Tensor, center: float,
                               weight: float, one_sided: bool, reduction: int) -> torch.Tensor:
    grads = batch_major(grads)
    out = torch.empty_like(grads)
    rows, row_len = grads.shape[0], grads[0].numel()
    tiles = _tiles(row_len)
    _penalty_backward_kernel[(rows * tiles,)](out, grads, grad_loss.contiguous(), norms.contiguous(), center, weight,
                                              rows, row_len, tiles, ACC=TL_DTYPES[norms.dtype], ONE_SIDED=one_sided,
                                              REDUCTION=reduction, BLOCK=BLOCK)
    return out
