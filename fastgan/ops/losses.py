"""GAN losses (docs/theory.md §2–3) as fused reductions: the loss and its logits-gradient
in one pass, the backward a single scaling of the saved gradient (for the linear
terms, whose gradient is constant, nothing is saved and the backward writes it).

Every loss is ``s_r * sum t_r(real) + s_f * sum t_f(fake)`` with per-element terms
``t`` (table in :mod:`fastgan.reference.losses`) and ``s = 1/numel`` ("mean") or 1
("sum"). Three ops per backend (``torch.ops.fastgan`` for the C++/CUDA kernels,
``torch.ops.fastgan_triton`` for Triton), with fake and autograd registrations:

- ``gan_loss(x, y?, x_term, y_term, reduction) -> (loss, x_grad, y_grad)``: one
  pass over both sides writes the loss and ``x_grad = s_x t_x'(x)`` (and y's);
  one launch on CUDA. A linear term (``+-l``: WGAN, hinge G) has a constant
  ``t'``: its side is only read and its saved gradient is a ``(0,)`` tensor.
- ``gan_loss_backward(grad, x_grad, y_grad, x, y?, x_term, y_term, reduction)
  -> (grad * x_grad, grad * y_grad)``, or ``grad * s * t'`` in the logits' shape
  for a linear side (the logits are not read): the whole backward, one launch.
- ``gan_loss_pointwise(logits, grad?, term, order) -> grad * t^(order)(logits)``:
  ``reduction="none"`` (order 0, backward order 1) and double backward (order 2).

- ``relativistic_loss(x, y, kind, reduction) -> (loss, x_grad, y_grad)``: the
  relativistic losses, x the logits that should score higher (D: real, G: fake), y
  the others; ``x_grad``, ``y_grad`` are the complete logits-gradients, so the
  backward is ``gan_loss_backward``'s scaling of them (one launch). Kind 0, RpGAN:
  ``s * sum softplus(y - x)`` over pairs, one pass (one launch on CUDA and Triton,
  one pass over the pairs on the CPU). Kind 1, RaGAN:
  ``s_x sum softplus(mean(y) - x) + s_y sum softplus(y - mean(x))``: three passes
  on every backend (three launches on CUDA and Triton): the two means; the loss and
  the sums of the sigmoids, whose last block writes the gradients' cross terms (each
  side's mean is in every difference of the other side); the gradients. Double
  backward: the Hessian times the gradients reaching ``x_grad``, ``y_grad``, from
  ``softplus'' = sigmoid'`` at the differences (``gan_loss_pointwise`` order 2) and a
  few eager sums (formulas in csrc/gan_loss_autograd.cpp).

Double backward: ``gan_loss``'s saved gradients are not differentiable outputs
(an output's autograd bookkeeping would cost host time on every call). A first-order
backward is the single scaling above; with ``create_graph`` the backward is instead
``grad * s * t'(x)`` from the order-1 pointwise kernel, whose own autograd gives the
double backward, ``s * t''(x)`` (order 2). The ops'
autograd is in C++ (``csrc/gan_loss_autograd.cpp``): at small batch sizes a step
is bound by host overhead, and a Python ``autograd.Function`` costs as much as the
eager kernels it replaces. The Triton ops (``fastgan_triton::``) share it.
"""
from typing import Callable, Dict, NamedTuple, Optional, Tuple, Union

import torch

from .. import reference
from .._backend import _is_compiling, backend_table, resolve_backend
from ._caller import op_caller
from ._triton import require, triton_op

# Term codes of csrc/gan_loss_math.h (GanTerm).
SOFTPLUS_NEG = 0  # softplus(-l) = -ln D
SOFTPLUS = 1  # softplus(l) = -ln(1 - D)
NEG_SOFTPLUS = 2  # -softplus(l) = ln(1 - D)
NEG_SOFTPLUS_NEG = 3  # -softplus(-l) = ln D
IDENTITY = 4  # l
NEG_IDENTITY = 5  # -l
HINGE_REAL = 6  # relu(1 - l)
HINGE_FAKE = 7  # relu(1 + l)
HALF_SQUARE_ONE = 8  # (l - 1)^2 / 2
HALF_SQUARE = 9  # l^2 / 2
#: Terms with a constant derivative: gan_loss saves no gradient for them.
LINEAR_TERMS = (IDENTITY, NEG_IDENTITY)

