"""Differential fuzzing of every backend against the float64 reference (issue 16).

Each trial draws an op's arguments from a seeded generator: shapes of 1-5 dims with
odd and size-1 sizes; contiguous, transposed, strided, expanded and channels-last
views; float32, float64, float16 and bfloat16. It evaluates the forward, the
backward and (where the op has one) the double backward on a backend, on the
reference in the same dtype (eager PyTorch) and on the reference in float64 with the
same (rounded) input values, and checks flash-attention's rule on every result:
the backend's max error against float64 is at most twice eager's plus a floor of
four units in the last place (conftest.assert_flash_close). Weight clipping must be
bit for bit eager's clamp.

CI runs a few hundred trials per op family; ``python scripts/fuzz.py --trials N``
runs more. Trials that hit a bug the lead is fixing (KNOWN_BUGS) are left out of the
families' runs and kept as strict xfails of their own.
"""
import math
import random
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest
import torch
from conftest import assert_flash_close, backends_for, device_backend_pairs

from fastgan import reference
from fastgan.ops import (approximate_r1_penalty, bernoulli_nll, bias_act, clip_weights_, discriminator_loss,
                         finite_difference_penalty, gan_value, gaussian_kl, gaussian_nll, generator_loss,
                         grad_norm_penalty, gradient_penalty, interpolate, perturb, r1_penalty, r2_penalty,
                         reparameterize, rmsprop_clip_, vae_loss)
from fastgan.ops.bias_act import ACTIVATIONS
from fastgan.reference.losses import DISCRIMINATOR_KINDS, GENERATOR_KINDS, REDUCTIONS
from fastgan.reference.losses import RELATIVISTIC_KINDS

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
SIZES = (1, 2, 3, 5, 7, 11)
LAYOUTS = ("contiguous", "transposed", "strided", "expanded", "channels_last")
IN_PLACE_LAYOUTS = ("contiguous", "transposed", "strided", "channels_last")  # no overlapping memory


#: The baseline every backend is held to: fastgan.reference's eager functions, called
#: directly (not through fastgan.ops), in the trial's dtype and in float64.
EAGER = "eager"


def trial_seed(family: str, index: int) -> int:
    """The seed of trial `index` of `family`, stable across processes and platforms."""
    return zlib.crc32(f"{family}/{index}".encode())


# ---------------------------------------------------------------- inputs and views


@dataclass
class Input:
    """One tensor argument: float64 values, rounded to the trial's dtype (or to a fixed
    `dtype`), and the view the op sees (`view(leaf)`: a transposed, strided, expanded or
    channels-last view of the leaf gradients are taken with respect to)."""
    values: torch.Tensor
    view: Callable[[torch.Tensor], torch.Tensor]
    layout: str
    differentiable: bool = True
    dtype: Optional[torch.dtype] = None


MAX_NUMEL = 1500  # keeps a trial in the Triton interpreter to milliseconds


def draw_shape(rng: random.Random, min_dims: int = 1, max_dims: int = 5) -> List[int]:
    """1-5 sizes from SIZES (odd ones and 1), at most MAX_NUMEL elements in all."""
    shape = [rng.choice(SIZES) for _ in range(rng.randint(min_dims, max_dims))]
    while math.prod(shape) > MAX_NUMEL:
        largest = shape.index(max(shape))
        shape[largest] = SIZES[SIZES.index(shape[largest]) - 1]
    return shape


def view_for(rng: random.Random, shape: Sequence[int], layouts: Sequence[str]) -> Tuple[str, List[int], Callable]:
    """(layout, shape of the leaf, leaf -> view of `shape` in that layout); layouts that
    need more dims than `shape` has fall back to contiguous."""
    layout = rng.choice(layouts)
    shape = list(shape)
    ndim = len(shape)
    if layout == "transposed" and ndim >= 2:
        a, b = rng.sample(range(ndim), 2)
        leaf = list(shape)
        leaf[a], leaf[b] = leaf[b], leaf[a]
        return layout, leaf, lambda t: t.transpose(a, b)
    if layout == "strided":
        d = rng.randrange(ndim)
        leaf = list(shape)
        leaf[d] = 2 * shape[d] + 1
        index = (slice(None),) * d + (slice(1, None, 2),)
        return layout, leaf, lambda t: t[index]
    if layout == "expanded":
        d = rng.randrange(ndim)
        leaf = list(shape)
        leaf[d] = 1
        return layout, leaf, lambda t: t.expand(shape)
    if layout == "channels_last" and ndim in (4, 5):
        memory_format = torch.channels_last if ndim == 4 else torch.channels_last_3d
        return layout, shape, lambda t: t.contiguous(memory_format=memory_format)
    return "contiguous", shape, lambda t: t


