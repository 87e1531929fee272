"""Critic weight clipping (WGAN, docs/theory.md §3): clamp every parameter into [-c, c],
one multi-tensor pass per (device, dtype) group, optionally fused into RMSprop."""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .. import reference
from .._backend import _is_compiling, backend_table, resolve_backend
from .._validate import (TensorsLike, check_flag, check_floating, check_lr_tensor, check_positive_finite, check_real,
                         flatten_tensors, floating_groups)
from ._caller import op_callers, without_grad
from ._triton import require, triton_op

# ---- checks of a direct torch.ops call (the fake kernels and the Triton ops' bodies; the
# C++ ops make the same ones in csrc/tensor_lists.h) ----


def _check_lists(op: str, lists: Sequence[Tuple[str, List[torch.Tensor]]]) -> None:
    """Every list as long as the first; tensor i of each list of the first list's tensor
    i's shape; one floating dtype and one device throughout."""
    name0, first = lists[0]
    lead = first[0] if first else None
    for name, tensors in lists:
        require(len(tensors) == len(first), op,
                lambda: f"{name} has {len(tensors)} tensors but {name0} has {len(first)}")
        for i, t in enumerate(tensors):
            require(t.layout == torch.strided and t.dtype.is_floating_point, op,
                    lambda: f"{name}[{i}] must be a dense floating-point tensor, got {t.dtype}")
            require(t.dtype == lead.dtype and t.device == lead.device, op,
                    lambda: f"{name}[{i}] is {t.dtype} on {t.device}, but {name0}[0] is {lead.dtype} on {lead.device}: "
                    "one dtype and device per call")
            require(t.shape == first[i].shape, op,
                    lambda: f"{name}[{i}] has shape {tuple(t.shape)} but {name0}[{i}] has {tuple(first[i].shape)}")


def _check_clip(tensors, clip_value):
    _check_lists("clip_", [("tensors", tensors)])


def _rmsprop_lists(params, grads, square_avgs, grad_avgs, momentum_buffers, centered,
                   momentum) -> List[Tuple[str, List[torch.Tensor]]]:
    """(name, list) of every list the RMSprop step reads: grad_avgs when centered,
    momentum_buffers when momentum > 0."""
    lists = [("params", params), ("grads", grads), ("square_avgs", square_avgs)]
    lists += [("grad_avgs", grad_avgs)] if centered else []
    lists += [("momentum_buffers", momentum_buffers)] if momentum > 0 else []
    return lists


def _check_rmsprop_clip(params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha, eps, weight_decay,
                        momentum, centered, maximize, clip_value, lr_tensor=None):
    _check_lists("rmsprop_clip_", _rmsprop_lists(params, grads, square_avgs, grad_avgs, momentum_buffers, centered,
                                                 momentum))
    if lr_tensor is not None and params:
        require(lr_tensor.dtype.is_floating_point, "rmsprop_clip_",
                lambda: f"lr_tensor must be floating point, got {lr_tensor.dtype}")
        require(lr_tensor.numel() == 1, "rmsprop_clip_",
                lambda: f"lr_tensor must have one element, got {lr_tensor.numel()}")
        require(lr_tensor.device == params[0].device, "rmsprop_clip_",
                lambda: f"lr_tensor is on {lr_tensor.device} but params are on {params[0].device}")


# ---- the Triton kernels as the fastgan_triton ops' bodies ----


@triton_op("clip_", _check_clip)
def _clip_triton(tensors: List[torch.Tensor], clip_value: float) -> None:
    from ..kernels import clip as kernels

    kernels.clip_(tensors, clip_value)


@triton_op("rmsprop_clip_", _check_rmsprop_clip)
def _rmsprop_clip_triton(params: List[torch.Tensor], grads: List[torch.Tensor], square_avgs: List[torch.Tensor],
                         grad_avgs: List[torch.Tensor], momentum_buffers: List[torch.Tensor], lr: float,
                         alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool,
                         maximize: bool, clip_value: float, lr_tensor: Optional[torch.Tensor] = None) -> None:
    from ..kernels import clip as kernels

    kernels.rmsprop_clip_(params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha, eps, weight_decay,
                          momentum, centered, maximize, clip_value, lr_tensor)


