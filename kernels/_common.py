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


@triton.jit
def expm1(x):
    """e^x - 1 without cancellation near 0 (NaN stays NaN). float32 as csrc/fast_math.h's
    fg_expm1: its degree-10 Taylor polynomial where |x| < 0.5, exp(x) - 1 elsewhere.
    float64 by Kahan's u = exp(x), (u - 1) x / log(u) (a few ulp: the rounding of u
    cancels in the quotient), exact at u = 1, -1 at u - 1 = -1 and inf at u = inf."""
    if x.dtype == tl.float64:
        u = tl.exp(x)
        d = u - 1
        exact = (d == 0) | (d == -1) | (u == float("inf"))
        return tl.where(exact, tl.where(d == 0, x, d), d * (x / tl.log(tl.where(exact, 2.0, u))))
    else:
        p = 1.0 / 362880.0
        p = p * x + 1.0 / 40320.0
        p = p * x + 1.0 / 5040.0
        p = p * x + 1.0 / 720.0
        p = p * x + 1.0 / 120.0
        p = p * x + 1.0 / 24.0
        p = p * x + 1.0 / 6.0
        p = p * x + 0.5
        return tl.where(tl.abs(x) < 0.5, x + (x * x) * p, tl.exp(x) - 1)