def draw_input(rng: random.Random, gen: torch.Generator, shape: Sequence[int], layouts: Sequence[str] = LAYOUTS,
               scale: float = 1.0, **kw) -> Input:
    layout, leaf_shape, view = view_for(rng, shape, layouts)
    values = torch.randn(leaf_shape, generator=gen, dtype=torch.float64) * scale
    return Input(values, view, layout, **kw)


# ---------------------------------------------------------------- trials


@dataclass
class Trial:
    """One op call. ``call(backend, views)`` (backend: a fastgan backend, or EAGER)
    returns a tensor or a tuple of tensors;
    `order` is the highest derivative checked (0: forward only, for in-place ops the
    mutated tensors); `exact` asks for bit-equality with eager instead of the rule."""
    family: str
    dtype: torch.dtype
    inputs: List[Input]
    call: Callable[[str, List[torch.Tensor]], object]
    order: int
    settings: Dict[str, object] = field(default_factory=dict)
    exact: bool = False
    index: int = 0  # set by make_trial: make_trial(family, index) draws this trial again
    seed: int = 0

    def describe(self) -> str:
        layouts = [f"{tuple(i.view(i.values).shape)}:{i.layout}" for i in self.inputs]
        return f"{self.family}#{self.index} seed={self.seed} {self.dtype} inputs={layouts} {self.settings}"


def bias_act_trial(rng: random.Random, gen: torch.Generator, dtype: torch.dtype,
                   scales: Sequence[float] = (1.5, 1.5, 6.0)) -> Trial:
    """`scales`: of x (6: tanh and sigmoid saturate in low precision)."""
    shape = draw_shape(rng)
    act = rng.choice(ACTIVATIONS)
    alpha = rng.choice([None, 0.1, -0.3, 1.7]) if act in ("lrelu", "elu") else None
    gain = rng.choice([1.0, 1.3, -0.7, 0.0, math.sqrt(2)])
    dim = rng.randrange(-len(shape), len(shape))
    scale = rng.choice(scales)
    x = draw_input(rng, gen, shape, scale=scale)
    inputs = [x]
    if rng.random() < 0.8:
        inputs.append(Input(torch.randn(shape[dim], generator=gen, dtype=torch.float64) * 0.5, lambda t: t,
                            "contiguous"))
    if act in ("relu", "lrelu"):  # keep z = x + b away from the kink, where f' jumps
        margin = 0.25 + (inputs[1].values.abs().max().item() if len(inputs) == 2 else 0.0)
        x.values = x.values + margin * torch.where(x.values < 0, -1.0, 1.0).to(torch.float64)
    settings = dict(act=act, alpha=alpha, gain=gain, dim=dim, bias=len(inputs) == 2, scale=scale)

    def call(backend, views):
        x, b = views[0], views[1] if len(views) == 2 else None
        if backend == EAGER:
            return reference.bias_act(x, b, act, alpha, gain, dim)
        return bias_act(x, b, act, alpha, gain, dim, backend=backend)

    return Trial("bias_act", dtype, inputs, call, 2, settings)


def interpolate_trial(rng: random.Random, gen: torch.Generator, dtype: torch.dtype) -> Trial:
    shape = draw_shape(rng)
    eps_dtype = rng.choice([torch.float32, torch.float64, dtype])
    eps_layout, eps_leaf, eps_view = view_for(rng, [shape[0]], ("contiguous", "contiguous", "strided", "expanded"))
    eps = Input(torch.rand(eps_leaf, generator=gen, dtype=torch.float64), eps_view, eps_layout, differentiable=False,
                dtype=eps_dtype)
    inputs = [draw_input(rng, gen, shape), draw_input(rng, gen, shape), eps]

    def call(backend, views):
        return reference.interpolate(*views) if backend == EAGER else interpolate(*views, backend=backend)

    return Trial("interpolate", dtype, inputs, call, 2, dict(eps_dtype=eps_dtype, eps_layout=eps_layout))


