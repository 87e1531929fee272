"""Relativistic GAN losses (issue 12, item 1): RpGAN (``"relativistic"``, R3GAN) and RaGAN
(``"relativistic_average"``, ESRGAN) in discriminator_loss / generator_loss, every backend
against the eager float64 reference (fastgan.reference.losses, the issue's formulas).

Outputs our kernels allocate are poisoned with NaN (``poisoned_outputs``), so an element
a kernel forgot to write fails the comparison.
"""
import pytest
import torch
from conftest import (
    assert_compiled_matches_eager,
    assert_flash_close,
    backends_for,
    capture_cuda_graph,
    device_backend_pairs,
    requires_cuda,
    stable_seed,
)
from test_losses import (
    _cuda_kernels,
    _forward_backward,
    _grad_weights,
    _logits,
    _tuple,
    poisoned_outputs,  # noqa: F401  (a fixture, used by name)
)

from fastgan import reference
from fastgan.ops import discriminator_loss, generator_loss
from fastgan.ops.losses import RELATIVISTIC_AVERAGE, RELATIVISTIC_KINDS, RELATIVISTIC_PAIR

PLAYERS = ("D", "G")
CASES = [(player, kind) for player in PLAYERS for kind in RELATIVISTIC_KINDS]
REDUCTIONS = ("mean", "sum", "none")
FUSED_CPU = [b for b in backends_for("cpu") if b != "reference"]
OPS = {"cpu": torch.ops.fastgan, "triton": getattr(torch.ops, "fastgan_triton", None)}


def _id(case):
    return f"{case[0]}-{case[1]}"


def _interpreted(device, backend):
    """Triton in the interpreter (CPU tensors): slow, so some tests run fewer variants
    there; the kernels and formulas are the same ones every variant runs."""
    return backend == "triton" and device == "cpu"


def _case_reductions(reductions=REDUCTIONS):
    return [pytest.param(case, red, id=f"{_id(case)}-{red}") for case in CASES for red in reductions]


def _fastgan(case, real, fake, reduction, backend):
    player, kind = case
    if player == "D":
        return discriminator_loss(real, fake, kind, reduction=reduction, backend=backend)
    return generator_loss(fake, kind, real_logits=real, reduction=reduction, backend=backend)


def _reference(case, real, fake, reduction):
    player, kind = case
    if player == "D":
        return reference.discriminator_loss(real, fake, kind, reduction)
    return reference.generator_loss(fake, kind, reduction, real)


def _shapes(case, generator):
    """(real shape, fake shape): one shape for RpGAN; different ones (odd sizes) for RaGAN."""
    batch = int(torch.randint(1, 400, (1,), generator=generator)) | 1
    if case[1] == "relativistic":
        return [(batch, 1, 2, 3)] * 2 if batch % 3 == 0 else [(batch,)] * 2
    return [(batch, 1), (batch % 37 + 2, 1, 3, 5)]


def _magnitude(case, real, fake, reduction):
    """The loss on |terms| (float64): the scale of any summation error."""
    terms = _tuple(_reference(case, real.double(), fake.double(), "none"))
    if reduction == "none":
        return [t.abs() for t in terms]
    return sum(t.abs().mean() if reduction == "mean" else t.abs().sum() for t in terms)


def _check(case, inputs, reduction, backend, weights, rtol):
    """Forward and backward of the fused loss against the float64 reference."""
    outs, grads = _forward_backward(lambda xs: _fastgan(case, *xs, reduction, backend), inputs, weights)
    exact = [x.double() for x in inputs]
    ref_outs, ref_grads = _forward_backward(lambda xs: _reference(case, *xs, reduction), exact, weights)
    magnitude = _magnitude(case, *inputs, reduction)
    assert len(outs) == len(ref_outs)
    if reduction == "none":
        for out, ref, mag in zip(outs, ref_outs, magnitude):
            assert out.dtype == inputs[0].dtype and out.shape == ref.shape
            torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=rtol * float(mag.max()))
    else:
        assert outs[0].dtype == inputs[0].dtype and outs[0].shape == ()
        assert abs(float(outs[0]) - float(ref_outs[0])) <= rtol * float(magnitude) + 1e-300, (outs, ref_outs)
    for grad, ref, x in zip(grads, ref_grads, inputs):
        assert grad.dtype == x.dtype and grad.shape == x.shape
        torch.testing.assert_close(grad.double(), ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


# ---- accuracy ----


@pytest.mark.usefixtures("poisoned_outputs")
@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions())
@pytest.mark.parametrize("seed", [0, 1])
def test_float64_matches_reference(device, backend, case, reduction, seed):
    if seed and _interpreted(device, backend):
        pytest.skip("one seed in the Triton interpreter")
    generator = torch.Generator().manual_seed(stable_seed("relativistic", _id(case), reduction, seed))
    inputs = _logits(_shapes(case, generator), generator, torch.float64, device)
    weights = _grad_weights(_tuple(_reference(case, *inputs, reduction)), generator)
    _check(case, inputs, reduction, backend, weights, rtol=1e-12)


