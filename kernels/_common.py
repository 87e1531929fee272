"""Helpers shared by fastgan's Triton kernels."""
import functools
from typing import Tuple

import torch
import triton
import triton.language as tl

from .._layout import acc_dtype  # noqa: F401  (re-exported for the kernels)

TL_DTYPES = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}


@functools.lru_cache(maxsize=64)
def device_constants(values: Tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Scalars a kernel loads in its own precision (a Python float argument would
    reach Triton as float32), kept on the device across calls."""
    return torch.tensor(values, dtype=dtype).to(device)


@triton.jit
def sqrt_rn(x):
    """IEEE round-to-nearest square root, like torch.sqrt (compiled float32 tl.sqrt
    is approximate; tl.sqrt_rn is float32-only)."""
    if x.dtype == tl.float64:
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)


@triton.jit
def div_rn(x, y):
    """IEEE round-to-nearest division (compiled float32 ``/`` is approximate)."""
    if x.dtype == tl.float64:
        return x / y
    else:
        return tl.div_rn(x, y)
