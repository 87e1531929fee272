"""GAN losses (docs/theory.md §2–3): every backend against the eager reference.

Each test draws fresh inputs from its own seeded generator. Outputs our kernels
allocate are poisoned with NaN (deterministic mode fills uninitialised memory),
so an element a kernel forgot to write fails the comparison.
"""
import math

import pytest
import torch
from conftest import (assert_compiled_matches_eager, backends_for, capture_cuda_graph, device_backend_pairs,
                      requires_cuda, stable_seed)

import fastgan
from fastgan import reference
from fastgan.ops import discriminator_loss, gan_value, generator_loss
from fastgan.ops.losses import (DISCRIMINATOR_TERMS, GENERATOR_TERMS, IDENTITY, LINEAR_TERMS, NEG_IDENTITY,
                                SOFTPLUS, SOFTPLUS_NEG)

# (op, kind): every loss the family computes.
CASES = [("D", kind) for kind in DISCRIMINATOR_TERMS] + [("G", kind) for kind in GENERATOR_TERMS] + [("V", "value")]
REDUCTIONS = ["mean", "sum", "none"]
LOW_PRECISION = [torch.bfloat16, torch.float16]


def _case_id(case):
    return f"{case[0]}-{case[1]}"


def _reductions(case):
    return ["mean"] if case[0] == "V" else REDUCTIONS


def _case_reductions():
    return [pytest.param(case, red, id=f"{_case_id(case)}-{red}") for case in CASES for red in _reductions(case)]


def _n_inputs(case):
    return 1 if case[0] == "G" else 2


def _fastgan(case, inputs, reduction, backend):
    op, kind = case
    if op == "D":
        return discriminator_loss(*inputs, kind, reduction=reduction, backend=backend)
    if op == "G":
        return generator_loss(*inputs, kind, reduction=reduction, backend=backend)
    return gan_value(*inputs, backend=backend)


def _reference(case, inputs, reduction):
    op, kind = case
    if op == "D":
        return reference.discriminator_loss(*inputs, kind, reduction)
    if op == "G":
        return reference.generator_loss(*inputs, kind, reduction)
    return reference.gan_value(*inputs)


def _tuple(out):
    return tuple(out) if isinstance(out, tuple) else (out,)


def _magnitude(case, inputs, reduction):
    """The loss computed on |terms| (float64): the scale of any summation error."""
    terms = _tuple(_reference(case, [x.double() for x in inputs], "none") if case[0] != "V"
                   else reference.discriminator_loss(*[x.double() for x in inputs], "minimax", "none"))
    if reduction == "none":
        return [t.abs() for t in terms]
    return sum(t.abs().mean() if reduction == "mean" else t.abs().sum() for t in terms)


def _random_shapes(generator, n):
    """n logit shapes: (B,), (B, 1) or PatchGAN (B, 1, H, W), with odd batch sizes."""
    shapes = []
    for _ in range(n):
        batch = int(torch.randint(1, 700, (1,), generator=generator)) | 1
        layout = int(torch.randint(0, 3, (1,), generator=generator))
        if layout == 0:
            shapes.append((batch,))
        elif layout == 1:
            shapes.append((batch, 1))
        else:
            side = int(torch.randint(2, 9, (1,), generator=generator))
            shapes.append((batch % 37 + 1, 1, side, side + 1))
    return shapes


def _logits(shapes, generator, dtype, device, scale=3.0):
    return [(torch.randn(s, generator=generator, dtype=torch.float64) * scale).to(device=device, dtype=dtype)
            for s in shapes]


def _grad_weights(outputs, generator):
    """Non-unit gradients for the outputs: the backward must scale by them."""
    return [torch.randn(o.shape, generator=generator, dtype=torch.float64).add_(1.5) for o in outputs]


def _forward_backward(fn, inputs, weights):
    """(outputs, gradients of sum(w * output) w.r.t. every input)."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    outputs = _tuple(fn(leaves))
    total = sum((o * w.to(device=o.device, dtype=o.dtype)).sum() for o, w in zip(outputs, weights))
    grads = torch.autograd.grad(total, leaves)
    return [o.detach() for o in outputs], list(grads)


@pytest.fixture
def poisoned_outputs():
    """torch.empty (and at::empty in the C++ ops) fill with NaN while this is on."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    assert torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.use_deterministic_algorithms(previous)


