"""Gradient penalties: interpolate, grad_norm_penalty, WGAN-GP/LP, R1, R2 against
the eager autograd formula, for every backend."""
import copy
import functools
import itertools
import os

import pytest
import torch
from conftest import (HAS_CUDA, capture_cuda_graph, cpu_backends, cpu_namespaces, device_backend_pairs, requires_cuda,
                      stable_seed)

import fastgan
from fastgan import reference
from fastgan.models import mlp_critic
from fastgan.nn import FusedBiasAct, fuse_bias_act
from fastgan.ops import (grad_norm_penalty, gradient_penalty, input_gradients, interpolate, r1_penalty,
                         r2_penalty)

SHAPES = [(256, 2), (7, 3, 5, 5), (3, 1), (2, 5000), (1, 9000), (5,)]
LOW = [torch.bfloat16, torch.float16]


@pytest.fixture
def poison_empty():
    """Every torch.empty / at::empty is filled with NaN, so an output element a
    kernel forgot to write shows up."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(previous)


def _randn(shape, dtype, device, seed, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _max_err(x, ref):
    return (x.double() - ref.double()).abs().max().item()


def _conv_critic():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.LeakyReLU(0.2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 1),
    )


# ------------------------------------------------------------------ interpolate


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_interpolate_matches_reference(device, backend, shape, dtype, poison_empty):
    real, fake = _randn(shape, dtype, device, 1), _randn(shape, dtype, device, 2)
    eps = torch.rand(shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(device)
    real.requires_grad_(True)
    fake.requires_grad_(True)
    out = interpolate(real, fake, eps, backend=backend)
    expected = reference.interpolate(real, fake, eps)
    # 8 eps: a GPU fuses the multiply-adds (one rounding less than eager): up to 4 eps here
    torch.testing.assert_close(out, expected, rtol=0, atol=8 * torch.finfo(dtype).eps)
    upstream = _randn(shape, dtype, device, 4)
    got = torch.autograd.grad(out, (real, fake), upstream)
    want = torch.autograd.grad(expected, (real, fake), upstream)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=8 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", LOW)
def test_interpolate_low_precision(device, backend, dtype):
    real, fake = _randn((9, 3, 7), dtype, device, 5), _randn((9, 3, 7), dtype, device, 6)
    eps = torch.rand(9, generator=torch.Generator().manual_seed(7)).to(device)
    exact = reference.interpolate(real.double(), fake.double(), eps.double())
    eager = reference.interpolate(real, fake, eps)
    out = interpolate(real, fake, eps, backend=backend)
    assert out.dtype == dtype
    assert _max_err(out, exact) <= 2 * _max_err(eager, exact) + torch.finfo(dtype).eps


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_interpolate_layouts(device, backend):
    real = _randn((4, 3, 6, 6), torch.float32, device, 8).to(memory_format=torch.channels_last)
    fake = _randn((4, 3, 6, 6), torch.float32, device, 9).to(memory_format=torch.channels_last)
    eps = torch.rand(4, device=device)
    out = interpolate(real, fake, eps, backend=backend)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference.interpolate(real, fake, eps))
    # mixed layouts and strided views are made contiguous
    strided = _randn((4, 3, 12, 6), torch.float32, device, 10)[:, :, ::2]
    out = interpolate(real, strided, eps, backend=backend)
    torch.testing.assert_close(out, reference.interpolate(real, strided, eps))


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_interpolate_seeded_eps_is_reproducible_across_backends(device, backend):
    real, fake = _randn((16, 5), torch.float32, device, 11), _randn((16, 5), torch.float32, device, 12)
    a = interpolate(real, fake, generator=torch.Generator(device=device).manual_seed(0), backend=backend)
    b = interpolate(real, fake, generator=torch.Generator(device=device).manual_seed(0), backend="reference")
    c = interpolate(real, fake, generator=torch.Generator(device=device).manual_seed(1), backend=backend)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    eps = torch.rand(16, generator=torch.Generator(device=device).manual_seed(0), device=device)
    torch.testing.assert_close(a, reference.interpolate(real, fake, eps))


def test_interpolate_bad_inputs():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        interpolate(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match="batch of 0"):
        interpolate(torch.randn(0, 3), torch.randn(0, 3))
    with pytest.raises(TypeError, match="floating-point"):
        interpolate(torch.ones(4, 3, dtype=torch.int64), torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="same dtype"):
        interpolate(x, x.double())
    with pytest.raises(ValueError, match=r"eps must have shape \(B,\)"):
        interpolate(x, x, torch.rand(4, 1))
    with pytest.raises(ValueError, match="batch dimension"):
        interpolate(torch.tensor(1.0), torch.tensor(2.0))
    if HAS_CUDA:
        with pytest.raises(ValueError, match="generator"):
            interpolate(x, x, generator=torch.Generator(device="cuda"))


# ------------------------------------------------------------ grad_norm_penalty

PENALTY_CASES = [
    dict(center=1.0, one_sided=False), dict(center=1.0, one_sided=True), dict(center=0.0, one_sided=False),
    dict(center=2.5, one_sided=True),
]


def _case_id(case):
    return f"c{case['center']}-{'one' if case['one_sided'] else 'two'}"


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", PENALTY_CASES, ids=_case_id)
def test_penalty_matches_reference(device, backend, shape, reduction, case, poison_empty):
    grads = _randn(shape, torch.float64, device, stable_seed(shape, reduction) % 1000, scale=0.6)
    grads.requires_grad_(True)
    out = grad_norm_penalty(grads, weight=3.0, reduction=reduction, backend=backend, **case)
    expected = reference.grad_norm_penalty(grads, weight=3.0, reduction=reduction, **case)
    assert out.shape == expected.shape and out.dtype == grads.dtype
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    upstream = _randn(out.shape, torch.float64, device, 13)
    (got,) = torch.autograd.grad(out, grads, upstream)
    (want,) = torch.autograd.grad(expected, grads, upstream)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 70000), (3000, 40)], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cpu_kernels_over_row_tiles_and_row_runs(shape, reduction):
    # The C++ CPU kernels cut a long row into tiles and hand a run of short rows to one
    # loop, split among threads: both agree with the reference (the Triton interpreter
    # is too slow at these sizes; the shapes above cover it).
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        real, fake = _randn(shape, torch.float64, "cpu", 40), _randn(shape, torch.float64, "cpu", 41)
        eps = torch.rand(shape[0], generator=torch.Generator().manual_seed(42), dtype=torch.float64)
        real.requires_grad_(True)
        fake.requires_grad_(True)

        def run(interp, penalty):
            out = penalty(interp(real, fake, eps), weight=3.0, reduction=reduction)
            return (out, *torch.autograd.grad(out, (real, fake), torch.ones_like(out)))

        got = run(functools.partial(interpolate, backend="cpu"), functools.partial(grad_norm_penalty, backend="cpu"))
        want = run(reference.interpolate, reference.grad_norm_penalty)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.float32] + LOW)
def test_penalty_reduced_precision(device, backend, dtype):
    grads = _randn((33, 3, 17), dtype, device, 14, scale=0.3).requires_grad_(True)
    exact_in = grads.detach().double().requires_grad_(True)
    out = grad_norm_penalty(grads, reduction="none", backend=backend)
    eager = reference.grad_norm_penalty(grads, reduction="none")
    exact = reference.grad_norm_penalty(exact_in, reduction="none")
    assert out.dtype == dtype
    floor = torch.finfo(dtype).eps * exact.abs().max().item()
    assert _max_err(out, exact) <= 2 * _max_err(eager, exact) + floor
    upstream = torch.ones_like(out)
    (g_out,) = torch.autograd.grad(out, grads, upstream)
    (g_eager,) = torch.autograd.grad(eager, grads, upstream)
    (g_exact,) = torch.autograd.grad(exact, exact_in, upstream.double())
    floor = torch.finfo(dtype).eps * g_exact.abs().max().item()
    assert _max_err(g_out, g_exact) <= 2 * _max_err(g_eager, g_exact) + floor


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case", PENALTY_CASES, ids=_case_id)
def test_penalty_zero_gradient_rows_are_finite(device, backend, case):
    grads = _randn((4, 6), torch.float32, device, 15)
    grads[1] = 0
    grads.requires_grad_(True)
    out = grad_norm_penalty(grads, reduction="sum", backend=backend, **case)
    (g,) = torch.autograd.grad(out, grads)
    assert torch.isfinite(out) and torch.isfinite(g).all()
    assert torch.equal(g[1], torch.zeros_like(g[1]))
    torch.testing.assert_close(out, reference.grad_norm_penalty(grads, reduction="sum", **case))


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("weight", [1.0, 10.0])
def test_penalty_rows_of_subnormal_norm_get_no_gradient(device, backend, dtype, weight):
    """A row whose norm is subnormal makes 2 (n - c) / n overflow: its gradient is 0, as
    eager's norm backward gives, not -inf (the CPU kernel's was). Other rows are
    unaffected; an infinite upstream gradient still propagates."""
    grads = _randn((3, 4), torch.float32, device, 18)
    grads[1] = torch.tensor([1e-40, -2e-40, 0.0, 3e-41])
    grads = grads.to(dtype).requires_grad_(True)
    out = grad_norm_penalty(grads, weight=weight, backend=backend)
    (g,) = torch.autograd.grad(out, grads)
    assert torch.equal(g[1], torch.zeros_like(g[1])), g[1]
    ref = grads.detach().double().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(reference.grad_norm_penalty(ref, weight=weight), ref)
    torch.testing.assert_close(g[[0, 2]].double(), g_ref[[0, 2]], atol=0, rtol=4 * torch.finfo(dtype).eps)
    (g_inf,) = torch.autograd.grad(grad_norm_penalty(grads, weight=weight, backend=backend), grads,
                                   torch.tensor(float("inf"), device=device, dtype=dtype))
    assert torch.isinf(g_inf[0]).any()


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_penalty_double_backward_of_rows_of_one_element_is_exact_at_small_norms(device, backend):
    """For a row of one element, (|g| - c)^2 has second derivative 2 whatever |g|: the double
    backward is exactly 2 v, not the difference of two terms of size 2c/|g| (which lost
    c/|g| = 1e5 ulps at |g| = 1e-5). One-sided rows below c are flat: 0."""
    g = torch.tensor([[3e-6], [-2e-5], [7e-4], [0.5]], device=device).requires_grad_(True)
    v = torch.tensor([[0.3], [-1.1], [0.7], [0.9]], device=device)
    for one_sided, want in ((False, 2 * v), (True, torch.zeros_like(v))):
        out = grad_norm_penalty(g, one_sided=one_sided, reduction="sum", backend=backend)
        (d,) = torch.autograd.grad(out, g, create_graph=True)
        (dd,) = torch.autograd.grad(d, g, v)
        assert torch.equal(dd, want), (one_sided, dd)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_penalty_propagates_nan(device, backend):
    grads = _randn((3, 4), torch.float32, device, 16)
    grads[2, 1] = float("nan")
    out = grad_norm_penalty(grads, reduction="none", backend=backend)
    assert torch.isnan(out[2]) and torch.isfinite(out[:2]).all()


@pytest.mark.parametrize("backend", cpu_backends("cpu", "triton"))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", PENALTY_CASES, ids=_case_id)
def test_penalty_gradcheck_and_gradgradcheck(backend, reduction, case):
    grads = _randn((3, 2, 3), torch.float64, "cpu", 17, scale=0.7).requires_grad_(True)
    if case["one_sided"]:  # keep norms away from the kink at the center
        with torch.no_grad():
            grads[0] *= 5
    fn = lambda g: grad_norm_penalty(g, weight=1.5, reduction=reduction, backend=backend, **case)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (grads,))
    assert torch.autograd.gradgradcheck(fn, (grads,))


@pytest.mark.parametrize("backend", cpu_backends("cpu", "triton"))
def test_interpolate_gradcheck_and_gradgradcheck(backend):
    real = _randn((3, 4), torch.float64, "cpu", 18).requires_grad_(True)
    fake = _randn((3, 4), torch.float64, "cpu", 19).requires_grad_(True)
    eps = torch.rand(3, dtype=torch.float64)
    fn = lambda r, f: interpolate(r, f, eps, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (real, fake))
    assert torch.autograd.gradgradcheck(fn, (real, fake))


def test_penalty_bad_inputs():
    g = torch.randn(4, 3)
    with pytest.raises(ValueError, match="reduction"):
        grad_norm_penalty(g, reduction="avg")
    with pytest.raises(ValueError, match="center"):
        grad_norm_penalty(g, center=-1.0)
    with pytest.raises(ValueError, match="weight"):
        grad_norm_penalty(g, weight=float("nan"))
    with pytest.raises(TypeError, match="floating-point"):
        grad_norm_penalty(torch.ones(4, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="batch of 0"):
        grad_norm_penalty(torch.randn(0, 3))
    with pytest.raises(ValueError, match="no elements per sample"):
        grad_norm_penalty(torch.randn(4, 0))


# ---------------------------------------------------- penalties through critics

CRITICS = {
    "mlp": (lambda: mlp_critic(2, 32, 3), (24, 2)),
    "conv": (_conv_critic, (6, 3, 16, 16)),
}


def _param_grads(critic):
    """Parameter gradients (None for parameters the penalty does not reach, such as
    the last layer's bias, which does not change the input gradient)."""
    return [None if p.grad is None else p.grad.clone() for p in critic.parameters()]


def _assert_grads_close(got, want, **tol):
    assert [g is None for g in got] == [w is None for w in want]
    for g, w in zip(got, want):
        if g is not None:
            torch.testing.assert_close(g, w, **tol)


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
@pytest.mark.parametrize("critic_name", sorted(CRITICS))
@pytest.mark.parametrize("one_sided", [False, True])
def test_gradient_penalty_matches_autograd_formula(device, backend, critic_name, one_sided):
    make, shape = CRITICS[critic_name]
    torch.manual_seed(0)
    critic = make().to(device=device, dtype=torch.float64)
    real, fake = _randn(shape, torch.float64, device, 20), _randn(shape, torch.float64, device, 21)
    eps = torch.rand(shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(22)).to(device)
    penalty = gradient_penalty(critic, real, fake, eps=eps, one_sided=one_sided, backend=backend)
    penalty.backward()
    got = _param_grads(critic)
    critic.zero_grad()
    expected = reference.gradient_penalty(critic, real, fake, eps, one_sided=one_sided)
    expected.backward()
    torch.testing.assert_close(penalty, expected, rtol=1e-10, atol=1e-12)
    _assert_grads_close(got, _param_grads(critic), rtol=1e-9, atol=1e-12)
    assert real.grad is None and fake.grad is None


def _mlp_critic_with(act):
    return torch.nn.Sequential(torch.nn.Linear(2, 32), act(), torch.nn.Linear(32, 32), act(),
                               torch.nn.Linear(32, 1))


FUSED_CRITICS = {
    "mlp-lrelu": (lambda: mlp_critic(2, 32, 3), (24, 2)),
    "mlp-tanh": (lambda: _mlp_critic_with(torch.nn.Tanh), (24, 2)),
    "mlp-silu": (lambda: _mlp_critic_with(torch.nn.SiLU), (24, 2)),
    "conv-lrelu": (_conv_critic, (6, 3, 16, 16)),
}


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
@pytest.mark.parametrize("critic_name", sorted(FUSED_CRITICS))
def test_gradient_penalty_through_fused_bias_act_critic(device, backend, critic_name):
    """fastgan's penalty through a critic whose bias + activation pairs are FusedBiasAct
    layers (its double backward fused) equals the eager formula through the original
    nn critic: the value and every parameter gradient (fuse_bias_act keeps the
    parameter order; a bias before lrelu gets no gradient from the penalty, which eager
    reports as zeros)."""
    make, shape = FUSED_CRITICS[critic_name]
    torch.manual_seed(0)
    eager = make().to(device=device, dtype=torch.float64)
    fused = fuse_bias_act(eager, backend=backend)
    assert any(isinstance(m, FusedBiasAct) for m in fused.modules())
    real, fake = _randn(shape, torch.float64, device, 30), _randn(shape, torch.float64, device, 31)
    eps = torch.rand(shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(32)).to(device)
    penalty = gradient_penalty(fused, real, fake, eps=eps, backend=backend)
    penalty.backward()
    expected = reference.gradient_penalty(eager, real, fake, eps)
    expected.backward()
    torch.testing.assert_close(penalty, expected, rtol=1e-10, atol=1e-12)
    got, want = list(fused.parameters()), list(eager.parameters())
    assert [p.shape for p in got] == [p.shape for p in want]
    for p, q in zip(got, want):
        g = torch.zeros_like(p) if p.grad is None else p.grad
        w = torch.zeros_like(q) if q.grad is None else q.grad
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
@pytest.mark.parametrize("which", ["r1", "r2"])
def test_r1_r2_match_autograd_formula(device, backend, which):
    make, shape = CRITICS["conv"]
    torch.manual_seed(1)
    critic = make().to(device=device, dtype=torch.float64)
    x = _randn(shape, torch.float64, device, 23)
    fn = r1_penalty if which == "r1" else r2_penalty
    penalty = fn(critic, x, gamma=4.0, backend=backend)
    penalty.backward()
    got = _param_grads(critic)
    critic.zero_grad()
    expected = reference.r1_penalty(critic, x, gamma=4.0)
    expected.backward()
    torch.testing.assert_close(penalty, expected, rtol=1e-10, atol=1e-12)
    _assert_grads_close(got, _param_grads(critic), rtol=1e-9, atol=1e-12)
    assert x.grad is None


def test_precomputed_outputs_reuse_the_forward():
    torch.manual_seed(2)
    critic = mlp_critic(2, 16, 2).double()
    real = torch.randn(10, 2, dtype=torch.float64)
    x = real.detach().requires_grad_(True)
    logits = critic(x)
    r1 = r1_penalty(None, x, gamma=2.0, outputs=logits)
    torch.testing.assert_close(r1, r1_penalty(critic, real, gamma=2.0))
    fake = torch.randn(10, 2, dtype=torch.float64)
    eps = torch.rand(10, dtype=torch.float64)
    x_hat = interpolate(real, fake, eps).requires_grad_(True)
    gp = gradient_penalty(None, None, None, outputs=critic(x_hat), inputs=x_hat)
    torch.testing.assert_close(gp, gradient_penalty(critic, real, fake, eps=eps))


def test_gradients_reach_real_and_fake_only_if_they_require_grad():
    torch.manual_seed(3)
    critic = mlp_critic(2, 16, 2).double()
    real = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    fake = torch.randn(8, 2, dtype=torch.float64)
    eps = torch.rand(8, dtype=torch.float64)
    gradient_penalty(critic, real, fake, eps=eps).backward()
    expected_real = torch.autograd.grad(reference.gradient_penalty(critic, real, fake, eps), real,
                                        allow_unused=True)[0]
    assert real.grad is not None and fake.grad is None
    # the reference detaches; check against a non-detached autograd formula instead
    x_hat = reference.interpolate(real, fake, eps)
    (g,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    (want,) = torch.autograd.grad(reference.grad_norm_penalty(g, weight=10.0), real)
    torch.testing.assert_close(real.grad, want)
    assert expected_real is None


def test_penalty_bad_critics_and_inputs():
    x = torch.randn(4, 2)
    constant = lambda inp: torch.ones(inp.shape[0], requires_grad=True)  # noqa: E731
    with pytest.raises(ValueError, match="does not depend on its input"):
        r1_penalty(constant, x)
    with pytest.raises(ValueError, match="does not depend on its input"):
        r1_penalty(lambda inp: torch.zeros(inp.shape[0]), x)
    with pytest.raises(ValueError, match="must require grad"):
        r1_penalty(None, x, outputs=torch.randn(4, requires_grad=True))
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(mlp_critic(2, 4, 1), x, torch.randn(5, 2))
    with pytest.raises(ValueError, match="batch of 0"):
        r1_penalty(mlp_critic(2, 4, 1), torch.randn(0, 2))
    with pytest.raises(TypeError, match="floating-point"):
        r2_penalty(mlp_critic(2, 4, 1), torch.ones(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="inputs="):
        gradient_penalty(None, None, None, outputs=torch.randn(4, requires_grad=True))
    with pytest.raises(ValueError, match="gamma"):
        r1_penalty(mlp_critic(2, 4, 1), x, gamma=-1.0)


def test_autocast_bfloat16_penalty_is_close_to_float32():
    torch.manual_seed(4)
    critic = _conv_critic()
    real, fake = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    eps = torch.rand(6)
    full = gradient_penalty(critic, real, fake, eps=eps)
    full.backward()
    full_grads = _param_grads(critic)
    critic.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = gradient_penalty(critic, real, fake, eps=eps)
    low.backward()
    assert torch.isfinite(low)
    torch.testing.assert_close(low.float(), full, rtol=0.1, atol=1e-2)
    for g, w in zip(_param_grads(critic), full_grads):
        assert (g is None) == (w is None)
        if g is not None:
            assert torch.isfinite(g).all()
            assert (g - w).norm() <= 0.1 * w.norm() + 1e-3


def test_grad_scaler_recipe_gives_the_unscaled_penalty():
    """The documented recipe: pass the GradScaler so the inner gradients are taken
    on the scaled output and unscaled before the penalty; then scale the total loss."""
    torch.manual_seed(5)
    critic = mlp_critic(2, 16, 2)
    real, fake, eps = torch.randn(8, 2), torch.randn(8, 2), torch.rand(8)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scaled = gradient_penalty(critic, real, fake, eps=eps, scaler=scaler)
    plain = gradient_penalty(critic, real, fake, eps=eps)
    torch.testing.assert_close(scaled, plain, rtol=1e-5, atol=1e-6)
    optimizer = torch.optim.SGD(critic.parameters(), lr=0.1)
    scaler.scale(scaled).backward()
    scaler.step(optimizer)
    scaler.update()
    assert all(torch.isfinite(p).all() for p in critic.parameters())


def test_input_gradients_direct():
    x = torch.randn(3, 2, requires_grad=True)
    g = input_gradients((x ** 2).sum(1), x)
    torch.testing.assert_close(g, 2 * x)
    assert g.requires_grad


@pytest.mark.parametrize("namespace", cpu_namespaces())
def test_opcheck_penalty_ops(namespace):
    grads = torch.randn(5, 3, 4)
    eps = torch.rand(5)
    for ns in (getattr(torch.ops, namespace),):
        torch.library.opcheck(ns.interpolate.default, (torch.randn(5, 3, 4, requires_grad=True),
                                                       torch.randn(5, 3, 4, requires_grad=True), eps))
        torch.library.opcheck(ns.interpolate_backward.default, (torch.randn(5, 3, 4, requires_grad=True), eps,
                                                                True, False))
        for reduction, one_sided in itertools.product((0, 1, 2), (False, True)):
            torch.library.opcheck(ns.grad_norm_penalty.default,
                                  (grads.clone().requires_grad_(True), 1.0, 2.0, one_sided, reduction))
        loss, norms = ns.grad_norm_penalty(grads, 1.0, 2.0, False, 1)
        torch.library.opcheck(ns.grad_norm_penalty_backward.default,
                              (torch.ones(()).requires_grad_(True), grads.clone().requires_grad_(True), norms,
                               1.0, 2.0, False, 1))


def test_first_order_pieces_compile():
    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(real, fake, eps, grads):
        return interpolate(real, fake, eps).sum() + grad_norm_penalty(grads)

    real, fake, eps = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4)
    grads = torch.randn(4, 3, requires_grad=True)
    out = step(real, fake, eps, grads)
    out.backward()
    (expected_grad,) = torch.autograd.grad(reference.grad_norm_penalty(grads), grads)
    torch.testing.assert_close(out, reference.interpolate(real, fake, eps).sum() + reference.grad_norm_penalty(grads))
    torch.testing.assert_close(grads.grad, expected_grad)


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gradient_penalty_step_in_cuda_graph(backend):
    # Replays of a captured penalty step train the critic exactly as the same steps run
    # eagerly (fixed eps: the graph replays the same inputs).
    torch.manual_seed(6)
    critic = mlp_critic(2, 64, 3).cuda()
    eager_critic = copy.deepcopy(critic)
    real, fake = torch.randn(64, 2, device="cuda"), torch.randn(64, 2, device="cuda")
    eps = torch.rand(64, device="cuda")

    def make_step(net):
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, capturable=True)

        def step():
            optimizer.zero_grad(set_to_none=False)
            penalty = gradient_penalty(net, real, fake, eps=eps, backend=backend)
            penalty.backward()
            optimizer.step()
            return penalty
        return step

    graph, _, captured = capture_cuda_graph(make_step(critic), warmup=3)
    for _ in range(3):
        graph.replay()
    eager_step = make_step(eager_critic)
    for _ in range(6):
        expected = eager_step()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, expected)
    for p, q in zip(critic.parameters(), eager_critic.parameters()):
        torch.testing.assert_close(p, q)


