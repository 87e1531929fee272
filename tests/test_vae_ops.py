"""VAE ops (issue 14): every backend against the eager float64 reference, forward and
backward, gradcheck/gradgradcheck, opcheck, and the closed forms the ops must meet.

Each test draws fresh inputs from its own seeded generator. Outputs our kernels
allocate are poisoned with NaN (deterministic mode fills uninitialised memory), so an
element a kernel forgot to write fails the comparison.
"""
import math

import pytest
import torch
from conftest import (assert_compiled_matches_eager, assert_flash_close, backends_for, capture_cuda_graph,
                      device_backend_pairs, requires_cuda, stable_seed)

from fastgan import reference
from fastgan.ops import bernoulli_nll, gaussian_kl, gaussian_nll, reparameterize, vae_loss

REDUCTIONS = ["mean", "sum", "none"]
SHAPES = [((3, 7), (3, 4)), ((5, 2, 3, 4), (5, 6)), ((1, 1), (1, 1)), ((2, 1500), (2, 1100))]  # (data, latent)


def _inputs(case, shapes, generator, dtype, device):
    """The tensors `case` takes (float64 draws, then cast): data-like of shapes[0], latents of shapes[1]."""
    data, latent = shapes

    def draw(shape, scale=1.0, shift=0.0, uniform=False):
        v = torch.rand(shape, generator=generator, dtype=torch.float64) if uniform else \
            torch.randn(shape, generator=generator, dtype=torch.float64) * scale + shift
        return v.to(dtype=dtype, device=device)

    latents = [draw(latent), draw(latent, 0.7)]
    if case == "kl":
        return latents
    if case == "bernoulli":
        return [draw(data, 2.0), draw(data, uniform=True)]
    if case == "gaussian":
        return [draw(data), draw(data), draw(data, 0.5)]
    if case == "gaussian_unit":
        return [draw(data), draw(data)]
    if case == "vae_bernoulli":
        return [draw(data, 2.0), draw(data, uniform=True)] + latents
    if case == "vae_gaussian":
        return [draw(data), draw(data)] + latents
    assert case == "reparameterize"
    return latents + [draw(latent)]


def _fastgan(case, xs, reduction, backend):
    if case == "kl":
        return gaussian_kl(*xs, reduction=reduction, backend=backend)
    if case == "bernoulli":
        return bernoulli_nll(*xs, reduction=reduction, backend=backend)
    if case in ("gaussian", "gaussian_unit"):
        return gaussian_nll(*xs, reduction=reduction, backend=backend)
    if case == "vae_bernoulli":
        return vae_loss(*xs, likelihood="bernoulli", reduction=reduction, backend=backend)
    if case == "vae_gaussian":
        return vae_loss(*xs, likelihood="gaussian", beta=0.7, reduction=reduction, backend=backend)
    return reparameterize(xs[0], xs[1], eps=xs[2], backend=backend)


def _reference(case, xs, reduction):
    if case == "kl":
        return reference.gaussian_kl(*xs, reduction)
    if case == "bernoulli":
        return reference.bernoulli_nll(*xs, reduction)
    if case == "gaussian":
        return reference.gaussian_nll(*xs, reduction=reduction)
    if case == "gaussian_unit":
        return reference.gaussian_nll(*xs, None, reduction)
    if case == "vae_bernoulli":
        return reference.vae_loss(*xs, "bernoulli", 1.0, reduction)
    if case == "vae_gaussian":
        return reference.vae_loss(*xs, "gaussian", 0.7, reduction)
    return reference.reparameterize(*xs)


LOSSES = ["kl", "bernoulli", "gaussian", "gaussian_unit", "vae_bernoulli", "vae_gaussian"]
CASE_REDUCTIONS = [pytest.param(c, r, id=f"{c}-{r}") for c in LOSSES for r in REDUCTIONS] + \
    [pytest.param("reparameterize", "none", id="reparameterize")]
# Inputs a gradient is checked for: targets too (d/dtarget exists), except the bernoulli
# target, whose values must stay in [0, 1] under gradcheck's perturbations (checked alone below).
DIFFERENTIABLE = {"bernoulli": [0], "vae_bernoulli": [0, 2, 3]}