@pytest.mark.usefixtures("poisoned_outputs")
@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions(("mean", "sum")))
def test_large_and_odd_sizes(device, backend, case, reduction):
    """Several CPU chunks, Triton programs and CUDA blocks (the partials, the ticket and
    the last-block sum of every pass), ragged tails."""
    generator = torch.Generator().manual_seed(stable_seed("relativistic-large", _id(case), reduction))
    big = 20001 if _interpreted(device, backend) else 40001  # CPU: over 16 chunks, so threads split the sum
    shapes = [(big,), (big,)] if case[1] == "relativistic" else [(big,), (3, 1, 37, 41)]
    inputs = _logits(shapes, generator, torch.float64, device)
    _check(case, inputs, reduction, backend, [torch.tensor(0.75, dtype=torch.float64)], rtol=1e-12)


@pytest.mark.usefixtures("poisoned_outputs")
@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions())
def test_float32_matches_reference(device, backend, case, reduction):
    generator = torch.Generator().manual_seed(stable_seed("relativistic-f32", _id(case), reduction))
    shapes = [(4099,), (4099,)] if case[1] == "relativistic" else [(4099,), (2, 1, 30, 31)]
    inputs = _logits(shapes, generator, torch.float32, device)
    weights = _grad_weights(_tuple(_reference(case, *inputs, reduction)), generator)
    _check(case, inputs, reduction, backend, weights, rtol=4e-6)


@pytest.mark.usefixtures("poisoned_outputs")
@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case,reduction", _case_reductions())
def test_low_precision_flash_rule(device, backend, dtype, case, reduction):
    """Outputs and gradients within twice eager PyTorch's error in the same dtype (plus
    a few ulps), against the float64 result on the same rounded logits."""
    generator = torch.Generator().manual_seed(stable_seed("relativistic-low", _id(case), reduction, str(dtype)))
    shapes = [(1023, 1), (1023, 1)] if case[1] == "relativistic" else [(1023, 1), (3, 1, 17, 19)]
    inputs = _logits(shapes, generator, dtype, device)
    weights = _grad_weights(_tuple(_reference(case, *inputs, reduction)), generator)
    ours = _forward_backward(lambda xs: _fastgan(case, *xs, reduction, backend), inputs, weights)
    eager = _forward_backward(lambda xs: _reference(case, *xs, reduction), inputs, weights)
    exact = _forward_backward(lambda xs: _reference(case, *xs, reduction), [x.double() for x in inputs], weights)
    for part in (0, 1):  # outputs, then gradients
        for index, (o, e, x) in enumerate(zip(ours[part], eager[part], exact[part])):
            assert o.dtype == dtype and torch.isfinite(o).all()
            assert_flash_close(o, e, x, f"{'output' if part == 0 else 'gradient'} {index}")


