"""Triton kernels for critic weight clipping and the clipped RMSprop step.

Both are multi-tensor kernels (see ``_multi_tensor.py``): one launch per
(device, dtype) group whatever the number of tensors. The element math follows
``csrc/clip_math.h`` line for line:

    clip:     x = clamp(x, -c, c)                      (NaN stays NaN)
    rmsprop:  g = sign * grad (+ weight_decay * p)
              v = alpha * v + (1 - alpha) * g^2
              m = lerp(m, g, 1 - alpha)                          (centered)
              den = sqrt(v - m^2 if centered else v) + eps
              b = momentum * b + g / den;  p -= lr * b           (momentum)
              p -= lr * g / den                                  (otherwise)
              p = clamp(p, -c, c)
"""
from typing import List, Optional, Sequence

import torch
import triton
import triton.language as tl

from ._common import TL_DTYPES, acc_dtype, as_acc, div_rn, sqrt_rn
from ._multi_tensor import finish, flatten_lists, tensor_table

BLOCK = 2048


@triton.jit
def _clamp_keep_nan(x, lo, hi):
    return tl.where(x < lo, lo, tl.where(x > hi, hi, x))


@triton.jit
def _chunk(chunk_tensor, chunk_begin, numels, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    t = tl.load(chunk_tensor + pid)
    begin = tl.multiple_of(tl.load(chunk_begin + pid), BLOCK)
    n = tl.load(numels + t)
    return t, begin, n


@triton.jit
def _base(addresses, index, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
    ptr = tl.load(addresses + index).to(tl.pointer_type(DTYPE))
    if ALIGNED:
        ptr = tl.multiple_of(ptr, 16)
    return ptr


@triton.jit
def _clip_chunk(x_ptr, mask, lo, hi, DTYPE: tl.constexpr):
    x = tl.load(x_ptr, mask=mask).to(lo.dtype)
    tl.store(x_ptr, _clamp_keep_nan(x, lo, hi).to(DTYPE), mask=mask)


@triton.jit
def _clip_kernel(addresses, numels, chunk_tensor, chunk_begin, lo: tl.float64, hi: tl.float64, ACC: tl.constexpr,
                 DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    t, begin, n = _chunk(chunk_tensor, chunk_begin, numels, BLOCK)
    offsets = begin + tl.arange(0, BLOCK)
    x_ptr = _base(addresses, t, DTYPE, ALIGNED) + offsets
    lo = as_acc(lo, ACC)
    hi = as_acc(hi, ACC)
    if begin + BLOCK <= n:  # full chunk: unmasked, vectorisable
        _clip_chunk(x_ptr, None, lo, hi, DTYPE)
    else:
        _clip_chunk(x_ptr, offsets < n, lo, hi, DTYPE)


def clip_(tensors: Sequence[torch.Tensor], clip_value: float) -> None:
    """Clamp every tensor (one device, one floating dtype) into [-c, c] in place."""
    (flat,), write_back = flatten_lists([tensors], [True])
    if flat:
        dtype = flat[0].dtype
        # Bounds rounded to the tensors' dtype, as Tensor.clamp_ rounds them, then held in
        # the float32/float64 compute type (the interpreter compares bfloat16 as raw bits).
        lo, hi = torch.tensor([-clip_value, clip_value], dtype=dtype).tolist()
        table = tensor_table([flat], BLOCK)
        _clip_kernel[(table.n_chunks,)](
            table.addresses, table.numels, table.chunk_tensor, table.chunk_begin, lo, hi,
            ACC=TL_DTYPES[acc_dtype(dtype)], DTYPE=TL_DTYPES[dtype], ALIGNED=table.aligned, BLOCK=BLOCK,
        )
    finish(write_back)


@triton.jit
def _rmsprop_clip_chunk(addresses, n_tensors, t, offsets, mask, lr, lr_ptr, alpha, eps, weight_decay, momentum,
                        grad_sign, clip, ACC: tl.constexpr, DTYPE: tl.constexpr, CENTERED: tl.constexpr,
                        MOMENTUM: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr, ALIGNED: tl.constexpr,
                        LR_ON_DEVICE: tl.constexpr):
    # Scalars arrive in float64 and are rounded once to the compute type; 1 - alpha is
    # taken in float64 first, as the C++ kernels do. LR_ON_DEVICE: the learning rate is
    # the value at lr_ptr (a tensor lr: read at run time, so graph replays see updates).
    one_minus_alpha = as_acc(1 - alpha, ACC)
    if LR_ON_DEVICE:
        lr = tl.load(lr_ptr).to(ACC)
    else:
        lr = as_acc(lr, ACC)
    alpha, eps = as_acc(alpha, ACC), as_acc(eps, ACC)
    weight_decay, momentum = as_acc(weight_decay, ACC), as_acc(momentum, ACC)
    grad_sign, clip = as_acc(grad_sign, ACC), as_acc(clip, ACC)
    acc = ACC
    p_ptr = _base(addresses, t, DTYPE, ALIGNED) + offsets
    g_ptr = _base(addresses, n_tensors + t, DTYPE, ALIGNED) + offsets
    v_ptr = _base(addresses, 2 * n_tensors + t, DTYPE, ALIGNED) + offsets
    p = tl.load(p_ptr, mask=mask).to(acc)
    g = grad_sign * tl.load(g_ptr, mask=mask).to(acc)
    if HAS_WEIGHT_DECAY:
        g = g + weight_decay * p
    v = tl.load(v_ptr, mask=mask).to(acc) * alpha + one_minus_alpha * (g * g)
    tl.store(v_ptr, v.to(DTYPE), mask=mask)
    if CENTERED:
        m_ptr = _base(addresses, 3 * n_tensors + t, DTYPE, ALIGNED) + offsets
        m = tl.load(m_ptr, mask=mask).to(acc)
        if one_minus_alpha < 0.5:  # torch.lerp's two-sided formula
            m = m + one_minus_alpha * (g - m)
        else:
            m = g - (g - m) * (1 - one_minus_alpha)
        tl.store(m_ptr, m.to(DTYPE), mask=mask)
        den = sqrt_rn(v - m * m) + eps
    else:
        den = sqrt_rn(v) + eps
    if MOMENTUM:
        b_ptr = _base(addresses, (3 + CENTERED) * n_tensors + t, DTYPE, ALIGNED) + offsets
        b = tl.load(b_ptr, mask=mask).to(acc) * momentum + div_rn(g, den)
        tl.store(b_ptr, b.to(DTYPE), mask=mask)
        p = p - lr * b
    else:
        p = p - lr * div_rn(g, den)
    tl.store(p_ptr, _clamp_keep_nan(p, -clip, clip).to(DTYPE), mask=mask)


@triton.jit
def _rmsprop_clip_kernel(addresses, n_tensors, numels, chunk_tensor, chunk_begin, lr: tl.float64, lr_ptr,
                         alpha: tl.float64, eps: tl.float64, weight_decay: tl.float64, momentum: tl.float64,
                         grad_sign: tl.float64, clip: tl.float64, ACC: tl.constexpr, DTYPE: tl.constexpr,
                         CENTERED: tl.constexpr, MOMENTUM: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
                         ALIGNED: tl.constexpr, LR_ON_DEVICE: tl.constexpr, BLOCK: tl.constexpr):
    t, begin, n = _chunk(chunk_tensor, chunk_begin, numels, BLOCK)
    offsets = begin + tl.arange(0, BLOCK)
    if begin + BLOCK <= n:  # full chunk: unmasked, vectorisable
        _rmsprop_clip_chunk(addresses, n_tensors, t, offsets, None, lr, lr_ptr, alpha, eps, weight_decay, momentum,
                            grad_sign, clip, ACC, DTYPE, CENTERED, MOMENTUM, HAS_WEIGHT_DECAY, ALIGNED, LR_ON_DEVICE)
    else:
        _rmsprop_clip_chunk(addresses, n_tensors, t, offsets, offsets < n, lr, lr_ptr, alpha, eps, weight_decay,
                            momentum, grad_sign, clip, ACC, DTYPE, CENTERED, MOMENTUM, HAS_WEIGHT_DECAY, ALIGNED,
                            LR_ON_DEVICE)


def rmsprop_clip_(params: List[torch.Tensor], grads: List[torch.Tensor], square_avgs: List[torch.Tensor],
                  grad_avgs: List[torch.Tensor], momentum_buffers: List[torch.Tensor], lr: float, alpha: float,
                  eps: float, weight_decay: float, momentum: float, centered: bool, maximize: bool,
                  clip_value: float, lr_tensor: Optional[torch.Tensor] = None) -> None:
    """RMSprop step + clamp over lists of one device and one floating dtype (see module
    doc); with ``lr_tensor`` (one element, the lists' device) the kernel reads the
    learning rate from it."""
    lists = [params, grads, square_avgs]
    if centered:
        lists.append(grad_avgs)
    if momentum > 0:
        lists.append(momentum_buffers)
    flat, write_back = flatten_lists(lists, [True, False] + [True] * (len(lists) - 2))
    if flat[0]:
        dtype = flat[0][0].dtype
        table = tensor_table(flat, BLOCK)
        _rmsprop_clip_kernel[(table.n_chunks,)](
            table.addresses, table.n_tensors, table.numels, table.chunk_tensor, table.chunk_begin, lr,
            table.numels if lr_tensor is None else lr_tensor, alpha, eps, weight_decay, momentum,
            -1.0 if maximize else 1.0, clip_value, ACC=TL_DTYPES[acc_dtype(dtype)], DTYPE=TL_DTYPES[dtype],
            CENTERED=centered, MOMENTUM=momentum > 0, HAS_WEIGHT_DECAY=weight_decay != 0, ALIGNED=table.aligned,
            LR_ON_DEVICE=lr_tensor is not None, BLOCK=BLOCK,
        )
    finish(write_back)