for _ns in ("fastgan", "fastgan_triton"):  # in-place ops: their fakes only check
    torch.library.register_fake(f"{_ns}::clip_")(_check_clip)
    torch.library.register_fake(f"{_ns}::rmsprop_clip_")(_check_rmsprop_clip)


# Both namespaces' kernels bump the version counters of what they write, as in-place
# torch ops do (autograd relies on it): the C++ ones themselves, the Triton ones in triton_op.
_CLIP: Dict[str, Callable] = {
    "cpu": torch.ops.fastgan.clip_.default,
    "cuda": torch.ops.fastgan.clip_.default,
    "triton": torch.ops.fastgan_triton.clip_.default,
    "reference": reference.clip_,
}
_RMSPROP_CLIP: Dict[str, Callable] = {
    "cpu": torch.ops.fastgan.rmsprop_clip_.default,
    "cuda": torch.ops.fastgan.rmsprop_clip_.default,
    "triton": torch.ops.fastgan_triton.rmsprop_clip_.default,
    "reference": reference.rmsprop_clip_,
}


# Eagerly, through op callers: about 4 us less per optimizer step than torch.ops's
# conversion of rmsprop_clip_'s lists.
_CLIP_CALLS, _RMSPROP_CLIP_CALLS = op_callers(_CLIP, 0), op_callers(_RMSPROP_CLIP, 0)
#: clip_weights_'s fast path: the fused op's caller per backend.
_FAST_CLIP = backend_table({name: call for name, call in _CLIP_CALLS.items() if name != "reference"}, "clip_weights_")


def _table(eager: Dict[str, Callable], traced: Dict[str, Callable]) -> Dict[str, Callable]:
    """The op callers eagerly; the torch.ops overloads where torch.compile traces the call
    (it cannot trace into an op caller)."""
    return traced if _is_compiling() else eager


# ---- public API ----


def clip_weights_(params: TensorsLike, clip_value: float, *, backend: Optional[str] = None) -> None:
    """Clamp every parameter into ``[-clip_value, clip_value]`` in place (WGAN's
    Lipschitz constraint, applied after each critic update).

    Args:
        params: an ``nn.Module`` (its parameters), a tensor, or an iterable of tensors
            or optimizer param groups. Any shapes, strides, floating dtypes and
            devices; tensors are grouped by (device, dtype) and each group is
            clamped in one multi-tensor pass (one launch on CUDA).
        clip_value: c > 0, finite.
        backend: ``None`` (the default from :func:`fastgan.set_backend` /
            ``$FASTGAN_BACKEND``), ``"auto"``, ``"cuda"``, ``"triton"``, ``"cpu"``
            or ``"reference"``.

    Bit for bit ``p.clamp_(-c, c)`` for each ``p``: NaN stays NaN. Runs under
    ``torch.no_grad()``; ``.grad``, ``requires_grad`` and leaf status are
    untouched. Raises ValueError for a bad ``clip_value`` and TypeError (naming
    the parameter) for integer, bool, complex or sparse tensors, before any
    tensor is modified. An empty collection is a no-op.
    """
    c = check_positive_finite("clip_value", clip_value)
    if type(params) is list and params and isinstance(params[0], torch.Tensor) and not _is_compiling():
        # The common call, one list of one device and dtype, in one call of the fused op,
        # which checks every tensor before it writes any: the grouping and the checks that
        # name a bad parameter below run only when it refuses.
        try:
            if without_grad(_FAST_CLIP, backend, params, c) is not NotImplemented:
                return
        except (RuntimeError, TypeError):
            pass
    tensors, name = flatten_tensors(params, "params")
    groups = floating_groups(tensors, name)
    # Resolve every group's backend before touching any tensor: errors leave all untouched.
    ops = _table(_CLIP_CALLS, _CLIP)
    plan = [(ops[resolve_backend(backend, device, "clip_weights_")], group) for (device, _), group in groups.items()]
    for impl, group in plan:
        without_grad(impl, group, c)