def _assert_matches_reference(case, inputs, reduction, backend, weights, rtol, grad_rtol):
    outs, grads = _forward_backward(lambda xs: _fastgan(case, xs, reduction, backend), inputs, weights)
    exact_inputs = [x.double() for x in inputs]
    ref_outs, ref_grads = _forward_backward(lambda xs: _reference(case, xs, reduction), exact_inputs, weights)
    magnitude = _magnitude(case, inputs, reduction)
    for out, ref, x in zip(outs, ref_outs, inputs):
        assert out.dtype == x.dtype and out.shape == ref.shape
    if reduction == "none":
        for out, ref, mag in zip(outs, ref_outs, magnitude):
            torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=rtol * float(mag.max()))
    else:
        assert abs(float(outs[0]) - float(ref_outs[0])) <= rtol * float(magnitude) + 1e-300, (outs, ref_outs)
    for grad, ref, x in zip(grads, ref_grads, inputs):
        assert grad.dtype == x.dtype and grad.shape == x.shape
        torch.testing.assert_close(grad.double(), ref, rtol=grad_rtol, atol=grad_rtol * float(ref.abs().max()))


# ---- accuracy ----


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions())
@pytest.mark.parametrize("seed", [0, 1])
def test_float64_matches_reference(device, backend, case, reduction, seed, poisoned_outputs):
    generator = torch.Generator().manual_seed(stable_seed(_case_id(case), reduction, seed))
    inputs = _logits(_random_shapes(generator, _n_inputs(case)), generator, torch.float64, device)
    outs = _tuple(_fastgan(case, inputs, reduction, backend))
    weights = _grad_weights(outs, generator)
    _assert_matches_reference(case, inputs, reduction, backend, weights, rtol=1e-12, grad_rtol=1e-12)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", [p for p in _case_reductions() if p.values[1] != "none"])
def test_large_and_odd_batches(device, backend, case, reduction, poisoned_outputs):
    """Sizes that span many CPU chunks, several Triton programs and CUDA blocks
    (the last-block reduction), with ragged tails; real and fake sizes differ."""
    generator = torch.Generator().manual_seed(stable_seed(_case_id(case), reduction, "large"))
    if backend == "triton" and device == "cpu":  # the interpreter is slow; still 4 programs
        shapes = [(20001,), (3, 1, 37, 41)][: _n_inputs(case)]
    else:  # above the CPU's parallel threshold (32K elements)
        shapes = [(70001,), (3, 1, 97, 101)][: _n_inputs(case)]
    inputs = _logits(shapes, generator, torch.float64, device)
    weights = [torch.tensor(0.75, dtype=torch.float64)]
    _assert_matches_reference(case, inputs, reduction, backend, weights, rtol=1e-12, grad_rtol=1e-12)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions())
def test_float32_matches_reference(device, backend, case, reduction, poisoned_outputs):
    generator = torch.Generator().manual_seed(stable_seed(_case_id(case), reduction, "f32"))
    inputs = _logits([(4099,), (2, 1, 30, 31)][: _n_inputs(case)], generator, torch.float32, device)
    weights = _grad_weights(_tuple(_reference(case, inputs, reduction)), generator)
    _assert_matches_reference(case, inputs, reduction, backend, weights, rtol=2e-6, grad_rtol=2e-6)


def _max_err(x, exact):
    return float((x.double() - exact).abs().max())


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("case,reduction", _case_reductions())
def test_low_precision_within_twice_eager_error(device, backend, dtype, case, reduction, poisoned_outputs):
    """flash-attention's rule: at most twice as far from the float64 result as
    eager PyTorch in the same dtype, plus a floor of one unit in the last place
    of the result's magnitude. All three see the same rounded inputs."""
    generator = torch.Generator().manual_seed(stable_seed(_case_id(case), reduction, str(dtype)))
    shapes = [(1023, 1), (3, 1, 17, 19)][: _n_inputs(case)]
    inputs = _logits(shapes, generator, dtype, device)
    weights = _grad_weights(_tuple(_reference(case, inputs, reduction)), generator)
    ours = _forward_backward(lambda xs: _fastgan(case, xs, reduction, backend), inputs, weights)
    eager = _forward_backward(lambda xs: _reference(case, xs, reduction), inputs, weights)
    exact = _forward_backward(lambda xs: _reference(case, xs, reduction), [x.double() for x in inputs], weights)
    eps = torch.finfo(dtype).eps
    for kind in (0, 1):  # outputs, then gradients
        for o, e, x in zip(ours[kind], eager[kind], exact[kind]):
            assert o.dtype == dtype and torch.isfinite(o).all()
            floor = eps * float(x.abs().max())
            assert _max_err(o, x) <= 2 * _max_err(e, x) + floor, (kind, _max_err(o, x), _max_err(e, x), floor)
    if reduction != "none" and backend != "reference":
        # Fused: terms and sums in float32, one rounding at the end, so within half an
        # ulp of the exact loss plus float32 summation error (eager rounds each side's
        # mean, then their sum).
        loss, want = float(ours[0][0]), float(exact[0][0])
        half_ulp = 0.5 * eps * 2.0 ** math.floor(math.log2(abs(want)))
        assert abs(loss - want) <= half_ulp + 1e-5 * float(_magnitude(case, inputs, reduction)), (loss, want)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", [("D", "hinge"), ("D", "wasserstein"), ("G", "hinge")], ids=_case_id)
