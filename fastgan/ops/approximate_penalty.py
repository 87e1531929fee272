"""First-order (finite-difference) R1 and R2, and R3GAN's R1 + R2 in one call
(docs/theory.md §3.8).

R1's ``γ/2 · mean_b ‖∇D(x_b)‖²`` needs a double backward through the critic. Its
finite-difference form needs first-order autograd only (so it works with FSDP,
activation checkpointing and fused attention, which have no double backward):

    P = γ/2 · mean_b Σ_o ((D(x_b + σ ε_b) − D(x_b)) / σ)²,   ε ~ N(0, I).

For each b, ``E_ε[(εᵀ ∇D(x_b))²] = ‖∇D(x_b)‖²``, so ``E_ε P → R1`` as σ → 0 (for a
linear critic, P's expectation equals R1 for every σ; one draw is an unbiased
estimate of it). Seaweed-APT writes the penalty as ``λ ‖D(x) − D(x + σε)‖²`` (a mean
over the batch): it is P with ``λ = γ / (2σ²)``, i.e. ``λσ² = γ/2``.

Fused pieces: the perturbation ``x + σε`` is one kernel (the noise is drawn by
``torch.randn`` with the caller's generator, or given), and the squared-difference
reduction is one kernel, its backward (to both outputs) another; that backward is
itself differentiable (its own backward is linear).
"""
from typing import Callable, Optional, Tuple

import torch

from .. import reference
from .._backend import resolve_backend
from .._layout import batch_major_pair
from .._validate import check_batch, check_flag, check_real
from ._triton import require, triton_op
from .penalty import _check_batch_arg, _check_critic, _check_like, r1_penalty, r2_penalty

Critic = Callable[[torch.Tensor], torch.Tensor]

# ---------------------------------------------------------------- registration
# Checks of a direct torch.ops call, shared by the fake kernels and the Triton ops' bodies
# (the C++ ops make the same checks in csrc/fd_penalty_host.h).


def _check_sigma(op: str, sigma: float) -> None:
    require(sigma > 0 and sigma != float("inf"), op, lambda: f"sigma must be finite and > 0, got {sigma}")


def _check_perturb(x, noise, sigma):
    _check_batch_arg("perturb", "x", x)
    _check_like("perturb", "noise", noise, x, "x")
    _check_sigma("perturb", sigma)


def _check_fd(perturbed, outputs, sigma, weight, op="finite_difference_penalty"):
    _check_batch_arg(op, "perturbed", perturbed)
    _check_like(op, "outputs", outputs, perturbed, "perturbed")
    _check_sigma(op, sigma)
    require(0 <= weight < float("inf"), op, lambda: f"weight must be finite and >= 0, got {weight}")


def _check_fd_backward(grad_loss, perturbed, outputs, sigma, weight, need_perturbed, need_outputs):
    op = "finite_difference_penalty_backward"
    _check_fd(perturbed, outputs, sigma, weight, op)
    require(grad_loss.dim() == 0, op, lambda: f"grad_loss must have the loss's shape (), got {tuple(grad_loss.shape)}")
    require(grad_loss.dtype == perturbed.dtype and grad_loss.device == perturbed.device, op,
             lambda: f"grad_loss must be {perturbed.dtype} on {perturbed.device}, got {grad_loss.dtype} on "
                     f"{grad_loss.device}")


def _perturb_fake(x, noise, sigma):
    _check_perturb(x, noise, sigma)
    return torch.empty_like(batch_major_pair(x, noise)[0])


def _fd_fake(perturbed, outputs, sigma, weight):
    _check_fd(perturbed, outputs, sigma, weight)
    return perturbed.new_empty(())


def _fd_backward_fake(grad_loss, perturbed, outputs, sigma, weight, need_perturbed, need_outputs):
    _check_fd_backward(grad_loss, perturbed, outputs, sigma, weight, need_perturbed, need_outputs)
    like = batch_major_pair(perturbed, outputs)[0]
    empty = perturbed.new_empty(0)
    return (torch.empty_like(like) if need_perturbed else empty), (torch.empty_like(like) if need_outputs else empty)