def _forward_backward(fn, inputs, weight_seed):
    """(output, gradients of sum(w * output) w.r.t. every input) with fixed random weights w."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(leaves)
    generator = torch.Generator().manual_seed(weight_seed)
    weights = torch.randn(out.shape, generator=generator, dtype=torch.float64).add_(1.5)
    grads = torch.autograd.grad((out * weights.to(out)).sum(), leaves)
    return out.detach(), list(grads)


@pytest.fixture
def poisoned_outputs():
    """torch.empty (and at::empty in the C++ ops) fill with NaN while this is on."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", CASE_REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_matches_float64_reference(device, backend, case, reduction, dtype, poisoned_outputs):
    """Forward and every input's gradient, on several shapes: float64 to 1e-12, the
    others by flash-attention's rule against eager PyTorch in the same dtype. (The
    interpreted Triton kernels run the low precisions on two shapes: they are slow.)"""
    interpreted = backend == "triton" and device == "cpu" and dtype in (torch.bfloat16, torch.float16)
    for index, shapes in enumerate(SHAPES[1:3] if interpreted else SHAPES):
        seed = stable_seed(case, reduction, str(dtype), index)
        inputs = _inputs(case, shapes, torch.Generator().manual_seed(seed), dtype, device)
        out, grads = _forward_backward(lambda xs: _fastgan(case, xs, reduction, backend), inputs, seed)
        eager, eager_grads = _forward_backward(lambda xs: _reference(case, xs, reduction), inputs, seed)
        exact, exact_grads = _forward_backward(lambda xs: _reference(case, xs, reduction),
                                               [x.double() for x in inputs], seed)
        assert out.dtype == dtype and out.shape == exact.shape
        assert_flash_close(out, eager, exact, f"{case} output, shapes {shapes}")
        for i, (grad, eager_grad, exact_grad) in enumerate(zip(grads, eager_grads, exact_grads)):
            assert grad.dtype == dtype and grad.shape == inputs[i].shape
            assert_flash_close(grad, eager_grad, exact_grad, f"{case} gradient {i}, shapes {shapes}")


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("case,reduction", CASE_REDUCTIONS)
def test_gradcheck_and_gradgradcheck(device, backend, case, reduction):
    generator = torch.Generator().manual_seed(stable_seed(case, reduction, "gc"))
    inputs = _inputs(case, ((2, 3), (2, 2)), generator, torch.float64, device)
    wanted = DIFFERENTIABLE.get(case, range(len(inputs)))
    inputs = [x.requires_grad_(i in wanted) for i, x in enumerate(inputs)]

    def fn(*xs):
        return _fastgan(case, list(xs), reduction, backend)

    fast = backend == "triton" and device == "cpu"  # the interpreter is slow: a random projection
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=fast)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.filterwarnings("error::UserWarning")  # the target check reads a target that requires grad quietly
def test_bernoulli_target_gradient(device, backend):
    """d/dtarget = -logits (times the reduction's scale), first and second order."""
    generator = torch.Generator().manual_seed(stable_seed("bernoulli target"))
    logits = torch.randn(3, 4, generator=generator, dtype=torch.float64).to(device).requires_grad_()
    target = (0.25 + 0.5 * torch.rand(3, 4, generator=generator, dtype=torch.float64)).to(device).requires_grad_()
    fast = backend == "triton" and device == "cpu"  # the interpreter is slow: a random projection
    for reduction in REDUCTIONS:
        def fn(l, x):
            return bernoulli_nll(l, x, reduction=reduction, backend=backend)

        assert torch.autograd.gradcheck(fn, (logits, target), fast_mode=fast)
        assert torch.autograd.gradgradcheck(fn, (logits, target), fast_mode=fast)