def test_piecewise_linear_terms_are_exact(device, backend, dtype, case, poisoned_outputs):
    """relu(1 -+ l) and -+l need one rounding at most (1 -+ l, to the dtype, to
    nearest even), and their gradients are +-grad or 0: equal to eager PyTorch bit
    for bit in every dtype, so a store that truncates or skips an element fails."""
    generator = torch.Generator().manual_seed(stable_seed(_case_id(case), str(dtype)))
    inputs = _logits([(515,), (3, 1, 7, 9)][: _n_inputs(case)], generator, dtype, device, scale=2.0)
    weights = [torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype).double() for x in inputs]
    ours = _forward_backward(lambda xs: _fastgan(case, xs, "none", backend), inputs, weights)
    eager = _forward_backward(lambda xs: _reference(case, xs, "none"), inputs, weights)
    for got, want in zip(ours[0] + ours[1], eager[0] + eager[1]):
        assert got.dtype == want.dtype and torch.equal(got, want)


EXTREMES = [1e4, -1e4, 3e3, -3e3, 100.0, -100.0, 88.0, -88.0, 40.0, -40.0, 20.5, -20.5, 1.0, -1.0, 0.0, 1e-3, -7e-8]


def _extreme_params():
    # float16 cannot represent (1e4)^2 / 2 or a sum of 1e4s (its range ends at 65504):
    # those losses overflow in eager PyTorch too, so they are left out for float16.
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        for p in _case_reductions():
            case, reduction = p.values
            if dtype == torch.float16 and (case[1] == "least_squares" or reduction == "sum"):
                continue
            yield pytest.param(dtype, case, reduction, id=f"{str(dtype)[6:]}-{p.id}")


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype,case,reduction", list(_extreme_params()))
def test_extreme_logits_finite_and_exact(device, backend, dtype, case, reduction):
    """Logits up to +-1e4 give finite losses and gradients equal to the float64
    reference on the same (rounded) logits, within the dtype's precision."""
    values = torch.tensor(EXTREMES, dtype=torch.float64)
    inputs = [values.to(device=device, dtype=dtype), values.flip(0)[:-3].to(device=device, dtype=dtype)]
    inputs = inputs[: _n_inputs(case)]
    weights = [torch.tensor(1.0, dtype=torch.float64)] if reduction != "none" else [
        torch.ones(x.shape, dtype=torch.float64) for x in inputs]
    outs, grads = _forward_backward(lambda xs: _fastgan(case, xs, reduction, backend), inputs, weights)
    ref_outs, ref_grads = _forward_backward(lambda xs: _reference(case, xs, reduction),
                                            [x.double() for x in inputs], weights)
    rtol = 1e-12 if dtype == torch.float64 else 4 * torch.finfo(dtype).eps
    magnitude = _magnitude(case, inputs, reduction)
    for out, ref, mag in zip(outs, ref_outs, magnitude if reduction == "none" else [magnitude]):
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=rtol * float(mag.max()))
    for grad, ref in zip(grads, ref_grads):
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad.double(), ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions())
def test_nan_logits_propagate(device, backend, case, reduction):
    """NaN logits give a NaN loss (or NaN terms where they are), never a crash;
    gradients follow torch element for element (relu passes its gradient at NaN)."""
    generator = torch.Generator().manual_seed(11)
    inputs = _logits([(40,), (7, 1, 2, 3)][: _n_inputs(case)], generator, torch.float32, device)
    for x in inputs:
        x.view(-1)[::5] = float("nan")
    weights = [torch.tensor(1.0, dtype=torch.float64)] if reduction != "none" else [
        torch.ones(x.shape, dtype=torch.float64) for x in inputs]
    outs, grads = _forward_backward(lambda xs: _fastgan(case, xs, reduction, backend), inputs, weights)
    ref_outs, ref_grads = _forward_backward(lambda xs: _reference(case, xs, reduction), inputs, weights)
    if reduction == "none":
        for out, x in zip(outs, inputs):
            assert torch.equal(torch.isnan(out), torch.isnan(x))
    else:
        assert torch.isnan(outs[0])
    for got, want in zip(outs + grads, ref_outs + ref_grads):
        torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-6)


