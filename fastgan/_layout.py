"""Memory-layout and compute-type rules shared by the Python front-ends, fake
kernels and Triton launchers (the C++ side has the same rules in
csrc/tensor_lists.h, csrc/rows.h and common.h's acc_t)."""
from typing import Tuple

import torch


def is_non_overlapping_and_dense(tensor: torch.Tensor) -> bool:
    """Whether the tensor's elements fill exactly numel() consecutive slots of memory
    (contiguous up to a permutation of dimensions), as ATen's check of that name."""
    if tensor.is_contiguous() and tensor.numel() > 0:  # the common case, without sorting strides in Python
        return True
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(tensor.shape, tensor.stride()) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def is_batch_major(tensor: torch.Tensor) -> bool:
    """Whether sample b occupies elements [b·N, (b+1)·N) of dense memory: any dense
    layout whose batch dimension is outermost (contiguous, channels-last, ...)."""
    if tensor.dim() == 0:
        return False
    if tensor.is_contiguous() and tensor.numel() > 0:
        return True
    if not is_non_overlapping_and_dense(tensor):
        return False
    rows = tensor.shape[0]
    return rows <= 1 or tensor.stride(0) * rows == tensor.numel()


def batch_major(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` itself when batch-major, else a contiguous copy."""
    return tensor if is_batch_major(tensor) else tensor.contiguous()


def batch_major_pair(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Batch-major views of `a` and `b` in one layout: as they are when their strides
    agree, else both contiguous."""
    if is_batch_major(a) and a.stride() == b.stride():
        return a, b
    return a.contiguous(), b.contiguous()


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The compute (accumulation) type for `dtype`: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
