"""Fused bias + activation (StyleGAN's ``bias_act``): ``y = gain * act(x + b)`` in one
kernel, whose backward and double backward are fused kernels too, so that a
critic's R1 / WGAN-GP double backward (docs/theory.md §3) stays in fused kernels.

Three registered ops in each namespace (``fastgan::`` for the C++/CUDA kernels,
``fastgan_triton::`` for the Triton kernels; one autograd for both, in C++:
csrc/bias_act_autograd.cpp):

    bias_act(x, b, act, alpha, gain, dim) -> y
        backward: (dx, db) = bias_act_grad(dy, ..., need_db)
    bias_act_grad(dy, x, b, y, act, alpha, gain, dim, need_db) -> (dx, db)
        dx = gain * f'(ref) * dy; db = dx summed over all dims but `dim` (CPU: in
        the same pass), or empty without need_db
        backward: d_dy = bias_act_grad(ddx + ddb, ...)        (linear in dy; ddb
                  spread along `dim`)
                  d_ref = D2(ref) * dy * ddx                   (tanh, sigmoid, silu, elu)
                  both from one bias_act_grad2 kernel when d_ref is needed
    bias_act_grad2(ddx, dy, x, b, y, ..., need_ddy) -> (d_dy, d_ref)
        (third-order derivatives are not implemented)

``ref`` is what the forward saves (csrc/bias_act_math.h has the table): y for
relu/lrelu/tanh/sigmoid, z = x + b (x and b saved) for silu/elu and whenever y
cannot give f' (gain == 0, lrelu with alpha < 0), nothing for linear. With ref = y,
d_ref is the gradient with respect to y, which autograd carries to x and b through
the forward op's own backward.
"""
import math
from typing import Callable, Dict, Optional, Tuple

import torch

from .. import reference
from .._backend import _is_compiling, backend_table, resolve_backend
from .._validate import check_floating, check_real
from ._caller import op_callers
from ._triton import require, triton_op

# name -> (id, default alpha). Ids: csrc/bias_act_math.h (enum Act) and kernels/bias_act.py.
_ACTS: Dict[str, Tuple[int, float]] = {
    "linear": (0, 0.0),
    "relu": (1, 0.0),
    "lrelu": (2, 0.2),
    "tanh": (3, 0.0),
    "sigmoid": (4, 0.0),
    "silu": (5, 0.0),
    "elu": (6, 1.0),
}
ACTIVATIONS = tuple(_ACTS)
_LINEAR, _RELU, _LRELU, _TANH, _SIGMOID, _SILU, _ELU = range(7)
_SECOND_ORDER = (_TANH, _SIGMOID, _SILU, _ELU)


def _ref_is_y(act: int, alpha: float, gain: float) -> bool:
    """Whether f' can be taken from y (mirrors can_ref_y in csrc/bias_act_math.h)."""
    if gain == 0:
        return False
    return act in (_RELU, _TANH, _SIGMOID) or (act == _LRELU and alpha >= 0)


