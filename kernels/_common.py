"""Helpers shared by fastgan's Triton kernels."""
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


def cdiv(n: int, d: int) -> int:
    """ceil(n / d) for a launch grid on the host: integer arithmetic, where triton.cdiv
    (a constexpr function since triton 3.7) costs microseconds per call."""
    return -(-n // d)


@triton.jit
def as_acc(x, ACC: tl.constexpr):
    """A scalar kernel argument in the compute type ACC, rounded to nearest: an integer
    count (which the JIT turns into a constant when it is 1), or a float argument
    annotated ``tl.float64`` (a plain Python float argument would arrive as float32)."""
    return (x + tl.zeros([], ACC)).to(ACC)


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