EXTREMES = [1e4, -1e4, 3e3, -3e3, 100.0, -100.0, 88.0, -88.0, 40.0, -40.0, 20.5, -20.5, 1.0, -1.0, 0.0, 1e-3, -7e-8]


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case,reduction", _case_reductions())
def test_extreme_logits_finite_and_exact(device, backend, dtype, case, reduction):
    """Logits of +-1e4 (differences of 2e4): finite losses and gradients, equal to the
    float64 reference on the same rounded logits within the dtype's precision. (float16:
    a sum of terms of 2e4 overflows its 65504, in eager PyTorch too, so no "sum" there.)"""
    if dtype == torch.float16 and reduction == "sum":
        pytest.skip("the sum of the terms overflows float16")
    if dtype in (torch.float64, torch.float16) and _interpreted(device, backend):
        pytest.skip("float32 and bfloat16 in the Triton interpreter")
    values = torch.tensor(EXTREMES, dtype=torch.float64)
    real, fake = values.to(device=device, dtype=dtype), values.flip(0).to(device=device, dtype=dtype)
    fake = fake if case[1] == "relativistic" else fake[:-3]
    weights = [torch.ones(()) if reduction != "none" else torch.ones(x.shape) for x in (real, fake)]
    outs, grads = _forward_backward(lambda xs: _fastgan(case, *xs, reduction, backend), [real, fake], weights)
    ref_outs, ref_grads = _forward_backward(lambda xs: _reference(case, *xs, reduction),
                                            [real.double(), fake.double()], weights)
    # float32 accumulation of the RaGAN means of +-1e4 values: a few float32 ulps of 1e4.
    rtol = 1e-12 if dtype == torch.float64 else 4 * torch.finfo(dtype).eps
    for got, want in zip(outs + grads, ref_outs + ref_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=rtol * max(1.0, float(want.abs().max())))


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions())
def test_nan_logits_propagate(device, backend, case, reduction):
    generator = torch.Generator().manual_seed(11)
    real, fake = _logits(_shapes(case, generator), generator, torch.float32, device)
    real.view(-1)[::5] = float("nan")
    weights = [torch.ones(())] * 2 if reduction != "none" else [torch.ones(s.shape) for s in (real, fake)]
    outs, grads = _forward_backward(lambda xs: _fastgan(case, *xs, reduction, backend), [real, fake], weights)
    ref_outs, ref_grads = _forward_backward(lambda xs: _reference(case, *xs, reduction), [real, fake], weights)
    assert all(torch.isnan(o).any() for o in outs)
    for got, want in zip(outs + grads, ref_outs + ref_grads):
        torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("poisoned_outputs")
@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions(("mean",)))
def test_non_contiguous_logits(device, backend, case, reduction):
    generator = torch.Generator().manual_seed(5)
    base = _logits([(40, 30), (30, 20)], generator, torch.float64, device)
    real = base[0][::2, 1::3].t()  # (10, 20)
    fake = base[1][::3] if case[1] == "relativistic" else base[1].t()[:, 3:]
    assert not real.is_contiguous() and not fake.is_contiguous()
    _check(case, [real, fake], reduction, backend, [torch.tensor(1.25, dtype=torch.float64)], rtol=1e-12)


# ---- the definitions ----


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_none_terms_add_up_to_the_loss(device, backend, case):
    """"none": RpGAN's per-pair terms (one tensor of the logits' shape), RaGAN's (real
    terms, fake terms); their means (sums) are the "mean" ("sum") loss."""
    generator = torch.Generator().manual_seed(stable_seed("relativistic-none", _id(case)))
    real, fake = _logits(_shapes(case, generator), generator, torch.float64, device)
    terms = _fastgan(case, real, fake, "none", backend)
    if case[1] == "relativistic":
        assert isinstance(terms, torch.Tensor) and terms.shape == real.shape
        mean, total = terms.mean(), terms.sum()
    else:
        assert isinstance(terms, tuple) and terms[0].shape == real.shape and terms[1].shape == fake.shape
        mean, total = terms[0].mean() + terms[1].mean(), terms[0].sum() + terms[1].sum()
    torch.testing.assert_close(_fastgan(case, real, fake, "mean", backend), mean)
    torch.testing.assert_close(_fastgan(case, real, fake, "sum", backend), total)


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
def test_formulas_on_a_small_example(device, backend):
    """The issue's formulas, written out on three pairs."""
    real = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64, device=device)
    fake = torch.tensor([0.0, 1.0, -3.0], dtype=torch.float64, device=device)

    def sp(v):
        return torch.log1p(torch.exp(v))

    rp_d = sp(-(real - fake)).mean()
    ra_d = sp(-(real - fake.mean())).mean() + sp(fake - real.mean()).mean()
    ra_g = sp(-(fake - real.mean())).mean() + sp(real - fake.mean()).mean()
    for got, want in ((discriminator_loss(real, fake, "relativistic", backend=backend), rp_d),
                      (generator_loss(fake, "relativistic", real_logits=real, backend=backend),
                       sp(-(fake - real)).mean()),
                      (discriminator_loss(real, fake, "relativistic_average", backend=backend), ra_d),
                      (generator_loss(fake, "relativistic_average", real_logits=real, backend=backend), ra_g)):
        torch.testing.assert_close(got, want, rtol=1e-14, atol=0)