def _sum_to_bias(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The bias gradient: `t` summed over every dimension but `dim`."""
    if t.ndim == 1:
        return t.clone()
    return t.sum(dim=[d for d in range(t.ndim) if d != dim % t.ndim])


# ---- checks of a direct torch.ops call (the fake kernels and the Triton ops' bodies;
# the C++ ops make the same ones in csrc/bias_act_host.h) ----


def _check_lead(op: str, name: str, t: torch.Tensor, act: int) -> None:
    require(0 <= act < len(_ACTS), op, lambda: f"unknown activation id {act}")
    require(t.layout == torch.strided and t.dtype.is_floating_point, op,
             lambda: f"{name} must be a dense floating-point tensor, got {t.dtype} ({t.layout})")


def _check_like(op: str, name: str, t: Optional[torch.Tensor], lead: torch.Tensor) -> None:
    if t is None:
        return
    require(t.layout == torch.strided and t.dtype == lead.dtype and t.device == lead.device and t.shape == lead.shape,
             op,
             lambda: f"{name} must be a dense {lead.dtype} tensor of shape {tuple(lead.shape)} on {lead.device}, got "
                     f"{t.dtype} {tuple(t.shape)} on {t.device}")


def _check_bias(op: str, b: Optional[torch.Tensor], lead: torch.Tensor, dim: int) -> None:
    if b is None:
        return
    require(lead.dim() > 0 and -lead.dim() <= dim < lead.dim(), op,
             lambda: f"dim {dim} is out of range for a {lead.dim()}-D tensor")
    size = lead.shape[dim]
    require(b.dim() == 1 and b.shape[0] == size, op,
            lambda: f"bias must be 1-D of size {size}, got shape {tuple(b.shape)}")
    require(b.dtype == lead.dtype and b.device == lead.device, op,
             lambda: f"bias must be {lead.dtype} on {lead.device}, got {b.dtype} on {b.device}")


def _check_ref(op: str, lead, x, b, y, act, alpha, gain, dim) -> None:
    if act == _LINEAR:
        return
    if y is not None:
        require(_ref_is_y(act, alpha, gain), op,
                lambda: f"the derivative of this activation cannot be taken from y with "
                        f"alpha={alpha}, gain={gain}; pass x (and b) instead")
        _check_like(op, "y", y, lead)
        return
    require(x is not None, op, "needs x (with b) or y to take the derivative")
    _check_like(op, "x", x, lead)
    _check_bias(op, b, lead, dim)


def _check_forward(x, b, act, alpha, gain, dim):
    _check_lead("bias_act", "x", x, act)
    _check_bias("bias_act", b, x, dim)


def _check_grad(dy, x, b, y, act, alpha, gain, dim, need_db):
    _check_lead("bias_act_grad", "dy", dy, act)
    _check_ref("bias_act_grad", dy, x, b, y, act, alpha, gain, dim)
    if need_db:
        require(dy.dim() > 0 and -dy.dim() <= dim < dy.dim(), "bias_act_grad",
                lambda: f"dim {dim} is out of range for a {dy.dim()}-D tensor")


def _check_grad2(ddx, dy, x, b, y, act, alpha, gain, dim, need_ddy):
    op = "bias_act_grad2"
    _check_lead(op, "ddx", ddx, act)
    require(act in _SECOND_ORDER, op, "only tanh, sigmoid, silu and elu have a second derivative")
    _check_like(op, "dy", dy, ddx)
    _check_ref(op, ddx, x, b, y, act, alpha, gain, dim)


# ---- fake (meta) kernels, for both namespaces: the layout rules of csrc/bias_act_host.h ----


def _bias_act_fake(x, b, act, alpha, gain, dim):
    _check_forward(x, b, act, alpha, gain, dim)
    return torch.empty_like(x)


def _bias_act_grad_fake(dy, x, b, y, act, alpha, gain, dim, need_db):
    _check_grad(dy, x, b, y, act, alpha, gain, dim, need_db)
    return torch.empty_like(dy), dy.new_empty(dy.shape[dim] if need_db else 0)


def _bias_act_grad2_fake(ddx, dy, x, b, y, act, alpha, gain, dim, need_ddy):
    _check_grad2(ddx, dy, x, b, y, act, alpha, gain, dim, need_ddy)
    d_ref = torch.empty_like(ddx)
    return (torch.empty_like(d_ref) if need_ddy else ddx.new_empty(0)), d_ref


# ---- the Triton kernels as the fastgan_triton ops' bodies (their autograd: csrc/bias_act_autograd.cpp) ----


@triton_op("bias_act", _check_forward)
def _bias_act_triton(x: torch.Tensor, b: Optional[torch.Tensor], act: int, alpha: float, gain: float,
                     dim: int) -> torch.Tensor:
    from ..kernels import bias_act as kernels

    return kernels.forward(x, b, act, alpha, gain, dim)


@triton_op("bias_act_grad", _check_grad)
def _bias_act_grad_triton(dy: torch.Tensor, x: Optional[torch.Tensor], b: Optional[torch.Tensor],
                          y: Optional[torch.Tensor], act: int, alpha: float, gain: float, dim: int,
                          need_db: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    from ..kernels import bias_act as kernels

    dx = kernels.backward(dy, x, b, y, act, alpha, gain, dim)
    return dx, (_sum_to_bias(dx, dim) if need_db else dx.new_empty(0))


@triton_op("bias_act_grad2", _check_grad2)
def _bias_act_grad2_triton(ddx: torch.Tensor, dy: torch.Tensor, x: Optional[torch.Tensor],
                           b: Optional[torch.Tensor], y: Optional[torch.Tensor], act: int, alpha: float, gain: float,
                           dim: int, need_ddy: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    from ..kernels import bias_act as kernels

    return kernels.backward2(ddx, dy, x, b, y, act, alpha, gain, dim, need_ddy)


for _ns in ("fastgan", "fastgan_triton"):
    torch.library.register_fake(f"{_ns}::bias_act")(_bias_act_fake)
    torch.library.register_fake(f"{_ns}::bias_act_grad")(_bias_act_grad_fake)
    torch.library.register_fake(f"{_ns}::bias_act_grad2")(_bias_act_grad2_fake)


# ---- argument checks (once, here: every backend sees validated input) ----


def _check_args(x, bias, act, alpha, gain, dim) -> Tuple[Optional[torch.Tensor], int, float, float, int]:
    """(bias in x's dtype, act id, alpha, gain, dim >= 0), or an error naming the argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    check_floating("x", x)
    if not isinstance(act, str) or act not in _ACTS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
    act_id, default_alpha = _ACTS[act]
    alpha = default_alpha if alpha is None else check_real("alpha", alpha)
    gain = check_real("gain", gain)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if bias is None:
        return None, act_id, alpha, gain, dim
    if not -x.ndim <= dim < x.ndim:
        raise IndexError(f"dim {dim} is out of range for x of shape {tuple(x.shape)} (bias is indexed along dim)")
    dim = dim % x.ndim
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"bias must be a tensor or None, got {type(bias).__name__}")
    check_floating("bias", bias)
    if bias.ndim != 1 or bias.shape[0] != x.shape[dim]:
        raise ValueError(f"bias must be 1-D of size x.shape[{dim}] = {x.shape[dim]}, got shape {tuple(bias.shape)}")
    if bias.device != x.device:
        raise ValueError(f"bias is on {bias.device} but x is on {x.device}")
    if bias.dtype != x.dtype:
        if not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"bias has dtype {bias.dtype} but x has {x.dtype} (they may differ only under autocast)")
        bias = bias.to(x.dtype)  # autocast: the output follows x; the cast is differentiable
    return bias, act_id, alpha, gain, dim