#: (real term, fake term) of each discriminator loss.
DISCRIMINATOR_TERMS: Dict[str, Tuple[int, int]] = {
    "minimax": (SOFTPLUS_NEG, SOFTPLUS),
    "wasserstein": (NEG_IDENTITY, IDENTITY),
    "hinge": (HINGE_REAL, HINGE_FAKE),
    "least_squares": (HALF_SQUARE_ONE, HALF_SQUARE),
}
#: The fake-logit term of each generator loss.
GENERATOR_TERMS: Dict[str, int] = {
    "non_saturating": SOFTPLUS_NEG,
    "minimax": NEG_SOFTPLUS,
    "wasserstein": NEG_IDENTITY,
    "hinge": NEG_IDENTITY,
    "least_squares": HALF_SQUARE_ONE,
}
# Kinds of csrc/gan_loss_math.h (RelativisticKind): relativistic_loss's kind codes.
RELATIVISTIC_PAIR = 0  # RpGAN: softplus(-(x - y)) per pair
RELATIVISTIC_AVERAGE = 1  # RaGAN: softplus(-(x - mean y)) and softplus(y - mean x)
#: The relativistic kinds of discriminator_loss and generator_loss, and their codes.
RELATIVISTIC_KINDS: Dict[str, int] = {"relativistic": RELATIVISTIC_PAIR,
                                      "relativistic_average": RELATIVISTIC_AVERAGE}
#: Every kind name discriminator_loss, generator_loss accept (fastgan.reference.losses keeps the
#: term kinds and the relativistic ones apart).
DISCRIMINATOR_LOSS_KINDS = (*DISCRIMINATOR_TERMS, *RELATIVISTIC_KINDS)
GENERATOR_LOSS_KINDS = (*GENERATOR_TERMS, *RELATIVISTIC_KINDS)
#: V(D, G) = E ln D(real) + E ln(1 - D(fake)).
VALUE_TERMS = (NEG_SOFTPLUS_NEG, NEG_SOFTPLUS)
#: torch's at::Reduction codes.
REDUCTIONS: Dict[str, int] = {"none": 0, "mean": 1, "sum": 2}
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# ---- checks of a direct torch.ops call (fake kernels and Triton bodies; the C++ ops
# check the same in csrc/gan_loss_host.h) ----


def _check_term(op: str, name: str, term: int) -> None:
    require(0 <= term < 10, op, lambda: f"{name} must be a GAN loss term code in [0, 10), got {term}")


def _check_input(op: str, name: str, t: torch.Tensor, like: torch.Tensor) -> None:
    require(t.layout == torch.strided and t.dtype in SUPPORTED_DTYPES, op,
             lambda: f"{name} must be a dense floating-point tensor, got {t.dtype} ({t.layout})")
    require(t.dtype == like.dtype, op, lambda: f"{name} has dtype {t.dtype} but the logits have {like.dtype}")
    require(t.device == like.device, op, lambda: f"{name} is on {t.device} but the logits are on {like.device}")


def _check_terms(op: str, x_term: int, y_term: int, reduction: int) -> None:
    _check_term(op, "x_term", x_term)
    _check_term(op, "y_term", y_term)
    require(reduction in (1, 2), op, lambda: f"reduction must be 1 (mean) or 2 (sum), got {reduction}")


def _saved_shape(logits: torch.Tensor, term: int) -> Tuple[int, ...]:
    return (0,) if term in LINEAR_TERMS else tuple(logits.shape)


def _check_gan_loss(x, y, x_term, y_term, reduction):
    op = "gan_loss"
    _check_terms(op, x_term, y_term, reduction)
    _check_input(op, "x", x, x)
    if y is not None:
        _check_input(op, "y", y, x)


def _check_gan_loss_backward(grad, x_grad, y_grad, x, y, x_term, y_term, reduction):
    op = "gan_loss_backward"
    _check_gan_loss(x, y, x_term, y_term, reduction)
    for name, t in (("grad", grad), ("x_grad", x_grad), ("y_grad", y_grad)):
        _check_input(op, name, t, x)
    require(grad.numel() == 1, op,
            lambda: f"grad must have one element (the loss's gradient), got shape {tuple(grad.shape)}")
    require(tuple(x_grad.shape) == _saved_shape(x, x_term), op,
             lambda: f"x_grad has shape {tuple(x_grad.shape)}, expected {_saved_shape(x, x_term)}")
    want_y = (0,) if y is None else _saved_shape(y, y_term)
    require(tuple(y_grad.shape) == want_y, op, lambda: f"y_grad has shape {tuple(y_grad.shape)}, expected {want_y}")