@requires_cuda
def test_cuda_penalty_is_one_launch_forward_and_backward():
    from torch.profiler import ProfilerActivity, profile

    grads = torch.randn(16, 3, 64, 64, device="cuda", requires_grad=True)
    grad_norm_penalty(grads, backend="cuda").backward()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        loss = grad_norm_penalty(grads, backend="cuda")
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) == 1, kernels
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.autograd.grad(loss, grads)
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and "penalty" in e.name]
    assert len(kernels) == 1, kernels


def test_backend_default_applies(monkeypatch):
    # The default backend (set_backend, else $FASTGAN_BACKEND) decides which
    # implementation runs: spy on the reference and on the CPU op.
    calls = []
    monkeypatch.setattr(reference, "grad_norm_penalty", lambda *a: calls.append("reference") or a[0].sum())
    monkeypatch.setattr(reference, "interpolate", lambda r, f, e: calls.append("reference") or r)
    grads = torch.randn(3, 4)
    monkeypatch.setenv("FASTGAN_BACKEND", "reference")
    grad_norm_penalty(grads)
    interpolate(grads, grads)
    assert calls == ["reference", "reference"]
    fastgan.set_backend("cpu")  # the process-wide default wins over the environment
    grad_norm_penalty(grads)
    interpolate(grads, grads)
    assert calls == ["reference", "reference"]
    with fastgan.use_backend("cuda"):  # a default that cannot run these tensors is an error, not ignored
        with pytest.raises(fastgan.BackendError, match="cuda"):
            grad_norm_penalty(grads)
        with pytest.raises(fastgan.BackendError, match="cuda"):
            interpolate(grads, grads)

