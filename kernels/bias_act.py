"""Triton kernels of the fused bias + activation op (StyleGAN-style ``bias_act``).

The element math follows ``csrc/bias_act_math.h`` line for line:

    forward:        z = x + b[c],   y = gain * f(z)
    backward:       dx = gain * f'(z) * dy            f' from ref: y (relu, lrelu, tanh,
                                                      sigmoid) or z = x + b (silu, elu)
    double backward d_dy  = gain * f'(z) * ddx        (the backward kernel again for
                    d_ref = D2(ref) * dy * ddx         relu/lrelu; both in one pass else)

with D2 = d(gain * f')/d(ref): for ref = y, tanh gives -2u and sigmoid 1 - 2u
(u = y / gain); for ref = z it is gain * f''(z).

Layout: every tensor of a launch shares the output's dense strides and the kernels
walk memory order; element o has channel ``(o // inner) % channels`` with
``inner = out.stride(dim)`` (contiguous NCHW, channels-last and (B, C) alike).

Only ``tl.exp`` (and ``tl.log`` in float64's expm1) is used for transcendentals (the
interpreter has no libdevice): tanh(z) = sign(z) (-m) / (2 + m) with m = expm1(-2|z|)
and elu through expm1 (``_common.expm1``, no cancellation near 0), sigmoid from
e = exp(-|z|); divisions round to nearest (``div_rn``).
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._common import TL_DTYPES, acc_dtype, as_acc, cdiv, div_rn, expm1

BLOCK = 1024
NUM_WARPS = 4

# Activation ids: keep in sync with csrc/bias_act_math.h and fastgan/ops/bias_act.py.
LINEAR, RELU, LRELU, TANH, SIGMOID, SILU, ELU = range(7)


def _hyper(alpha: float, gain: float, dtype: torch.dtype) -> dict:
    """The kernels' scalar arguments: (alpha, gain, 1 / gain) as float64 arguments
    (rounded to the compute type in the kernel) and that type."""
    return dict(alpha=alpha, gain=gain, inv_gain=1.0 / gain if gain != 0 else 0.0, ACC=TL_DTYPES[acc_dtype(dtype)])


@triton.jit
def _sigmoid(z):
    e = tl.exp(tl.where(z < 0, z, -z))  # exp(-|z|) <= 1: no overflow
    inv = div_rn(tl.full(z.shape, 1, z.dtype), 1 + e)
    return tl.where(z >= 0, inv, e * inv)


@triton.jit
def _tanh(z):
    """tanh|z| = -expm1(-2|z|) / (2 + expm1(-2|z|)), with the sign of z (as fg_tanh)."""
    em = expm1(-2 * tl.abs(z))
    t = div_rn(-em, 2 + em)
    return tl.where(z < 0, -t, t)


@triton.jit
def _tanh_sech2(z):
    """1 - tanh(z)^2 as 4e / (1 + e)^2, e = exp(-2|z|): no cancellation where tanh saturates."""
    e = tl.exp(-2 * tl.abs(z))
    q = 1 + e
    return div_rn(4 * e, q * q)


@triton.jit
def _act_value(z, alpha, ACT: tl.constexpr):
    if ACT == 1:  # relu (NaN stays NaN)
        z = tl.where(z < 0, 0, z)
    elif ACT == 2:  # lrelu
        z = tl.where(z > 0, z, z * alpha)
    elif ACT == 3:
        z = _tanh(z)
    elif ACT == 4:
        z = _sigmoid(z)
    elif ACT == 5:
        z = z * _sigmoid(z)
    elif ACT == 6:  # elu
        z = tl.where(z > 0, z, alpha * expm1(z))
    return z


@triton.jit
def _grad_factor(r, alpha, gain, inv_gain, ACT: tl.constexpr, FROM_Y: tl.constexpr):
    """gain * f'(z) from ref r (y when FROM_Y, else z)."""
    if ACT == 0:
        g = tl.full(r.shape, 1, r.dtype) * gain
    elif ACT == 1 or ACT == 2:
        if FROM_Y:
            s = tl.where(gain > 0, r, -r)  # has the sign of z
        else:
            s = r
        if ACT == 1:
            g = tl.where(s <= 0, 0, gain)
        else:
            g = tl.where(s > 0, gain, gain * alpha)
    elif ACT == 3:
        if FROM_Y:
            u = r * inv_gain
            g = gain * (1 - u * u)
        else:
            g = gain * _tanh_sech2(r)
    elif ACT == 4:
        if FROM_Y:
            u = r * inv_gain
        else:
            u = _sigmoid(r)
        g = gain * (u * (1 - u))
    elif ACT == 5:
        s = _sigmoid(r)
        g = gain * (s * (1 + r * (1 - s)))
    else:  # elu
        g = tl.where(r <= 0, gain * (alpha * tl.exp(r)), gain)
    return g