def _check_gan_loss_pointwise(logits, grad, term, order):
    op = "gan_loss_pointwise"
    _check_term(op, "term", term)
    require(order in (0, 1, 2), op, lambda: f"order must be 0, 1 or 2, got {order}")
    _check_input(op, "logits", logits, logits)
    if grad is not None:
        _check_input(op, "grad", grad, logits)
        require(grad.shape == logits.shape, op,
                 lambda: f"grad has shape {tuple(grad.shape)}, expected {tuple(logits.shape)}")


def _check_relativistic_loss(x, y, kind, reduction):
    op = "relativistic_loss"
    require(kind in (RELATIVISTIC_PAIR, RELATIVISTIC_AVERAGE), op,
            lambda: f"kind must be a relativistic loss kind code in [0, 2), got {kind}")
    require(reduction in (1, 2), op, lambda: f"reduction must be 1 (mean) or 2 (sum), got {reduction}")
    _check_input(op, "x", x, x)
    _check_input(op, "y", y, x)
    require(kind != RELATIVISTIC_PAIR or y.shape == x.shape, op,
            lambda: f"y has shape {tuple(y.shape)} but x has shape {tuple(x.shape)}; kind 0 (pair) needs one shape")


# ---- fake (meta) kernels: same for both namespaces ----


def _gan_loss_fake(x, y, x_term, y_term, reduction):
    _check_gan_loss(x, y, x_term, y_term, reduction)
    y_grad = x.new_empty((0,) if y is None else _saved_shape(y, y_term))
    return x.new_empty(()), x.new_empty(_saved_shape(x, x_term)), y_grad


def _gan_loss_backward_fake(grad, x_grad, y_grad, x, y, x_term, y_term, reduction):
    _check_gan_loss_backward(grad, x_grad, y_grad, x, y, x_term, y_term, reduction)
    return x.new_empty(x.shape), x.new_empty((0,) if y is None else y.shape)


def _gan_loss_pointwise_fake(logits, grad, term, order):
    _check_gan_loss_pointwise(logits, grad, term, order)
    return logits.new_empty(logits.shape)


def _relativistic_loss_fake(x, y, kind, reduction):
    _check_relativistic_loss(x, y, kind, reduction)
    return x.new_empty(()), x.new_empty(x.shape), x.new_empty(y.shape)


# ---- the Triton kernels as the fastgan_triton ops' bodies ----