@triton_op("perturb", _check_perturb)
def _perturb_triton(x: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    from ..kernels import fd_penalty as kernels

    return kernels.perturb(x, noise, sigma)


@triton_op("finite_difference_penalty", _check_fd)
def _fd_triton(perturbed: torch.Tensor, outputs: torch.Tensor, sigma: float, weight: float) -> torch.Tensor:
    from ..kernels import fd_penalty as kernels

    return kernels.finite_difference_penalty(perturbed, outputs, sigma, weight)


@triton_op("finite_difference_penalty_backward", _check_fd_backward)
def _fd_backward_triton(grad_loss: torch.Tensor, perturbed: torch.Tensor, outputs: torch.Tensor, sigma: float,
                        weight: float, need_perturbed: bool,
                        need_outputs: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    from ..kernels import fd_penalty as kernels

    return kernels.finite_difference_penalty_backward(grad_loss, perturbed, outputs, sigma, weight, need_perturbed,
                                                      need_outputs)


for _ns in ("fastgan", "fastgan_triton"):
    for _name, _fake in (("perturb", _perturb_fake), ("finite_difference_penalty", _fd_fake),
                         ("finite_difference_penalty_backward", _fd_backward_fake)):
        torch.library.register_fake(f"{_ns}::{_name}")(_fake)


class _Ops:
    """One backend's three finite-difference ops (``torch.ops.fastgan`` or ``torch.ops.fastgan_triton``)."""

    def __init__(self, namespace):
        self.perturb = namespace.perturb.default
        self.penalty = namespace.finite_difference_penalty.default
        self.penalty_backward = namespace.finite_difference_penalty_backward.default


_NATIVE = _Ops(torch.ops.fastgan)
_TRITON = _Ops(torch.ops.fastgan_triton)


# One autograd for both namespaces' ops: csrc/fd_penalty_autograd.cpp.
_BACKEND_OPS = {"cpu": _NATIVE, "cuda": _NATIVE, "triton": _TRITON}

# ---------------------------------------------------------------- validation


def _noise(noise: Optional[torch.Tensor], generator: Optional[torch.Generator], samples: torch.Tensor,
           name: str) -> torch.Tensor:
    """The given `noise` (checked, detached, in the samples' dtype), else ``N(0, I)`` drawn with `generator`."""
    if noise is not None:
        if generator is not None:
            raise ValueError("pass noise= or generator=, not both (the generator draws the noise)")
        if not isinstance(noise, torch.Tensor) or not noise.dtype.is_floating_point:
            raise TypeError(f"noise must be a floating-point tensor shaped like {name}, got "
                            f"{type(noise).__name__ if not isinstance(noise, torch.Tensor) else noise.dtype}")
        if noise.shape != samples.shape:
            raise ValueError(f"noise must have the shape of {name} {tuple(samples.shape)}, got {tuple(noise.shape)}")
        if noise.device != samples.device:
            raise ValueError(f"noise is on {noise.device} but {name} is on {samples.device}")
        return noise.detach().to(samples.dtype)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != samples.device.type:
            raise ValueError(f"generator is on {generator.device} but {name} is on {samples.device}: "
                             "pass a generator on the samples' device")
    return torch.randn(samples.shape, generator=generator, device=samples.device, dtype=samples.dtype)


def _check_outputs(name: str, outputs, like: torch.Tensor) -> None:
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (the critic's output), got {type(outputs).__name__}")
    if outputs.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(outputs.shape)} but the critic's output on the perturbed "
                         f"samples has {tuple(like.shape)}: pass the critic's outputs on these samples")
    if outputs.device != like.device:
        raise ValueError(f"{name} is on {outputs.device} but the critic's output is on {like.device}")


# ---------------------------------------------------------------- public ops


def perturb(x: torch.Tensor, noise: torch.Tensor, *, sigma: float, backend: Optional[str] = None) -> torch.Tensor:
    """``x + σ · noise`` in one kernel: (B, ...) and (B, ...) -> (B, ...) in x's dtype and
    (batch-major) layout; differentiable w.r.t. x (the identity), noise is a constant."""
    check_batch("x", x)
    sigma = check_real("sigma", sigma, positive=True)
    noise = _noise(noise, None, x, "x")
    name = resolve_backend(backend, x.device, "perturb")
    if name == "reference":
        return reference.perturb(x, noise, sigma)
    return _BACKEND_OPS[name].perturb(x, noise, sigma)


def finite_difference_penalty(perturbed: torch.Tensor, outputs: torch.Tensor, *, sigma: float,
                              weight: float = 1.0, backend: Optional[str] = None) -> torch.Tensor:
    """``weight / B · Σ ((perturbed − outputs) / σ)²`` over all elements of (B, ...) critic outputs.

    One kernel forward (a fixed-order sum); one kernel backward to both arguments,
    ``∂P/∂perturbed = −∂P/∂outputs = 2·weight/(B σ²) · (perturbed − outputs)``, itself
    differentiable. Differently typed outputs (autocast) are promoted to a common dtype.
    Returns a scalar in that dtype.
    """
    check_batch("perturbed", perturbed)
    check_batch("outputs", outputs)
    _check_outputs("outputs", outputs, perturbed)
    sigma = check_real("sigma", sigma, positive=True)
    weight = check_real("weight", weight, minimum=0.0)
    if outputs.dtype != perturbed.dtype:
        dtype = torch.promote_types(outputs.dtype, perturbed.dtype)
        perturbed, outputs = perturbed.to(dtype), outputs.to(dtype)
    name = resolve_backend(backend, perturbed.device, "finite_difference_penalty")
    if name == "reference":
        return reference.finite_difference_penalty(perturbed, outputs, sigma, weight)
    return _BACKEND_OPS[name].penalty(perturbed, outputs, sigma, weight)


def _approximate(critic, samples, name, gamma, sigma, noise, generator, outputs, backend):
    gamma = check_real("gamma", gamma, minimum=0.0)
    sigma = check_real("sigma", sigma, positive=True)
    _check_critic(critic)
    if critic is None:
        raise ValueError("the approximate penalty needs the critic (it evaluates it on perturbed samples)")
    check_batch(name, samples)
    noise = _noise(noise, generator, samples, name)
    x_name = resolve_backend(backend, samples.device, "perturb")
    if x_name == "reference":
        perturbed_samples = reference.perturb(samples, noise, sigma)
    else:
        perturbed_samples = _BACKEND_OPS[x_name].perturb(samples, noise, sigma)
    perturbed = critic(perturbed_samples)
    if not isinstance(perturbed, torch.Tensor):
        raise TypeError(f"the critic must return a tensor, got {type(perturbed).__name__}")
    if outputs is None:
        outputs = critic(samples)
    return finite_difference_penalty(perturbed, outputs, sigma=sigma, weight=gamma / 2, backend=backend)


def approximate_r1_penalty(critic: Critic, real: torch.Tensor, *, gamma: float = 10.0, sigma: float = 0.01,
                           noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                           outputs: Optional[torch.Tensor] = None, backend: Optional[str] = None) -> torch.Tensor:
    """First-order R1: ``γ/2 · mean_b Σ_o ((D(x_b + σ ε_b) − D(x_b)) / σ)²`` on reals x.

    Its expectation over ε tends to R1's ``γ/2 · mean_b ‖∇D(x_b)‖²`` as σ → 0 (and equals it
    for a linear critic); only first-order autograd is used. APT's ``λ ‖D(x) − D(x + σε)‖²``
    is this with ``λ = γ / (2σ²)``.

    The penalty's value converges to R1's; its parameter gradient converges to double-backward
    R1's for smooth activations (tanh MLP: 10% apart for one draw, 0.4% averaged over 64), but
    not for piecewise-linear ones (ReLU, LeakyReLU): a perturbation that crosses an activation
    kink (probability O(σ)) adds an O(1/σ) term, so the gradient keeps an O(1) difference from
    autograd's (which takes the kinks' second derivative as 0) and a variance that grows as σ
    shrinks (toy LeakyReLU MLP, σ = 0.01: about 45% apart even averaged over 64 draws). Choose σ
    at the scale of the data's noise rather than as small as possible.

    A critic with several outputs per sample (PatchGAN) gets ``Σ_o ‖∇D_o(x_b)‖²`` in expectation,
    the Jacobian's squared Frobenius norm, whereas :func:`~fastgan.ops.r1_penalty` differentiates
    ``Σ_o D_o``; they agree for one output per sample.

    Args:
        critic: maps (B, ...) to (B, ...) outputs (any trailing shape; every output is penalised).
        real: (B, ...) samples; gradients reach them only if they require grad.
        gamma: γ >= 0. sigma: σ > 0, the perturbation's scale (in the data's units).
        noise: ε, shaped like real on its device (a constant); else drawn ``~ N(0, I)`` with
            `generator` (a ``torch.Generator`` on real's device, or the default one).
        outputs: ``critic(real)`` when the loss already computed it (its graph is reused);
            else the critic is run on real.

    Under ``torch.compile(fullgraph=True)`` pass ``noise=`` (e.g. ``torch.randn_like(real)``)
    or leave both noise and generator None: dynamo cannot trace a ``torch.Generator``
    argument (the call graph-breaks).

    Returns a scalar in the critic's output dtype whose backward fills the critic's parameter gradients.
    """
    return _approximate(critic, real, "real", gamma, sigma, noise, generator, outputs, backend)


def approximate_r2_penalty(critic: Critic, fake: torch.Tensor, *, gamma: float = 10.0, sigma: float = 0.01,
                           noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                           outputs: Optional[torch.Tensor] = None, backend: Optional[str] = None) -> torch.Tensor:
    """First-order R2: :func:`approximate_r1_penalty` on fakes,
    ``γ/2 · mean_b Σ_o ((D(x̃_b + σ ε_b) − D(x̃_b)) / σ)²``."""
    return _approximate(critic, fake, "fake", gamma, sigma, noise, generator, outputs, backend)


def r1_r2_penalty(critic: Optional[Critic], real: torch.Tensor, fake: torch.Tensor, *, gamma: float,
                  outputs_real: Optional[torch.Tensor] = None, outputs_fake: Optional[torch.Tensor] = None,
                  approximate: bool = False, sigma: float = 0.01, noise_real: Optional[torch.Tensor] = None,
                  noise_fake: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                  scaler=None, backend: Optional[str] = None) -> torch.Tensor:
    """R3GAN's ``γ/2 · (R1 + R2)``: ``γ/2 · (mean_b ‖∇D(real_b)‖² + mean_b ‖∇D(fake_b)‖²)``.

    Exact (default): :func:`~fastgan.ops.r1_penalty` + :func:`~fastgan.ops.r2_penalty`, a double
    backward through the critic; ``outputs_real``/``outputs_fake`` are the loss's forward
    passes, computed on ``real``/``fake`` that require grad (then critic may be None).
    ``scaler``: a GradScaler for the exact form's input gradients (fp16 autocast).

    ``approximate=True``: :func:`approximate_r1_penalty` + :func:`approximate_r2_penalty` with
    scale ``sigma`` and noise ``noise_real``/``noise_fake`` (else drawn with `generator`),
    first-order autograd only; the outputs, when given, are reused as ``D(x)``.

    Returns a scalar.
    """
    check_flag("approximate", approximate)
    sigma = check_real("sigma", sigma, positive=True)
    if approximate:
        r1 = approximate_r1_penalty(critic, real, gamma=gamma, sigma=sigma, noise=noise_real, generator=generator,
                                    outputs=outputs_real, backend=backend)
        r2 = approximate_r2_penalty(critic, fake, gamma=gamma, sigma=sigma, noise=noise_fake, generator=generator,
                                    outputs=outputs_fake, backend=backend)
        return r1 + r2
    for arg, value in (("noise_real", noise_real), ("noise_fake", noise_fake), ("generator", generator)):
        if value is not None:
            raise ValueError(f"{arg} goes with approximate=True (the exact penalty draws no noise)")
    return (r1_penalty(critic, real, gamma=gamma, outputs=outputs_real, scaler=scaler, backend=backend)
            + r2_penalty(critic, fake, gamma=gamma, outputs=outputs_fake, scaler=scaler, backend=backend))