@triton.jit
def _grad2_factor(r, alpha, gain, inv_gain, ACT: tl.constexpr, FROM_Y: tl.constexpr):
    """D2 = d(gain * f')/d(ref): tanh, sigmoid, silu, elu (the others have none)."""
    if ACT == 3:
        if FROM_Y:
            g = -2 * (r * inv_gain)
        else:
            g = gain * (-2 * _tanh(r) * _tanh_sech2(r))
    elif ACT == 4:
        if FROM_Y:
            g = 1 - 2 * (r * inv_gain)
        else:
            s = _sigmoid(r)
            g = gain * (s * (1 - s) * (1 - 2 * s))
    elif ACT == 5:
        s = _sigmoid(r)
        g = gain * (s * (1 - s) * (2 + r * (1 - 2 * s)))
    else:  # elu
        g = tl.where(r < 0, gain * (alpha * tl.exp(r)), 0)  # f''(0) = 0, as torch
    return g


@triton.jit
def _to_storage(v, DTYPE: tl.constexpr):
    """`v` (float32/64) rounded to nearest-even in the storage type. For bfloat16 the
    rounding is spelled out: the interpreter truncates on `.to(tl.bfloat16)` where the
    GPU rounds to nearest, so this keeps interpreted and compiled kernels alike."""
    if DTYPE == tl.bfloat16:
        bits = v.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        bits = tl.where(v != v, 0x7FC0, bits)  # NaN stays NaN
        out = bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        out = v.to(DTYPE)
    return out


@triton.jit
def _store(ptr, v, mask, DTYPE: tl.constexpr):
    tl.store(ptr, _to_storage(v, DTYPE), mask=mask)


@triton.jit
def _offsets(n, BLOCK: tl.constexpr, INDEX64: tl.constexpr):
    pid = tl.program_id(0)
    if INDEX64:
        start = pid.to(tl.int64) * BLOCK
    else:
        start = pid * BLOCK
    start = tl.multiple_of(start, BLOCK)
    return start, start + tl.arange(0, BLOCK)


