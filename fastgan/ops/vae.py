"""The VAE ops (docs/theory.md §5): the negative ELBO as fused reductions (the loss and its gradients in one
pass, the backward a scaling of the saved gradients), and the reparameterisation.

Per sample ``b`` (formulas in :mod:`fastgan.reference.vae`), with ``s = 1/B`` ("mean")
or 1 ("sum", "none") and ``beta`` the KL weight::

    loss_b = sum_j t(recon, target[, recon_logvar])_bj + beta * sum_k KL(mu, logvar)_bk

Four ops per backend (``torch.ops.fastgan`` for the C++/CUDA kernels,
``torch.ops.fastgan_triton`` for Triton), with fake and autograd registrations:

- ``vae_loss(recon?, target?, recon_logvar?, mu?, logvar?, likelihood, beta, reduction)
  -> (loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad)``: one pass over the
  reconstruction writes its terms and gradient, one over (mu, logvar) the KL and its
  gradients (one launch on CUDA). It serves :func:`vae_loss`, :func:`bernoulli_nll`,
  :func:`gaussian_nll` and :func:`gaussian_kl` (absent inputs are None; their saved
  gradients ``(0,)`` tensors). ``reduction="none"`` gives the ``(B,)`` per-sample terms.
- ``vae_loss_backward(grad_loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad,
  reduction)``: each saved gradient times the loss's gradient (per sample for "none").
- ``vae_reparameterize(mu, logvar, eps) -> z`` and ``vae_reparameterize_backward(grad,
  logvar, eps) -> grad * exp(logvar / 2) * eps / 2`` (the logvar-gradient, from eps: ``(z - mu) / 2``
  would cancel where ``|mu| >> exp(logvar / 2) |eps|``; mu's is grad itself).

Double backward: the saved gradients are differentiable outputs of ``vae_loss``; a
gradient reaching them comes back to its backward, which adds the second-derivative
terms (listed in ``csrc/vae_autograd.cpp``) with eager ops. The autograd is C++, one
for both namespaces.

The public functions' eager fast path is one backend-table call of an op caller (as
the GAN losses'); their checks, which name the user's argument, run where it declines
or the op refuses, and under ``torch.compile``.
"""
import math
from typing import Dict, NamedTuple, Optional, Tuple

import torch

from .. import reference
from .._backend import _is_compiling, backend_table, resolve_backend
from .._validate import check_batch, check_real
from ._caller import op_caller
from ._triton import require, triton_op

#: Likelihood codes of csrc/vae_math.h (VaeLikelihood).
LIKELIHOODS: Dict[str, int] = {"bernoulli": 0, "gaussian": 1}
#: Reduction codes of csrc/vae_math.h (VaeReduction), as torch's at::Reduction.
REDUCTIONS: Dict[str, int] = {"none": 0, "mean": 1, "sum": 2}
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# ---- checks of a direct torch.ops call (fake kernels and Triton bodies; the C++ ops
# check the same in csrc/vae_host.h) ----


def _check_input(op: str, name: str, t: torch.Tensor, like: torch.Tensor) -> None:
    require(t.layout == torch.strided and t.dtype in SUPPORTED_DTYPES, op,
            lambda: f"{name} must be a dense floating-point tensor, got {t.dtype}")
    require(t.dtype == like.dtype, op, lambda: f"{name} has dtype {t.dtype} but the first input has {like.dtype}")
    require(t.device == like.device, op, lambda: f"{name} is on {t.device} but the first input is on {like.device}")
    require(t.dim() >= 1 and t.shape[0] >= 1 and t.numel() >= 1, op,
            lambda: f"{name} must have shape (B, ...) with B >= 1 and elements per sample, got {tuple(t.shape)}")