@pytest.mark.parametrize("backend", backends_for("cpu"))
def test_gradients_flow_to_both_logits(backend):
    """R3GAN detaches the real logits in G's loss; the caller decides: a detached side
    gets no gradient, an attached one does."""
    real = torch.randn(6, dtype=torch.float64, requires_grad=True)
    fake = torch.randn(6, dtype=torch.float64, requires_grad=True)
    for kind in RELATIVISTIC_KINDS:
        d_real, d_fake = torch.autograd.grad(generator_loss(fake, kind, real_logits=real, backend=backend),
                                             (real, fake))
        assert d_real.abs().sum() > 0 and d_fake.abs().sum() > 0
        loss = generator_loss(fake, kind, real_logits=real.detach(), backend=backend)
        (only_fake,) = torch.autograd.grad(loss, (fake,))
        torch.testing.assert_close(only_fake, d_fake)


# ---- gradients: gradcheck, double backward ----


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", _case_reductions())
def test_gradcheck_and_gradgradcheck(device, backend, case, reduction):
    if reduction != "mean" and _interpreted(device, backend):
        pytest.skip("'sum' is 'mean' but for the scale, 'none' the pointwise op: checked on the C++ backend")
    generator = torch.Generator().manual_seed(stable_seed("relativistic-gc", _id(case), reduction))
    shapes = [(2, 3), (2, 3)] if case[1] == "relativistic" else [(5,), (2, 1, 2)]
    inputs = [x.requires_grad_() for x in _logits(shapes, generator, torch.float64, device, scale=2.0)]

    def fn(real, fake):
        return _fastgan(case, real, fake, reduction, backend)

    # The interpreter is slow: Triton checks a random projection of the Jacobian; its
    # formulas are the same the C++ backend checks in full.
    fast = backend == "triton" and device == "cpu"
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=fast)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_double_backward_matches_reference(device, backend, case):
    """An R1-style use: the loss's logits-gradients, penalised and differentiated again,
    with gradients reaching both saved gradients."""
    generator = torch.Generator().manual_seed(stable_seed("relativistic-dd", _id(case)))
    real, fake = _logits(_shapes(case, generator), generator, torch.float64, device)

    def penalised_grads(fn):
        r, f = real.clone().requires_grad_(), fake.clone().requires_grad_()
        gr, gf = torch.autograd.grad(fn(r, f), (r, f), create_graph=True)
        penalty = (gr.square().sum() + (gf * f).sum()) * 10
        return torch.autograd.grad(penalty, (r, f))

    ours = penalised_grads(lambda r, f: _fastgan(case, r, f, "mean", backend))
    want = penalised_grads(lambda r, f: _reference(case, r, f, "mean"))
    for a, b in zip(ours, want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("backend", FUSED_CPU)
@pytest.mark.parametrize("kind", [RELATIVISTIC_PAIR, RELATIVISTIC_AVERAGE], ids=["pair", "average"])
def test_one_saved_gradient_reached(backend, kind):
    """Double backward with a gradient reaching only x_grad, then only y_grad (the other
    is None in the backward), through the op itself."""
    generator = torch.Generator().manual_seed(21)
    x, y = [t.requires_grad_() for t in _logits([(3, 2), (3, 2) if kind == 0 else (4,)], generator, torch.float64,
                                                 "cpu")]
    for pick in (1, 2):
        def saved_gradient(a, b, pick=pick):
            return OPS[backend].relativistic_loss(a, b, kind, 1)[pick]

        assert torch.autograd.gradcheck(saved_gradient, (x, y), fast_mode=backend == "triton")


# ---- torch.library registration ----


def _op_samples():
    x = torch.randn(10, requires_grad=True)
    y = torch.randn(3, 1, 2, 2, requires_grad=True)
    d = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    return [
        (x, x.detach().flip(0).requires_grad_(), RELATIVISTIC_PAIR, 1),
        (d, torch.randn(2, 5, dtype=torch.float64, requires_grad=True), RELATIVISTIC_PAIR, 2),
        (x, y, RELATIVISTIC_AVERAGE, 1),
        (d, x.detach().double(), RELATIVISTIC_AVERAGE, 2),
        (x.detach().bfloat16(), y.detach().bfloat16(), RELATIVISTIC_AVERAGE, 1),
    ]


@pytest.mark.parametrize("namespace", ["fastgan"] + (["fastgan_triton"] if "triton" in backends_for("cpu") else []))
def test_opcheck(namespace):
    samples = _op_samples()
    for args in samples[::2] if namespace == "fastgan_triton" else samples:  # the interpreter is slow
        torch.library.opcheck(getattr(torch.ops, namespace).relativistic_loss.default, args)


@pytest.mark.parametrize("backend", backends_for("cpu"))
def test_works_under_compile_fullgraph(backend):
    generator = torch.Generator().manual_seed(8)
    real, fake = _logits([(16, 1), (16, 1)], generator, torch.float32, "cpu")

    def step(r, f):
        d = discriminator_loss(r, f, "relativistic", backend=backend)
        d = d + discriminator_loss(r, f, "relativistic_average", reduction="sum", backend=backend)
        g = generator_loss(f, "relativistic", real_logits=r.detach(), backend=backend)
        real_terms, fake_terms = generator_loss(f, "relativistic_average", real_logits=r, reduction="none",
                                                backend=backend)
        return d + g + real_terms.mean() + fake_terms.sum()

    assert_compiled_matches_eager(step, (real, fake))


def test_cpu_sums_are_deterministic_across_thread_counts():
    generator = torch.Generator().manual_seed(9)
    real, fake = _logits([(300001,), (64, 1, 70, 70)], generator, torch.float32, "cpu")
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(torch.ops.fastgan.relativistic_loss(real, fake, RELATIVISTIC_AVERAGE, 1))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", [b for b in backends_for("cpu") if b == "triton"])
def test_triton_workspace_counter_resets(backend):
    from fastgan.kernels import gan_loss as kernels

    generator = torch.Generator().manual_seed(2)
    real, fake = _logits([(20000,), (20000,)], generator, torch.float32, "cpu")
    for kind in RELATIVISTIC_KINDS:
        first = discriminator_loss(real, fake, kind, backend=backend)
        assert torch.equal(first, discriminator_loss(real, fake, kind, backend=backend))
        for _, counter in kernels._WORKSPACES.values():
            assert int(counter) == 0
        torch.testing.assert_close(first, reference.discriminator_loss(real, fake, kind), rtol=4e-6, atol=0)


# ---- bad input ----


def test_generator_needs_real_logits():
    fake = torch.randn(4)
    for kind in RELATIVISTIC_KINDS:
        with pytest.raises(ValueError, match=rf"generator_loss: kind='{kind}' .*pass real_logits="):
            generator_loss(fake, kind)
    with pytest.raises(ValueError, match="real_logits is read only by the relativistic kinds"):
        generator_loss(fake, "non_saturating", real_logits=fake)


def test_pairs_must_have_one_shape():
    with pytest.raises(ValueError, match=r"discriminator_loss: kind='relativistic' pairs real_logits with "
                                         r"fake_logits.*real_logits \(4,\) and fake_logits \(4, 1\)"):
        discriminator_loss(torch.randn(4), torch.randn(4, 1), "relativistic")
    with pytest.raises(ValueError, match=r"generator_loss: .*real_logits \(3,\) and fake_logits \(4,\)"):
        generator_loss(torch.randn(4), "relativistic", real_logits=torch.randn(3))
    discriminator_loss(torch.randn(4), torch.randn(4, 1), "relativistic_average")  # RaGAN: any shapes


def test_bad_real_logits_in_generator_loss():
    with pytest.raises(TypeError, match="generator_loss: real_logits has dtype torch.float64 but fake_logits has"):
        generator_loss(torch.randn(4), "relativistic", real_logits=torch.randn(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="generator_loss: real_logits must be a torch.Tensor"):
        generator_loss(torch.randn(4), "relativistic_average", real_logits=[1.0])
    with pytest.raises(ValueError, match="generator_loss: real_logits is empty"):
        generator_loss(torch.randn(4), "relativistic_average", real_logits=torch.randn(0))


@pytest.mark.parametrize("namespace", ["fastgan"] + (["fastgan_triton"] if "triton" in backends_for("cpu") else []))
def test_direct_op_calls_check_their_arguments(namespace):
    op = getattr(torch.ops, namespace).relativistic_loss
    x = torch.randn(3)
    with pytest.raises(RuntimeError, match=r"kind must be a relativistic loss kind code in \[0, 2\), got 2"):
        op(x, x, 2, 1)
    with pytest.raises(RuntimeError, match=r"reduction must be 1 .mean. or 2 .sum., got 0"):
        op(x, x, 0, 0)
    with pytest.raises(RuntimeError, match=r"y has shape .*4.* but x has shape .*3.*; kind 0 .pair. needs one shape"):
        op(x, torch.randn(4), 0, 1)
    with pytest.raises(RuntimeError, match="y has dtype"):
        op(x, x.double(), 1, 1)


# ---- CUDA: launches (skipped without a GPU) ----


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("size", [64, 1 << 20])
@pytest.mark.parametrize("kind,forward_launches", [("relativistic", 1), ("relativistic_average", 3)])
def test_cuda_launches(backend, size, kind, forward_launches):
    """RpGAN: one launch forward; RaGAN: three (means, sums, gradients); the backward one."""
    real = torch.randn(size, device="cuda", requires_grad=True)
    fake = torch.randn(size, device="cuda", requires_grad=True)
    loss = discriminator_loss(real, fake, kind, backend=backend)
    forward = _cuda_kernels(lambda: discriminator_loss(real, fake, kind, backend=backend))
    assert len([k for k in forward if "relativistic" in k]) == forward_launches, forward
    one = torch.tensor(1.0, device="cuda")  # made outside: its copy to the GPU would count as a launch
    backward = _cuda_kernels(lambda: torch.autograd.grad(loss, (real, fake), one, retain_graph=True))
    assert len(backward) == 1, backward


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("kind", list(RELATIVISTIC_KINDS))
def test_cuda_large_deterministic_and_correct(backend, kind):
    generator = torch.Generator().manual_seed(6)
    real, fake = _logits([(1_000_003,), (1_000_003,)], generator, torch.float32, "cuda")
    first = discriminator_loss(real, fake, kind, backend=backend)
    assert torch.equal(first, discriminator_loss(real, fake, kind, backend=backend))
    exact = reference.discriminator_loss(real.double(), fake.double(), kind)
    eager = reference.discriminator_loss(real, fake, kind)
    assert abs(float(first) - float(exact)) <= 2 * abs(float(eager) - float(exact)) + 1e-6 * abs(float(exact))


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("kind", list(RELATIVISTIC_KINDS))
def test_cuda_graph_capture_and_replay(backend, kind):
    """No host sync: the loss (and RaGAN's means between its launches) replays in a graph."""
    real = torch.randn(5000, device="cuda", requires_grad=True)
    fake = torch.randn(5000, device="cuda", requires_grad=True)

    def step():
        loss = discriminator_loss(real, fake, kind, backend=backend)
        return (loss, *torch.autograd.grad(loss, (real, fake)))

    graph, _, static = capture_cuda_graph(step, warmup=2)
    for seed in range(3):
        with torch.no_grad():
            real.normal_(generator=torch.Generator("cuda").manual_seed(seed))
            fake.normal_(generator=torch.Generator("cuda").manual_seed(seed + 10))
        graph.replay()
        torch.cuda.synchronize()
        for a, b in zip(static, step()):
            assert torch.equal(a, b)