def _op_samples(device="cpu"):
    generator = torch.Generator().manual_seed(stable_seed("opcheck"))

    def r(*shape, grad=False, uniform=False):
        v = torch.rand(shape, generator=generator) if uniform else torch.randn(shape, generator=generator)
        return v.to(device).requires_grad_(grad)

    empty = torch.empty(0, device=device)
    return [
        ("vae_loss", (r(3, 5, grad=True), r(3, 5, uniform=True), None, r(3, 2, grad=True), r(3, 2, grad=True), 0,
                      0.5, 1)),
        ("vae_loss", (r(2, 3, 4, grad=True), r(2, 3, 4, grad=True), r(2, 3, 4, grad=True), None, None, 1, 1.0, 0)),
        ("vae_loss", (None, None, None, r(4, 3, grad=True), r(4, 3), 0, 2.0, 2)),
        ("vae_loss_backward", (torch.tensor(1.5, device=device, requires_grad=True), r(3, 5, grad=True), empty,
                               r(3, 2, grad=True), r(3, 2), 1)),
        ("vae_loss_backward", (r(2, grad=True), r(2, 4, grad=True), r(2, 4), empty, empty, 0)),
        ("vae_reparameterize", (r(3, 4, grad=True), r(3, 4, grad=True), r(3, 4))),
        ("vae_reparameterize_backward", (r(3, 4, grad=True), r(3, 4, grad=True), r(3, 4, grad=True))),
    ]


class _Spy:
    """Stands in for a fast path's backend table: counts its calls and returns the
    table's answer, or NotImplemented (`decline`) so that the checked path runs."""

    def __init__(self, table, decline):
        self.table, self.decline, self.calls = table, decline, 0

    def __call__(self, *args):
        self.calls += 1
        return NotImplemented if self.decline else self.table(*args)


@pytest.mark.parametrize("backend", [b for b in backends_for("cpu") if b != "reference"])
@pytest.mark.parametrize("case,reduction", CASE_REDUCTIONS)
def test_fast_path_is_taken_and_equals_the_checked_path(backend, case, reduction, monkeypatch):
    """Each front end's fast path (one backend-table call) answers the call and gives the
    checked path's values and gradients bit for bit; drawn noise is drawn once either way."""
    import fastgan.ops.vae as vae

    xs = _inputs(case, SHAPES[1], torch.Generator().manual_seed(stable_seed(case, reduction)), torch.float32, "cpu")
    fn = (lambda leaves: _fastgan(case, leaves, reduction, backend))
    name = "_FAST_REPARAMETERIZE" if case == "reparameterize" else "_FAST_VAE_LOSS"
    real = getattr(vae, name)
    results = {}
    for decline in (False, True):
        spy = _Spy(real if case == "reparameterize" else real[reduction], decline)
        monkeypatch.setattr(vae, name, spy if case == "reparameterize" else {**real, reduction: spy})
        results[decline] = _forward_backward(fn, xs, 3)
        assert spy.calls == 1
        if case == "reparameterize":  # its noise drawn: one torch.randn(mu.shape) on either path
            torch.manual_seed(5)
            results[decline, "drawn"] = reparameterize(xs[0], xs[1], backend=backend)
            after = torch.randn(1)
            torch.manual_seed(5)
            torch.randn(xs[0].shape)
            assert torch.equal(after, torch.randn(1))
    (fast, fast_grads), (checked, checked_grads) = results[False], results[True]
    assert torch.equal(fast, checked) and all(map(torch.equal, fast_grads, checked_grads))
    if case == "reparameterize":
        assert torch.equal(results[False, "drawn"], results[True, "drawn"])


@pytest.mark.parametrize("namespace", ["fastgan"] + (["fastgan_triton"] if "triton" in backends_for("cpu") else []))
def test_opcheck(namespace):
    for name, args in _op_samples():
        torch.library.opcheck(getattr(getattr(torch.ops, namespace), name).default, args)


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
def test_reparameterize_with_eps_is_the_formula(device, backend):
    generator = torch.Generator().manual_seed(stable_seed("reparameterize formula"))
    mu, logvar, eps = (torch.randn(4, 6, generator=generator).to(device) for _ in range(3))
    z = reparameterize(mu, logvar, eps=eps, backend=backend)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps, rtol=4e-7, atol=1e-6)


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
@pytest.mark.parametrize("dtype,mu_value,logvar_value", [(torch.float32, 100.0, -20.0), (torch.bfloat16, 4.0, -8.0),
                                                         (torch.float16, 50.0, -10.0)], ids=str)