#: range of the per-sample gradient norms in grad_norm_penalty trials
NORM_RANGE = (1e-1, 1e1)


def grad_norm_penalty_trial(rng: random.Random, gen: torch.Generator, dtype: torch.dtype,
                            norm_range: Tuple[float, float] = NORM_RANGE) -> Trial:
    grads = draw_input(rng, gen, draw_shape(rng))
    viewed = grads.view(grads.values)
    rows = viewed.shape[0]
    norms = torch.linalg.vector_norm(viewed.reshape(rows, -1), dim=1)
    low, high = (math.log(v) for v in norm_range)
    target = torch.exp(torch.empty(rows, dtype=torch.float64).uniform_(low, high, generator=gen))
    factor = target / norms.clamp_min(1e-300)
    _scale_rows(grads, factor)
    center = rng.choice([0.0, 1.0, round(rng.uniform(0, 3), 3)])
    weight = rng.choice([1.0, 10.0, 0.3])
    one_sided = rng.random() < 0.3
    reduction = rng.choice(REDUCTIONS)
    settings = dict(center=center, weight=weight, one_sided=one_sided, reduction=reduction, norm_range=norm_range)

    def call(backend, views):
        if backend == EAGER:
            return reference.grad_norm_penalty(views[0], center, weight, one_sided, reduction)
        return grad_norm_penalty(views[0], center=center, weight=weight, one_sided=one_sided, reduction=reduction,
                                 backend=backend)

    return Trial("grad_norm_penalty", dtype, [grads], call, 2, settings)


def _scale_rows(item: Input, factor: torch.Tensor) -> None:
    """Scale row b of the viewed tensor by factor[b], through the leaf values."""
    leaf = item.values.clone()
    viewed = item.view(leaf)
    per_row = factor.reshape([-1] + [1] * (viewed.dim() - 1))
    if item.layout == "expanded" and leaf.shape[0] == 1 and viewed.shape[0] > 1:
        item.values = leaf * factor[0]  # every row is the same leaf row: one norm, one factor
    elif item.layout in ("expanded", "channels_last"):
        item.values = leaf * per_row  # the leaf has the view's batch dim
    else:
        viewed.mul_(per_row)  # contiguous, transposed and strided views write through to the leaf
        item.values = leaf


def loss_trial(rng: random.Random, gen: torch.Generator, dtype: torch.dtype) -> Trial:
    op = rng.choice(["discriminator_loss", "generator_loss", "gan_value"])
    scale = rng.choice([1.0, 5.0, 30.0])
    inputs = [draw_input(rng, gen, draw_shape(rng), scale=scale), draw_input(rng, gen, draw_shape(rng), scale=scale)]
    kind = rng.choice(DISCRIMINATOR_KINDS if op == "discriminator_loss" else GENERATOR_KINDS)
    reduction = rng.choice(REDUCTIONS)
    settings = dict(op=op, scale=scale)

    if op == "discriminator_loss":
        settings.update(kind=kind, reduction=reduction)

        def call(backend, views):
            if backend == EAGER:
                return reference.discriminator_loss(views[0], views[1], kind, reduction)
            return discriminator_loss(views[0], views[1], kind, reduction=reduction, backend=backend)
    elif op == "generator_loss":
        settings.update(kind=kind, reduction=reduction)
        inputs = inputs[1:]

        def call(backend, views):
            if backend == EAGER:
                return reference.generator_loss(views[0], kind, reduction)
            return generator_loss(views[0], kind, reduction=reduction, backend=backend)
    else:
        def call(backend, views):
            if backend == EAGER:
                return reference.gan_value(views[0], views[1])
            return gan_value(views[0], views[1], backend=backend)

    return Trial("losses", dtype, inputs, call, 2, settings)


