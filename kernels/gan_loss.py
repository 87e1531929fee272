"""Triton kernels for the fused GAN losses (docs/theory.md §2–3).

The element math follows ``csrc/gan_loss_math.h`` line for line. A loss is

    loss   = s_x * sum_i t_x(x_i) + s_y * sum_j t_y(y_j)      s = 1/numel (mean) or 1 (sum)
    x_grad = s_x * t_x'(x),  y_grad = s_y * t_y'(y)           (shape (0,) for a linear term)

over the real and fake logits (x, y) of the discriminator, or the fake logits
alone (x) of the generator. Softplus terms use the stable forms
``softplus(x) = max(x, 0) + log1p(exp(-|x|))`` and ``sigmoid(x) = 1/(1 + e)`` or
``e/(1 + e)`` with ``e = exp(-|x|)``.

Kernels:

- ``_gan_loss_fwd_kernel``: one launch for both sides. Program p reads the p-th
  strip of x and of y, writes their gradients, and stores its two partial sums;
  the last program to finish (an acq_rel atomic ticket on a self-resetting
  counter in a per-(device, stream) workspace) adds the partials in a fixed
  order and writes the loss. No memset launch, no host sync, and the sum is
  deterministic for a given size. One program does it all for small inputs.
  Under CUDA-graph capture each loss gets its own workspace (``_workspace``).
  A linear term (``+-l``, constant ``t'``) only reads: its gradient is not saved.
- ``_gan_loss_bwd_kernel``: ``(grad * x_grad, grad * y_grad)`` in one launch, or
  the constant ``grad * s * t'`` for a linear side.
- ``_gan_loss_pointwise_kernel``: ``grad * t^(order)(l)`` elementwise
  (``reduction="none"`` and every double backward).
- ``_relativistic_reduce_kernel`` and ``_relativistic_average_grad_kernel``: the
  relativistic losses (RpGAN ``s * sum softplus(y - x)`` over pairs; RaGAN
  ``s_x sum softplus(mean(y) - x) + s_y sum softplus(y - mean(x))``), with the same
  ticket and fixed-order sum. RpGAN: one launch writes the loss and both gradients.
  RaGAN: three launches, the means, then the loss and sigmoid sums (the last
  program writes the gradients' cross terms), then the gradients.

Float32 divisions use ``div_rn`` (compiled ``/`` is approximate); ``log1p`` is
Goldberg's ``log(u) * x / (u - 1)``, ``u = 1 + x``, since the interpreter has no
libdevice and ``tl.log`` compiles to the accurate ``__nv_logf``.
"""
from typing import Dict, Optional, Tuple

import torch
import triton
import triton.language as tl

from ._common import TL_DTYPES, acc_dtype, as_acc, cdiv, div_rn

BLOCK = 2048
NUM_WARPS = 8
MAX_PROGRAMS = 1024  # partial sums per side in the workspace
ELEMENTS_PER_PROGRAM = 4 * BLOCK

# Term codes of csrc/gan_loss_math.h.
SOFTPLUS_NEG, SOFTPLUS, NEG_SOFTPLUS, NEG_SOFTPLUS_NEG = 0, 1, 2, 3
IDENTITY, NEG_IDENTITY, HINGE_REAL, HINGE_FAKE, HALF_SQUARE_ONE, HALF_SQUARE = 4, 5, 6, 7, 8, 9
#: t' of the linear terms: their forward saves no gradient.
SLOPES = {IDENTITY: 1, NEG_IDENTITY: -1}
# Relativistic kinds of csrc/gan_loss_math.h (RelativisticKind), and the passes of
# _relativistic_reduce_kernel.
RELATIVISTIC_PAIR, RELATIVISTIC_AVERAGE = 0, 1
PASS_PAIR, PASS_MEANS, PASS_SUMS = 0, 1, 2