def test_logvar_gradient_where_mu_dwarfs_the_noise(device, backend, dtype, mu_value, logvar_value):
    """dz/dlogvar = exp(logvar / 2) eps / 2 even where exp(logvar / 2) |eps| is below an
    ulp of mu, so that z rounds to mu and (z - mu) / 2 would be 0; and its own logvar
    derivative (the double backward) the same way."""
    generator = torch.Generator().manual_seed(stable_seed("reparameterize cancellation"))
    eps64 = torch.randn(64, generator=generator, dtype=torch.float64)
    mu = torch.full((64,), mu_value, dtype=dtype, device=device, requires_grad=True)
    logvar = torch.full((64,), logvar_value, dtype=dtype, device=device, requires_grad=True)
    eps = eps64.to(dtype).to(device)
    z = reparameterize(mu, logvar, eps=eps, backend=backend)
    d_logvar, = torch.autograd.grad(z.sum(), logvar, create_graph=True)
    dd_logvar, = torch.autograd.grad(d_logvar.sum(), logvar)
    sigma_eps = math.exp(0.5 * logvar_value) * eps.double().cpu()
    rtol = {torch.float32: 2e-6, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(d_logvar.double().cpu(), 0.5 * sigma_eps, rtol=rtol, atol=0)
    torch.testing.assert_close(dd_logvar.double().cpu(), 0.25 * sigma_eps, rtol=2 * rtol, atol=0)


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
def test_seeded_eps_is_reproducible(device, backend):
    mu = torch.zeros(3, 5, device=device)
    logvar = torch.zeros(3, 5, device=device)
    first = reparameterize(mu, logvar, generator=torch.Generator(device).manual_seed(7), backend=backend)
    again = reparameterize(mu, logvar, generator=torch.Generator(device).manual_seed(7), backend=backend)
    other = reparameterize(mu, logvar, generator=torch.Generator(device).manual_seed(8), backend=backend)
    assert torch.equal(first, again) and not torch.equal(first, other)
    # With mu = 0 and logvar = 0, z is the noise torch.randn draws from that seed.
    assert torch.equal(first, torch.randn(3, 5, generator=torch.Generator(device).manual_seed(7), device=device))


@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
def test_gaussian_kl_is_the_closed_form_and_a_monte_carlo_estimate(device, backend):
    generator = torch.Generator().manual_seed(stable_seed("kl closed form"))
    mu = torch.randn(6, 3, generator=generator, dtype=torch.float64).to(device)
    logvar = (0.8 * torch.randn(6, 3, generator=generator, dtype=torch.float64)).to(device)
    kl = gaussian_kl(mu, logvar, reduction="none", backend=backend)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    closed = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl, closed, rtol=1e-12, atol=1e-12)
    # Monte Carlo: E_q[ln q(z) - ln p(z)] over 200k draws, within 5 standard errors.
    noise = torch.randn((200_000,) + tuple(mu.shape), generator=generator, dtype=torch.float64).to(device)
    z = mu + torch.exp(0.5 * logvar) * noise  # draws of q from the test's own generator
    log_ratio = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1)
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(z.shape[0])
    assert ((kl - estimate).abs() <= 5 * stderr).all(), (kl, estimate, stderr)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_extreme_inputs_stay_finite(device, backend, dtype):
    """Logits of +-1e4 and log-variances of +-80 give finite losses and gradients."""
    logits = torch.tensor([[1e4, -1e4, 0.5], [-1e4, 1e4, 3.0]], dtype=dtype, device=device)
    target = torch.tensor([[1.0, 0.0, 0.3], [0.2, 0.9, 1.0]], dtype=dtype, device=device)
    logvar = torch.tensor([[80.0, -80.0, 0.0], [-80.0, 80.0, 1.0]], dtype=dtype, device=device)
    mu = torch.tensor([[0.5, -0.5, 0.0], [1.0, 0.0, -1.0]], dtype=dtype, device=device)
    calls = [lambda l, v, m: bernoulli_nll(l, target.to(l), reduction="sum", backend=backend),
             lambda l, v, m: gaussian_kl(m, v, reduction="sum", backend=backend),
             lambda l, v, m: gaussian_nll(target.to(l), m, v, reduction="sum", backend=backend),
             lambda l, v, m: vae_loss(l, target.to(l), m, v, reduction="sum", backend=backend),
             lambda l, v, m: reparameterize(m, v, eps=target.to(l), backend=backend).sum()]
    for call in calls:
        leaves = [x.clone().requires_grad_() for x in (logits, logvar, mu)]
        out = call(*leaves)
        grads = torch.autograd.grad(out, leaves, allow_unused=True)
        exact = call(*[x.double() for x in (logits, logvar, mu)])
        assert torch.isfinite(out), out
        assert all(g is None or torch.isfinite(g).all() for g in grads)
        torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=0)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_nan_propagates(device, backend):
    x = torch.tensor([[0.5, float("nan")], [0.1, 0.2]], device=device)
    y = torch.tensor([[0.3, 0.4], [0.5, 0.6]], device=device)
    for out in (bernoulli_nll(x, y, reduction="none", backend=backend),
                bernoulli_nll(y, x, reduction="none", backend=backend),  # a NaN target passes the [0, 1] check
                gaussian_kl(x, y, reduction="none", backend=backend),
                gaussian_nll(y, y, x, reduction="none", backend=backend),
                vae_loss(x, y, y, y, reduction="none", backend=backend)):
        assert torch.isnan(out[0]) and torch.isfinite(out[1]), out
    z = reparameterize(x, y, eps=y, backend=backend)
    assert torch.isnan(z[0, 1]) and torch.isfinite(z[1]).all()


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_large_batches_many_programs(device, backend, poisoned_outputs):
    """Batches past one CPU task, one Triton program and one CUDA block (the last-block sum)."""
    generator = torch.Generator().manual_seed(stable_seed("large"))
    rows = 37 if device == "cpu" and backend == "triton" else 1031
    inputs = _inputs("vae_bernoulli", ((rows, 300), (rows, 9)), generator, torch.float64, device)
    for reduction in ("mean", "sum"):
        out, grads = _forward_backward(lambda xs: _fastgan("vae_bernoulli", xs, reduction, backend), inputs, 3)
        ref, ref_grads = _forward_backward(lambda xs: _reference("vae_bernoulli", xs, reduction), inputs, 3)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)
        for grad, ref_grad in zip(grads, ref_grads):
            torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-15)