@triton_op("gan_loss", _check_gan_loss)
def _gan_loss_triton(x: torch.Tensor, y: Optional[torch.Tensor], x_term: int, y_term: int,
                     reduction: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ..kernels import gan_loss as kernels

    return kernels.gan_loss(x, y, x_term, y_term, reduction)


@triton_op("gan_loss_backward", _check_gan_loss_backward)
def _gan_loss_backward_triton(grad: torch.Tensor, x_grad: torch.Tensor, y_grad: torch.Tensor, x: torch.Tensor,
                              y: Optional[torch.Tensor], x_term: int, y_term: int,
                              reduction: int) -> Tuple[torch.Tensor, torch.Tensor]:
    from ..kernels import gan_loss as kernels

    return kernels.gan_loss_backward(grad, x_grad, y_grad, x, y, x_term, y_term, reduction)


@triton_op("gan_loss_pointwise", _check_gan_loss_pointwise)
def _gan_loss_pointwise_triton(logits: torch.Tensor, grad: Optional[torch.Tensor], term: int,
                               order: int) -> torch.Tensor:
    from ..kernels import gan_loss as kernels

    return kernels.gan_loss_pointwise(logits, grad, term, order)


@triton_op("relativistic_loss", _check_relativistic_loss)
def _relativistic_loss_triton(x: torch.Tensor, y: torch.Tensor, kind: int,
                              reduction: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ..kernels import gan_loss as kernels

    return kernels.relativistic_loss(x, y, kind, reduction)


for _ns in ("fastgan", "fastgan_triton"):
    torch.library.register_fake(f"{_ns}::relativistic_loss")(_relativistic_loss_fake)
    torch.library.register_fake(f"{_ns}::gan_loss")(_gan_loss_fake)
    torch.library.register_fake(f"{_ns}::gan_loss_backward")(_gan_loss_backward_fake)
    torch.library.register_fake(f"{_ns}::gan_loss_pointwise")(_gan_loss_pointwise_fake)

# The Triton ops' autograd is the C++ ops' (csrc/gan_loss_autograd.cpp, one for both namespaces).


class _LossOps(NamedTuple):
    """One backend's ops, as resolved overloads (a packet re-resolves on every call)."""
    gan_loss: object
    gan_loss_pointwise: object
    relativistic_loss: object


def _loss_ops(namespace) -> _LossOps:
    return _LossOps(namespace.gan_loss.default, namespace.gan_loss_pointwise.default,
                    namespace.relativistic_loss.default)


_NATIVE_OPS = _loss_ops(torch.ops.fastgan)
_OPS: Dict[str, _LossOps] = {"cpu": _NATIVE_OPS, "cuda": _NATIVE_OPS, "triton": _loss_ops(torch.ops.fastgan_triton)}

# ---- argument checks (once, here: every backend sees validated input) ----


def _check_choice(op: str, argname: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        names = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{op}: {argname} must be one of {names}; got {value!r}")


def _check_logits(op: str, **named: torch.Tensor) -> torch.Tensor:
    """TypeError/ValueError naming the argument unless every tensor is a non-empty
    dense float32/float16/bfloat16/float64 tensor, all of one dtype and device.
    Returns the first."""
    first_name, first = None, None
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor of logits, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise TypeError(f"{op}: {name} is a {t.layout} tensor; expected a dense (strided) tensor")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{op}: {name} has dtype {t.dtype}; expected floating-point logits "
                            f"(float32, float16, bfloat16 or float64)")
        if t.numel() == 0:
            raise ValueError(f"{op}: {name} is empty (shape {tuple(t.shape)}); expected at least one logit")
        if first is None:
            first_name, first = name, t
            continue
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}; expected "
                             f"both on one device")
        if t.dtype != first.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but {first_name} has {first.dtype}; expected "
                            f"one dtype")
    return first


def _backend_for(op: str, logits: torch.Tensor, backend: Optional[str]) -> str:
    return resolve_backend(backend, logits.device, op)


def _fast_call(op: str, codes: Tuple[int, ...]) -> Callable:
    """A backend table of op callers of `op` (a _LossOps field) with its trailing codes
    bound: ``table(backend, x, y)`` is a fast path's whole call and returns the loss alone
    (or NotImplemented)."""
    return backend_table({name: op_caller(getattr(ops, op), 1, codes) for name, ops in _OPS.items()}, op)


# The fast paths, kind -> reduction -> table: a kind of DISCRIMINATOR_TERMS or
# GENERATOR_TERMS calls gan_loss with its (x, y) term codes; a relativistic kind (the same
# tables for both players) calls relativistic_loss. The fused ops check their own
# arguments (csrc/gan_loss_host.h, _check_gan_loss, _check_relativistic_loss), so the
# public functions' checks, which name the user's bad argument, run only when the fast
# path declines or the op refuses: off the hot path. torch.compile traces those instead
# (it cannot trace the op caller), at no run-time cost.
_REDUCED = {reduction: code for reduction, code in REDUCTIONS.items() if reduction != "none"}
_RELATIVISTIC_CALLS = {kind: {reduction: _fast_call("relativistic_loss", (kind_code, code))
                              for reduction, code in _REDUCED.items()}
                       for kind, kind_code in RELATIVISTIC_KINDS.items()}
_DISCRIMINATOR_CALLS: Dict[str, Dict[str, Callable]] = {
    **{kind: {reduction: _fast_call("gan_loss", (*pair, code)) for reduction, code in _REDUCED.items()}
       for kind, pair in DISCRIMINATOR_TERMS.items()},
    **_RELATIVISTIC_CALLS}
_GENERATOR_CALLS: Dict[str, Dict[str, Callable]] = {
    **{kind: {reduction: _fast_call("gan_loss", (term, term, code)) for reduction, code in _REDUCED.items()}
       for kind, term in GENERATOR_TERMS.items()},
    **_RELATIVISTIC_CALLS}