def penalty_trial(rng: random.Random, gen: torch.Generator, dtype: torch.dtype) -> Trial:
    """gradient_penalty, r1_penalty and r2_penalty through a small tanh critic: the
    penalty and its gradient with respect to the critic's weights."""
    op = rng.choice(["gradient_penalty", "r1_penalty", "r2_penalty"])
    shape = draw_shape(rng, min_dims=2, max_dims=4)
    features = math.prod(shape[1:])
    inputs = [draw_input(rng, gen, shape, differentiable=False), draw_input(rng, gen, shape, differentiable=False),
              Input(torch.randn(features, 3, generator=gen, dtype=torch.float64) / math.sqrt(features), lambda t: t,
                    "contiguous"),
              Input(torch.rand(shape[0], generator=gen, dtype=torch.float64), lambda t: t, "contiguous",
                    differentiable=False, dtype=torch.float64)]
    weight, center = rng.choice([10.0, 1.0]), rng.choice([1.0, 0.0, 0.5])
    one_sided, gamma = rng.random() < 0.3, rng.choice([10.0, 0.1])
    settings = dict(op=op, weight=weight, center=center, one_sided=one_sided, gamma=gamma)

    def call(backend, views):
        real, fake, w, eps = views

        def critic(x):
            return torch.tanh(x.flatten(1) @ w.to(x.dtype)).sum(1)

        samples = real if op == "r1_penalty" else fake
        if backend == EAGER:
            if op == "gradient_penalty":
                return reference.gradient_penalty(critic, real, fake, eps, weight=weight, center=center,
                                                  one_sided=one_sided)
            return reference.r1_penalty(critic, samples, gamma=gamma)  # R2 is R1 on fakes
        if op == "gradient_penalty":
            return gradient_penalty(critic, real, fake, eps=eps, weight=weight, center=center, one_sided=one_sided,
                                    backend=backend)
        fn = r1_penalty if op == "r1_penalty" else r2_penalty
        return fn(critic, samples, gamma=gamma, backend=backend)

    return Trial("penalties", dtype, inputs, call, 1, settings)


def clip_trial(rng: random.Random, gen: torch.Generator, dtype: torch.dtype) -> Trial:
    """clip_weights_ on 1-4 tensors of mixed dtypes and layouts, some with NaN and inf."""
    dtypes = [rng.choice(DTYPES) for _ in range(rng.randint(1, 4))]
    inputs = []
    for tensor_dtype in dtypes:
        item = draw_input(rng, gen, draw_shape(rng), IN_PLACE_LAYOUTS, scale=rng.choice([0.01, 1.0, 100.0]),
                          differentiable=False, dtype=tensor_dtype)
        if rng.random() < 0.2:
            flat = item.values.view(-1)
            flat[rng.randrange(flat.numel())] = rng.choice([math.nan, math.inf, -math.inf])
        inputs.append(item)
    clip_value = rng.choice([1e-3, 0.01, 0.5, 3.0, 1e4])

    def call(backend, views):
        tensors = list(views)
        if backend == EAGER:
            reference.clip_(tensors, clip_value)
        else:
            clip_weights_(tensors, clip_value, backend=backend)
        return tuple(tensors)

    return Trial("clip", dtype, inputs, call, 0, dict(dtypes=dtypes, clip_value=clip_value), exact=True)


def rmsprop_trial(rng: random.Random, gen: torch.Generator, dtype: torch.dtype) -> Trial:
    """One fused rmsprop_clip_ step over 1-3 tensors: parameters and state."""
    count = rng.randint(1, 3)
    centered, momentum = rng.random() < 0.5, rng.choice([0.0, 0.9])
    hyper = dict(lr=rng.choice([1e-3, 1e-2]), alpha=rng.choice([0.9, 0.99]), eps=rng.choice([1e-8, 1e-6]),
                 weight_decay=rng.choice([0.0, 0.01]), momentum=momentum, centered=centered,
                 maximize=rng.random() < 0.3, clip_value=rng.choice([0.01, 0.05, 1.0]))
    kinds = ["params", "grads", "square_avgs"] + (["grad_avgs"] if centered else []) + \
        (["momentum_buffers"] if momentum else [])
    inputs = []
    for _ in range(count):
        shape = draw_shape(rng)
        for kind in kinds:
            scale = {"params": 0.05, "grad_avgs": 0.1}.get(kind, 1.0)
            item = draw_input(rng, gen, shape, IN_PLACE_LAYOUTS, scale=scale, differentiable=False)
            if kind == "square_avgs":  # >= 0.3 > grad_avg^2 (|grad_avg| < 0.5): centered variance > 0
                item.values = item.values.square() + 0.3
            inputs.append(item)

    def call(backend, views):
        lists = {kind: views[k::len(kinds)] for k, kind in enumerate(kinds)}
        args = [lists.get(kind, []) for kind in ("params", "grads", "square_avgs", "grad_avgs", "momentum_buffers")]
        if backend == EAGER:
            reference.rmsprop_clip_(*args, **hyper)
        else:
            rmsprop_clip_(*args, backend=backend, **hyper)
        return tuple(args[0] + args[2] + args[3] + args[4])

    return Trial("rmsprop_clip", dtype, inputs, call, 0, hyper)