@triton.jit
def _bias(b_ptr, offs, mask, inner, channels, acc, HAS_BIAS: tl.constexpr):
    if HAS_BIAS:
        b = tl.load(b_ptr + (offs // inner) % channels, mask=mask).to(acc)
    else:
        b = tl.zeros(offs.shape, acc)
    return b


@triton.jit
def _ptrs(base, offs, ALIGNED: tl.constexpr):
    """base + offs, hinted 16-byte aligned (so full blocks move in 16-byte vectors)
    when the launcher found every base aligned; blocks start at multiples of BLOCK."""
    ptrs = base + offs
    if ALIGNED:
        ptrs = tl.multiple_of(ptrs, 16)
    return ptrs


@triton.jit
def _fwd_block(x, b_ptr, y, offs, mask, inner, channels, alpha, gain, DTYPE: tl.constexpr, ACT: tl.constexpr,
               HAS_BIAS: tl.constexpr):
    acc = gain.dtype
    z = tl.load(x, mask=mask).to(acc) + _bias(b_ptr, offs, mask, inner, channels, acc, HAS_BIAS)
    _store(y, gain * _act_value(z, alpha, ACT), mask, DTYPE)


@triton.jit
def _bias_act_fwd_kernel(x_ptr, b_ptr, y_ptr, alpha: tl.float64, gain: tl.float64, inv_gain: tl.float64, n, inner,
                         channels, ACC: tl.constexpr, DTYPE: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr,
                         ALIGNED: tl.constexpr, INDEX64: tl.constexpr, BLOCK: tl.constexpr):
    alpha = as_acc(alpha, ACC)
    gain = as_acc(gain, ACC)
    start, offs = _offsets(n, BLOCK, INDEX64)
    x = _ptrs(x_ptr, offs, ALIGNED)
    y = _ptrs(y_ptr, offs, ALIGNED)
    if start + BLOCK <= n:  # full block: unmasked, vectorisable
        _fwd_block(x, b_ptr, y, offs, None, inner, channels, alpha, gain, DTYPE, ACT, HAS_BIAS)
    else:
        _fwd_block(x, b_ptr, y, offs, offs < n, inner, channels, alpha, gain, DTYPE, ACT, HAS_BIAS)


@triton.jit
def _ref_value(ref, b_ptr, offs, mask, inner, channels, acc, ACT: tl.constexpr, FROM_Y: tl.constexpr,
               HAS_BIAS: tl.constexpr):
    if ACT == 0:
        r = tl.zeros(offs.shape, acc)
    else:
        r = tl.load(ref, mask=mask).to(acc)
        if not FROM_Y:
            r = r + _bias(b_ptr, offs, mask, inner, channels, acc, HAS_BIAS)
    return r


@triton.jit
def _bwd_block(dy, ref, b_ptr, dx, offs, mask, inner, channels, alpha, gain, inv_gain, DTYPE: tl.constexpr,
               ACT: tl.constexpr, FROM_Y: tl.constexpr, HAS_BIAS: tl.constexpr):
    acc = gain.dtype
    r = _ref_value(ref, b_ptr, offs, mask, inner, channels, acc, ACT, FROM_Y, HAS_BIAS)
    g = tl.load(dy, mask=mask).to(acc)
    _store(dx, _grad_factor(r, alpha, gain, inv_gain, ACT, FROM_Y) * g, mask, DTYPE)


@triton.jit
def _bias_act_bwd_kernel(dy_ptr, ref_ptr, b_ptr, dx_ptr, alpha: tl.float64, gain: tl.float64, inv_gain: tl.float64, n,
                         inner, channels, ACC: tl.constexpr, DTYPE: tl.constexpr, ACT: tl.constexpr,
                         FROM_Y: tl.constexpr, HAS_BIAS: tl.constexpr, ALIGNED: tl.constexpr,
                         INDEX64: tl.constexpr, BLOCK: tl.constexpr):
    alpha = as_acc(alpha, ACC)
    gain = as_acc(gain, ACC)
    inv_gain = as_acc(inv_gain, ACC)
    start, offs = _offsets(n, BLOCK, INDEX64)
    dy = _ptrs(dy_ptr, offs, ALIGNED)
    ref = _ptrs(ref_ptr, offs, ALIGNED)
    dx = _ptrs(dx_ptr, offs, ALIGNED)
    if start + BLOCK <= n:  # full block: unmasked, vectorisable
        _bwd_block(dy, ref, b_ptr, dx, offs, None, inner, channels, alpha, gain, inv_gain, DTYPE, ACT, FROM_Y,
                   HAS_BIAS)
    else:
        _bwd_block(dy, ref, b_ptr, dx, offs, offs < n, inner, channels, alpha, gain, inv_gain, DTYPE, ACT, FROM_Y,
                   HAS_BIAS)


@triton.jit
def _bwd2_block(ddx, dy, ref, b_ptr, d_dy, d_ref, offs, mask, inner, channels, alpha, gain, inv_gain,
                DTYPE: tl.constexpr, ACT: tl.constexpr, FROM_Y: tl.constexpr, HAS_BIAS: tl.constexpr, NEED_DDY: tl.constexpr):
    acc = gain.dtype
    r = _ref_value(ref, b_ptr, offs, mask, inner, channels, acc, ACT, FROM_Y, HAS_BIAS)
    v = tl.load(ddx, mask=mask).to(acc)
    g = tl.load(dy, mask=mask).to(acc)
    if NEED_DDY:
        _store(d_dy, _grad_factor(r, alpha, gain, inv_gain, ACT, FROM_Y) * v, mask, DTYPE)
    _store(d_ref, _grad2_factor(r, alpha, gain, inv_gain, ACT, FROM_Y) * g * v, mask, DTYPE)


@triton.jit
def _bias_act_bwd2_kernel(ddx_ptr, dy_ptr, ref_ptr, b_ptr, d_dy_ptr, d_ref_ptr, alpha: tl.float64, gain: tl.float64,
                          inv_gain: tl.float64, n, inner, channels, ACC: tl.constexpr, DTYPE: tl.constexpr,
                          ACT: tl.constexpr, FROM_Y: tl.constexpr, HAS_BIAS: tl.constexpr, NEED_DDY: tl.constexpr,
                          ALIGNED: tl.constexpr, INDEX64: tl.constexpr, BLOCK: tl.constexpr):
    alpha = as_acc(alpha, ACC)
    gain = as_acc(gain, ACC)
    inv_gain = as_acc(inv_gain, ACC)
    start, offs = _offsets(n, BLOCK, INDEX64)
    ddx = _ptrs(ddx_ptr, offs, ALIGNED)
    dy = _ptrs(dy_ptr, offs, ALIGNED)
    ref = _ptrs(ref_ptr, offs, ALIGNED)
    d_dy = _ptrs(d_dy_ptr, offs, ALIGNED)
    d_ref = _ptrs(d_ref_ptr, offs, ALIGNED)
    if start + BLOCK <= n:  # full block: unmasked, vectorisable
        _bwd2_block(ddx, dy, ref, b_ptr, d_dy, d_ref, offs, None, inner, channels, alpha, gain, inv_gain, DTYPE,
                    ACT, FROM_Y, HAS_BIAS, NEED_DDY)
    else:
        _bwd2_block(ddx, dy, ref, b_ptr, d_dy, d_ref, offs, offs < n, inner, channels, alpha, gain, inv_gain,
                    DTYPE, ACT, FROM_Y, HAS_BIAS, NEED_DDY)


# ---- launchers (host side: the layout rules of csrc/bias_act_host.h) ----


def _in_layout_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`t` in the (dense) strides of `like`, copied only when they differ."""
    return t if t.stride() == like.stride() else torch.empty_like(like).copy_(t)


def _channels(out: torch.Tensor, b: Optional[torch.Tensor], dim: int) -> Tuple[int, int]:
    """(inner, channels) of the flat layout of `out`: element o has channel (o // inner) % channels."""
    if b is None:
        return 1, 1
    channels = out.shape[dim]
    return (out.stride(dim) if channels > 1 else 1), channels


def _launch_args(tensors, n: int):
    aligned = all(t.data_ptr() % 16 == 0 for t in tensors if t is not None)
    return dict(ALIGNED=aligned, INDEX64=n + BLOCK >= 2**31, BLOCK=BLOCK, num_warps=NUM_WARPS)


def _dummy(like: torch.Tensor) -> torch.Tensor:
    return like  # any pointer of the right dtype; never loaded (constexpr-disabled)


def forward(x: torch.Tensor, b: Optional[torch.Tensor], act: int, alpha: float, gain: float, dim: int) -> torch.Tensor:
    """y = gain * f(x + b) (b along `dim`), in the layout of empty_like(x)."""
    y = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return y
    x = _in_layout_of(x, y)
    inner, channels = _channels(y, b, dim)
    b = b.contiguous() if b is not None else None
    grid = (cdiv(n, BLOCK),)
    _bias_act_fwd_kernel[grid](
        x, b if b is not None else _dummy(x), y, n=n, inner=inner, channels=channels,
        **_hyper(alpha, gain, x.dtype), DTYPE=TL_DTYPES[y.dtype], ACT=act, HAS_BIAS=b is not None,
        **_launch_args((x, y), n),
    )
    return y


def _ref(x, b, y, dim, like):
    """(ref tensor, bias, from_y, inner, channels) for the backward kernels."""
    if y is not None:
        return _in_layout_of(y, like), None, True, 1, 1
    if x is not None:
        inner, channels = _channels(like, b, dim)
        return _in_layout_of(x, like), (b.contiguous() if b is not None else None), False, inner, channels
    return None, None, False, 1, 1


def backward(dy: torch.Tensor, x: Optional[torch.Tensor], b: Optional[torch.Tensor], y: Optional[torch.Tensor],
             act: int, alpha: float, gain: float, dim: int) -> torch.Tensor:
    """dx = gain * f'(z) * dy, f' from y when given, else from z = x + b."""
    dx = torch.empty_like(dy)
    n = dy.numel()
    if n == 0:
        return dx
    dy = _in_layout_of(dy, dx)
    ref, bias, from_y, inner, channels = _ref(x, b, y, dim, dx) if act != LINEAR else (None, None, False, 1, 1)
    grid = (cdiv(n, BLOCK),)
    _bias_act_bwd_kernel[grid](
        dy, ref if ref is not None else _dummy(dy), bias if bias is not None else _dummy(dy), dx,
        n=n, inner=inner, channels=channels, **_hyper(alpha, gain, dy.dtype),
        DTYPE=TL_DTYPES[dx.dtype], ACT=act, FROM_Y=from_y, HAS_BIAS=bias is not None,
        **_launch_args((dy, ref, dx), n),
    )
    return dx


def backward2(ddx: torch.Tensor, dy: torch.Tensor, x: Optional[torch.Tensor], b: Optional[torch.Tensor],
              y: Optional[torch.Tensor], act: int, alpha: float, gain: float, dim: int,
              need_ddy: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(gain * f'(z) * ddx, D2(ref) * dy * ddx); the first is empty unless need_ddy."""
    d_ref = torch.empty_like(ddx)
    d_dy = torch.empty_like(d_ref) if need_ddy else ddx.new_empty(0)
    n = ddx.numel()
    if n == 0:
        return d_dy, d_ref
    ddx = _in_layout_of(ddx, d_ref)
    dy = _in_layout_of(dy, d_ref)
    ref, bias, from_y, inner, channels = _ref(x, b, y, dim, d_ref)
    grid = (cdiv(n, BLOCK),)
    _bias_act_bwd2_kernel[grid](
        ddx, dy, ref, bias if bias is not None else _dummy(ddx), d_dy if need_ddy else _dummy(ddx), d_ref,
        n=n, inner=inner, channels=channels, **_hyper(alpha, gain, ddx.dtype),
        DTYPE=TL_DTYPES[d_ref.dtype], ACT=act, FROM_Y=from_y, HAS_BIAS=bias is not None, NEED_DDY=need_ddy,
        **_launch_args((ddx, dy, ref, d_dy if need_ddy else None, d_ref), n),
    )
    return d_dy, d_ref