# ---- public API ----


def _relativistic(impl: str, real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str,
                  reduction: str, player: str) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """A relativistic loss of `player` ("D" or "G") on a fused backend."""
    ops = _OPS[impl]
    x, y = (real_logits, fake_logits) if player == "D" else (fake_logits, real_logits)
    if reduction != "none":
        return ops.relativistic_loss(x, y, RELATIVISTIC_KINDS[kind], REDUCTIONS[reduction])[0]
    if kind == "relativistic":  # softplus(y - x) per pair
        return ops.gan_loss_pointwise(y - x, None, SOFTPLUS, 0)
    x_terms = ops.gan_loss_pointwise(x - y.mean(), None, SOFTPLUS_NEG, 0)
    y_terms = ops.gan_loss_pointwise(y - x.mean(), None, SOFTPLUS, 0)
    return (x_terms, y_terms) if player == "D" else (y_terms, x_terms)


def _check_pairs(op: str, kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
    if kind == "relativistic" and real_logits.shape != fake_logits.shape:
        raise ValueError(f"{op}: kind='relativistic' pairs real_logits with fake_logits, so they must have one "
                         f"shape; got real_logits {tuple(real_logits.shape)} and fake_logits "
                         f"{tuple(fake_logits.shape)}")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "minimax", *,
                       reduction: str = "mean",
                       backend: Optional[str] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """The discriminator's (or WGAN critic's) loss on real and fake logits, fused.

    Args:
        real_logits, fake_logits: the discriminator's raw outputs (before any
            sigmoid) on real and generated samples. Any shapes (``(B,)``,
            ``(B, 1)``, PatchGAN ``(B, 1, H, W)``); the two may differ in batch
            size and shape, except for ``"relativistic"``, which pairs them (one
            shape). float32, float16, bfloat16 or float64, one dtype and device;
            accumulation in float32 (float64 for float64).
        kind: ``"minimax"`` (binary cross-entropy with real labelled 1 and fake
            0: ``-V(D, G)`` with ``D = sigmoid(l)``), ``"wasserstein"``
            (``mean(fake) - mean(real)``), ``"hinge"``
            (``mean(relu(1 - real)) + mean(relu(1 + fake))``),
            ``"least_squares"`` (``0.5 mean((real - 1)^2) + 0.5 mean(fake^2)``),
            ``"relativistic"`` (RpGAN, R3GAN's loss: ``mean softplus(-(real - fake))``
            over aligned pairs) or ``"relativistic_average"`` (RaGAN, ESRGAN's:
            ``mean softplus(-(real - mean(fake))) + mean softplus(fake - mean(real))``).
        reduction: ``"mean"`` (default) or ``"sum"`` reduce each side's terms and
            add them (RaGAN's inner means stay means); ``"none"`` returns the pair
            ``(real_terms, fake_terms)``, or RpGAN's per-pair terms (one tensor).
        backend: see :func:`fastgan.set_backend`.

    Returns the loss in the logits' dtype, differentiable w.r.t. both logits
    (double backward too). Stable for any finite logit; NaN logits give NaN.
    One CUDA launch forward and one backward for "mean" and "sum"; RaGAN's forward
    is three (its means first; see :mod:`fastgan.ops.losses`).
    """
    if not _is_compiling():
        try:  # TypeError: an unhashable kind
            loss = _DISCRIMINATOR_CALLS[kind][reduction](backend, real_logits, fake_logits)
            if loss is not NotImplemented:
                return loss
        except (RuntimeError, TypeError, KeyError):
            pass
    op = "discriminator_loss"
    _check_choice(op, "kind", kind, DISCRIMINATOR_LOSS_KINDS)
    _check_choice(op, "reduction", reduction, REDUCTIONS)
    _check_logits(op, real_logits=real_logits, fake_logits=fake_logits)
    _check_pairs(op, kind, real_logits, fake_logits)
    impl = _backend_for(op, real_logits, backend)
    if impl == "reference":
        return reference.discriminator_loss(real_logits, fake_logits, kind, reduction)
    if kind in RELATIVISTIC_KINDS:
        return _relativistic(impl, real_logits, fake_logits, kind, reduction, "D")
    ops = _OPS[impl]
    real_term, fake_term = DISCRIMINATOR_TERMS[kind]
    if reduction == "none":
        return (ops.gan_loss_pointwise(real_logits, None, real_term, 0),
                ops.gan_loss_pointwise(fake_logits, None, fake_term, 0))
    return ops.gan_loss(real_logits, fake_logits, real_term, fake_term, REDUCTIONS[reduction])[0]


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating", *,
                   real_logits: Optional[torch.Tensor] = None, reduction: str = "mean",
                   backend: Optional[str] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """The generator's loss on the discriminator's logits for generated samples, fused.

    ``kind``: ``"non_saturating"`` (``mean softplus(-l)`` = ``-E ln D``, the usual
    choice), ``"minimax"`` (``-mean softplus(l)`` = ``E ln(1 - D)``, saturates
    early in training), ``"wasserstein"`` and ``"hinge"`` (``-mean(l)``),
    ``"least_squares"`` (``0.5 mean((l - 1)^2)``), or the relativistic kinds, which
    also need ``real_logits`` (the discriminator's logits on real samples; detach
    them, as R3GAN does, or not: gradients flow to both):
    ``"relativistic"`` (RpGAN: ``mean softplus(-(fake - real))`` over aligned pairs,
    one shape) and ``"relativistic_average"`` (RaGAN:
    ``mean softplus(-(fake - mean(real))) + mean softplus(real - mean(fake))``).
    ``reduction`` ``"none"`` returns the per-element terms (RaGAN: the pair
    ``(real_terms, fake_terms)``). Logits, dtypes, backends and gradients as
    :func:`discriminator_loss`.
    """
    if not _is_compiling():
        try:  # as discriminator_loss's; only the relativistic kinds read real_logits
            if (kind in RELATIVISTIC_KINDS) == (real_logits is not None):
                loss = _GENERATOR_CALLS[kind][reduction](backend, fake_logits, real_logits)
                if loss is not NotImplemented:
                    return loss
        except (RuntimeError, TypeError, KeyError):
            pass
    op = "generator_loss"
    _check_choice(op, "kind", kind, GENERATOR_LOSS_KINDS)
    _check_choice(op, "reduction", reduction, REDUCTIONS)
    relativistic = kind in RELATIVISTIC_KINDS
    if relativistic and real_logits is None:
        raise ValueError(f"{op}: kind={kind!r} compares fake_logits with the real samples' logits: pass "
                         f"real_logits=")
    if not relativistic and real_logits is not None:
        raise ValueError(f"{op}: real_logits is read only by the relativistic kinds "
                         f"({', '.join(repr(k) for k in RELATIVISTIC_KINDS)}); kind={kind!r} uses fake_logits alone")
    if relativistic:
        _check_logits(op, fake_logits=fake_logits, real_logits=real_logits)
        _check_pairs(op, kind, real_logits, fake_logits)
    else:
        _check_logits(op, fake_logits=fake_logits)
    impl = _backend_for(op, fake_logits, backend)
    if impl == "reference":
        return reference.generator_loss(fake_logits, kind, reduction, real_logits)
    if relativistic:
        return _relativistic(impl, real_logits, fake_logits, kind, reduction, "G")
    ops = _OPS[impl]
    term = GENERATOR_TERMS[kind]
    if reduction == "none":
        return ops.gan_loss_pointwise(fake_logits, None, term, 0)
    return ops.gan_loss(fake_logits, None, term, term, REDUCTIONS[reduction])[0]


def gan_value(real_logits: torch.Tensor, fake_logits: torch.Tensor, *, backend: Optional[str] = None) -> torch.Tensor:
    """``V(D, G) = E ln D(real) + E ln(1 - D(fake))`` with ``D = sigmoid(logits)``,
    the value of the GAN game (docs/theory.md §2): ``-2 ln 2`` where ``D = 1/2``
    everywhere, ``= -discriminator_loss(real, fake, "minimax")``. Fused like
    :func:`discriminator_loss` and differentiable."""
    op = "gan_value"
    _check_logits(op, real_logits=real_logits, fake_logits=fake_logits)
    impl = _backend_for(op, real_logits, backend)
    if impl == "reference":
        return reference.gan_value(real_logits, fake_logits)
    return _OPS[impl].gan_loss(real_logits, fake_logits, *VALUE_TERMS, REDUCTIONS["mean"])[0]