def _check_same_shape(op: str, name: str, t: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
    require(t.shape == like.shape, op,
            lambda: f"{name} has shape {tuple(t.shape)} but {like_name} has {tuple(like.shape)}")


def _check_reduction(op: str, reduction: int) -> None:
    require(reduction in (0, 1, 2), op, lambda: f"reduction must be 0 (none), 1 (mean) or 2 (sum), got {reduction}")


def _check_vae_loss(recon, target, recon_logvar, mu, logvar, likelihood, beta, reduction):
    op = "vae_loss"
    _check_reduction(op, reduction)
    require(likelihood in (0, 1), op, lambda: f"likelihood must be 0 (bernoulli) or 1 (gaussian), got {likelihood}")
    require(beta == beta and abs(beta) != float("inf") and beta >= 0, op,
            lambda: f"beta must be finite and >= 0, got {beta}")
    require((recon is None) == (target is None), op, "recon and target must be given together")
    require((mu is None) == (logvar is None), op, "mu and logvar must be given together")
    require(recon is not None or mu is not None, op, "needs recon and target, or mu and logvar")
    require(recon_logvar is None or (recon is not None and likelihood == 1), op,
            "recon_logvar needs recon and the gaussian likelihood")
    first = recon if recon is not None else mu
    if recon is not None:
        _check_input(op, "recon", recon, first)
        _check_input(op, "target", target, first)
        _check_same_shape(op, "target", target, "recon", recon)
        if recon_logvar is not None:
            _check_input(op, "recon_logvar", recon_logvar, first)
            _check_same_shape(op, "recon_logvar", recon_logvar, "recon", recon)
    if mu is not None:
        _check_input(op, "mu", mu, first)
        _check_input(op, "logvar", logvar, first)
        _check_same_shape(op, "logvar", logvar, "mu", mu)
        require(mu.shape[0] == first.shape[0], op,
                lambda: f"mu has {mu.shape[0]} samples but recon has {first.shape[0]}")


def _check_vae_loss_backward(grad_loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad, reduction):
    op = "vae_loss_backward"
    _check_reduction(op, reduction)
    rows = None
    for name, t in (("recon_grad", recon_grad), ("recon_logvar_grad", recon_logvar_grad), ("mu_grad", mu_grad),
                    ("logvar_grad", logvar_grad)):
        require(t.layout == torch.strided and t.dtype in SUPPORTED_DTYPES, op,
                lambda: f"{name} must be a dense floating-point tensor, got {t.dtype}")
        require(t.dtype == grad_loss.dtype and t.device == grad_loss.device, op,
                lambda: f"{name} must be {grad_loss.dtype} on {grad_loss.device}, got {t.dtype} on {t.device}")
        if t.shape == (0,):
            continue
        require(t.dim() >= 1 and t.shape[0] >= 1, op,
                lambda: f"{name} must be (0,) or have shape (B, ...) with B >= 1, got {tuple(t.shape)}")
        require(rows is None or t.shape[0] == rows, op,
                lambda: f"{name} has {t.shape[0]} samples but another saved gradient has {rows}")
        rows = t.shape[0]
    require(rows is not None, op, "every saved gradient is empty")
    want = (rows,) if reduction == 0 else ()
    require(tuple(grad_loss.shape) == want, op,
            lambda: f"grad_loss must have the loss's shape {want}, got {tuple(grad_loss.shape)}")


def _check_triple(op: str, names, a, b, c) -> None:
    for name, t in zip(names, (a, b, c)):
        _check_input(op, name, t, a)
    _check_same_shape(op, names[1], b, names[0], a)
    _check_same_shape(op, names[2], c, names[0], a)


def _check_reparameterize(mu, logvar, eps):
    _check_triple("vae_reparameterize", ("mu", "logvar", "eps"), mu, logvar, eps)


def _check_reparameterize_backward(grad, logvar, eps):
    _check_triple("vae_reparameterize_backward", ("grad", "logvar", "eps"), grad, logvar, eps)


# ---- fake (meta) kernels: same for both namespaces ----


def _saved_like(present: bool, t: Optional[torch.Tensor], first: torch.Tensor) -> torch.Tensor:
    return first.new_empty(t.shape) if present else first.new_empty((0,))


def _vae_loss_fake(recon, target, recon_logvar, mu, logvar, likelihood, beta, reduction):
    _check_vae_loss(recon, target, recon_logvar, mu, logvar, likelihood, beta, reduction)
    first = recon if recon is not None else mu
    loss = first.new_empty((first.shape[0],) if reduction == 0 else ())
    return (loss, _saved_like(recon is not None, recon, first), _saved_like(recon_logvar is not None, recon_logvar,
                                                                            first),
            _saved_like(mu is not None, mu, first), _saved_like(logvar is not None, logvar, first))


def _vae_loss_backward_fake(grad_loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad, reduction):
    _check_vae_loss_backward(grad_loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad, reduction)
    return tuple(t.new_empty(t.shape) for t in (recon_grad, recon_logvar_grad, mu_grad, logvar_grad))


def _reparameterize_fake(mu, logvar, eps):
    _check_reparameterize(mu, logvar, eps)
    return mu.new_empty(mu.shape)


def _reparameterize_backward_fake(grad, logvar, eps):
    _check_reparameterize_backward(grad, logvar, eps)
    return grad.new_empty(grad.shape)


# ---- the Triton kernels as the fastgan_triton ops' bodies ----


@triton_op("vae_loss", _check_vae_loss)
def _vae_loss_triton(recon: Optional[torch.Tensor], target: Optional[torch.Tensor],
                     recon_logvar: Optional[torch.Tensor], mu: Optional[torch.Tensor], logvar: Optional[torch.Tensor],
                     likelihood: int, beta: float,
                     reduction: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from ..kernels import vae as kernels

    return kernels.vae_loss(recon, target, recon_logvar, mu, logvar, likelihood, beta, reduction)


@triton_op("vae_loss_backward", _check_vae_loss_backward)
def _vae_loss_backward_triton(grad_loss: torch.Tensor, recon_grad: torch.Tensor, recon_logvar_grad: torch.Tensor,
                              mu_grad: torch.Tensor, logvar_grad: torch.Tensor,
                              reduction: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from ..kernels import vae as kernels

    return kernels.vae_loss_backward(grad_loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad, reduction)


@triton_op("vae_reparameterize", _check_reparameterize)
def _reparameterize_triton(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    from ..kernels import vae as kernels

    return kernels.reparameterize(mu, logvar, eps)


@triton_op("vae_reparameterize_backward", _check_reparameterize_backward)
def _reparameterize_backward_triton(grad: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    from ..kernels import vae as kernels

    return kernels.reparameterize_backward(grad, logvar, eps)


for _ns in ("fastgan", "fastgan_triton"):
    torch.library.register_fake(f"{_ns}::vae_loss")(_vae_loss_fake)
    torch.library.register_fake(f"{_ns}::vae_loss_backward")(_vae_loss_backward_fake)
    torch.library.register_fake(f"{_ns}::vae_reparameterize")(_reparameterize_fake)
    torch.library.register_fake(f"{_ns}::vae_reparameterize_backward")(_reparameterize_backward_fake)


class _VaeOps(NamedTuple):
    """One backend's ops, as resolved overloads."""
    vae_loss: object
    vae_loss_backward: object
    reparameterize: object
    reparameterize_backward: object


def _vae_ops(namespace) -> _VaeOps:
    return _VaeOps(namespace.vae_loss.default, namespace.vae_loss_backward.default,
                   namespace.vae_reparameterize.default, namespace.vae_reparameterize_backward.default)


_NATIVE_OPS = _vae_ops(torch.ops.fastgan)
_TRITON_OPS = _vae_ops(torch.ops.fastgan_triton)
_OPS: Dict[str, _VaeOps] = {"cpu": _NATIVE_OPS, "cuda": _NATIVE_OPS, "triton": _TRITON_OPS}

#: The fast paths (csrc/backend_table.cpp): per reduction name, ``table(backend, recon,
#: target, recon_logvar, mu, logvar, likelihood, beta)`` is vae_loss's op with that
#: reduction's code bound, returning the loss alone; ``_FAST_REPARAMETERIZE(backend, mu,
#: logvar, eps)`` is z. The ops check their own arguments (csrc/vae_host.h, the Triton
#: bodies' checks), so the front ends' checks run only where a table declines or an op refuses.
_FAST_VAE_LOSS = {reduction: backend_table({name: op_caller(ops.vae_loss, 1, (code,)) for name, ops in _OPS.items()},
                                           "vae_loss")
                  for reduction, code in REDUCTIONS.items()}
_FAST_REPARAMETERIZE = backend_table({name: op_caller(ops.reparameterize) for name, ops in _OPS.items()},
                                     "reparameterize")
_BERNOULLI = LIKELIHOODS["bernoulli"]

# One autograd for both namespaces' ops: csrc/vae_autograd.cpp.

# ---- argument checks (once, here: every backend sees validated input) ----


def _check_choice(op: str, argname: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        names = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{op}: {argname} must be one of {names}; got {value!r}")


def _check_tensors(op: str, **named: torch.Tensor) -> torch.Tensor:
    """TypeError/ValueError naming the argument unless every tensor is a dense
    float32/float16/bfloat16/float64 tensor of shape (B, ...) with B >= 1 and elements
    per sample, all of one dtype and device. Returns the first."""
    first_name, first = None, None
    for name, t in named.items():
        check_batch(f"{op}: {name}", t)
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{op}: {name} has dtype {t.dtype}; expected float32, float16, bfloat16 or float64")
        if first is None:
            first_name, first = name, t
            continue
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}; expected one "
                             f"device")
        if t.dtype != first.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but {first_name} has {first.dtype}; expected one "
                            f"dtype")
    return first


def _check_shape(op: str, name: str, t: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
    if t.shape != like.shape:
        raise ValueError(f"{op}: {name} has shape {tuple(t.shape)} but {like_name} has {tuple(like.shape)}; "
                         f"expected the same shape")


def _check_probabilities(op: str, name: str, target: torch.Tensor) -> None:
    """ValueError unless every element of `target` is in [0, 1] (NaN passes: it propagates,
    but does not hide another element's bad value). One fused min/max reduction and one
    host synchronisation (skipped on meta tensors and under tracing, which have no values,
    and during CUDA-graph capture, which forbids a synchronisation)."""
    if target.device.type == "meta" or torch.compiler.is_compiling():
        return
    if target.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    target = target.detach()
    low, high = torch.aminmax(target)
    low, high = float(low), float(high)  # one host sync (the second value is then ready)
    if math.isnan(low):  # aminmax answers NaN if any element is: the others' range, at the cost of a copy
        rest = target[~target.isnan()]
        low, high = (float(v) for v in torch.aminmax(rest)) if rest.numel() else (0.0, 1.0)
    if low < 0 or high > 1:
        raise ValueError(f"{op}: {name} must hold probabilities in [0, 1] for the bernoulli likelihood; got "
                         f"values in [{low:g}, {high:g}]")


def _check_latents(op: str, mu: torch.Tensor, logvar: torch.Tensor) -> None:
    _check_tensors(op, mu=mu, logvar=logvar)
    _check_shape(op, "logvar", logvar, "mu", mu)


def _dispatch(op: str, first: torch.Tensor, backend: Optional[str]) -> str:
    return resolve_backend(backend, first.device, op)


def _fast_loss(op: str, reduction, backend: Optional[str], recon, target, recon_logvar, mu, logvar, likelihood,
               beta) -> torch.Tensor:
    """The loss from vae_loss's op on the fast path, or NotImplemented where the public
    function's checks must run: under tracing, an unknown or unhashable reduction or
    likelihood (KeyError, TypeError), a beta that is not a float or int (check_real
    decides), a call the table declines or the op refuses (RuntimeError). The bernoulli
    target check, which the op does not make, runs after it."""
    if _is_compiling() or not (type(beta) is float or type(beta) is int):
        return NotImplemented
    try:
        code = LIKELIHOODS[likelihood]
        loss = _FAST_VAE_LOSS[reduction](backend, recon, target, recon_logvar, mu, logvar, code, beta)
    except (KeyError, RuntimeError, TypeError):
        return NotImplemented
    if loss is not NotImplemented and code == _BERNOULLI and target is not None:
        _check_probabilities(op, "target", target)
    return loss


# ---- public API ----


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, *, eps: Optional[torch.Tensor] = None,
                   generator: Optional[torch.Generator] = None, backend: Optional[str] = None) -> torch.Tensor:
    """A sample of ``N(mu, exp(logvar))``: ``z = mu + exp(logvar / 2) * eps``.

    Args:
        mu, logvar: ``(B, ...)`` mean and log-variance of the encoder's Gaussian, one
            shape, dtype (float32, float16, bfloat16 or float64) and device.
        eps: the standard normal noise, ``mu``'s shape; drawn with ``torch.randn``
            (from ``generator`` when given: reproducible) when None.
        generator: a ``torch.Generator`` on mu's device for the noise; not with ``eps``.
        backend: see :func:`fastgan.set_backend`.

    Returns ``z``, differentiable w.r.t. mu (``dz``), logvar (``dz * exp(logvar / 2) * eps / 2``) and
    eps (``dz * exp(logvar / 2)``), double backward too. One kernel forward and one
    backward; the backward reads ``logvar`` and ``eps``.
    """
    if not _is_compiling() and generator is None:
        try:  # AttributeError, TypeError, RuntimeError: not tensors, or refused; the checks below say why
            noise = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device) if eps is None else eps
            z = _FAST_REPARAMETERIZE(backend, mu, logvar, noise)
            if z is not NotImplemented:
                return z
            eps = noise  # declined: the checked path uses this draw (one draw per call)
        except (AttributeError, RuntimeError, TypeError):
            pass
    op = "reparameterize"
    _check_latents(op, mu, logvar)
    if eps is None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{op}: generator must be a torch.Generator or None, got {type(generator).__name__}")
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    else:
        if generator is not None:
            raise ValueError(f"{op}: pass eps or generator, not both (generator draws eps)")
        _check_tensors(op, mu=mu, eps=eps)
        _check_shape(op, "eps", eps, "mu", mu)
    impl = _dispatch(op, mu, backend)
    if impl == "reference":
        return reference.reparameterize(mu, logvar, eps)
    return _OPS[impl].reparameterize(mu, logvar, eps)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, *, reduction: str = "mean",
                backend: Optional[str] = None) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per sample, ``1/2 sum (mu^2 + exp(logvar) - 1 - logvar)``
    over every dimension but the first, then reduced over the batch.

    Args:
        mu, logvar: ``(B, ...)`` of one shape, dtype and device.
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"``: ``(B,)``.
        backend: see :func:`fastgan.set_backend`.

    Differentiable (double backward too); one pass forward, one backward. logvar of
    +-80 gives finite values in float32; NaN propagates.
    """
    loss = _fast_loss("gaussian_kl", reduction, backend, None, None, None, mu, logvar, "bernoulli", 1.0)
    if loss is not NotImplemented:
        return loss
    op = "gaussian_kl"
    _check_choice(op, "reduction", reduction, REDUCTIONS)
    _check_latents(op, mu, logvar)
    impl = _dispatch(op, mu, backend)
    if impl == "reference":
        return reference.gaussian_kl(mu, logvar, reduction)
    return _OPS[impl].vae_loss(None, None, None, mu, logvar, 0, 1.0, REDUCTIONS[reduction])[0]


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean",
                  backend: Optional[str] = None) -> torch.Tensor:
    """``-ln Bernoulli(target; sigmoid(logits))`` per sample: ``sum softplus(l) - x l`` over
    every dimension but the first, in the stable form (logits of +-1e4 are finite), reduced.

    Args:
        logits: ``(B, ...)`` decoder outputs before the sigmoid.
        target: ``logits``' shape, dtype and device, values in [0, 1] (ValueError
            otherwise; one min/max reduction checks it).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (``(B,)``).
        backend: see :func:`fastgan.set_backend`.
    """
    loss = _fast_loss("bernoulli_nll", reduction, backend, logits, target, None, None, None, "bernoulli", 1.0)
    if loss is not NotImplemented:
        return loss
    op = "bernoulli_nll"
    _check_choice(op, "reduction", reduction, REDUCTIONS)
    _check_tensors(op, logits=logits, target=target)
    _check_shape(op, "target", target, "logits", logits)
    _check_probabilities(op, "target", target)
    impl = _dispatch(op, logits, backend)
    if impl == "reference":
        return reference.bernoulli_nll(logits, target, reduction)
    return _OPS[impl].vae_loss(logits, target, None, None, None, LIKELIHOODS["bernoulli"], 1.0,
                               REDUCTIONS[reduction])[0]


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, logvar: Optional[torch.Tensor] = None, *,
                 reduction: str = "mean", backend: Optional[str] = None) -> torch.Tensor:
    """``-ln N(x; mean, exp(logvar))`` per sample:
    ``1/2 sum (ln 2pi + logvar + (x - mean)^2 / exp(logvar))`` over every dimension but the
    first, unit variance (logvar = 0) when ``logvar`` is None, then reduced.

    Args:
        x: ``(B, ...)`` data; mean (and logvar) of its shape, dtype and device.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (``(B,)``).
        backend: see :func:`fastgan.set_backend`.
    """
    loss = _fast_loss("gaussian_nll", reduction, backend, mean, x, logvar, None, None, "gaussian", 1.0)
    if loss is not NotImplemented:
        return loss
    op = "gaussian_nll"
    _check_choice(op, "reduction", reduction, REDUCTIONS)
    named = dict(x=x, mean=mean) if logvar is None else dict(x=x, mean=mean, logvar=logvar)
    _check_tensors(op, **named)
    _check_shape(op, "mean", mean, "x", x)
    if logvar is not None:
        _check_shape(op, "logvar", logvar, "x", x)
    impl = _dispatch(op, x, backend)
    if impl == "reference":
        return reference.gaussian_nll(x, mean, logvar, reduction)
    return _OPS[impl].vae_loss(mean, x, logvar, None, None, LIKELIHOODS["gaussian"], 1.0, REDUCTIONS[reduction])[0]


def vae_loss(recon: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *,
             likelihood: str = "bernoulli", beta: float = 1.0, reduction: str = "mean",
             backend: Optional[str] = None) -> torch.Tensor:
    """The negative ELBO of a VAE (beta-VAE for ``beta != 1``), fused:
    ``nll(target | recon) + beta * KL(N(mu, exp(logvar)) || N(0, I))`` per sample, reduced.

    Args:
        recon: ``(B, ...)`` decoder output: logits (``likelihood="bernoulli"``) or the
            mean of a unit-variance Gaussian (``"gaussian"``).
        target: the data, ``recon``'s shape; in [0, 1] for bernoulli.
        mu, logvar: ``(B, ...)`` encoder outputs (the same B), one shape.
        likelihood: ``"bernoulli"`` (:func:`bernoulli_nll`) or ``"gaussian"``
            (:func:`gaussian_nll` with unit variance).
        beta: the KL's weight, finite and >= 0.
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"``: ``(B,)``.
        backend: see :func:`fastgan.set_backend`.

    One pass over the reconstruction writes its terms and gradient, one over (mu, logvar)
    the KL and its gradients (one kernel launch on CUDA); the backward scales the saved
    gradients (one launch). Differentiable w.r.t. all four inputs, double backward too.
    """
    loss = _fast_loss("vae_loss", reduction, backend, recon, target, None, mu, logvar, likelihood, beta)
    if loss is not NotImplemented:
        return loss
    op = "vae_loss"
    _check_choice(op, "likelihood", likelihood, LIKELIHOODS)
    _check_choice(op, "reduction", reduction, REDUCTIONS)
    beta = check_real(f"{op}: beta", beta, minimum=0.0)
    _check_tensors(op, recon=recon, target=target, mu=mu, logvar=logvar)
    _check_shape(op, "target", target, "recon", recon)
    _check_shape(op, "logvar", logvar, "mu", mu)
    if mu.shape[0] != recon.shape[0]:
        raise ValueError(f"{op}: mu has {mu.shape[0]} samples but recon has {recon.shape[0]}; expected one batch")
    if likelihood == "bernoulli":
        _check_probabilities(op, "target", target)
    impl = _dispatch(op, recon, backend)
    if impl == "reference":
        return reference.vae_loss(recon, target, mu, logvar, likelihood, beta, reduction)
    return _OPS[impl].vae_loss(recon, target, None, mu, logvar, LIKELIHOODS[likelihood], beta,
                               REDUCTIONS[reduction])[0]