def finite_difference_trial(rng: random.Random, gen: torch.Generator, dtype: torch.dtype) -> Trial:
    """perturb, finite_difference_penalty (p and o of scale σ: quotients of order 1) and
    approximate_r1_penalty through a small tanh critic (the penalty and its gradient with
    respect to the critic's weights)."""
    op = rng.choice(["perturb", "finite_difference_penalty", "approximate_r1_penalty"])
    sigma, weight = rng.choice([0.05, 0.3, 1.0]), rng.choice([5.0, 0.5])
    settings = dict(op=op, sigma=sigma, weight=weight)
    if op == "approximate_r1_penalty":
        shape = draw_shape(rng, min_dims=2, max_dims=4)
        features = math.prod(shape[1:])
        inputs = [draw_input(rng, gen, shape, differentiable=False),
                  Input(torch.randn(features, 3, generator=gen, dtype=torch.float64) / math.sqrt(features),
                        lambda t: t, "contiguous"),
                  draw_input(rng, gen, shape, differentiable=False)]

        def call(backend, views):
            real, w, noise = views

            def critic(x):
                return torch.tanh(x.flatten(1) @ w.to(x.dtype)).sum(1)

            if backend == EAGER:
                return reference.approximate_r1_penalty(critic, real, noise.to(real.dtype), 2 * weight, sigma)
            return approximate_r1_penalty(critic, real, gamma=2 * weight, sigma=sigma, noise=noise, backend=backend)

        return Trial("finite_difference", dtype, inputs, call, 1, settings)
    shape = draw_shape(rng)
    if op == "perturb":
        inputs = [draw_input(rng, gen, shape), draw_input(rng, gen, shape, differentiable=False)]

        def call(backend, views):
            if backend == EAGER:
                return reference.perturb(views[0], views[1].to(views[0].dtype), sigma)
            return perturb(views[0], views[1], sigma=sigma, backend=backend)
    else:
        inputs = [draw_input(rng, gen, shape, scale=sigma), draw_input(rng, gen, shape, scale=sigma)]

        def call(backend, views):
            if backend == EAGER:
                return reference.finite_difference_penalty(views[0], views[1], sigma, weight)
            return finite_difference_penalty(views[0], views[1], sigma=sigma, weight=weight, backend=backend)

    return Trial("finite_difference", dtype, inputs, call, 2, settings)


