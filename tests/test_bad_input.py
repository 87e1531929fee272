"""Bad input to every public entry point, as a table (issue 16): each case either
raises a clear error (its type, and a message naming the argument) or returns what
the reference backend returns for the same call. Every case runs on the backends
that run on this machine's CPU: "cpu", "triton" (interpreted, without a GPU) and
"reference".

A case that exposes a bug in a file this table does not own is kept, marked
``xfail(strict=True)`` with the bug as its reason, so that the fix shows as XPASS.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Type

import numpy as np
import pytest
import torch
from conftest import backends_for

from fastgan import BackendError
from fastgan.nn import FusedBiasAct, FusedLeakyReLU, fuse_bias_act
from fastgan.ops import (bias_act, clip_weights_, discriminator_loss, gan_value, generator_loss, grad_norm_penalty,
                         gradient_penalty, input_gradients, interpolate, r1_penalty, r2_penalty, rmsprop_clip_)
from fastgan.ops import approximate_r1_penalty, approximate_r2_penalty, r1_r2_penalty
from fastgan.optim import ClippedRMSprop
from fastgan.ops import bernoulli_nll, gaussian_kl, gaussian_nll, reparameterize, vae_loss

BACKENDS = tuple(backends_for("cpu"))  # cpu, triton (interpreted without a GPU), reference
FUSED = tuple(b for b in BACKENDS if b != "reference")
NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Case:
    """``call(backend)`` either raises ``error`` = (type, regex on the message) on the
    backends in ``error_on``, or returns what ``reference()`` returns (by default
    ``call("reference")``; entry points without a backend give their own)."""
    op: str
    name: str
    call: Callable[[str], Any]
    error: Optional[Tuple[Type[BaseException], str]] = None
    error_on: Tuple[str, ...] = BACKENDS
    backends: Tuple[str, ...] = BACKENDS  # one entry for entry points without a backend
    bugs: Dict[str, str] = field(default_factory=dict)  # backend -> the bug the case exposes
    reference: Optional[Callable[[], Any]] = None


def t(*shape, dtype=torch.float32, device="cpu", seed=0, requires_grad=False):
    """A tensor of normal values, the same for every call with the same arguments."""
    values = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return values.to(device=device, dtype=dtype).requires_grad_(requires_grad)


def of_dtype(dtype, *shape):
    """A tensor of `dtype` (int, bool, complex or floating) with small values."""
    values = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape) % 3
    return values.to(dtype)


def critic(x):
    """A differentiable critic of any (B, ...) input: (B,) outputs."""
    flat = x.flatten(1)
    return 0.5 * flat.square().sum(1) + flat.sum(1)


BAD_DTYPES = {"int": torch.int64, "bool": torch.bool, "complex": torch.complex64}
BAD_NUMBERS = {"nan": NAN, "inf": INF, "negative": -1.0}
BACKEND_ON_META = (BackendError, r"backend '(cpu|triton)' cannot run these tensors: .*these are on meta")
BAD_BACKEND = (ValueError, r"backend must be one of \(.*\), got 'gpu'")

# ---------------------------------------------------------------- per op


def interpolate_cases():
    def call(real=None, fake=None, eps=None, **kw):
        real = t(4, 3) if real is None else real
        fake = t(4, 3, seed=1) if fake is None else fake
        eps = torch.linspace(0, 1, 4) if eps is None else eps
        return lambda backend: interpolate(real, fake, eps, backend=backend, **kw)

    yield Case("interpolate", "ok", call())
    for kind, dtype in BAD_DTYPES.items():
        yield Case("interpolate", f"real-{kind}", call(real=of_dtype(dtype, 4, 3)),
                   (TypeError, rf"real has dtype {dtype}; only real floating-point"))
        yield Case("interpolate", f"eps-{kind}", call(eps=of_dtype(dtype, 4)),
                   (TypeError, "eps must be a floating-point tensor of shape"))
    yield Case("interpolate", "fake-float64", call(fake=t(4, 3, dtype=torch.float64)),
               (TypeError, "real and fake must have the same dtype"))
    yield Case("interpolate", "meta", call(real=t(4, 3, device="meta"), fake=t(4, 3, device="meta"),
                                           eps=torch.rand(4, device="meta")), BACKEND_ON_META, error_on=FUSED)
    yield Case("interpolate", "fake-meta", call(fake=t(4, 3, device="meta")),
               (ValueError, "real and fake must be on the same device"))
    yield Case("interpolate", "eps-meta", call(eps=torch.rand(4, device="meta")),
               (ValueError, "eps is on meta but real/fake are on cpu"))
    yield Case("interpolate", "shape-mismatch", call(fake=t(4, 2)),
               (ValueError, r"real and fake must have the same shape, got \(4, 3\) and \(4, 2\)"))
    yield Case("interpolate", "eps-shape", call(eps=torch.rand(3)),
               (ValueError, r"eps must have shape \(B,\) = \(4,\)"))
    yield Case("interpolate", "eps-2d", call(eps=torch.rand(4, 1)), (ValueError, r"eps must have shape \(B,\)"))
    yield Case("interpolate", "scalar", call(real=torch.tensor(1.0), fake=torch.tensor(2.0)),
               (ValueError, "real must have a batch dimension"))
    yield Case("interpolate", "empty-batch", call(real=t(0, 3), fake=t(0, 3), eps=torch.rand(0)),
               (ValueError, "real has a batch of 0 samples"))
    yield Case("interpolate", "empty-sample", call(real=t(4, 0), fake=t(4, 0)),
               (ValueError, "real has no elements per sample"))
    yield Case("interpolate", "real-list", call(real=[[1.0] * 3] * 4), (TypeError, "real must be a tensor, got list"))
    yield Case("interpolate", "eps-list", call(eps=[0.5] * 4), (TypeError, "eps must be a floating-point tensor"))
    yield Case("interpolate", "eps-float", call(eps=0.5), (TypeError, "eps must be a floating-point tensor"))
    yield Case("interpolate", "eps-nan", call(eps=torch.tensor([0.5, NAN, 0.1, 1.0])))
    yield Case("interpolate", "eps-outside-0-1", call(eps=torch.tensor([-1.0, 2.0, 0.5, 3.0])))
    yield Case("interpolate", "real-inf", call(real=torch.tensor([[INF, -INF, NAN]] * 4)))
    yield Case("interpolate", "eps-float64", call(eps=torch.linspace(0, 1, 4, dtype=torch.float64)))
    yield Case("interpolate", "eps-strided", call(eps=torch.linspace(0, 1, 8)[::2]))
    yield Case("interpolate", "eps-expanded", call(eps=torch.tensor([0.25]).expand(4)))
    yield Case("interpolate", "generator-int",
               lambda backend: interpolate(t(4, 3), t(4, 3, seed=1), generator=3, backend=backend),
               (TypeError, "generator must be a torch.Generator"))
    yield Case("interpolate", "bad-backend", call(), BAD_BACKEND, error_on=("gpu",), backends=("gpu",))


def penalty_cases():
    def call(grads=None, **kw):
        grads = t(5, 3, 2) if grads is None else grads
        return lambda backend: grad_norm_penalty(grads, backend=backend, **kw)

    yield Case("grad_norm_penalty", "ok", call(center=0.5, weight=2.0, reduction="sum"))
    for kind, dtype in BAD_DTYPES.items():
        yield Case("grad_norm_penalty", f"grads-{kind}", call(of_dtype(dtype, 5, 3)),
                   (TypeError, rf"grads has dtype {dtype}; only real floating-point"))
    yield Case("grad_norm_penalty", "meta", call(t(5, 3, device="meta")), BACKEND_ON_META, error_on=FUSED)
    yield Case("grad_norm_penalty", "scalar", call(torch.tensor(1.0)),
               (ValueError, "grads must have a batch dimension"))
    yield Case("grad_norm_penalty", "empty-batch", call(t(0, 3)), (ValueError, "grads has a batch of 0 samples"))
    yield Case("grad_norm_penalty", "empty-sample", call(t(5, 0)), (ValueError, "grads has no elements per sample"))
    yield Case("grad_norm_penalty", "grads-list", call([[1.0, 2.0]]), (TypeError, "grads must be a tensor, got list"))
    for arg in ("center", "weight"):
        for kind, value in BAD_NUMBERS.items():
            yield Case("grad_norm_penalty", f"{arg}-{kind}", call(**{arg: value}),
                       (ValueError, rf"{arg} must be finite and >= 0.0, got {value}"))
        yield Case("grad_norm_penalty", f"{arg}-str", call(**{arg: "1"}), (TypeError, f"{arg} must be a real number"))
        yield Case("grad_norm_penalty", f"{arg}-bool", call(**{arg: True}), (TypeError, f"{arg} must be a real number"))
        yield Case("grad_norm_penalty", f"{arg}-tensor", call(**{arg: torch.tensor(0.5)}))
    for reduction in ("avg", None, "MEAN"):
        yield Case("grad_norm_penalty", f"reduction-{reduction}", call(reduction=reduction),
                   (ValueError, rf"reduction must be one of \('none', 'mean', 'sum'\), got {reduction!r}"))
    yield Case("grad_norm_penalty", "reduction-none", call(reduction="none"))
    yield Case("grad_norm_penalty", "one_sided-str", call(one_sided="no", center=5.0),
               (TypeError, "one_sided must be a bool"))
    yield Case("grad_norm_penalty", "one_sided-none", call(one_sided=None), (TypeError, "one_sided must be a bool"))
    yield Case("grad_norm_penalty", "grads-nan", call(torch.tensor([[NAN, 1.0], [3.0, 4.0]])))
    yield Case("grad_norm_penalty", "grads-inf", call(torch.tensor([[INF, 1.0], [3.0, 4.0]])))
    yield Case("grad_norm_penalty", "grads-zero", call(torch.zeros(3, 4)))
    yield Case("grad_norm_penalty", "channels-last", call(t(2, 3, 4, 5).to(memory_format=torch.channels_last)))
    yield Case("grad_norm_penalty", "bad-backend", call(), BAD_BACKEND, error_on=("gpu",), backends=("gpu",))


def gradient_penalty_cases():
    def call(critic=critic, real=None, fake=None, **kw):
        real = t(4, 3) if real is None else real
        fake = t(4, 3, seed=1) if fake is None else fake
        eps = kw.pop("eps", torch.linspace(0, 1, 4))
        return lambda backend: gradient_penalty(critic, real, fake, eps=eps, backend=backend, **kw)

    yield Case("gradient_penalty", "ok", call(weight=3.0))
    for kind, dtype in BAD_DTYPES.items():
        yield Case("gradient_penalty", f"real-{kind}", call(real=of_dtype(dtype, 4, 3)),
                   (TypeError, rf"real has dtype {dtype}"))
    yield Case("gradient_penalty", "meta", call(real=t(4, 3, device="meta"), fake=t(4, 3, device="meta"),
                                                eps=torch.rand(4, device="meta")), BACKEND_ON_META, error_on=FUSED)
    yield Case("gradient_penalty", "empty", call(real=t(0, 3), fake=t(0, 3), eps=torch.rand(0)),
               (ValueError, "real has a batch of 0 samples"))
    yield Case("gradient_penalty", "critic-none", call(critic=None), (ValueError, "pass a critic"))
    yield Case("gradient_penalty", "critic-not-callable", call(critic=3), (TypeError, "critic"))
    yield Case("gradient_penalty", "critic-returns-list", call(critic=lambda x: [x.sum()]),
               (TypeError, "the critic must return a tensor, got list"))
    yield Case("gradient_penalty", "critic-ignores-input", call(critic=lambda x: torch.ones(4, requires_grad=True)),
               (ValueError, "the critic's output does not depend on its input"))
    for arg in ("center", "weight"):
        for kind, value in BAD_NUMBERS.items():
            yield Case("gradient_penalty", f"{arg}-{kind}", call(**{arg: value}),
                       (ValueError, rf"{arg} must be finite and >= 0.0, got {value}"))
    yield Case("gradient_penalty", "one_sided-str", call(one_sided="no", center=50.0),
               (TypeError, "one_sided must be a bool"))
    yield Case("gradient_penalty", "outputs-without-inputs", call(outputs=torch.ones(4)),
               (ValueError, "outputs= needs inputs="))
    yield Case("gradient_penalty", "inputs-without-outputs", call(inputs=t(4, 3)),
               (ValueError, "inputs= goes with outputs="))
    yield Case("gradient_penalty", "eps-shape", call(eps=torch.rand(5)), (ValueError, r"eps must have shape \(B,\)"))


def zero_centered_cases():
    for op, fn, arg in (("r1_penalty", r1_penalty, "real"), ("r2_penalty", r2_penalty, "fake")):
        def call(samples=None, critic=critic, fn=fn, **kw):
            samples = t(4, 3) if samples is None else samples
            return lambda backend: fn(critic, samples, backend=backend, **kw)

        yield Case(op, "ok", call(gamma=2.0))
        for kind, dtype in BAD_DTYPES.items():
            yield Case(op, f"{arg}-{kind}", call(of_dtype(dtype, 4, 3)), (TypeError, rf"{arg} has dtype {dtype}"))
        yield Case(op, "meta", call(t(4, 3, device="meta")), BACKEND_ON_META, error_on=FUSED)
        yield Case(op, "empty", call(t(0, 3)), (ValueError, f"{arg} has a batch of 0 samples"))
        yield Case(op, "scalar", call(torch.tensor(2.0)), (ValueError, f"{arg} must have a batch dimension"))
        yield Case(op, f"{arg}-list", call([[1.0]]), (TypeError, f"{arg} must be a tensor, got list"))
        for kind, value in BAD_NUMBERS.items():
            yield Case(op, f"gamma-{kind}", call(gamma=value), (ValueError, rf"gamma must be finite and >= 0.0"))
        yield Case(op, "gamma-str", call(gamma="10"), (TypeError, "gamma must be a real number"))
        yield Case(op, "critic-none", call(critic=None), (ValueError, f"pass a critic, or precomputed outputs="))
        yield Case(op, "critic-not-callable", call(critic="D"), (TypeError, "critic"))
        yield Case(op, "gamma-zero", call(gamma=0.0))


def input_gradients_cases():
    x = t(4, 3, requires_grad=True)
    one = ("reference",)  # no backend argument: the case runs once
    yield Case("input_gradients", "ok", lambda backend: input_gradients(critic(x), x), backends=one,
               reference=lambda: x.detach() + 1)  # d/dx (|x|^2 / 2 + sum x)
    meta = t(4, 3, device="meta", requires_grad=True)
    yield Case("input_gradients", "meta", lambda backend: input_gradients(critic(meta), meta), backends=one,
               reference=lambda: torch.empty(4, 3, device="meta"))
    yield Case("input_gradients", "outputs-list", lambda backend: input_gradients([critic(x)], x),
               (TypeError, "the critic must return a tensor, got list"), backends=one)
    yield Case("input_gradients", "inputs-no-grad", lambda backend: input_gradients(critic(x), t(4, 3)),
               (ValueError, "the critic's inputs must require grad"), backends=one)
    yield Case("input_gradients", "inputs-list", lambda backend: input_gradients(critic(x), [x]),
               (TypeError, "inputs must be a tensor"), backends=one)
    yield Case("input_gradients", "outputs-detached", lambda backend: input_gradients(critic(x).detach(), x),
               (ValueError, "does not depend on its input"), backends=one)
    yield Case("input_gradients", "unrelated-input", lambda backend: input_gradients(critic(x), t(4, 3, seed=9,
                                                                                                  requires_grad=True)),
               (ValueError, "does not depend on its input"), backends=one)


def loss_cases():
    ops = {
        "discriminator_loss": (lambda real, fake, backend, **kw: discriminator_loss(real, fake, backend=backend, **kw),
                               ("real_logits", "fake_logits"), "minimax"),
        "generator_loss": (lambda real, fake, backend, **kw: generator_loss(fake, backend=backend, **kw),
                           ("fake_logits",), "non_saturating"),
        "gan_value": (lambda real, fake, backend, **kw: gan_value(real, fake, backend=backend, **kw),
                      ("real_logits", "fake_logits"), None),
    }
    for op, (fn, args, kind) in ops.items():
        def call(real=None, fake=None, fn=fn, **kw):
            real = t(6, 1) if real is None else real
            fake = t(5, 1, seed=1) if fake is None else fake
            return lambda backend: fn(real, fake, backend, **kw)

        name = args[-1]  # fake_logits: an argument of every loss
        yield Case(op, "ok", call())
        for kind_name, dtype in BAD_DTYPES.items():
            yield Case(op, f"{name}-{kind_name}", call(fake=of_dtype(dtype, 5)),
                       (TypeError, rf"{op}: {name} has dtype {dtype}; expected floating-point logits"))
        yield Case(op, "meta", call(real=t(6, device="meta"), fake=t(5, device="meta")), BACKEND_ON_META,
                   error_on=FUSED)
        yield Case(op, f"{name}-empty", call(fake=t(0, 1)), (ValueError, rf"{op}: {name} is empty \(shape \(0, 1\)\)"))
        yield Case(op, f"{name}-list", call(fake=[0.5]),
                   (TypeError, rf"{op}: {name} must be a torch.Tensor of logits, got list"))
        yield Case(op, "scalar-logits", call(real=torch.tensor(0.3), fake=torch.tensor(-2.0)))
        yield Case(op, "nan-inf-logits", call(real=torch.tensor([NAN, 1.0, -INF, INF]),
                                             fake=torch.tensor([INF, -INF, 0.0, NAN])))
        yield Case(op, "large-logits", call(real=torch.tensor([80.0, -80.0, 1e30]), fake=torch.tensor([-1e30, 90.0])))
        yield Case(op, "strided", call(real=t(6, 4)[:, ::2], fake=t(4, 6, seed=1).t()))
        yield Case(op, "float16", call(real=t(6, dtype=torch.float16), fake=t(5, dtype=torch.float16, seed=1)))
        yield Case(op, "bad-backend", call(), BAD_BACKEND, error_on=("gpu",), backends=("gpu",))
        if len(args) == 2:
            yield Case(op, "dtype-mismatch", call(fake=t(5, dtype=torch.float64)),
                       (TypeError, rf"{op}: fake_logits has dtype torch.float64 but real_logits has torch.float32"))
            yield Case(op, "device-mismatch", call(fake=t(5, device="meta")),
                       (ValueError, rf"{op}: fake_logits is on meta but real_logits is on cpu"))
            yield Case(op, "real_logits-int", call(real=of_dtype(torch.int32, 3)),
                       (TypeError, rf"{op}: real_logits has dtype torch.int32"))
        if kind is None:
            continue
        for bad_kind in ("bce", None, 1, kind.upper()):
            yield Case(op, f"kind-{bad_kind}", call(kind=bad_kind),
                       (ValueError, rf"{op}: kind must be one of '.*'; got {bad_kind!r}".replace("(", r"\(")))
        for reduction in ("avg", None, "Mean"):
            yield Case(op, f"reduction-{reduction}", call(reduction=reduction),
                       (ValueError, rf"{op}: reduction must be one of 'none', 'mean', 'sum'; got {reduction!r}"))
        yield Case(op, "reduction-none", call(kind="hinge", reduction="none"))
        yield Case(op, "reduction-sum", call(kind="least_squares", reduction="sum"))


def bias_act_cases():
    def call(x=None, bias=None, act="tanh", **kw):
        x = t(3, 4, 2) if x is None else x
        bias = t(4, seed=1) if bias is None else bias
        return lambda backend: bias_act(x, bias, act, backend=backend, **kw)

    yield Case("bias_act", "ok", call(gain=1.5))
    for kind, dtype in BAD_DTYPES.items():
        yield Case("bias_act", f"x-{kind}", call(x=of_dtype(dtype, 3, 4)),
                   (TypeError, rf"x has dtype {dtype}; only real floating-point"))
        yield Case("bias_act", f"bias-{kind}", call(bias=of_dtype(dtype, 4)),
                   (TypeError, rf"bias has dtype {dtype}; only real floating-point"))
    yield Case("bias_act", "meta", call(x=t(3, 4, device="meta"), bias=t(4, device="meta")), BACKEND_ON_META,
               error_on=FUSED)
    yield Case("bias_act", "bias-meta", call(bias=t(4, device="meta")), (ValueError, "bias is on meta but x is on cpu"))
    yield Case("bias_act", "bias-float64", call(bias=t(4, dtype=torch.float64)),
               (TypeError, "bias has dtype torch.float64 but x has torch.float32"))
    yield Case("bias_act", "bias-size", call(bias=t(3)),
               (ValueError, r"bias must be 1-D of size x.shape\[1\] = 4, got shape \(3,\)"))
    yield Case("bias_act", "bias-2d", call(bias=t(4, 1)), (ValueError, r"bias must be 1-D of size x.shape\[1\]"))
    yield Case("bias_act", "bias-list", call(bias=[0.0] * 4), (TypeError, "bias must be a tensor or None, got list"))
    yield Case("bias_act", "x-list", call(x=[[0.0] * 4]), (TypeError, "x must be a tensor, got list"))
    yield Case("bias_act", "dim-out-of-range", call(dim=3), (IndexError, r"dim 3 is out of range for x of shape"))
    yield Case("bias_act", "dim-str", call(dim="1"), (TypeError, "dim must be an int, got str"))
    yield Case("bias_act", "dim-float", call(dim=1.0), (TypeError, "dim must be an int, got float"))
    yield Case("bias_act", "dim-bool", call(dim=True), (TypeError, "dim must be an int, got bool"))
    yield Case("bias_act", "dim-negative", call(x=t(3, 2, 4), dim=-1))
    for act in ("gelu", None, "TANH"):
        yield Case("bias_act", f"act-{act}", call(act=act), (ValueError, rf"act must be one of \(.*\), got {act!r}"))
    for arg in ("alpha", "gain"):
        for kind, value in (("nan", NAN), ("inf", INF)):
            yield Case("bias_act", f"{arg}-{kind}", call(act="elu", **{arg: value}),
                       (ValueError, rf"{arg} must be finite, got {value}"))
        yield Case("bias_act", f"{arg}-str", call(**{arg: "2"}), (TypeError, f"{arg} must be a real number, got str"))
        yield Case("bias_act", f"{arg}-negative", call(act="lrelu", **{arg: -0.5}))
    yield Case("bias_act", "empty", call(x=t(0, 4)))
    yield Case("bias_act", "scalar-no-bias", lambda backend: bias_act(torch.tensor(0.5), None, "silu", backend=backend))
    yield Case("bias_act", "nan-inf", call(x=torch.tensor([[NAN, INF, -INF, 0.0]]), act="sigmoid"))
    yield Case("bias_act", "channels-last", call(x=t(2, 4, 3, 3).to(memory_format=torch.channels_last), act="silu"))
    yield Case("bias_act", "expanded", call(x=t(1, 4, 1).expand(3, 4, 5), act="relu"))
    yield Case("bias_act", "bad-backend", call(), BAD_BACKEND, error_on=("gpu",), backends=("gpu",))


def clip_cases():
    def call(params=None, clip_value=0.5):
        def run(backend):
            tensors = [t(3, 4), t(5, seed=1, dtype=torch.float64)] if params is None else params()
            clip_weights_(tensors, clip_value, backend=backend)
            return tensors
        return run

    yield Case("clip_weights_", "ok", call())
    for kind, value in {**BAD_NUMBERS, "zero": 0.0}.items():
        yield Case("clip_weights_", f"clip_value-{kind}", call(clip_value=value),
                   (ValueError, rf"clip_value must be finite and > 0, got {value}"))
    yield Case("clip_weights_", "clip_value-str", call(clip_value="0.1"),
               (TypeError, "clip_value must be a real number, got str"))
    yield Case("clip_weights_", "clip_value-bool", call(clip_value=True),
               (TypeError, "clip_value must be a real number, got bool"))
    yield Case("clip_weights_", "clip_value-tensor", call(clip_value=torch.tensor(0.25)))
    for kind, dtype in BAD_DTYPES.items():
        yield Case("clip_weights_", f"params-{kind}", call(params=lambda dtype=dtype: [t(3), of_dtype(dtype, 4)]),
                   (TypeError, rf"params\[1\] has dtype {dtype}; only real floating-point"))
    yield Case("clip_weights_", "meta", call(params=lambda: [t(3, device="meta")]), BACKEND_ON_META, error_on=FUSED)
    yield Case("clip_weights_", "params-number", call(params=lambda: 3),
               (TypeError, "params must be an nn.Module, a tensor or an iterable of tensors, got int"))
    yield Case("clip_weights_", "params-str-items", call(params=lambda: [t(3), "w"]),
               (TypeError, r"params\[1\] must be a tensor, got str"))
    yield Case("clip_weights_", "sparse", call(params=lambda: [torch.eye(3).to_sparse()]),
               (TypeError, r"params\[0\] is a torch.sparse_coo tensor"))
    yield Case("clip_weights_", "expanded", call(params=lambda: [t(1, 3).expand(4, 3)]),
               (RuntimeError, "more than one element of the written-to tensor refers to a single memory location"))
    yield Case("clip_weights_", "same-tensor-twice", call(params=lambda: [t(4, 3)] * 2))
    yield Case("clip_weights_", "empty-list", call(params=lambda: []))
    yield Case("clip_weights_", "empty-tensor", call(params=lambda: [t(0, 3)]))
    yield Case("clip_weights_", "nan-inf", call(params=lambda: [torch.tensor([NAN, INF, -INF, 0.7])]))
    yield Case("clip_weights_", "strided", call(params=lambda: [t(6, 4)[:, ::2], t(3, 5).t()]))
    yield Case("clip_weights_", "module", call(params=lambda: torch.nn.Linear(3, 4)))
    yield Case("clip_weights_", "bad-backend", call(), BAD_BACKEND, error_on=("gpu",), backends=("gpu",))


def rmsprop_clip_cases():
    def call(n=2, lists=None, **hyper):
        settings = dict(lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False,
                        clip_value=0.5)
        settings.update(hyper)

        def run(backend):
            params, grads, squares = [t(3, 4, seed=i) for i in range(n)], [t(3, 4, seed=9 + i) for i in range(n)], \
                [t(3, 4, seed=20 + i).abs() for i in range(n)]
            args = [params, grads, squares, [], []]
            if lists is not None:
                args = lists(args)
            rmsprop_clip_(*args, backend=backend, **settings)
            return args
        return run

    yield Case("rmsprop_clip_", "ok", call())
    yield Case("rmsprop_clip_", "empty", call(n=0))
    yield Case("rmsprop_clip_", "empty-tensors", call(lists=lambda a: [[t(0, 3)], [t(0, 3)], [t(0, 3)], [], []]))
    yield Case("rmsprop_clip_", "clip_value-nan", call(clip_value=NAN), (ValueError, "clip_value"))
    yield Case("rmsprop_clip_", "clip_value-negative", call(clip_value=-0.5), (ValueError, "clip_value"))
    yield Case("rmsprop_clip_", "lr-nan", call(lr=NAN), (ValueError, "lr"))
    yield Case("rmsprop_clip_", "centered-without-grad_avgs", call(centered=True), (ValueError, "grad_avgs"))
    yield Case("rmsprop_clip_", "grads-shorter", call(lists=lambda a: [a[0], a[1][:1], a[2], a[3], a[4]]),
               (ValueError, "grads"))
    yield Case("rmsprop_clip_", "grad-shape", call(lists=lambda a: [a[0], [a[1][0].t()] + a[1][1:]] + a[2:]),
               (ValueError, r"grads\[0\]"))
    yield Case("rmsprop_clip_", "params-int", call(lists=lambda a: [[of_dtype(torch.int64, 3, 4)] + a[0][1:]] + a[1:]),
               (TypeError, r"params\[0\]"))
    yield Case("rmsprop_clip_", "meta", call(n=0, lists=lambda a: [[t(3, device="meta")], [t(3, device="meta")],
                                                                   [t(3, device="meta")], [], []]),
               BACKEND_ON_META, error_on=FUSED)
    yield Case("rmsprop_clip_", "centered-str", call(centered="no"), (TypeError, "centered"))


def nn_cases():
    one = ("reference",)

    def build(cls, *args, **kw):
        return lambda backend: cls(*args, **kw)

    for cls in (FusedBiasAct, FusedLeakyReLU):
        op = cls.__name__
        for channels in (0, -3, "4", True, 2.0):
            yield Case(op, f"channels-{channels!r}", build(cls, channels),
                       (ValueError, rf"channels must be a positive int, got {channels!r}"), backends=one)
        slope = "alpha" if cls is FusedBiasAct else "negative_slope"
        for arg in (slope, "gain", "bias_init"):
            for value in (NAN, INF, "0.5"):
                error = (TypeError, f"{arg} must be a real number") if isinstance(value, str) else \
                    (ValueError, rf"{arg} must be finite, got {value}")
                yield Case(op, f"{arg}-{value}", build(cls, 4, **{arg: value}), error, backends=one)
        yield Case(op, "bias-str", build(cls, 4, bias="no"), (TypeError, "bias must be a bool, got str"), backends=one)
        yield Case(op, "dim-str", build(cls, 4, dim="1"), (TypeError, "dim must be an int, got str"), backends=one)
        yield Case(op, "backend-gpu", build(cls, 4, backend="gpu"), BAD_BACKEND, backends=one)
        yield Case(op, "forward-int", lambda backend, cls=cls: cls(4, backend=backend)(of_dtype(torch.int64, 2, 4)),
                   (TypeError, r"x has dtype torch.int64"))
        yield Case(op, "forward-channels", lambda backend, cls=cls: cls(4, backend=backend)(t(2, 5)),
                   (ValueError, r"bias must be 1-D of size x.shape\[1\] = 5, got shape \(4,\)"))
        yield Case(op, "forward-meta", lambda backend, cls=cls: cls(4, backend=backend)(t(2, 4, device="meta")),
                   (ValueError, "bias is on cpu but x is on meta"))
        yield Case(op, "forward-ok", lambda backend, cls=cls: cls(4, gain=2.0, bias_init=0.3, backend=backend)(t(2, 4)))
    yield Case("FusedBiasAct", "act-gelu", build(FusedBiasAct, 4, "gelu"), (ValueError, "act must be one of"),
               backends=one)
    seq = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    yield Case("fuse_bias_act", "module-list", lambda backend: fuse_bias_act([torch.nn.Linear(2, 2)]),
               (TypeError, "module must be an nn.Module, got list"), backends=one)
    yield Case("fuse_bias_act", "inplace-str", lambda backend: fuse_bias_act(seq, inplace="no"),
               (TypeError, "inplace must be a bool, got str"), backends=one)
    yield Case("fuse_bias_act", "backend-gpu", lambda backend: fuse_bias_act(seq, backend="gpu"), BAD_BACKEND,
               backends=one)
    yield Case("fuse_bias_act", "ok", lambda backend: fuse_bias_act(seq, backend=backend)(t(4, 2)),
               reference=lambda: seq(t(4, 2)))


def optimizer_cases():
    one = ("reference",)

    def build(params=None, **kw):
        return lambda backend: ClippedRMSprop([t(3, requires_grad=True)] if params is None else params(), **kw)

    for kind, value in {**BAD_NUMBERS, "zero": 0.0}.items():
        yield Case("ClippedRMSprop", f"clip_value-{kind}", build(clip_value=value),
                   (ValueError, rf"clip_value must be finite and > 0, got {value}"), backends=one)
    yield Case("ClippedRMSprop", "clip_value-str", build(clip_value="0.1"),
               (TypeError, "clip_value must be a real number, got str"), backends=one)
    yield Case("ClippedRMSprop", "group-clip_value-nan",
               build(params=lambda: [{"params": [t(3, requires_grad=True)], "clip_value": NAN}]),
               (ValueError, r"param_groups\[0\]\['clip_value'\] must be finite and > 0, got nan"), backends=one)
    for arg in ("lr", "alpha", "eps", "weight_decay", "momentum"):
        for kind, value in BAD_NUMBERS.items():
            yield Case("ClippedRMSprop", f"{arg}-{kind}", build(**{arg: value}),
                       (ValueError, rf"^{arg} must be finite and >= 0.0, got {value}"), backends=one)
            yield Case("ClippedRMSprop", f"group-{arg}-{kind}",
                       build(params=lambda arg=arg, value=value: [{"params": [t(3, requires_grad=True)]},
                                                                  {"params": [t(2, requires_grad=True)], arg: value}]),
                       (ValueError, rf"param_groups\[1\]\['{arg}'\] must be finite and >= 0.0, got {value}"),
                       backends=one)
        yield Case("ClippedRMSprop", f"{arg}-str", build(**{arg: "0.1"}),
                   (TypeError, rf"^{arg} must be a real number, got str"), backends=one)
    for flag in ("centered", "maximize", "capturable"):
        yield Case("ClippedRMSprop", f"{flag}-str", build(**{flag: "no"}),
                   (TypeError, rf"^{flag} must be a bool, got str"), backends=one)
        yield Case("ClippedRMSprop", f"group-{flag}-str",
                   build(params=lambda flag=flag: [{"params": [t(3, requires_grad=True)], flag: "no"}]),
                   (TypeError, rf"param_groups\[0\]\['{flag}'\] must be a bool, got str"), backends=one)
    for kind, dtype in BAD_DTYPES.items():
        yield Case("ClippedRMSprop", f"params-{kind}", build(params=lambda dtype=dtype: [of_dtype(dtype, 3)]),
                   (TypeError, rf"param_groups\[0\]\['params'\]\[0\] has dtype {dtype}"), backends=one)
    yield Case("ClippedRMSprop", "backend-gpu", build(backend="gpu"), BAD_BACKEND, backends=one)
    yield Case("ClippedRMSprop", "params-number", build(params=lambda: 3),
               (TypeError, "params must be an iterable of tensors or param groups, got int"), backends=one)

    def step(make_grad, **kw):
        def run(backend):
            p = torch.nn.Parameter(t(3, 4))
            opt = ClippedRMSprop([p], lr=0.1, clip_value=0.5, backend=backend, **kw)
            p.grad = make_grad(p)
            opt.step()
            return p.detach()
        return run

    yield Case("ClippedRMSprop", "step-ok", step(lambda p: t(3, 4, seed=3), centered=True, momentum=0.5))
    yield Case("ClippedRMSprop", "step-nan-grad", step(lambda p: torch.full_like(p, NAN)))
    yield Case("ClippedRMSprop", "params-tensor", build(params=lambda: t(3, requires_grad=True)),
               (TypeError, "params must be an iterable of tensors or param groups, got Tensor"), backends=one)

    def edited(key, value):
        def run(backend):
            p = torch.nn.Parameter(t(3, 4))
            opt = ClippedRMSprop([p], backend=backend)
            p.grad = t(3, 4, seed=3)
            opt.param_groups[0][key] = value
            opt.step()
        return run

    def step_on(device, shape):
        def run(backend):
            p = torch.nn.Parameter(t(*shape, device=device))
            opt = ClippedRMSprop([p], lr=0.1, clip_value=0.5, backend=backend)
            p.grad = t(*shape, device=device, seed=3)
            opt.step()
            return p.detach()
        return run

    yield Case("ClippedRMSprop", "step-meta", step_on("meta", (3, 4)),
               (BackendError, r"ClippedRMSprop.step: backend '(cpu|triton)' cannot run these tensors: .*on meta"),
               error_on=FUSED)
    yield Case("ClippedRMSprop", "step-empty-param", step_on("cpu", (0, 4)))
    yield Case("ClippedRMSprop", "step-clip_value-edited-nan", edited("clip_value", NAN),
               (ValueError, r"param_groups\[0\]\['clip_value'\] must be finite and > 0, got nan"))
    yield Case("ClippedRMSprop", "step-lr-edited-inf", edited("lr", INF),
               (ValueError, r"param_groups\[0\]\['lr'\] must be finite and >= 0.0, got inf"))


def approximate_penalty_cases():
    for op, fn, arg in (("approximate_r1_penalty", approximate_r1_penalty, "real"),
                        ("approximate_r2_penalty", approximate_r2_penalty, "fake")):
        def call(samples=None, critic=critic, fn=fn, **kw):
            samples = t(4, 3) if samples is None else samples
            kw.setdefault("noise", t(*samples.shape, seed=5, device=samples.device) if isinstance(samples, torch.Tensor)
                          else None)
            return lambda backend: fn(critic, samples, backend=backend, **kw)

        yield Case(op, "ok", call(gamma=2.0, sigma=0.1))
        for kind, dtype in BAD_DTYPES.items():
            yield Case(op, f"{arg}-{kind}", call(of_dtype(dtype, 4, 3)), (TypeError, rf"{arg} has dtype {dtype}"))
        yield Case(op, "meta", call(t(4, 3, device="meta")), BACKEND_ON_META, error_on=FUSED)
        yield Case(op, "empty", call(t(0, 3)), (ValueError, f"{arg} has a batch of 0 samples"))
        yield Case(op, f"{arg}-list", call([[1.0]]), (TypeError, f"{arg} must be a tensor, got list"))
        for kind, value in {**BAD_NUMBERS, "zero": 0.0}.items():
            yield Case(op, f"sigma-{kind}", call(sigma=value), (ValueError, rf"sigma must be finite and > 0, got"))
        for kind, value in BAD_NUMBERS.items():
            yield Case(op, f"gamma-{kind}", call(gamma=value), (ValueError, rf"gamma must be finite and >= 0.0"))
        yield Case(op, "sigma-str", call(sigma="0.1"), (TypeError, "sigma must be a real number"))
        yield Case(op, "noise-shape", call(noise=t(4, 2)), (ValueError, rf"noise must have the shape of {arg}"))
        yield Case(op, "noise-meta", call(noise=t(4, 3, device="meta")),
                   (ValueError, f"noise is on meta but {arg} is on cpu"))
        yield Case(op, "noise-int", call(noise=of_dtype(torch.int64, 4, 3)),
                   (TypeError, "noise must be a floating-point tensor"))
        yield Case(op, "noise-float64", call(noise=t(4, 3, seed=5, dtype=torch.float64)))
        yield Case(op, "noise-nan", call(noise=torch.tensor([[NAN, 1.0, 2.0]] * 4)))
        yield Case(op, f"{arg}-inf", call(torch.tensor([[INF, 1.0, 2.0]] * 4)))
        yield Case(op, "generator-int", call(noise=None, generator=3),
                   (TypeError, "generator must be a torch.Generator"))
        yield Case(op, "noise-and-generator", call(generator=torch.Generator()),
                   (ValueError, "pass noise= or generator=, not both"))
        yield Case(op, "critic-none", call(critic=None), (ValueError, "needs the critic"))
        yield Case(op, "critic-returns-list", call(critic=lambda x: [x.sum()]),
                   (TypeError, "the critic must return a tensor, got list"))
        yield Case(op, "outputs-shape", call(outputs=torch.ones(4, 1)), (ValueError, r"outputs has shape \(4, 1\)"))
        yield Case(op, "channels-last", call(t(2, 3, 4, 5).to(memory_format=torch.channels_last)))
        yield Case(op, "bad-backend", call(), BAD_BACKEND, error_on=("gpu",), backends=("gpu",))

    def r1_r2(**kw):
        kw.setdefault("gamma", 1.5)
        return lambda backend: r1_r2_penalty(critic, t(4, 3), t(4, 3, seed=1), backend=backend, **kw)

    yield Case("r1_r2_penalty", "ok-exact", r1_r2())
    yield Case("r1_r2_penalty", "ok-approximate", r1_r2(approximate=True, noise_real=t(4, 3, seed=2),
                                                        noise_fake=t(4, 3, seed=3)))
    yield Case("r1_r2_penalty", "gamma-missing", lambda backend: r1_r2_penalty(critic, t(4, 3), t(4, 3)),
               (TypeError, "gamma"))
    yield Case("r1_r2_penalty", "gamma-negative", r1_r2(gamma=-1.0), (ValueError, "gamma must be finite and >= 0.0"))
    yield Case("r1_r2_penalty", "sigma-zero", r1_r2(approximate=True, sigma=0.0),
               (ValueError, "sigma must be finite and > 0"))
    yield Case("r1_r2_penalty", "approximate-str", r1_r2(approximate="yes"), (TypeError, "approximate must be a bool"))
    yield Case("r1_r2_penalty", "noise-with-exact", r1_r2(noise_fake=t(4, 3)),
               (ValueError, "noise_fake goes with approximate=True"))
    yield Case("r1_r2_penalty", "noise-shape", r1_r2(approximate=True, noise_real=t(4, 2)),
               (ValueError, "noise must have the shape of real"))


def vae_cases():
    """The VAE ops (issue 14): each call builds its tensors from defaults (recon/logits/x
    (6, 5), targets in [0, 1], latents (6, 3)) with one argument replaced."""
    def probabilities(*shape, seed=2):
        return torch.rand(shape, generator=torch.Generator().manual_seed(seed))

    ops = {
        "vae_loss": (lambda a, backend, **kw: vae_loss(a["recon"], a["target"], a["mu"], a["logvar"],
                                                       backend=backend, **kw), ("recon", "target", "mu", "logvar")),
        "gaussian_kl": (lambda a, backend, **kw: gaussian_kl(a["mu"], a["logvar"], backend=backend, **kw),
                        ("mu", "logvar")),
        "bernoulli_nll": (lambda a, backend, **kw: bernoulli_nll(a["logits"], a["target"], backend=backend, **kw),
                          ("logits", "target")),
        "gaussian_nll": (lambda a, backend, **kw: gaussian_nll(a["x"], a["mean"], a["logvar"], backend=backend,
                                                               **kw), ("x", "mean", "logvar")),
        "reparameterize": (lambda a, backend, **kw: reparameterize(
            a["mu"], a["logvar"], generator=kw.pop("generator", torch.Generator().manual_seed(5)), backend=backend,
            **kw), ("mu", "logvar")),
    }
    for op, (fn, names) in ops.items():
        latent = op in ("gaussian_kl", "reparameterize")

        def call(fn=fn, latent=latent, op=op, kw=None, **replace):
            defaults = {"recon": t(6, 5), "logits": t(6, 5), "x": t(6, 5), "mean": t(6, 5, seed=1),
                        "target": probabilities(6, 5), "mu": t(6, 3, seed=3),
                        "logvar": t(6, 3, seed=4) if latent or op == "vae_loss" else t(6, 5, seed=4)}
            defaults.update(replace)
            return lambda backend: fn(defaults, backend, **(kw or {}))

        first, last = names[0], names[-1]
        like = "mu" if last == "logvar" and "mu" in names else first
        yield Case(op, "ok", call())
        for kind_name, dtype in BAD_DTYPES.items():
            yield Case(op, f"{last}-{kind_name}", call(**{last: of_dtype(dtype, 6, 3 if latent else 5)}),
                       (TypeError, rf"{op}: {last} has dtype {dtype}; only real floating-point tensors"))
        yield Case(op, f"{last}-list", call(**{last: [0.5]}), (TypeError, rf"{op}: {last} must be a tensor, got list"))
        yield Case(op, f"{first}-empty-batch", call(**{first: t(0, 5)}),
                   (ValueError, rf"{op}: {first} has a batch of 0 samples"))
        yield Case(op, f"{last}-shape-mismatch", call(**{last: t(6, 2, seed=4)}),
                   (ValueError, rf"{op}: {last} has shape \(6, 2\) but {like} has"))
        yield Case(op, f"{last}-device-mismatch", call(**{last: t(6, 3 if latent else 5, device="meta")}),
                   (ValueError, rf"{op}: {last} is on meta but {first} is on cpu"))
        yield Case(op, f"{last}-dtype-mismatch", call(**{last: t(6, 3 if latent else 5, dtype=torch.float64)}),
                   (TypeError, rf"{op}: {last} has dtype torch.float64 but {first} has torch.float32"))
        yield Case(op, "meta", call(**{n: t(6, 3 if latent or (op == "vae_loss" and n in ("mu", "logvar")) else 5,
                                            device="meta") for n in names}), BACKEND_ON_META, error_on=FUSED)
        yield Case(op, "bad-backend", call(), BAD_BACKEND, error_on=("gpu",), backends=("gpu",))
        yield Case(op, "logvar-80", call(logvar=torch.tensor([[80.0, -80.0, 0.0]] * 6) if latent or op == "vae_loss"
                                         else torch.tensor([[80.0, -80.0, 0.0, 1.0, -1.0]] * 6)))
        yield Case(op, "nan", call(**{first: torch.full((6, 3 if latent else 5), NAN)}))
        if op == "reparameterize":  # half rounding differs from eager's; tests/test_vae_ops.py checks float16
            yield Case(op, "eps-and-generator", call(kw={"eps": t(6, 3)}),
                       (ValueError, r"reparameterize: pass eps or generator, not both"))
            yield Case(op, "generator-int", call(kw={"generator": 5}),
                       (TypeError, r"reparameterize: generator must be a torch.Generator or None, got int"))
            continue
        yield Case(op, "float16", call(**{n: t(6, 3 if latent or (op == "vae_loss" and n in ("mu", "logvar")) else 5,
                                               dtype=torch.float16, seed=i)
                                          for i, n in enumerate(names) if "target" not in n},
                                       **({"target": probabilities(6, 5).half()} if "target" in names else {})))
        for reduction in ("avg", None):
            yield Case(op, f"reduction-{reduction}", call(kw={"reduction": reduction}),
                       (ValueError, rf"{op}: reduction must be one of 'none', 'mean', 'sum'; got {reduction!r}"))
        yield Case(op, "reduction-none", call(kw={"reduction": "none"}))
        if "target" in names:
            yield Case(op, "target-above-one", call(target=probabilities(6, 5) + 1),
                       (ValueError, rf"{op}: target must hold probabilities in \[0, 1\] for the bernoulli"))
            yield Case(op, "target-negative", call(target=-probabilities(6, 5)),
                       (ValueError, rf"{op}: target must hold probabilities in \[0, 1\]"))
            yield Case(op, "target-nan", call(target=torch.full((6, 5), NAN)))
            nan_and_five = probabilities(6, 5)
            nan_and_five[0, 0], nan_and_five[3, 2] = NAN, 5.0
            yield Case(op, "target-nan-beside-five", call(target=nan_and_five),  # a NaN hides no bad value
                       (ValueError, rf"{op}: target must hold probabilities in \[0, 1\] for the bernoulli likelihood; "
                                    r"got values in \[0(\.\d+)?, 5\]"))
        if op != "vae_loss":
            continue
        yield Case(op, "gaussian-target-any", call(target=t(6, 5, seed=9) * 3, kw={"likelihood": "gaussian"}))
        for bad in ("poisson", None, "Bernoulli"):
            yield Case(op, f"likelihood-{bad}", call(kw={"likelihood": bad}),
                       (ValueError, rf"vae_loss: likelihood must be one of 'bernoulli', 'gaussian'; got {bad!r}"))
        for name, value in BAD_NUMBERS.items():
            yield Case(op, f"beta-{name}", call(kw={"beta": value}),
                       (ValueError, rf"vae_loss: beta must be finite and >= 0.0, got {value}"))
        yield Case(op, "beta-str", call(kw={"beta": "1"}), (TypeError, r"vae_loss: beta must be a real number, got str"))
        yield Case(op, "beta-zero", call(kw={"beta": 0.0}))
        for numpy_beta in (np.float32(0.5), np.int64(2)):
            yield Case(op, f"beta-numpy-{type(numpy_beta).__name__}", call(kw={"beta": numpy_beta}))
        yield Case(op, "mu-batch-mismatch", call(mu=t(4, 3), logvar=t(4, 3, seed=1)),
                   (ValueError, r"vae_loss: mu has 4 samples but recon has 6"))


def relativistic_loss_cases():
    """discriminator_loss and generator_loss with the relativistic kinds (issue 12)."""
    def call(op, kind, real=None, fake=None, **kw):
        real = t(6, 1) if real is None else real
        fake = t(6, 1, seed=1) if fake is None else fake
        if op == "discriminator_loss":
            return lambda backend: discriminator_loss(real, fake, kind, backend=backend, **kw)
        return lambda backend: generator_loss(fake, kind, real_logits=real, backend=backend, **kw)

    for op in ("discriminator_loss", "generator_loss"):
        for kind in ("relativistic", "relativistic_average"):
            yield Case(op, f"{kind}-ok", call(op, kind))
            yield Case(op, f"{kind}-none", call(op, kind, reduction="none"))
            yield Case(op, f"{kind}-nan-inf-logits", call(op, kind, real=torch.tensor([NAN, 1.0, -INF, INF]),
                                                          fake=torch.tensor([INF, -INF, 0.0, NAN])))
            yield Case(op, f"{kind}-large-logits", call(op, kind, real=torch.tensor([1e4, -1e4, 80.0]),
                                                        fake=torch.tensor([-1e4, 90.0, 1e4])))
            yield Case(op, f"{kind}-strided", call(op, kind, real=t(6, 4)[:, ::2], fake=t(2, 6, seed=1).t()))
            yield Case(op, f"{kind}-float16", call(op, kind, real=t(6, dtype=torch.float16),
                                                   fake=t(6, dtype=torch.float16, seed=1)))
            yield Case(op, f"{kind}-scalar-logits", call(op, kind, real=torch.tensor(0.3), fake=torch.tensor(-2.0)))
            yield Case(op, f"{kind}-meta", call(op, kind, real=t(6, device="meta"), fake=t(6, device="meta")),
                       BACKEND_ON_META, error_on=FUSED)
            yield Case(op, f"{kind}-real_logits-int", call(op, kind, real=of_dtype(torch.int64, 6, 1)),
                       (TypeError, rf"{op}: real_logits has dtype torch.int64; expected floating-point logits"))
            yield Case(op, f"{kind}-real_logits-float64", call(op, kind, real=t(6, 1, dtype=torch.float64)),
                       (TypeError, rf"{op}: (real|fake)_logits has dtype torch.float(32|64) but (real|fake)_logits "
                                   r"has torch.float(32|64); expected one dtype"))
        yield Case(op, "relativistic-shape-mismatch", call(op, "relativistic", fake=t(5, 1, seed=1)),
                   (ValueError, rf"{op}: kind='relativistic' pairs real_logits with fake_logits, so they must have "
                                r"one shape; got real_logits \(6, 1\) and fake_logits \(5, 1\)"))
        yield Case(op, "relativistic-broadcastable-shapes", call(op, "relativistic", fake=t(6, seed=1)),
                   (ValueError, rf"{op}: .*real_logits \(6, 1\) and fake_logits \(6,\)"))
        yield Case(op, "relativistic_average-other-shapes", call(op, "relativistic_average", fake=t(3, 1, 2, 2)))
    for kind in ("relativistic", "relativistic_average"):
        yield Case("generator_loss", f"{kind}-without-real_logits",
                   lambda backend, kind=kind: generator_loss(t(6, 1), kind, backend=backend),
                   (ValueError, rf"generator_loss: kind='{kind}' compares fake_logits with the real samples' "
                                "logits: pass real_logits="))
    yield Case("generator_loss", "real_logits-with-non_saturating",
               lambda backend: generator_loss(t(6, 1), "non_saturating", real_logits=t(6, 1), backend=backend),
               (ValueError, "generator_loss: real_logits is read only by the relativistic kinds"))


CASES = [case for cases in (interpolate_cases, penalty_cases, gradient_penalty_cases, zero_centered_cases,
                            input_gradients_cases, loss_cases, relativistic_loss_cases, bias_act_cases, clip_cases,
                            rmsprop_clip_cases, nn_cases, optimizer_cases, approximate_penalty_cases, vae_cases)
         for case in cases()]


def _params():
    for case in CASES:
        for backend in case.backends:
            marks = [pytest.mark.xfail(strict=True, reason=case.bugs[backend])] if backend in case.bugs else []
            yield pytest.param(case, backend, id=f"{case.op}-{case.name}-{backend}", marks=marks)


def assert_same(got, want, where="result"):
    """Equal structure, and tensors equal to the reference's (NaN where it has NaN;
    meta tensors: shape and dtype)."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        assert (got.shape, got.dtype, got.device) == (want.shape, want.dtype, want.device), where
        if want.device.type != "meta":
            torch.testing.assert_close(got.detach(), want.detach(), equal_nan=True, msg=where)
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), where
        for index, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{index}]")
    elif isinstance(want, torch.nn.Module):
        assert type(got) is type(want), where
    else:
        assert got == want, where


def test_case_ids_are_unique():
    ids = [f"{case.op}-{case.name}" for case in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case,backend", list(_params()))
def test_bad_input(case, backend):
    if case.error is not None and backend in case.error_on:
        error, pattern = case.error
        with pytest.raises(error, match=pattern):
            case.call(backend)
        return
    want = case.call("reference") if case.reference is None else case.reference()
    assert_same(case.call(backend), want)