@triton.jit
def _to(v, DTYPE: tl.constexpr):
    """Cast a float32/float64 value for a store, rounding to nearest even. For
    bfloat16 the rounding is spelled out on the bits: compiled code rounds to
    nearest even anyway, but the interpreter truncates, and the tests should see
    the bits the GPU writes. NaN stays a quiet NaN."""
    if DTYPE == tl.bfloat16:
        bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rounded = tl.where(v != v, 0x7FC0, rounded)
        return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(DTYPE)


@triton.jit
def _log1p(x):
    # Goldberg: u = fl(1 + x); u - 1 is exact, and log(u) * x / (u - 1) is log1p(x)
    # to a few ulp. For x in [0, 1] here; NaN stays NaN.
    u = 1 + x
    d = u - 1
    return tl.where(d == 0, x, tl.log(u) * div_rn(x, tl.where(d == 0, 1, d)))


@triton.jit
def _ptrs(base, offsets, ALIGNED: tl.constexpr):
    """base + offsets; with ALIGNED (base 16-byte aligned, offsets starting at a
    multiple of BLOCK) each contiguous run starts 16-byte aligned, so 32-bit data
    moves in 16-byte vectors even when compiled ahead of time without argument
    alignment (tl.multiple_of on a pointer argument is dropped)."""
    ptrs = base + offsets
    if ALIGNED:
        ptrs = tl.multiple_of(ptrs, 16)
    return ptrs


@triton.jit
def _softplus_parts(x):
    """softplus(x), sigmoid(x), sigmoid(-x) and sigmoid'(x) from one exp."""
    e = tl.exp(-tl.abs(x))
    r = div_rn(tl.zeros_like(e) + 1, 1 + e)
    er = e * r
    softplus = tl.where(x > 0, x, 0) + _log1p(e)
    sigmoid = tl.where(x >= 0, r, er)
    sigmoid_neg = tl.where(x >= 0, er, r)
    return softplus, sigmoid, sigmoid_neg, er * r


@triton.jit
def _term_and_derivative(l, TERM: tl.constexpr):
    """(t(l), t'(l)) for a term code; see csrc/gan_loss_math.h."""
    if TERM == 0:  # softplus(-l)
        sp, sig, sig_neg, curv = _softplus_parts(-l)
        t = sp
        dt = -sig
    elif TERM == 1:  # softplus(l)
        sp, sig, sig_neg, curv = _softplus_parts(l)
        t = sp
        dt = sig
    elif TERM == 2:  # -softplus(l)
        sp, sig, sig_neg, curv = _softplus_parts(l)
        t = -sp
        dt = -sig
    elif TERM == 3:  # -softplus(-l)
        sp, sig, sig_neg, curv = _softplus_parts(-l)
        t = -sp
        dt = sig
    elif TERM == 4:  # l
        t = l
        dt = tl.zeros_like(l) + 1
    elif TERM == 5:  # -l
        t = -l
        dt = tl.zeros_like(l) - 1
    elif TERM == 6:  # relu(1 - l); the gradient passes at u > 0 and at NaN, as threshold_backward
        u = 1 - l
        t = tl.where(u > 0, u, tl.where(u <= 0, 0, u))
        dt = tl.where(u <= 0, 0, tl.zeros_like(l) - 1)
    elif TERM == 7:  # relu(1 + l)
        u = 1 + l
        t = tl.where(u > 0, u, tl.where(u <= 0, 0, u))
        dt = tl.where(u <= 0, 0, tl.zeros_like(l) + 1)
    elif TERM == 8:  # (l - 1)^2 / 2
        d = l - 1
        t = 0.5 * d * d
        dt = d
    else:  # l^2 / 2
        tl.static_assert(TERM == 9, "unknown GAN loss term")
        t = 0.5 * l * l
        dt = l
    return t, dt