def vae_trial(rng: random.Random, gen: torch.Generator, dtype: torch.dtype) -> Trial:
    """The VAE ops (issue 14) on (B, ...) data and (B, L) latents, any view, double backward."""
    op = rng.choice(["vae_loss", "gaussian_kl", "bernoulli_nll", "gaussian_nll", "reparameterize"])
    data = draw_shape(rng)
    latent = [data[0], rng.choice(SIZES)]
    reduction, likelihood = rng.choice(["none", "mean", "sum"]), rng.choice(["bernoulli", "gaussian"])
    beta = rng.choice([0.0, 0.5, 1.0, 4.0])
    settings = dict(op=op, reduction=reduction)

    def probabilities(shape):
        item = draw_input(rng, gen, shape)
        item.values = torch.rand(item.values.shape, generator=gen, dtype=torch.float64)
        return item

    if op in ("gaussian_kl", "reparameterize"):
        inputs = [draw_input(rng, gen, latent, scale=2.0), draw_input(rng, gen, latent)] + \
            ([draw_input(rng, gen, latent)] if op == "reparameterize" else [])
    elif op == "bernoulli_nll":
        inputs = [draw_input(rng, gen, data, scale=rng.choice([1.0, 5.0, 30.0])), probabilities(data)]
    elif op == "gaussian_nll":
        inputs = [draw_input(rng, gen, data), draw_input(rng, gen, data)] + \
            ([draw_input(rng, gen, data)] if rng.random() < 0.7 else [])
    else:
        settings.update(likelihood=likelihood, beta=beta)
        target = probabilities(data) if likelihood == "bernoulli" else draw_input(rng, gen, data)
        inputs = [draw_input(rng, gen, data, scale=3.0), target, draw_input(rng, gen, latent),
                  draw_input(rng, gen, latent)]

    def call(backend, views):
        if op == "reparameterize":
            return reference.reparameterize(*views) if backend == EAGER else \
                reparameterize(views[0], views[1], eps=views[2], backend=backend)
        if op == "gaussian_kl":
            return reference.gaussian_kl(*views, reduction) if backend == EAGER else \
                gaussian_kl(*views, reduction=reduction, backend=backend)
        if op == "bernoulli_nll":
            return reference.bernoulli_nll(*views, reduction) if backend == EAGER else \
                bernoulli_nll(*views, reduction=reduction, backend=backend)
        if op == "gaussian_nll":
            logvar = views[2] if len(views) == 3 else None
            return reference.gaussian_nll(views[0], views[1], logvar, reduction) if backend == EAGER else \
                gaussian_nll(views[0], views[1], logvar, reduction=reduction, backend=backend)
        if backend == EAGER:
            return reference.vae_loss(*views, likelihood, beta, reduction)
        return vae_loss(*views, likelihood=likelihood, beta=beta, reduction=reduction, backend=backend)

    return Trial("vae", dtype, inputs, call, 2, settings)


def relativistic_loss_trial(rng: random.Random, gen: torch.Generator, dtype: torch.dtype) -> Trial:
    """discriminator_loss and generator_loss with the relativistic kinds (issue 12): RpGAN
    pairs logits of one shape (in any two layouts), RaGAN takes any two shapes."""
    op = rng.choice(["discriminator_loss", "generator_loss"])
    kind = rng.choice(RELATIVISTIC_KINDS)
    reduction = rng.choice(REDUCTIONS)
    scale = rng.choice([1.0, 5.0, 30.0])
    real_shape = draw_shape(rng)
    fake_shape = real_shape if kind == "relativistic" else draw_shape(rng)
    inputs = [draw_input(rng, gen, real_shape, scale=scale), draw_input(rng, gen, fake_shape, scale=scale)]

    def call(backend, views):
        real, fake = views
        if backend == EAGER:
            if op == "discriminator_loss":
                return reference.discriminator_loss(real, fake, kind, reduction)
            return reference.generator_loss(fake, kind, reduction, real)
        if op == "discriminator_loss":
            return discriminator_loss(real, fake, kind, reduction=reduction, backend=backend)
        return generator_loss(fake, kind, real_logits=real, reduction=reduction, backend=backend)

    return Trial("relativistic_losses", dtype, inputs, call, 2, dict(op=op, kind=kind, reduction=reduction,
                                                                    scale=scale))


FAMILIES: Dict[str, Callable[..., Trial]] = {
    "bias_act": bias_act_trial, "interpolate": interpolate_trial, "grad_norm_penalty": grad_norm_penalty_trial,
    "losses": loss_trial, "relativistic_losses": relativistic_loss_trial, "penalties": penalty_trial,
    "clip": clip_trial, "rmsprop_clip": rmsprop_trial, "finite_difference": finite_difference_trial,
    "vae": vae_trial,
}


def make_trial(family: str, index: int, **kw) -> Trial:
    seed = trial_seed(family, index)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    trial = FAMILIES[family](rng, gen, rng.choice(DTYPES), **kw)
    trial.index, trial.seed = index, seed
    return trial


# ---------------------------------------------------------------- known bugs


