"""Gradient penalties (docs/theory.md §3): WGAN-GP, one-sided WGAN-LP, R1 and R2.

The fused pieces are the per-sample interpolation, the per-sample gradient norm
and penalty with its reduction, and the penalty's backward ``dP/dg``; with
:func:`fastgan.ops.bias_act` layers in the critic the double backward through
the critic stays in fused kernels too. The penalty's own backward is
differentiable (``gradgradcheck`` passes), and the whole path works under
autocast, with a GradScaler and inside CUDA-graph capture (no host sync).
"""
import math
from typing import Callable, Dict, Optional, Tuple

import torch

from .. import reference
from .._backend import _is_compiling, backend_table, resolve_backend
from .._layout import acc_dtype, batch_major, batch_major_pair
from .._validate import check_batch, check_flag, check_real
from ._caller import grad_with_graph, op_caller
from ._triton import require, triton_op

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


# ---------------------------------------------------------------- registration
# Checks of a direct torch.ops call, shared by the fake kernels and the Triton ops' bodies
# (the C++ ops make the same checks in csrc/penalty_host.h).


def _check_batch_arg(op: str, name: str, t: torch.Tensor) -> None:
    require(t.layout == torch.strided and t.dtype.is_floating_point, op,
             lambda: f"{name} must be a dense floating-point tensor, got {t.dtype} ({t.layout})")
    require(t.dim() >= 1 and t.shape[0] >= 1 and t.numel() >= 1, op,
             lambda: f"{name} must have shape (B, ...) with B >= 1 and elements per sample, got {tuple(t.shape)}")


def _check_like(op: str, name: str, t: torch.Tensor, like: torch.Tensor, like_name: str) -> None:
    require(t.shape == like.shape, op,
            lambda: f"{name} has shape {tuple(t.shape)} but {like_name} has {tuple(like.shape)}")
    require(t.dtype == like.dtype, op, lambda: f"{name} has dtype {t.dtype} but {like_name} has {like.dtype}")
    require(t.device == like.device, op, lambda: f"{name} is on {t.device} but {like_name} is on {like.device}")


def _check_per_row(op: str, name: str, t: torch.Tensor, batch: torch.Tensor) -> None:
    """A (B,) tensor in the accumulation dtype of `batch`, on its device."""
    rows, acc = batch.shape[0], acc_dtype(batch.dtype)
    require(t.shape == (rows,), op, lambda: f"{name} must have shape (B,) = ({rows},), got {tuple(t.shape)}")
    require(t.dtype == acc, op, lambda: f"{name} must have dtype {acc} (the accumulation type of {batch.dtype}), "
                                        f"got {t.dtype}")
    require(t.device == batch.device, op, lambda: f"{name} is on {t.device} but the batch is on {batch.device}")


def _check_reduction(op: str, reduction: int) -> None:
    require(reduction in REDUCTIONS.values(), op,
             lambda: f"reduction must be 0 (none), 1 (mean) or 2 (sum), got {reduction}")


def _check_interpolate(real, fake, eps):
    _check_batch_arg("interpolate", "real", real)
    _check_like("interpolate", "fake", fake, real, "real")
    _check_per_row("interpolate", "eps", eps, real)


def _check_interpolate_backward(grad, eps, need_real, need_fake):
    _check_batch_arg("interpolate_backward", "grad", grad)
    _check_per_row("interpolate_backward", "eps", eps, grad)


def _check_penalty(grads, center, weight, one_sided, reduction):
    _check_batch_arg("grad_norm_penalty", "grads", grads)
    _check_reduction("grad_norm_penalty", reduction)


def _check_penalty_backward(grad_loss, grads, norms, center, weight, one_sided, reduction):
    op = "grad_norm_penalty_backward"
    _check_batch_arg(op, "grads", grads)
    _check_reduction(op, reduction)
    _check_per_row(op, "norms", norms, grads)
    want = (grads.shape[0],) if reduction == REDUCTIONS["none"] else ()
    require(tuple(grad_loss.shape) == want, op,
             lambda: f"grad_loss must have shape {want} (the loss's), got {tuple(grad_loss.shape)}")
    require(grad_loss.dtype == grads.dtype and grad_loss.device == grads.device, op,
             lambda: f"grad_loss must be {grads.dtype} on {grads.device}, got {grad_loss.dtype} on {grad_loss.device}")


def _interpolate_fake(real, fake, eps):
    _check_interpolate(real, fake, eps)
    return torch.empty_like(batch_major_pair(real, fake)[0])


def _interpolate_backward_fake(grad, eps, need_real, need_fake):
    _check_interpolate_backward(grad, eps, need_real, need_fake)
    g = batch_major(grad)
    empty = grad.new_empty(0)
    return (torch.empty_like(g) if need_real else empty), (torch.empty_like(g) if need_fake else empty)