@triton.jit
def _term_order(l, TERM: tl.constexpr, ORDER: tl.constexpr):
    """t^(ORDER)(l) for ORDER 0, 1, 2."""
    if ORDER == 2:
        if TERM <= 3:
            sp, sig, sig_neg, curv = _softplus_parts(l)
            if TERM <= 1:
                v = curv
            else:
                v = -curv
        elif TERM <= 7:
            v = tl.zeros_like(l)
        else:
            v = tl.zeros_like(l) + 1
    else:
        t, dt = _term_and_derivative(l, TERM)
        if ORDER == 0:
            v = t
        else:
            v = dt
    return v


@triton.jit
def _side_sum(x_ptr, g_ptr, n, pid, nprog, scale, TERM: tl.constexpr, ACC: tl.constexpr, DTYPE: tl.constexpr,
              ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """This program's strip of one side: writes g = scale * t'(x) (not for the linear
    terms 4 and 5), returns sum t(x)."""
    per = tl.cdiv(tl.cdiv(n, nprog), BLOCK) * BLOCK
    begin = tl.minimum(pid.to(tl.int64) * per, n)
    end = tl.minimum(begin + per, n)
    full_end = begin + (end - begin) // BLOCK * BLOCK
    acc = tl.zeros([BLOCK], ACC)
    for start in range(begin, full_end, BLOCK):  # full blocks: unmasked, vectorisable
        offsets = tl.multiple_of(start, BLOCK) + tl.arange(0, BLOCK)
        t, dt = _term_and_derivative(tl.load(_ptrs(x_ptr, offsets, ALIGNED)).to(ACC), TERM)
        if TERM != 4 and TERM != 5:
            tl.store(_ptrs(g_ptr, offsets, ALIGNED), _to(scale * dt, DTYPE))
        acc += t
    if full_end < end:
        offsets = full_end + tl.arange(0, BLOCK)
        mask = offsets < end
        t, dt = _term_and_derivative(tl.load(x_ptr + offsets, mask=mask, other=0).to(ACC), TERM)
        if TERM != 4 and TERM != 5:
            tl.store(g_ptr + offsets, _to(scale * dt, DTYPE), mask=mask)
        acc += tl.where(mask, t, 0)
    return tl.sum(acc, axis=0)


@triton.jit
def _scale_of(n, MEAN: tl.constexpr, ACC: tl.constexpr):
    """1/n (mean) or 1 (sum) in the accumulation type, rounded to nearest."""
    d = as_acc(n, ACC)
    one = d * 0 + 1
    if MEAN:
        s = div_rn(one, d)
    else:
        s = one
    return s


@triton.jit
def _gan_loss_fwd_kernel(x_ptr, x_grad_ptr, nx, y_ptr, y_grad_ptr, ny, loss_ptr, partials_ptr, counter_ptr,
                         X_TERM: tl.constexpr, Y_TERM: tl.constexpr, HAS_Y: tl.constexpr, MEAN: tl.constexpr,
                         ACC: tl.constexpr, DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr,
                         MAX_PROGRAMS: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    sx = _scale_of(nx, MEAN, ACC)
    sum_x = _side_sum(x_ptr, x_grad_ptr, nx, pid, nprog, sx, X_TERM, ACC, DTYPE, ALIGNED, BLOCK)
    if HAS_Y:
        sy = _scale_of(ny, MEAN, ACC)
        sum_y = _side_sum(y_ptr, y_grad_ptr, ny, pid, nprog, sy, Y_TERM, ACC, DTYPE, ALIGNED, BLOCK)
    if nprog == 1:
        loss = sx * sum_x
        if HAS_Y:
            loss += sy * sum_y
        tl.store(loss_ptr, _to(loss, DTYPE))
    else:
        # Partials, then a ticket: acq_rel orders this program's stores before its
        # increment, and the last program's loads after it.
        tl.store(partials_ptr + pid, sum_x)
        if HAS_Y:
            tl.store(partials_ptr + MAX_PROGRAMS + pid, sum_y)
        ticket = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
        if ticket == nprog - 1:
            offsets = tl.arange(0, MAX_PROGRAMS)
            live = offsets < nprog
            loss = sx * tl.sum(tl.load(partials_ptr + offsets, mask=live, other=0, volatile=True), axis=0)
            if HAS_Y:
                loss += sy * tl.sum(tl.load(partials_ptr + MAX_PROGRAMS + offsets, mask=live, other=0,
                                            volatile=True), axis=0)
            tl.store(loss_ptr, _to(loss, DTYPE))
            tl.store(counter_ptr, 0)  # ready for the next launch on this stream


@triton.jit
def _scale_block(in_ptr, out_ptr, n, block, g, SLOPE: tl.constexpr, MEAN: tl.constexpr, ACC: tl.constexpr,
                 DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """out = g * in, or for a linear term (SLOPE +-1; in is not read) g * s * SLOPE."""
    start = block.to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    if SLOPE != 0:
        v = _to(tl.zeros([BLOCK], ACC) + g * (_scale_of(n, MEAN, ACC) * SLOPE), DTYPE)
        if start + BLOCK <= n:  # full block: unmasked, vectorisable
            tl.store(_ptrs(out_ptr, offsets, ALIGNED), v)
        else:
            tl.store(out_ptr + offsets, v, mask=offsets < n)
    elif start + BLOCK <= n:
        v = tl.load(_ptrs(in_ptr, offsets, ALIGNED)).to(ACC)
        tl.store(_ptrs(out_ptr, offsets, ALIGNED), _to(g * v, DTYPE))
    else:
        mask = offsets < n
        tl.store(out_ptr + offsets, _to(g * tl.load(in_ptr + offsets, mask=mask).to(ACC), DTYPE), mask=mask)


@triton.jit
def _gan_loss_bwd_kernel(grad_ptr, x_grad_ptr, x_out_ptr, nx, y_grad_ptr, y_out_ptr, ny, X_SLOPE: tl.constexpr,
                         Y_SLOPE: tl.constexpr, MEAN: tl.constexpr, ACC: tl.constexpr, DTYPE: tl.constexpr,
                         ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    g = tl.load(grad_ptr).to(ACC)
    x_blocks = tl.cdiv(nx, BLOCK)
    if pid < x_blocks:
        _scale_block(x_grad_ptr, x_out_ptr, nx, pid, g, X_SLOPE, MEAN, ACC, DTYPE, ALIGNED, BLOCK)
    else:
        _scale_block(y_grad_ptr, y_out_ptr, ny, pid - x_blocks, g, Y_SLOPE, MEAN, ACC, DTYPE, ALIGNED, BLOCK)


@triton.jit
def _pointwise_block(x_ptr, grad_ptr, out_ptr, offsets, mask, TERM: tl.constexpr, ORDER: tl.constexpr,
                     HAS_GRAD: tl.constexpr, ACC: tl.constexpr, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
    v = _term_order(tl.load(_ptrs(x_ptr, offsets, ALIGNED), mask=mask).to(ACC), TERM, ORDER)
    if HAS_GRAD:
        v = tl.load(_ptrs(grad_ptr, offsets, ALIGNED), mask=mask).to(ACC) * v
    tl.store(_ptrs(out_ptr, offsets, ALIGNED), _to(v, DTYPE), mask=mask)


@triton.jit
def _gan_loss_pointwise_kernel(x_ptr, grad_ptr, out_ptr, n, TERM: tl.constexpr, ORDER: tl.constexpr,
                               HAS_GRAD: tl.constexpr, ACC: tl.constexpr, DTYPE: tl.constexpr,
                               ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    if start + BLOCK <= n:  # full block: unmasked, vectorisable
        _pointwise_block(x_ptr, grad_ptr, out_ptr, offsets, None, TERM, ORDER, HAS_GRAD, ACC, DTYPE, ALIGNED)
    else:
        _pointwise_block(x_ptr, grad_ptr, out_ptr, offsets, offsets < n, TERM, ORDER, HAS_GRAD, ACC, DTYPE, ALIGNED)


@triton.jit
def _strip_of(n, pid, nprog, BLOCK: tl.constexpr):
    """[begin, end) of program pid's strip of n elements (multiples of BLOCK)."""
    per = tl.cdiv(tl.cdiv(n, nprog), BLOCK) * BLOCK
    begin = tl.minimum(pid.to(tl.int64) * per, n)
    return begin, tl.minimum(begin + per, n)


@triton.jit
def _pair_strip(x_ptr, y_ptr, xg_ptr, yg_ptr, n, pid, nprog, scale, ACC: tl.constexpr, DTYPE: tl.constexpr,
                BLOCK: tl.constexpr):
    """RpGAN over this program's pairs: writes xg = -scale sigmoid(y - x), yg = -xg;
    returns sum softplus(y - x)."""
    begin, end = _strip_of(n, pid, nprog, BLOCK)
    acc = tl.zeros([BLOCK], ACC)
    for start in range(begin, end, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < end
        z = tl.load(y_ptr + offsets, mask=mask, other=0).to(ACC) - tl.load(x_ptr + offsets, mask=mask, other=0).to(ACC)
        t, sig, sig_neg, curv = _softplus_parts(z)
        tl.store(xg_ptr + offsets, _to(-scale * sig, DTYPE), mask=mask)
        tl.store(yg_ptr + offsets, _to(scale * sig, DTYPE), mask=mask)
        acc += tl.where(mask, t, 0)
    return tl.sum(acc, axis=0)


@triton.jit
def _value_strip(l_ptr, n, pid, nprog, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Sum of this program's strip of the logits (RaGAN's means)."""
    begin, end = _strip_of(n, pid, nprog, BLOCK)
    acc = tl.zeros([BLOCK], ACC)
    for start in range(begin, end, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        acc += tl.load(l_ptr + offsets, mask=offsets < end, other=0).to(ACC)
    return tl.sum(acc, axis=0)


@triton.jit
def _average_difference(l, shift, SIGN: tl.constexpr):
    """RaGAN's z: mean(y) - x (SIGN -1) or y - mean(x) (SIGN +1)."""
    if SIGN > 0:
        z = l - shift
    else:
        z = shift - l
    return z


@triton.jit
def _average_strip(l_ptr, n, pid, nprog, shift, SIGN: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """(sum softplus(z), sum sigmoid(z)) over this program's strip of one RaGAN side."""
    begin, end = _strip_of(n, pid, nprog, BLOCK)
    terms = tl.zeros([BLOCK], ACC)
    sigmoids = tl.zeros([BLOCK], ACC)
    for start in range(begin, end, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < end
        z = _average_difference(tl.load(l_ptr + offsets, mask=mask, other=0).to(ACC), shift, SIGN)
        t, sig, sig_neg, curv = _softplus_parts(z)
        terms += tl.where(mask, t, 0)
        sigmoids += tl.where(mask, sig, 0)
    return tl.sum(terms, axis=0), tl.sum(sigmoids, axis=0)


@triton.jit
def _relativistic_finish(s0, s1, s2, s3, nx, ny, sx, sy, loss_ptr, stats_ptr, PASS: tl.constexpr,
                         ACC: tl.constexpr, DTYPE: tl.constexpr):
    """A pass's result from its totals: the RpGAN loss; the two means; or the RaGAN
    loss and the gradients' cross terms (x's mean is in every y - mean(x))."""
    if PASS == 0:
        tl.store(loss_ptr, _to(sx * s0, DTYPE))
    elif PASS == 1:
        tl.store(stats_ptr, div_rn(s0, as_acc(nx, ACC)))
        tl.store(stats_ptr + 1, div_rn(s1, as_acc(ny, ACC)))
    else:
        tl.store(loss_ptr, _to(sx * s0 + sy * s2, DTYPE))
        tl.store(stats_ptr + 2, -div_rn(sy * s3, as_acc(nx, ACC)))
        tl.store(stats_ptr + 3, div_rn(sx * s1, as_acc(ny, ACC)))


@triton.jit
def _relativistic_reduce_kernel(x_ptr, y_ptr, x_grad_ptr, y_grad_ptr, nx, ny, loss_ptr, stats_ptr, partials_ptr,
                                counter_ptr, PASS: tl.constexpr, MEAN: tl.constexpr, ACC: tl.constexpr,
                                DTYPE: tl.constexpr, BLOCK: tl.constexpr, MAX_PROGRAMS: tl.constexpr):
    """PASS 0: RpGAN (pairs of x and y); 1: the means into stats[0:2]; 2: the RaGAN loss
    and the cross terms into stats[2:4], from the means."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    sx = _scale_of(nx, MEAN, ACC)
    sy = _scale_of(ny, MEAN, ACC)
    zero = tl.zeros([], ACC)
    if PASS == 0:
        s0 = _pair_strip(x_ptr, y_ptr, x_grad_ptr, y_grad_ptr, nx, pid, nprog, sx, ACC, DTYPE, BLOCK)
        s1 = zero
        s2 = zero
        s3 = zero
    elif PASS == 1:
        s0 = _value_strip(x_ptr, nx, pid, nprog, ACC, BLOCK)
        s1 = _value_strip(y_ptr, ny, pid, nprog, ACC, BLOCK)
        s2 = zero
        s3 = zero
    else:
        mean_x = tl.load(stats_ptr)
        mean_y = tl.load(stats_ptr + 1)
        s0, s1 = _average_strip(x_ptr, nx, pid, nprog, mean_y, -1, ACC, BLOCK)
        s2, s3 = _average_strip(y_ptr, ny, pid, nprog, mean_x, 1, ACC, BLOCK)
    if nprog == 1:
        _relativistic_finish(s0, s1, s2, s3, nx, ny, sx, sy, loss_ptr, stats_ptr, PASS, ACC, DTYPE)
    else:
        # Partials, then a ticket, as _gan_loss_fwd_kernel.
        tl.store(partials_ptr + pid, s0)
        tl.store(partials_ptr + MAX_PROGRAMS + pid, s1)
        tl.store(partials_ptr + 2 * MAX_PROGRAMS + pid, s2)
        tl.store(partials_ptr + 3 * MAX_PROGRAMS + pid, s3)
        ticket = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
        if ticket == nprog - 1:
            offsets = tl.arange(0, MAX_PROGRAMS)
            live = offsets < nprog
            t0 = tl.sum(tl.load(partials_ptr + offsets, mask=live, other=0, volatile=True), axis=0)
            t1 = tl.sum(tl.load(partials_ptr + MAX_PROGRAMS + offsets, mask=live, other=0, volatile=True), axis=0)
            t2 = tl.sum(tl.load(partials_ptr + 2 * MAX_PROGRAMS + offsets, mask=live, other=0, volatile=True), axis=0)
            t3 = tl.sum(tl.load(partials_ptr + 3 * MAX_PROGRAMS + offsets, mask=live, other=0, volatile=True), axis=0)
            _relativistic_finish(t0, t1, t2, t3, nx, ny, sx, sy, loss_ptr, stats_ptr, PASS, ACC, DTYPE)
            tl.store(counter_ptr, 0)  # ready for the next launch on this stream


@triton.jit
def _average_grad_block(l_ptr, g_ptr, n, block, shift, scale, cross, SIGN: tl.constexpr, ACC: tl.constexpr,
                        DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    offsets = block.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    z = _average_difference(tl.load(l_ptr + offsets, mask=mask, other=0).to(ACC), shift, SIGN)
    t, sig, sig_neg, curv = _softplus_parts(z)
    tl.store(g_ptr + offsets, _to(SIGN * scale * sig + cross, DTYPE), mask=mask)


@triton.jit
def _relativistic_average_grad_kernel(x_ptr, y_ptr, x_grad_ptr, y_grad_ptr, nx, ny, stats_ptr, MEAN: tl.constexpr,
                                      ACC: tl.constexpr, DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    """RaGAN's gradients: -s_x sigmoid(mean(y) - x) + cross_x, s_y sigmoid(y - mean(x)) + cross_y."""
    pid = tl.program_id(0)
    x_blocks = tl.cdiv(nx, BLOCK)
    if pid < x_blocks:
        _average_grad_block(x_ptr, x_grad_ptr, nx, pid, tl.load(stats_ptr + 1), _scale_of(nx, MEAN, ACC),
                            tl.load(stats_ptr + 2), -1, ACC, DTYPE, BLOCK)
    else:
        _average_grad_block(y_ptr, y_grad_ptr, ny, pid - x_blocks, tl.load(stats_ptr), _scale_of(ny, MEAN, ACC),
                            tl.load(stats_ptr + 3), 1, ACC, DTYPE, BLOCK)


# ---- launchers ----

_WORKSPACES: Dict[Tuple[torch.device, Optional[int], torch.dtype], Tuple[torch.Tensor, torch.Tensor]] = {}


def _workspace(device: torch.device, acc: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """(partials, counter) for the forward kernel, one pair per (device, stream):
    kernels on one stream run in order, so the self-resetting counter is never
    shared by two launches at once. Zeroed once, at creation. Under CUDA-graph
    capture each loss gets its own zeroed pair (a memset node in the graph): two
    graphs captured on one stream may be replayed concurrently on two others."""
    def fresh():
        return (torch.zeros(4 * MAX_PROGRAMS, dtype=acc, device=device),  # gan_loss uses 2 rows, relativistic 4
                torch.zeros(1, dtype=torch.int32, device=device))

    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return fresh()
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None
    key = (device, stream, acc)
    if key not in _WORKSPACES:
        _WORKSPACES[key] = fresh()
    return _WORKSPACES[key]


def _aligned(*tensors: torch.Tensor) -> bool:
    return all(t.data_ptr() % 16 == 0 for t in tensors)


def gan_loss(x: torch.Tensor, y: Optional[torch.Tensor], x_term: int, y_term: int,
             reduction: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, x_grad, y_grad) of one or two sides (see the module doc); reduction
    1 is mean, 2 sum. y_grad is empty when y is None or its term linear, x_grad
    when x's term is linear."""
    x = x.contiguous()
    has_y = y is not None
    y = y.contiguous() if has_y else x.new_empty((0,))
    loss = x.new_empty(())
    x_grad = x.new_empty((0,)) if x_term in SLOPES else torch.empty_like(x)
    y_grad = y.new_empty((0,)) if y_term in SLOPES else torch.empty_like(y)
    acc = acc_dtype(x.dtype)
    partials, counter = _workspace(x.device, acc)
    nprog = max(1, min(cdiv(x.numel() + y.numel(), ELEMENTS_PER_PROGRAM), MAX_PROGRAMS))
    # An absent y passes x's pointers (never read: HAS_Y is False).
    y_ptr, y_grad_ptr = (y, y_grad) if has_y else (x, x_grad)
    _gan_loss_fwd_kernel[(nprog,)](
        x, x_grad, x.numel(), y_ptr, y_grad_ptr, y.numel(), loss, partials, counter,
        X_TERM=x_term, Y_TERM=y_term, HAS_Y=has_y, MEAN=reduction == 1, ACC=TL_DTYPES[acc],
        DTYPE=TL_DTYPES[x.dtype], ALIGNED=_aligned(x, x_grad, y_ptr, y_grad_ptr), BLOCK=BLOCK,
        MAX_PROGRAMS=MAX_PROGRAMS, num_warps=NUM_WARPS,
    )
    return loss, x_grad, y_grad


def gan_loss_backward(grad: torch.Tensor, x_grad: torch.Tensor, y_grad: torch.Tensor, x: torch.Tensor,
                      y: Optional[torch.Tensor], x_term: int, y_term: int,
                      reduction: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(grad * x_grad, grad * y_grad), grad a one-element tensor, in one launch; a
    linear side (empty saved gradient) gets grad * s * t' in the logits' shape.
    y_out is empty when y is None."""
    x_grad, y_grad, grad = x_grad.contiguous(), y_grad.contiguous(), grad.contiguous()
    x_out = x.new_empty(x.shape)
    y_out = x.new_empty((0,) if y is None else y.shape)
    blocks = cdiv(x_out.numel(), BLOCK) + cdiv(y_out.numel(), BLOCK)
    if blocks:
        acc = acc_dtype(x.dtype)
        _gan_loss_bwd_kernel[(blocks,)](
            grad, x_grad, x_out, x_out.numel(), y_grad, y_out, y_out.numel(), X_SLOPE=SLOPES.get(x_term, 0),
            Y_SLOPE=SLOPES.get(y_term, 0) if y is not None else 0, MEAN=reduction == 1, ACC=TL_DTYPES[acc],
            DTYPE=TL_DTYPES[x.dtype], ALIGNED=_aligned(x_grad, x_out, y_grad, y_out), BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )
    return x_out, y_out


def gan_loss_pointwise(logits: torch.Tensor, grad: Optional[torch.Tensor], term: int, order: int) -> torch.Tensor:
    """grad * t^(order)(logits) elementwise (grad = 1 when None)."""
    x = logits.contiguous()
    g = grad.contiguous() if grad is not None else x
    out = torch.empty_like(x)
    if x.numel():
        acc = acc_dtype(x.dtype)
        _gan_loss_pointwise_kernel[(cdiv(x.numel(), BLOCK),)](
            x, g, out, x.numel(), TERM=term, ORDER=order, HAS_GRAD=grad is not None, ACC=TL_DTYPES[acc],
            DTYPE=TL_DTYPES[x.dtype], ALIGNED=_aligned(x, g, out), BLOCK=BLOCK, num_warps=NUM_WARPS,
        )
    return out


def relativistic_loss(x: torch.Tensor, y: torch.Tensor, kind: int,
                      reduction: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, x_grad, y_grad) of a relativistic loss (see the module doc): one launch
    for kind 0 (RpGAN, x and y of one shape), three for kind 1 (RaGAN). The gradients
    are complete: the backward scales them."""
    x, y = x.contiguous(), y.contiguous()
    loss = x.new_empty(())
    x_grad, y_grad = torch.empty_like(x), torch.empty_like(y)
    acc = acc_dtype(x.dtype)
    partials, counter = _workspace(x.device, acc)
    stats = torch.empty(4, dtype=acc, device=x.device)  # mean(x), mean(y), cross_x, cross_y
    nx, ny = x.numel(), y.numel()
    pair = kind == RELATIVISTIC_PAIR
    nprog = max(1, min(cdiv(nx if pair else nx + ny, ELEMENTS_PER_PROGRAM), MAX_PROGRAMS))
    flags = dict(MEAN=reduction == 1, ACC=TL_DTYPES[acc], DTYPE=TL_DTYPES[x.dtype], BLOCK=BLOCK)
    for pass_ in (PASS_PAIR,) if pair else (PASS_MEANS, PASS_SUMS):
        _relativistic_reduce_kernel[(nprog,)](
            x, y, x_grad, y_grad, nx, ny, loss, stats, partials, counter, PASS=pass_, MAX_PROGRAMS=MAX_PROGRAMS,
            num_warps=NUM_WARPS, **flags)
    blocks = cdiv(nx, BLOCK) + cdiv(ny, BLOCK)
    if not pair and blocks:
        _relativistic_average_grad_kernel[(blocks,)](x, y, x_grad, y_grad, nx, ny, stats, num_warps=NUM_WARPS,
                                                     **flags)
    return loss, x_grad, y_grad