# ---- the game's value (docs/theory.md §2) ----


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_gan_value_at_half_is_minus_two_ln_two(device, backend, dtype):
    """D = sigmoid(0) = 1/2 everywhere: V = ln(1/2) + ln(1/2) = -2 ln 2."""
    real = torch.zeros(37, 1, device=device, dtype=dtype)
    fake = torch.zeros(5, 1, 3, 3, device=device, dtype=dtype)
    value = gan_value(real, fake, backend=backend)
    ulp = torch.finfo(dtype).eps * 2 * math.log(2)
    assert value.dtype == dtype and abs(float(value) + 2 * math.log(2)) <= 2 * ulp, float(value)
    d_loss = discriminator_loss(real, fake, "minimax", backend=backend)
    assert abs(float(d_loss) - 2 * math.log(2)) <= 2 * ulp


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
def test_gan_value_with_optimal_discriminator_is_js(device, backend):
    """docs/theory.md §2's theorem on a discrete example: with D* = p / (p + q),
    V(G, D*) = -2 ln 2 + 2 JS(p || q). Samples: each point repeated in
    proportion to its probability, logits ln(p / q) (so sigmoid = D*)."""
    p = torch.tensor([4, 2, 1, 1], dtype=torch.float64) / 8
    q = torch.tensor([1, 1, 2, 4], dtype=torch.float64) / 8
    logits = torch.log(p / q)
    real = logits.repeat_interleave((p * 8).long()).to(device)
    fake = logits.repeat_interleave((q * 8).long()).to(device)
    m = (p + q) / 2
    js = 0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum()
    value = gan_value(real, fake, backend=backend)
    assert abs(float(value) - float(-2 * math.log(2) + 2 * js)) < 1e-14
    assert float(value) > -2 * math.log(2)  # p != q


# ---- shapes, layouts, reductions ----


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "V"], ids=_case_id)
def test_reduction_none_shapes_and_pairs(device, backend, case):
    real = torch.randn(6, 1, 4, 4, device=device)
    fake = torch.randn(9, device=device)
    out = _fastgan(case, [real, fake][: _n_inputs(case)], "none", backend)
    if case[0] == "D":
        assert isinstance(out, tuple) and len(out) == 2
        assert out[0].shape == real.shape and out[1].shape == fake.shape
        mean = _fastgan(case, [real, fake], "mean", backend)
        total = _fastgan(case, [real, fake], "sum", backend)
        torch.testing.assert_close(mean, out[0].mean() + out[1].mean())
        torch.testing.assert_close(total, out[0].sum() + out[1].sum())
    else:
        assert isinstance(out, torch.Tensor) and out.shape == real.shape
        torch.testing.assert_close(_fastgan(case, [real], "mean", backend), out.mean())
        torch.testing.assert_close(_fastgan(case, [real], "sum", backend), out.sum())


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions())
def test_non_contiguous_logits(device, backend, case, reduction, poisoned_outputs):
    generator = torch.Generator().manual_seed(5)
    base = _logits([(40, 30), (9, 1, 8, 8)], generator, torch.float64, device)
    inputs = [base[0][::2, 1::3].t(), base[1].permute(0, 1, 3, 2)][: _n_inputs(case)]
    assert not any(x.is_contiguous() for x in inputs)
    outs = _tuple(_reference(case, inputs, reduction))
    weights = _grad_weights(outs, generator)
    _assert_matches_reference(case, inputs, reduction, backend, weights, rtol=1e-12, grad_rtol=1e-12)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_only_one_side_requires_grad(device, backend):
    real = torch.randn(10, device=device, dtype=torch.float64)
    fake = torch.randn(12, device=device, dtype=torch.float64, requires_grad=True)
    loss = discriminator_loss(real, fake, "hinge", backend=backend)
    (grad,) = torch.autograd.grad(loss, fake)
    expected = (1 + fake.detach() > 0).double() / fake.numel()
    torch.testing.assert_close(grad, expected)
    assert discriminator_loss(real, fake.detach(), backend=backend).grad_fn is None


def test_cpu_sum_is_deterministic_across_thread_counts():
    generator = torch.Generator().manual_seed(9)
    real, fake = _logits([(300001,), (64, 1, 70, 70)], generator, torch.float32, "cpu")
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(discriminator_loss(real, fake, "minimax", backend="cpu"))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("backend", [b for b in backends_for("cpu") if b == "triton"])
def test_triton_workspace_counter_resets(backend):
    """The last program resets the ticket counter: repeated multi-program calls agree."""
    from fastgan.kernels import gan_loss as kernels

    generator = torch.Generator().manual_seed(2)
    real, fake = _logits([(50000,), (30000,)], generator, torch.float32, "cpu")
    first = discriminator_loss(real, fake, backend="triton")
    assert triton_programs(kernels, real.numel() + fake.numel()) > 1
    second = discriminator_loss(real, fake, backend="triton")
    assert torch.equal(first, second)
    for (device, _, _), (_, counter) in kernels._WORKSPACES.items():
        assert int(counter) == 0
    torch.testing.assert_close(first, reference.discriminator_loss(real, fake), rtol=2e-6, atol=0)