@dataclass(frozen=True)
class KnownBug:
    """A bug being fixed in fastgan/ops, kernels or csrc: the trials of `family` that
    `applies` to on a backend are left out of test_fuzz, and run (with `trial_kw`, a
    draw that reaches the bug) by test_fuzz_known_bug as strict xfails on `backends`
    (CPU tensors: where the bug was seen)."""
    family: str
    reason: str
    applies: Callable[[Trial, str], bool]
    backends: Tuple[str, ...]
    trial_kw: Dict[str, object] = field(default_factory=dict)


# None now: the strided/expanded Triton eps, bias_act tanh/sigmoid with gain != 1 and the
# low-precision penalty second derivative were fixed (issues 10 and 16).
KNOWN_BUGS: Dict[str, KnownBug] = {}


def known_bug(trial: Trial, backend: str) -> Optional[str]:
    """The name of the known bug a trial runs into on `backend`, if any."""
    for name, bug in KNOWN_BUGS.items():
        if bug.family == trial.family and bug.applies(trial, backend):
            return name
    return None


# ---------------------------------------------------------------- evaluation


def evaluate(trial: Trial, backend: str, dtype: torch.dtype, device: str) -> Dict[str, torch.Tensor]:
    """Outputs, first derivatives (w.r.t. the differentiable leaves, along fixed random
    upstream gradients) and second derivatives (of <first, v> w.r.t. the leaves and the
    upstream gradients) of one trial, computed in `dtype` from the values rounded to
    the trial's dtype (so that the float64 run sees the very same inputs)."""
    leaves = []
    for item in trial.inputs:
        values = item.values.to(trial.dtype).to(dtype) if item.dtype is None else item.values.to(item.dtype)
        # a copy: in-place ops must not change the trial's values
        leaves.append(values.to(device, copy=True).requires_grad_(item.differentiable and trial.order > 0))
    outputs = trial.call(backend, [item.view(leaf) for item, leaf in zip(trial.inputs, leaves)])
    outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    results = {f"out{k}": out for k, out in enumerate(outputs)}
    if trial.order == 0:
        return {key: value.detach() for key, value in results.items()}
    gen = torch.Generator().manual_seed(trial.seed + 1)

    def like(t):
        return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(trial.dtype).to(device=device, dtype=dtype)

    wrt = [leaf for leaf in leaves if leaf.requires_grad]
    upstream = [like(out).requires_grad_(trial.order > 1) for out in outputs]
    first = torch.autograd.grad(outputs, wrt, upstream, create_graph=trial.order > 1, allow_unused=True)
    first = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(first, wrt)]
    results.update({f"d{k}": g for k, g in enumerate(first)})
    if trial.order > 1:
        total = sum((g * like(g)).sum() for g in first if g.requires_grad)
        if isinstance(total, torch.Tensor):
            second = torch.autograd.grad(total, wrt + upstream, allow_unused=True)
            second = [torch.zeros_like(t) if g is None else g for g, t in zip(second, wrt + upstream)]
            results.update({f"dd{k}": g for k, g in enumerate(second)})
    return {key: value.detach() for key, value in results.items()}


def check_trial(trial: Trial, backend: str, device: str) -> None:
    """AssertionError naming the trial and the result unless `backend` meets the rule."""
    got = evaluate(trial, backend, trial.dtype, device)
    eager = evaluate(trial, EAGER, trial.dtype, device)
    if trial.exact:
        for key, want in eager.items():
            assert got[key].dtype == want.dtype, f"{trial.describe()} {key}: dtype"
            torch.testing.assert_close(got[key], want, rtol=0, atol=0, equal_nan=True,
                                       msg=lambda m: f"{trial.describe()} {key}: {m}")
        return
    exact = evaluate(trial, EAGER, torch.float64, device)
    assert set(got) == set(exact), f"{trial.describe()}: results {sorted(got)} vs {sorted(exact)}"
    for key, ref in exact.items():
        assert got[key].dtype == eager[key].dtype, f"{trial.describe()} {key}: dtype {got[key].dtype}"
        assert_flash_close(got[key], eager[key], ref, f"{trial.describe()} [{backend}] {key}")