def _penalty_fake(grads, center, weight, one_sided, reduction):
    _check_penalty(grads, center, weight, one_sided, reduction)
    rows = grads.shape[0]
    loss = grads.new_empty((rows,) if reduction == REDUCTIONS["none"] else ())
    return loss, grads.new_empty((rows,), dtype=acc_dtype(grads.dtype))


def _penalty_backward_fake(grad_loss, grads, norms, center, weight, one_sided, reduction):
    _check_penalty_backward(grad_loss, grads, norms, center, weight, one_sided, reduction)
    return torch.empty_like(batch_major(grads))


@triton_op("interpolate", _check_interpolate)
def _interpolate_triton(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    from ..kernels import penalty as kernels

    return kernels.interpolate(real, fake, eps)


@triton_op("interpolate_backward", _check_interpolate_backward)
def _interpolate_backward_triton(grad: torch.Tensor, eps: torch.Tensor, need_real: bool,
                                 need_fake: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    from ..kernels import penalty as kernels

    return kernels.interpolate_backward(grad, eps, need_real, need_fake)


@triton_op("grad_norm_penalty", _check_penalty)
def _penalty_triton(grads: torch.Tensor, center: float, weight: float, one_sided: bool,
                    reduction: int) -> Tuple[torch.Tensor, torch.Tensor]:
    from ..kernels import penalty as kernels

    return kernels.grad_norm_penalty(grads, center, weight, one_sided, reduction)


@triton_op("grad_norm_penalty_backward", _check_penalty_backward)
def _penalty_backward_triton(grad_loss: torch.Tensor, grads: torch.Tensor, norms: torch.Tensor, center: float,
                             weight: float, one_sided: bool, reduction: int) -> torch.Tensor:
    from ..kernels import penalty as kernels

    return kernels.grad_norm_penalty_backward(grad_loss, grads, norms, center, weight, one_sided, reduction)


for _ns in ("fastgan", "fastgan_triton"):
    for _name, _fake in (("interpolate", _interpolate_fake), ("interpolate_backward", _interpolate_backward_fake),
                         ("grad_norm_penalty", _penalty_fake), ("grad_norm_penalty_backward", _penalty_backward_fake)):
        torch.library.register_fake(f"{_ns}::{_name}")(_fake)


class _Ops:
    """One backend's four penalty ops (``torch.ops.fastgan`` or ``torch.ops.fastgan_triton``),
    and the eager fast paths' callers of the forward ops (the penalty's returns the loss alone)."""

    def __init__(self, namespace):
        self.interpolate = namespace.interpolate.default
        self.interpolate_backward = namespace.interpolate_backward.default
        self.penalty = namespace.grad_norm_penalty.default
        self.penalty_backward = namespace.grad_norm_penalty_backward.default
        self.fast_interpolate = op_caller(self.interpolate)
        self.fast_penalty = op_caller(self.penalty)


_NATIVE = _Ops(torch.ops.fastgan)
_TRITON = _Ops(torch.ops.fastgan_triton)


# One autograd for both namespaces' ops: csrc/penalty_autograd.cpp.
_BACKEND_OPS: Dict[str, _Ops] = {"cpu": _NATIVE, "cuda": _NATIVE, "triton": _TRITON}
#: The fast paths' op callers per backend.
_FAST_INTERPOLATE = backend_table({name: ops.fast_interpolate for name, ops in _BACKEND_OPS.items()}, "interpolate")
_FAST_PENALTY = backend_table({name: ops.fast_penalty for name, ops in _BACKEND_OPS.items()}, "grad_norm_penalty")

# ---------------------------------------------------------------- validation


def _check_pair(real, fake) -> None:
    check_batch("real", real)
    check_batch("fake", fake)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if real.dtype != fake.dtype:
        raise TypeError(f"real and fake must have the same dtype, got {real.dtype} and {fake.dtype}")
    if real.device != fake.device:
        raise ValueError(f"real and fake must be on the same device, got {real.device} and {fake.device}")


# ---------------------------------------------------------------- public ops


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: Optional[torch.Tensor] = None, *,
                generator: Optional[torch.Generator] = None, backend: Optional[str] = None) -> torch.Tensor:
    """WGAN-GP's random interpolates ``x_hat_b = eps_b · real_b + (1 − eps_b) · fake_b``.

    Args:
        real, fake: (B, ...) floating tensors of one shape, dtype and device.
        eps: (B,) mixing weights; drawn ``~ U[0, 1)`` (``torch.rand`` with `generator`,
            on the tensors' device) when None. Treated as a constant (not differentiated).
        generator: a ``torch.Generator`` on the tensors' device, for reproducible eps.
        backend: see :func:`fastgan.set_backend`.

    Returns (B, ...) in the inputs' dtype and (batch-major) layout, differentiable
    w.r.t. real and fake; one kernel forward and one backward.
    """
    if (eps is not None and generator is None and isinstance(real, torch.Tensor) and isinstance(eps, torch.Tensor)
            and not _is_compiling()):
        # The fused ops check their own arguments (csrc/penalty_host.h, _check_interpolate):
        # the checks below run only when one refuses, to name the user's bad argument.
        # torch.compile traces the checked path.
        if eps.dtype == acc_dtype(real.dtype):
            try:
                out = _FAST_INTERPOLATE(backend, real, fake, eps)
                if out is not NotImplemented:
                    return out
            except (RuntimeError, TypeError):
                pass
    _check_pair(real, fake)
    rows = real.shape[0]
    acc = acc_dtype(real.dtype)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if eps is None:
        if generator is not None and generator.device.type != real.device.type:
            raise ValueError(f"generator is on {generator.device} but real/fake are on {real.device}: "
                             "pass a generator on the tensors' device")
        eps = torch.rand(rows, generator=generator, device=real.device, dtype=acc)
    else:
        if not isinstance(eps, torch.Tensor) or not eps.dtype.is_floating_point:
            raise TypeError("eps must be a floating-point tensor of shape (B,)")
        if eps.shape != (rows,):
            raise ValueError(f"eps must have shape (B,) = ({rows},), got {tuple(eps.shape)}")
        if eps.device != real.device:
            raise ValueError(f"eps is on {eps.device} but real/fake are on {real.device}")
        eps = eps.detach().to(acc)
    name = resolve_backend(backend, real.device, "interpolate")
    if name == "reference":
        return reference.interpolate(real, fake, eps)
    return _BACKEND_OPS[name].interpolate(real, fake, eps)


def grad_norm_penalty(grads: torch.Tensor, *, center: float = 1.0, weight: float = 1.0, one_sided: bool = False,
                      reduction: str = "mean", backend: Optional[str] = None) -> torch.Tensor:
    """Penalty on per-sample gradient norms: with ``n_b = ||g_b||_2`` over all non-batch dims,

        term_b = weight · (n_b − center)²            (one_sided: weight · max(0, n_b − center)²)

    reduced by ``"mean"`` over the batch (WGAN-GP), ``"sum"``, or ``"none"`` (B,).

    Args:
        grads: (B, ...) floating tensor, typically ``∇_x f(x)`` built with ``create_graph=True``.
        center: c >= 0 (1 for WGAN-GP/LP, 0 for R1/R2). weight: w >= 0.

    Forward is one fused row reduction (norms, terms and the batch reduction; the
    CUDA kernel is a single launch); the backward ``dP/dg_b = 2w'(n_b − c)/n_b · g_b``
    (``w' = w/B`` for mean) is one fused kernel and is itself differentiable. A zero
    gradient gives a finite result (its gradient is 0, or ``2w'·g`` when c = 0).
    Returns the inputs' dtype.
    """
    code = REDUCTIONS.get(reduction) if type(reduction) is str else None
    if (code is not None and type(center) is float and type(weight) is float and type(one_sided) is bool
            and 0.0 <= center < math.inf and 0.0 <= weight < math.inf and not _is_compiling()):
        # As interpolate's: the op checks grads and the reduction code, the line above the
        # numbers; the checks below run only when this path declines or the op refuses.
        try:  # the op refusing: check_batch names a bad grads
            loss = _FAST_PENALTY(backend, grads, center, weight, one_sided, code)
            if loss is not NotImplemented:
                return loss
        except (RuntimeError, TypeError, AttributeError):
            pass
    check_batch("grads", grads)
    center = check_real("center", center, minimum=0.0)
    weight = check_real("weight", weight, minimum=0.0)
    one_sided = check_flag("one_sided", one_sided)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {tuple(REDUCTIONS)}, got {reduction!r}")
    name = resolve_backend(backend, grads.device, "grad_norm_penalty")
    if name == "reference":
        return reference.grad_norm_penalty(grads, center, weight, one_sided, reduction)
    loss, _ = _BACKEND_OPS[name].penalty(grads, center, weight, one_sided, REDUCTIONS[reduction])
    return loss


def input_gradients(outputs: torch.Tensor, inputs: torch.Tensor, *, scaler=None) -> torch.Tensor:
    """``∇_inputs sum(outputs)`` with a graph for the double backward, or a clear
    error when the outputs do not depend on the inputs. With a ``GradScaler``,
    the sum is scaled before differentiation (fp16 gradients do not underflow) and
    the gradients unscaled after, without a host synchronisation."""
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"the critic must return a tensor, got {type(outputs).__name__}")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a tensor (the critic's input), got {type(inputs).__name__}")
    if not inputs.requires_grad:
        raise ValueError("the critic's inputs must require grad: evaluate the critic on "
                         "x.requires_grad_(True) (or let fastgan run the critic)")
    if not outputs.requires_grad:
        raise ValueError("the critic's output does not depend on its input (it does not require grad: "
                         "was it computed under torch.no_grad() or from detached inputs?)")
    total = outputs.sum()
    scale = None
    if scaler is not None:
        scale = scaler.scale(torch.ones((), device=total.device, dtype=torch.float32))
        total = total * scale
    grads = grad_with_graph(total, inputs)
    if grads is None:
        raise ValueError("the critic's output does not depend on its input: the gradient of the "
                         "output with respect to the input is not defined (is the input used?)")
    return grads if scale is None else grads / scale.to(grads.dtype)


def gradient_penalty(critic: Optional[Callable[[torch.Tensor], torch.Tensor]], real: Optional[torch.Tensor],
                     fake: Optional[torch.Tensor], *, weight: float = 10.0, center: float = 1.0,
                     one_sided: bool = False, eps: Optional[torch.Tensor] = None,
                     generator: Optional[torch.Generator] = None, outputs: Optional[torch.Tensor] = None,
                     inputs: Optional[torch.Tensor] = None, scaler=None,
                     backend: Optional[str] = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al.): ``weight · mean_b (||∇_x f(x_hat_b)|| − center)²`` at
    ``x_hat = interpolate(real, fake, eps)``; ``one_sided=True`` gives WGAN-LP.

    Args:
        critic: maps (B, ...) to any output shape (the sum is differentiated).
        real, fake: (B, ...) samples; gradients reach them only if they require grad.
        eps: (B,) interpolation weights, else drawn with `generator`.
        outputs, inputs: precomputed ``outputs = critic(inputs)`` on interpolates
            ``inputs`` that require grad (then critic, real and fake may be None).
        scaler: a ``torch.amp.GradScaler`` (fp16 autocast): see :func:`input_gradients`.

    Returns a scalar whose backward fills the critic's parameter gradients.
    """
    check_flag("one_sided", one_sided)
    _check_critic(critic)
    if outputs is None:
        if critic is None:
            raise ValueError("pass a critic, or precomputed outputs= and inputs=")
        if inputs is not None:
            raise ValueError("inputs= goes with outputs= (precomputed critic outputs); pass real and fake instead")
        inputs = interpolate(real, fake, eps, generator=generator, backend=backend)
        if not inputs.requires_grad:
            inputs.requires_grad_(True)
        outputs = critic(inputs)
    elif inputs is None:
        raise ValueError("outputs= needs inputs=: the interpolates the critic was evaluated on")
    grads = input_gradients(outputs, inputs, scaler=scaler)
    return grad_norm_penalty(grads, center=center, weight=weight, one_sided=one_sided, backend=backend)


def _check_critic(critic) -> None:
    if critic is not None and not callable(critic):
        raise TypeError(f"critic must be callable (an nn.Module or a function of the samples), got "
                        f"{type(critic).__name__}")


def _zero_centered(critic, samples, gamma, outputs, scaler, backend, name):
    gamma = check_real("gamma", gamma, minimum=0.0)
    _check_critic(critic)
    check_batch(name, samples)
    if outputs is None:
        if critic is None:
            raise ValueError(f"pass a critic, or precomputed outputs= computed on {name}")
        x = samples if samples.requires_grad else samples.detach().requires_grad_(True)
        outputs = critic(x)
    else:
        x = samples
    grads = input_gradients(outputs, x, scaler=scaler)
    return grad_norm_penalty(grads, center=0.0, weight=gamma / 2, backend=backend)


def r1_penalty(critic: Optional[Callable[[torch.Tensor], torch.Tensor]], real: torch.Tensor, *,
               gamma: float = 10.0, outputs: Optional[torch.Tensor] = None, scaler=None,
               backend: Optional[str] = None) -> torch.Tensor:
    """R1 (Mescheder et al.): ``γ/2 · mean_b ||∇_x D(real_b)||²``, zero-centred on reals.

    Pass ``outputs=D(real)`` computed on ``real.requires_grad_(True)`` to reuse the
    forward pass of the discriminator loss (StyleGAN's lazy R1); critic may then be None.
    """
    return _zero_centered(critic, real, gamma, outputs, scaler, backend, "real")


def r2_penalty(critic: Optional[Callable[[torch.Tensor], torch.Tensor]], fake: torch.Tensor, *,
               gamma: float = 10.0, outputs: Optional[torch.Tensor] = None, scaler=None,
               backend: Optional[str] = None) -> torch.Tensor:
    """R2: ``γ/2 · mean_b ||∇_x D(fake_b)||²``, zero-centred on fakes (see :func:`r1_penalty`)."""
    return _zero_centered(critic, fake, gamma, outputs, scaler, backend, "fake")