# ---- public API ----


_native = torch.ops.fastgan.bias_act.default
_triton = torch.ops.fastgan_triton.bias_act.default


def _reference(x, b, act, alpha, gain, dim):
    return reference.bias_act(x, b, ACTIVATIONS[act], alpha, gain, dim)


_BIAS_ACT: Dict[str, Callable] = {"cpu": _native, "cuda": _native, "triton": _triton, "reference": _reference}
#: The fast path's calls of the fused ops.
_FAST_BIAS_ACT = backend_table({name: call for name, call in op_callers(_BIAS_ACT).items() if name != "reference"},
                               "bias_act")


def bias_act(x: torch.Tensor, bias: Optional[torch.Tensor] = None, act: str = "lrelu", alpha: Optional[float] = None,
             gain: float = 1.0, dim: int = 1, *, backend: Optional[str] = None) -> torch.Tensor:
    """Fused ``y = gain * act(x + bias)``, bias broadcast along ``dim``, in one kernel.

    Args:
        x: a floating tensor of any shape and layout, e.g. ``(B, C)`` from a Linear
            or ``(B, C, H, W)`` (NCHW or channels-last) from a conv.
        bias: ``None`` or a 1-D tensor of size ``x.shape[dim]``, on x's device, of
            x's dtype (under ``torch.autocast`` it is cast to x's dtype: the output
            follows x, and the bias gradient reaches a float32 parameter).
        act: ``"linear"``, ``"relu"``, ``"lrelu"``, ``"tanh"``, ``"sigmoid"``,
            ``"silu"`` or ``"elu"``.
        alpha: lrelu's negative slope (default 0.2) or elu's alpha (default 1.0);
            ignored by the other activations. Finite.
        gain: a finite scale applied after the activation.
        dim: the dimension the bias runs along (ignored without a bias).
        backend: ``None`` (the default from :func:`fastgan.set_backend`), ``"auto"``,
            ``"cuda"``, ``"triton"``, ``"cpu"`` or ``"reference"``.

    Returns ``y`` of x's shape, dtype and (dense) layout. Differentiable twice with
    fused kernels: the backward is one op call (on the CPU one pass that sums the
    bias gradient too; on CUDA a kernel and the bias reduction), the double
    backward of relu/lrelu is one call of the same mask kernel, that of
    tanh/sigmoid/silu/elu one fused kernel. relu, lrelu, tanh and sigmoid save only
    ``y`` for the backward. No host synchronisation: usable in CUDA-graph capture.
    """
    # The common eager call goes straight to the fused op (float alpha and gain, a known
    # act, an int dim, negative too: fuse_bias_act's modules use -1). The ops check the
    # tensors and dim themselves (csrc/bias_act_host.h, the Triton op's checks), so
    # _check_args, whose errors name the user's argument, runs only when this path
    # declines or the op refuses: off the hot path. torch.compile traces the checked path.
    try:  # an unhashable act, or the op refusing: _check_args names the bad argument
        spec = _ACTS.get(act)
        if spec is not None and type(dim) is int and type(gain) is float and not _is_compiling():
            a = spec[1] if alpha is None else alpha
            if type(a) is float and math.isfinite(a) and math.isfinite(gain):
                y = _FAST_BIAS_ACT(backend, x, bias, spec[0], a, gain, dim)
                if y is not NotImplemented:
                    return y
    except (RuntimeError, TypeError, ValueError, IndexError, AttributeError):
        pass  # e.g. an unhashable act, an x without a device: _check_args names it
    b, act_id, alpha, gain, dim = _check_args(x, bias, act, alpha, gain, dim)
    impl = _BIAS_ACT[resolve_backend(backend, x.device, "bias_act")]
    return impl(x, b, act_id, alpha, gain, dim)