@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_penalty_graphs_captured_after_a_freed_graph(backend):
    # The penalty's workspace must not outlive the graph it was made in: capture graph A,
    # free it, then capture and replay graph B on the same capture stream.
    grads = torch.randn(64, 3, 32, 32, device="cuda")
    step = lambda: grad_norm_penalty(grads, backend=backend)  # noqa: E731
    graph_a, _, _ = capture_cuda_graph(step)
    graph_a.replay()
    del graph_a
    torch.cuda.empty_cache()
    graph_b, _, captured = capture_cuda_graph(step)
    for _ in range(3):
        graph_b.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(captured, reference.grad_norm_penalty(grads))
    torch.testing.assert_close(step(), reference.grad_norm_penalty(grads))  # and uncaptured after


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_penalty_graphs_replayed_concurrently_on_two_streams(backend):
    # Two graphs captured on one stream, replayed at once on two others: each has its own
    # counter, so neither sees the other's blocks.
    inputs = [torch.randn(256, 3, 64, 64, device="cuda") for _ in range(2)]
    graphs = [capture_cuda_graph(lambda g=g: grad_norm_penalty(g, backend=backend)) for g in inputs]
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    for _ in range(5):
        for (graph, _, _), stream in zip(graphs, streams):
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                graph.replay()
        for stream in streams:
            torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        for (_, _, captured), g in zip(graphs, inputs):
            torch.testing.assert_close(captured, reference.grad_norm_penalty(g))