def test_cpu_sum_is_deterministic_across_thread_counts():
    generator = torch.Generator().manual_seed(stable_seed("threads"))
    inputs = _inputs("vae_gaussian", ((512, 400), (512, 16)), generator, torch.float32, "cpu")
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(vae_loss(*inputs, likelihood="gaussian", backend="cpu"))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("backend", backends_for("cpu"))
def test_works_under_compile_fullgraph(backend):
    generator = torch.Generator().manual_seed(stable_seed("compile"))
    inputs = _inputs("vae_gaussian", ((4, 6), (4, 3)), generator, torch.float32, "cpu")
    eps = torch.randn(4, 3, generator=generator)
    target = torch.rand(4, 6, generator=generator)

    def step(recon, x, mu, logvar):
        z = reparameterize(mu, logvar, eps=eps, backend=backend)
        return (vae_loss(recon, x, z, logvar, likelihood="gaussian", beta=0.5, backend=backend)
                + bernoulli_nll(recon, target, reduction="none", backend=backend).sum()
                + gaussian_nll(x, recon, logvar.mean(1, keepdim=True).expand_as(x), backend=backend))

    assert_compiled_matches_eager(step, inputs)


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_one_launch_forward_one_backward(backend):
    generator = torch.Generator().manual_seed(stable_seed("launches"))
    recon, target, mu, logvar = (x.requires_grad_(i != 1) for i, x in enumerate(
        _inputs("vae_bernoulli", ((64, 784), (64, 32)), generator, torch.float32, "cuda")))
    vae_loss(recon, target, mu, logvar, backend=backend).backward()  # warm-up (Triton compiles)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        loss = torch.ops.fastgan.vae_loss if backend == "cuda" else torch.ops.fastgan_triton.vae_loss
        out = loss(recon, target, None, mu, logvar, 0, 1.0, 1)[0]
        torch.autograd.grad(out, (recon, mu, logvar))
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    ours = [e.name for e in kernels if "vae" in e.name]
    assert len(ours) == 2, [e.name for e in kernels]


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_bernoulli_vae_loss_captures_in_a_cuda_graph(backend):
    """The [0, 1] target check synchronises, which capture forbids: it is skipped while
    capturing, and the replayed loss and gradients equal eager's."""
    gen = torch.Generator(device="cuda").manual_seed(3)
    recon = torch.randn(8, 20, device="cuda", generator=gen).requires_grad_(True)
    target = torch.rand(8, 20, device="cuda", generator=gen)
    mu = torch.randn(8, 4, device="cuda", generator=gen).requires_grad_(True)
    logvar = torch.randn(8, 4, device="cuda", generator=gen).requires_grad_(True)

    def step():
        loss = vae_loss(recon, target, mu, logvar, likelihood="bernoulli", backend=backend)
        return (loss,) + torch.autograd.grad(loss, [recon, mu, logvar])

    graph, _, captured = capture_cuda_graph(step)
    graph.replay()
    for got, want in zip(captured, step()):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_per_sample_backward_over_rows_split_among_chunks(threads):
    # reduction "none": each sample's saved gradients scaled by its own loss gradient,
    # with rows (200 and 7 elements) that CPU chunks of 2^15 elements cut mid-row.
    g = torch.Generator().manual_seed(5)
    grad = torch.randn(300, generator=g)
    recon_grad, mu_grad, logvar_grad = (torch.randn(300, n, generator=g) for n in (200, 7, 7))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        out = torch.ops.fastgan.vae_loss_backward(grad, recon_grad, torch.empty(0), mu_grad, logvar_grad, 0)
    finally:
        torch.set_num_threads(previous)
    for got, saved in zip((out[0], out[2], out[3]), (recon_grad, mu_grad, logvar_grad)):
        torch.testing.assert_close(got, grad[:, None] * saved, rtol=0, atol=0)
    assert out[1].numel() == 0


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_autocast_computes_in_float32(device, backend, dtype, likelihood):
    """Under torch.autocast vae_loss is a float32 op, as torch's losses (csrc/autocast.h):
    half inputs (a float32 target too) give the op's float32 loss on float32 copies, and
    their gradients are the float32 ones, rounded once."""
    generator = torch.Generator().manual_seed(stable_seed(f"vae autocast {likelihood}"))
    recon, mu, logvar = (torch.randn(shape, generator=generator).to(device, dtype).requires_grad_()
                         for shape in ((8, 3, 8, 8), (8, 16), (8, 16)))
    target = torch.rand(8, 3, 8, 8, generator=generator).to(device)
    with torch.autocast(device, dtype=dtype):
        loss = vae_loss(recon, target, mu, logvar, likelihood=likelihood, backend=backend)
    assert loss.dtype == torch.float32
    grads = torch.autograd.grad(loss, (recon, mu, logvar))
    copies = [t.detach().float().requires_grad_() for t in (recon, mu, logvar)]
    want = vae_loss(copies[0], target, *copies[1:], likelihood=likelihood, backend=backend)
    assert torch.equal(loss, want)
    for got, exact in zip(grads, torch.autograd.grad(want, copies)):
        assert got.dtype == dtype
        torch.testing.assert_close(got, exact.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_long_samples_sum_accurately(device, backend):
    """A sample of a million features sums to float32 accuracy (one float32 lane per
    sample would drift with its length: 3e-6 relative here)."""
    generator = torch.Generator().manual_seed(stable_seed("long vae samples"))
    n = 2**20 + 3
    logits = (torch.full((2, n), -3.0) + 0.01 * torch.randn(2, n, generator=generator)).to(device)
    target = torch.zeros(2, n, device=device)
    exact = reference.bernoulli_nll(logits.double(), target.double(), "none")
    got = bernoulli_nll(logits, target, reduction="none", backend=backend)
    torch.testing.assert_close(got.double(), exact, rtol=3e-7, atol=0)