def triton_programs(kernels, n):
    return max(1, min(-(-n // kernels.ELEMENTS_PER_PROGRAM), kernels.MAX_PROGRAMS))


# ---- gradients: gradcheck, double backward ----


def _away_from_kinks(x):
    """Hinge terms have kinks at l = +-1: keep gradcheck's finite differences off them."""
    near = (x.abs() - 1).abs() < 0.1
    return torch.where(near, x + 0.3 * torch.sign(x), x)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions())
def test_gradcheck_and_gradgradcheck(device, backend, case, reduction):
    generator = torch.Generator().manual_seed(stable_seed(_case_id(case), reduction, "gc"))
    inputs = [_away_from_kinks(x).requires_grad_() for x in
              _logits([(5,), (2, 1, 2, 2)][: _n_inputs(case)], generator, torch.float64, device, scale=2.0)]

    def fn(*xs):
        return _fastgan(case, list(xs), reduction, backend)

    # The interpreter is slow: Triton checks a random projection of the Jacobian
    # (fast_mode); its autograd formulas are the same code the C++ backend checks in full.
    fast = backend == "triton" and device == "cpu"
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=fast)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("kind", ["minimax", "least_squares", "wasserstein"])
def test_double_backward_matches_reference(device, backend, kind):
    """An R1-style use: the gradient of the loss w.r.t. the logits, then a penalty
    on it, differentiated again; the fused path must agree with autograd's.
    (wasserstein: constant gradients, second derivative 0.)"""
    generator = torch.Generator().manual_seed(4)
    real, fake = _logits([(33,), (4, 1, 3, 3)], generator, torch.float64, device)

    def penalised_grads(fn):
        r, f = real.clone().requires_grad_(), fake.clone().requires_grad_()
        gr, gf = torch.autograd.grad(fn(r, f), (r, f), create_graph=True)
        penalty = (gr.square().sum() + (gf * f).sum()) * 10
        return torch.autograd.grad(penalty, (r, f), allow_unused=True, materialize_grads=True)

    ours = penalised_grads(lambda r, f: discriminator_loss(r, f, kind, backend=backend))
    want = penalised_grads(lambda r, f: reference.discriminator_loss(r, f, kind))
    for a, b in zip(ours, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


# ---- linear terms (+-l): no saved gradient ----

FUSED_CPU_BACKENDS = [b for b in backends_for("cpu") if b != "reference"]
_OPS = {"cpu": torch.ops.fastgan, "triton": getattr(torch.ops, "fastgan_triton", None)}
# (x_term, y_term, has_y): both sides linear, one linear and one not, a linear side alone.
LINEAR_PAIRS = [(NEG_IDENTITY, IDENTITY, True), (IDENTITY, SOFTPLUS, True), (SOFTPLUS_NEG, NEG_IDENTITY, True),
                (NEG_IDENTITY, NEG_IDENTITY, False)]


def _term_fn(term):
    return {IDENTITY: lambda l: l, NEG_IDENTITY: lambda l: -l, SOFTPLUS: torch.nn.functional.softplus,
            SOFTPLUS_NEG: lambda l: torch.nn.functional.softplus(-l)}[term]


@pytest.mark.parametrize("backend", FUSED_CPU_BACKENDS)
@pytest.mark.parametrize("x_term,y_term,has_y", LINEAR_PAIRS)
@pytest.mark.parametrize("reduction", [1, 2], ids=["mean", "sum"])
def test_linear_terms_save_no_gradient(backend, x_term, y_term, has_y, reduction, poisoned_outputs):
    """A linear side's forward only reads: its saved gradient is a (0,) tensor, and
    the backward writes grad * s * (+-1) in the logits' shape."""
    ops = _OPS[backend]
    generator = torch.Generator().manual_seed(12)
    x, y = _logits([(3, 1, 37, 41), (5003,)], generator, torch.float32, "cpu")
    y = y if has_y else None
    loss, x_grad, y_grad = ops.gan_loss(x, y, x_term, y_term, reduction)
    for logits, term, saved in ((x, x_term, x_grad), (y, y_term, y_grad)):
        want_shape = (0,) if logits is None or term in LINEAR_TERMS else logits.shape
        assert saved.shape == want_shape
    scale = (lambda t: 1 / t.numel()) if reduction == 1 else (lambda t: 1.0)
    want = sum(scale(t) * _term_fn(term)(t.double()).sum() for t, term in ((x, x_term), (y, y_term)) if t is not None)
    torch.testing.assert_close(loss.double(), want, rtol=2e-6, atol=0)
    grad = torch.tensor(-0.75)
    dx, dy = ops.gan_loss_backward(grad, x_grad, y_grad, x, y, x_term, y_term, reduction)
    for d, logits, term, saved in ((dx, x, x_term, x_grad), (dy, y, y_term, y_grad)):
        if logits is None:
            assert d.shape == (0,)
            continue
        assert d.shape == logits.shape and d.is_contiguous()
        if term in LINEAR_TERMS:
            want = torch.full(logits.shape, float(grad) * scale(logits) * (1 if term == IDENTITY else -1))
            assert (d == d.view(-1)[0]).all()
            torch.testing.assert_close(d, want)
        else:
            torch.testing.assert_close(d, grad * saved)


@pytest.mark.parametrize("backend", FUSED_CPU_BACKENDS)
@pytest.mark.parametrize("x_term,y_term,has_y", LINEAR_PAIRS)
def test_linear_terms_gradcheck_and_gradgradcheck(backend, x_term, y_term, has_y):
    """Mixed pairs (one side linear) through the ops' autograd, to second order."""
    ops = _OPS[backend]
    generator = torch.Generator().manual_seed(13)
    inputs = [t.requires_grad_() for t in _logits([(2, 1, 2, 3), (5,)], generator, torch.float64, "cpu")]
    inputs = inputs if has_y else inputs[:1]

    def fn(x, y=None):
        return ops.gan_loss(x, y, x_term, y_term, 1)[0]

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("backend", FUSED_CPU_BACKENDS)
def test_linear_backward_of_backward(backend):
    """gan_loss_backward's own derivative w.r.t. the loss's gradient, for a linear side
    (s * sum(g) * t') and a saved one (sum(g * saved))."""
    ops = _OPS[backend]
    generator = torch.Generator().manual_seed(14)
    x, y = _logits([(7,), (2, 3)], generator, torch.float64, "cpu")
    _, x_grad, y_grad = ops.gan_loss(x, y, NEG_IDENTITY, SOFTPLUS, 1)
    grad = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    saved_y = y_grad.clone().requires_grad_()
    dx, dy = ops.gan_loss_backward(grad, x_grad, saved_y, x, y, NEG_IDENTITY, SOFTPLUS, 1)
    g_x, g_y = torch.randn(dx.shape, dtype=torch.float64), torch.randn(dy.shape, dtype=torch.float64)
    d_grad, d_saved = torch.autograd.grad((dx * g_x).sum() + (dy * g_y).sum(), (grad, saved_y))
    torch.testing.assert_close(d_grad, -g_x.sum() / x.numel() + (g_y * y_grad).sum())
    torch.testing.assert_close(d_saved, g_y * 1.5)


@pytest.mark.parametrize("backend", [b for b in backends_for("cpu") if b != "reference"])
def test_third_derivative_says_not_implemented(backend):
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(generator_loss(x, reduction="sum", backend=backend), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="third derivatives"):
        torch.autograd.grad(gg.sum(), x)


# ---- torch.library registration ----


def _op_samples():
    x = torch.randn(10, requires_grad=True)
    y = torch.randn(3, 1, 2, 2, requires_grad=True)
    d = torch.randn(7, dtype=torch.float64, requires_grad=True)
    return [
        ("gan_loss", (x, y, 0, 1, 1)),
        ("gan_loss", (x, y, 6, 7, 2)),
        ("gan_loss", (d, None, 2, 2, 1)),
        ("gan_loss", (x.detach().bfloat16(), y.detach().bfloat16(), 8, 9, 1)),
        ("gan_loss", (x, y, 5, 4, 1)),
        ("gan_loss", (x, y, 4, 1, 2)),
        ("gan_loss", (d, None, 5, 5, 1)),
        ("gan_loss_backward", (torch.tensor(1.5, requires_grad=True), torch.randn(10, requires_grad=True),
                               torch.randn(3, 1, 2, 2, requires_grad=True), x.detach(), y.detach(), 0, 1, 1)),
        ("gan_loss_backward", (torch.tensor(2.0, dtype=torch.float64), d, torch.empty(0, dtype=torch.float64),
                               d.detach(), None, 2, 2, 1)),
        ("gan_loss_backward", (torch.tensor(1.5, requires_grad=True), torch.empty(0),
                               torch.randn(3, 1, 2, 2, requires_grad=True), x.detach(), y.detach(), 5, 1, 1)),
        ("gan_loss_backward", (torch.tensor(-2.0, dtype=torch.float64, requires_grad=True),
                               torch.empty(0, dtype=torch.float64), torch.empty(0, dtype=torch.float64),
                               d.detach(), None, 5, 5, 2)),
        ("gan_loss_pointwise", (x, None, 3, 0)),
        ("gan_loss_pointwise", (y, torch.randn(3, 1, 2, 2, requires_grad=True), 0, 1)),
        ("gan_loss_pointwise", (d.detach(), torch.randn(7, dtype=torch.float64, requires_grad=True), 8, 2)),
    ]


@pytest.mark.parametrize("namespace", ["fastgan"] + (["fastgan_triton"] if "triton" in backends_for("cpu") else []))
def test_opcheck(namespace):
    for name, args in _op_samples():
        torch.library.opcheck(getattr(getattr(torch.ops, namespace), name).default, args)


@pytest.mark.parametrize("backend", backends_for("cpu"))
def test_works_under_compile_fullgraph(backend):
    generator = torch.Generator().manual_seed(8)
    real, fake = _logits([(64, 1), (32, 1, 3, 3)], generator, torch.float32, "cpu")

    def step(r, f):
        d = discriminator_loss(r, f, "minimax", backend=backend) + gan_value(r, f, backend=backend)
        g = generator_loss(f, "non_saturating", backend=backend) + generator_loss(f, "wasserstein", backend=backend)
        h_real, h_fake = discriminator_loss(r, f, "hinge", reduction="none", backend=backend)
        return d + g + h_real.mean() + h_fake.sum()

    assert_compiled_matches_eager(step, (real, fake))


# ---- bad input ----


def test_rejects_unknown_kind_and_reduction():
    x = torch.randn(4)
    with pytest.raises(ValueError, match="kind must be one of 'minimax', 'wasserstein'.*got 'bce'"):
        discriminator_loss(x, x, "bce")
    with pytest.raises(ValueError, match="generator_loss: kind must be one of 'non_saturating'"):
        generator_loss(x, "least_square")
    with pytest.raises(ValueError, match="kind"):
        generator_loss(x, None)
    with pytest.raises(ValueError, match="reduction must be one of 'none', 'mean', 'sum'; got 'avg'"):
        discriminator_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        generator_loss(x, reduction="batchmean")


@pytest.mark.parametrize("bad,match", [
    (torch.arange(4), "real_logits has dtype torch.int64; expected floating-point logits"),
    (torch.ones(4, dtype=torch.bool), "real_logits has dtype torch.bool"),
    (torch.randn(4, dtype=torch.complex64), "real_logits has dtype torch.complex64"),
    (torch.randn(4).to(torch.float8_e4m3fn), "real_logits has dtype torch.float8_e4m3fn"),
    (torch.randn(4, 4).to_sparse(), "real_logits is a torch.sparse_coo tensor; expected a dense"),
    ([0.5, 1.0], "real_logits must be a torch.Tensor of logits, got list"),
], ids=["int64", "bool", "complex", "float8", "sparse", "list"])
def test_rejects_bad_logits(bad, match):
    with pytest.raises(TypeError, match=match):
        discriminator_loss(bad, torch.randn(4))


def test_rejects_mismatched_dtypes_devices_and_empty():
    x = torch.randn(4)
    with pytest.raises(TypeError, match="fake_logits has dtype torch.float64 but real_logits has torch.float32"):
        discriminator_loss(x, x.double())
    with pytest.raises(TypeError, match="fake_logits has dtype torch.float16"):
        gan_value(x, x.half())
    with pytest.raises(ValueError, match="fake_logits is on meta but real_logits is on cpu"):
        discriminator_loss(x, torch.randn(4, device="meta"))
    with pytest.raises(ValueError, match=r"real_logits is empty \(shape \(0, 1\)\); expected at least one logit"):
        discriminator_loss(torch.randn(0, 1), x)
    with pytest.raises(ValueError, match="fake_logits is empty"):
        generator_loss(torch.randn(3, 0))
    with pytest.raises(TypeError, match="generator_loss: fake_logits has dtype torch.int32"):
        generator_loss(torch.ones(3, dtype=torch.int32))


def test_wrong_backend_for_device_raises():
    with pytest.raises(fastgan.BackendError, match="discriminator_loss: backend 'cuda' cannot run"):
        discriminator_loss(torch.randn(3), torch.randn(3), backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        generator_loss(torch.randn(3), backend="tpu")


def test_direct_op_calls_check_codes():
    x = torch.randn(3)
    with pytest.raises(RuntimeError, match="x_term must be a GAN loss term code in"):
        torch.ops.fastgan.gan_loss(x, None, 10, 0, 1)
    with pytest.raises(RuntimeError, match="reduction must be 1 .mean. or 2 .sum."):
        torch.ops.fastgan.gan_loss(x, x, 0, 1, 0)
    with pytest.raises(RuntimeError, match="order must be 0, 1 or 2"):
        torch.ops.fastgan.gan_loss_pointwise(x, None, 0, 3)
    with pytest.raises(RuntimeError, match="y has dtype Double but the logits have Float"):
        torch.ops.fastgan.gan_loss(x, x.double(), 0, 1, 1)
    one = torch.tensor(1.0)
    with pytest.raises(RuntimeError, match=r"x_grad has shape \[3\] but expected \[0\] \(a linear term saves no"):
        torch.ops.fastgan.gan_loss_backward(one, x, torch.empty(0), x, None, 5, 5, 1)
    with pytest.raises(RuntimeError, match=r"y_grad has shape \[0\] but expected \[3\]"):
        torch.ops.fastgan.gan_loss_backward(one, torch.empty(0), torch.empty(0), x, x, 5, 1, 1)


# ---- CUDA: launches, graphs, determinism (skipped without a GPU) ----


def _cuda_kernels(fn):
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("size", [64, 4096, 1 << 20])
@pytest.mark.parametrize("kind", ["minimax", "wasserstein"])  # wasserstein: linear, no saved gradient
def test_cuda_one_launch_forward_one_backward(backend, size, kind):
    real = torch.randn(size, device="cuda", requires_grad=True)
    fake = torch.randn(size, 1, device="cuda", requires_grad=True)
    grad_out = torch.tensor(1.0, device="cuda")
    loss = discriminator_loss(real, fake, kind, backend=backend)
    assert len(_cuda_kernels(lambda: discriminator_loss(real, fake, kind, backend=backend))) == 1
    backward = _cuda_kernels(lambda: torch.autograd.grad(loss, (real, fake), grad_out, retain_graph=True))
    assert len(backward) == 1, backward


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_capture_and_replay(backend):
    real = torch.randn(5000, device="cuda", requires_grad=True)
    fake = torch.randn(64, 1, 30, 30, device="cuda", requires_grad=True)

    def step():
        loss = discriminator_loss(real, fake, "minimax", backend=backend)
        return (loss, *torch.autograd.grad(loss, (real, fake)))

    graph, _, static = capture_cuda_graph(step, warmup=2)
    for seed in range(3):
        with torch.no_grad():
            real.normal_(generator=torch.Generator("cuda").manual_seed(seed))
            fake.normal_(generator=torch.Generator("cuda").manual_seed(seed + 10))
        graph.replay()
        torch.cuda.synchronize()
        want = step()
        for a, b in zip(static, want):
            assert torch.equal(a, b)


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_cuda_large_deterministic_and_correct(backend, dtype):
    generator = torch.Generator().manual_seed(6)
    real, fake = _logits([(1024, 1, 128, 128), (1_000_003,)], generator, dtype, "cuda")
    first = discriminator_loss(real, fake, "minimax", backend=backend)
    assert torch.equal(first, discriminator_loss(real, fake, "minimax", backend=backend))
    eager = reference.discriminator_loss(real, fake, "minimax")
    # flash-attention's rule against a reference more precise than the dtype: for float64
    # that is the correctly rounded sum (math.fsum) of the float64 terms.
    exact = sum(math.fsum(torch.nn.functional.softplus(side).double().cpu().numpy()) / side.numel()
                for side in (-real.double(), fake.double()))
    eps = torch.finfo(dtype).eps
    assert abs(float(first) - exact) <= 2 * abs(float(eager) - exact) + 2 * eps * abs(exact)


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_side_stream_uses_its_own_workspace(backend):
    generator = torch.Generator().manual_seed(1)
    real, fake = _logits([(300_000,), (200_000,)], generator, torch.float32, "cuda")
    want = discriminator_loss(real, fake, backend=backend)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = discriminator_loss(real, fake, backend=backend)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(got, want)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["minimax", "least_squares", "relativistic", "relativistic_average"])
def test_autocast_computes_in_float32(device, backend, dtype, kind):
    """Under torch.autocast the losses are float32 ops, as torch's own (csrc/autocast.h):
    the loss is the op's on float32 copies, and with a loss scale (a GradScaler's) the
    logits' gradients are the float32 ones times the scale, rounded once. Computed in
    float16, the saved gradient s·t'(l) of a confident critic's PatchGAN logits would
    underflow before the scale arrives (most of them to 0)."""
    generator = torch.Generator().manual_seed(stable_seed(f"autocast {kind}"))
    real = (torch.randn(16, 1, 30, 30, generator=generator) * 2 + 6).to(device, dtype).requires_grad_()
    fake = (torch.randn(16, 1, 30, 30, generator=generator) * 2 - 6).to(device, dtype).requires_grad_()
    scale = 1024.0
    with torch.autocast(device, dtype=dtype):
        loss = discriminator_loss(real, fake, kind, backend=backend)
    assert loss.dtype == torch.float32
    grads = torch.autograd.grad(loss, (real, fake), torch.tensor(scale, device=device))
    copies = [t.detach().float().requires_grad_() for t in (real, fake)]
    want = discriminator_loss(*copies, kind, backend=backend)
    want_grads = torch.autograd.grad(want, copies)
    assert torch.equal(loss, want)
    for got, exact in zip(grads, want_grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got, (exact * scale).to(dtype), rtol=0, atol=0)
    if kind.startswith("relativistic"):  # their per-element terms take differences of the logits first, in their dtype
        return
    with torch.autocast(device, dtype=dtype):  # the per-element terms too
        terms = discriminator_loss(real, fake, kind, reduction="none", backend=backend)
    for got, exact in zip(terms, discriminator_loss(*copies, kind, reduction="none", backend=backend)):
        assert got.dtype == torch.float32 and torch.equal(got, exact)