def run_trials(family: str, backend: str, device: str, indices: Sequence[int],
               **kw) -> Tuple[List[str], List[str]]:
    """(failures, known-bug trials skipped), each a line describing the trial."""
    failures, skipped = [], []
    for index in indices:
        trial = make_trial(family, index, **kw)
        bug = known_bug(trial, backend)
        if bug is not None:
            skipped.append(f"{trial.describe()}: {bug}")
            continue
        try:
            check_trial(trial, backend, device)
        except Exception as error:  # noqa: BLE001  (every failure is reported with its trial)
            failures.append(f"[{backend}] {type(error).__name__}: {str(error)[:600]}")
    return failures, skipped


# ---------------------------------------------------------------- CI

#: trials per family and backend: a few hundred per family over the CPU backends (cpu, triton,
#: reference), in about 25 s of CPU; scripts/fuzz.py runs more
CI_TRIALS = {"bias_act": 80, "interpolate": 100, "grad_norm_penalty": 80, "losses": 80, "penalties": 50,
             "clip": 150, "rmsprop_clip": 100, "finite_difference": 60, "relativistic_losses": 40, "vae": 80}


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fuzz(family, device, backend, one_thread):
    failures, _ = run_trials(family, backend, device, range(CI_TRIALS[family]))
    assert not failures, f"{len(failures)} of {CI_TRIALS[family]} trials failed:\n" + "\n".join(failures[:5])


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_bfloat16_ragan_double_backward_sums_products_in_float32(device, backend, one_thread):
    """Trial relativistic_losses#928 (beyond CI's trials): the double backward's gradient
    for the upstream gradient, sum(g * saved gradient) over both sides, rounded each
    bfloat16 product, and the sides' large products cancel: 0.797 where the exact value is
    0.745 and eager's 0.742."""
    check_trial(make_trial("relativistic_losses", 928), backend, device)


KNOWN_BUG_TRIALS = 40


def known_bug_trials(name: str, backend: str) -> List[Trial]:
    bug = KNOWN_BUGS[name]
    trials = (make_trial(bug.family, index, **bug.trial_kw) for index in range(KNOWN_BUG_TRIALS))
    return [trial for trial in trials if known_bug(trial, backend) == name]


@pytest.mark.parametrize("name,backend", [
    pytest.param(name, backend, id=f"{name}-{backend}", marks=pytest.mark.xfail(strict=True, reason=bug.reason))
    for name, bug in KNOWN_BUGS.items() for backend in bug.backends if backend in backends_for("cpu")])
def test_fuzz_known_bug(name, backend, one_thread):
    failures = []
    for trial in known_bug_trials(name, backend):
        try:
            check_trial(trial, backend, "cpu")
        except AssertionError as error:
            failures.append(str(error)[:600])
    assert not failures, f"{len(failures)} trials failed:\n" + "\n".join(failures[:3])


@pytest.mark.parametrize("name", sorted(KNOWN_BUGS))
def test_known_bug_draws_reach_the_bug(name):
    """Each known bug's xfail runs trials that meet its condition (else it would fail
    for want of trials, not because of the bug)."""
    assert all(known_bug_trials(name, backend) for backend in KNOWN_BUGS[name].backends)  # any machine


def test_trials_are_reproducible():
    a, b = make_trial("bias_act", 7), make_trial("bias_act", 7)
    assert a.describe() == b.describe() and all(torch.equal(x.values, y.values) for x, y in zip(a.inputs, b.inputs))
    assert trial_seed("bias_act", 7) == zlib.crc32(b"bias_act/7")


@pytest.mark.parametrize("family", ["bias_act", "losses", "interpolate"])
def test_the_rule_catches_a_wrong_backend(family):
    """A 'backend' whose forward is the reference's off by 5% fails the check (the
    harness can fail)."""
    index = next(i for i in range(50) if make_trial(family, i).dtype == torch.float32
                 and make_trial(family, i).settings.get("reduction") != "none")
    trial = make_trial(family, index)
    exact_call = trial.call
    trial.call = lambda backend, views: exact_call(EAGER, views) * (1.05 if backend == "cpu" else 1.0)
    with pytest.raises(AssertionError, match=r"out0: error .* > bound"):
        check_trial(trial, "cpu", "cpu")