@requires_cuda
@pytest.mark.timeout(200)  # the subprocess's own limit is 170 s; the GPU check runs pytest with --timeout 120
def test_penalty_benchmark_sequence_runs(tmp_path):
    # The first GPU run crashed here: the DCGAN-64 case after the toy-MLP case's graphs.
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "benchmarks", "--suite", "penalty", "--device", "cuda", "--quick",
                             "--no-compile", "--out", str(tmp_path)], capture_output=True, text=True, timeout=170,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("layout", ["strided", "expanded"])
def test_interpolate_reads_strided_and_expanded_eps(device, backend, layout):
    # The Triton kernels read eps as if contiguous: a column of a (B, 3) tensor gave
    # errors of 0.6-0.9, and an expanded scalar read past its one-element allocation.
    generator = torch.Generator().manual_seed(stable_seed("eps", layout))
    real = torch.randn(33, 5, generator=generator).to(device).requires_grad_(True)
    fake = torch.randn(33, 5, generator=generator).to(device).requires_grad_(True)
    eps = torch.rand(33, 3, generator=generator)[:, 1] if layout == "strided" else \
        torch.rand(1, generator=generator).expand(33)
    eps = eps.to(device)
    out = interpolate(real, fake, eps, backend=backend)
    want = reference.interpolate(real, fake, eps.contiguous())
    torch.testing.assert_close(out, want)
    upstream = torch.randn(33, 5, generator=generator).to(device)
    got = torch.autograd.grad(out, (real, fake), upstream)
    expected = torch.autograd.grad(want, (real, fake), upstream)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_penalty_second_derivative_low_precision_small_norms(device, backend, dtype):
    # Per-sample norms of 1e-4..1e-3: coef'(n) = 2c/n^2 overflows float16 (it gave inf,
    # and 32 in bfloat16, for a truth of 0.5) unless computed in the accumulation type.
    generator = torch.Generator().manual_seed(stable_seed("small norms", str(dtype)))
    base = torch.randn(6, 8, generator=generator, dtype=torch.float64)
    base = base / base.norm(dim=1, keepdim=True) * torch.logspace(-4, -3, 6, dtype=torch.float64)[:, None]
    direction = torch.randn(6, 8, generator=generator, dtype=torch.float64)

    def second(grads, v, **kwargs):
        grads = grads.clone().requires_grad_(True)
        (first,) = torch.autograd.grad(grad_norm_penalty(grads, **kwargs), grads, create_graph=True)
        return torch.autograd.grad(first, grads, v)[0]

    exact = second(base.to(device), direction.to(device), backend="reference")
    got = second(base.to(dtype).to(device), direction.to(dtype).to(device), backend=backend).double()
    assert torch.isfinite(got).all(), got
    err = (got - exact).abs().max().item()
    assert err <= 8 * torch.finfo(dtype).eps * exact.abs().max().item(), (err, exact.abs().max().item())


@pytest.mark.parametrize("backend", cpu_backends("cpu", "triton", "reference"))
def test_interpolate_treats_eps_as_a_constant(backend):
    """eps that requires grad (e.g. drawn by a module) gets no gradient on any backend,
    whichever path the front end takes."""
    real, fake = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    eps = torch.rand(4, requires_grad=True)
    interpolate(real, fake, eps, backend=backend).pow(2).sum().backward()
    assert eps.grad is None
    torch.testing.assert_close(real.grad, 2 * eps.detach()[:, None] * (eps.detach()[:, None] * real.detach() +
                                                                      (1 - eps.detach()[:, None]) * fake.detach()))