def _check_rmsprop_lists(params, grads, square_avgs, grad_avgs, momentum_buffers, centered: bool,
                         momentum: float) -> None:
    """TypeError/ValueError naming the list or tensor unless every list the step reads
    holds, at each index i, a floating tensor of params[i]'s shape, dtype and device."""
    for name, tensors in _rmsprop_lists(params, grads, square_avgs, grad_avgs, momentum_buffers, centered, momentum):
        if not isinstance(tensors, (list, tuple)):
            raise TypeError(f"{name} must be a list of tensors, got {type(tensors).__name__}")
        if len(tensors) != len(params):
            why = " (centered=True reads it)" if name == "grad_avgs" else \
                " (momentum > 0 reads it)" if name == "momentum_buffers" else ""
            raise ValueError(f"{name} has {len(tensors)} tensors but params has {len(params)}{why}")
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}[{i}] must be a tensor, got {type(t).__name__}")
            check_floating(f"{name}[{i}]", t)
            lead = params[i]
            if t.shape != lead.shape:
                raise ValueError(f"{name}[{i}] has shape {tuple(t.shape)} but params[{i}] has {tuple(lead.shape)}")
            if t.dtype != params[0].dtype or t.device != params[0].device:
                raise TypeError(f"{name}[{i}] is {t.dtype} on {t.device} but params[0] is {params[0].dtype} on "
                                f"{params[0].device}: one dtype and device per call")


def rmsprop_clip_(params: List[torch.Tensor], grads: List[torch.Tensor], square_avgs: List[torch.Tensor],
                  grad_avgs: List[torch.Tensor], momentum_buffers: List[torch.Tensor], *,
                  lr: Union[float, torch.Tensor], alpha: float,
                  eps: float, weight_decay: float, momentum: float, centered: bool, maximize: bool,
                  clip_value: float, backend: Optional[str] = None) -> None:
    """One fused pass of ``torch.optim.RMSprop``'s step followed by ``clamp_(-c, c)``
    over lists of one device and dtype (the kernel behind
    :class:`fastgan.optim.ClippedRMSprop`; see :func:`fastgan.reference.rmsprop_clip_`
    for the math). ``grad_avgs`` is read when ``centered``, ``momentum_buffers``
    when ``momentum > 0``; pass empty lists otherwise. All tensors of index i
    share one shape.

    ``lr`` may be a one-element floating tensor on the lists' device, as in
    ``torch.optim.RMSprop(capturable=True)``: the kernel reads its value on the device
    (no host synchronisation), so a CUDA graph replays the step with the value the
    tensor holds at replay time (learning-rate schedules under capture). Its value is
    not checked (that would synchronise).

    A float lr, eps, weight_decay and momentum must be finite and >= 0, alpha in [0, 1],
    clip_value finite and > 0, centered and maximize bools; the lists as above, of
    floating tensors of one dtype and device: else ValueError/TypeError naming the
    argument, before any tensor is modified."""
    if isinstance(lr, torch.Tensor):
        check_lr_tensor("lr", lr, params[0].device if params else lr.device)
    else:
        check_real("lr", lr, minimum=0.0)
    for name, value in (("eps", eps), ("weight_decay", weight_decay), ("momentum", momentum)):
        check_real(name, value, minimum=0.0)
    if not 0.0 <= check_real("alpha", alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    check_positive_finite("clip_value", clip_value)
    check_flag("centered", centered)
    check_flag("maximize", maximize)
    _check_rmsprop_lists(params, grads, square_avgs, grad_avgs, momentum_buffers, centered, momentum)
    _rmsprop_clip(params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha, eps, weight_decay, momentum,
                  centered, maximize, clip_value, backend)


def _rmsprop_clip(params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha, eps, weight_decay, momentum,
                  centered, maximize, clip_value, backend) -> None:
    """rmsprop_clip_ on arguments already checked (ClippedRMSprop builds and checks its
    own); a tensor lr goes to the kernels as ``lr_tensor``."""
    if not params:
        return
    impl = _table(_RMSPROP_CLIP_CALLS, _RMSPROP_CLIP)[resolve_backend(backend, params[0].device, "rmsprop_clip_")]
    lr, lr_tensor = (0.0, lr) if isinstance(lr, torch.Tensor) else (lr, None)
    without_grad(impl, params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha, eps, weight_decay,
                  momentum, centered, maximize, clip_value, lr_tensor)
