"""ClippedRMSprop: torch.optim.RMSprop.step() + clamp_, fused, for every backend."""
import copy
import itertools

import pytest
import torch
from conftest import backends_for, capture_cuda_graph, cpu_namespaces, device_backend_pairs, requires_cuda

from fastgan.models import dcgan_critic, mlp_critic
from fastgan.optim import ClippedRMSprop

OPTIONS = [
    dict(centered=centered, momentum=momentum, weight_decay=weight_decay, maximize=maximize)
    for centered, momentum, weight_decay, maximize in itertools.product(
        [False, True], [0.0, 0.9], [0.0, 0.01], [False, True]
    )
]


def _option_id(options):
    return "-".join(f"{k}={v}" for k, v in options.items())


def _critic_with_odd_params(device, dtype):
    model = mlp_critic(3, 17, 2)
    # A parameter whose storage is transposed (non-contiguous but dense).
    model.extra = torch.nn.Parameter(torch.randn(5, 7).t().contiguous().t())
    return model.to(device=device, dtype=dtype)


def _fill_grads(model, generator, scale=1.0):
    for p in model.parameters():
        g = torch.randn(p.shape, generator=generator, dtype=torch.float64) * scale
        p.grad = g.to(device=p.device, dtype=p.dtype)


def _torch_step_then_clamp(optimizer, params, c):
    optimizer.step()
    with torch.no_grad():
        for p in params:
            p.clamp_(-c, c)


def _run_pair(device, dtype, backend, options, steps, c=0.05, lr=1e-2, make=_critic_with_odd_params, seed=0):
    torch.manual_seed(seed)
    ours = make(device, dtype)
    theirs = copy.deepcopy(ours)
    opt_ours = ClippedRMSprop(ours.parameters(), lr=lr, alpha=0.9, eps=1e-6, clip_value=c, backend=backend, **options)
    opt_theirs = torch.optim.RMSprop(theirs.parameters(), lr=lr, alpha=0.9, eps=1e-6, foreach=False, **options)
    gen_ours, gen_theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for _ in range(steps):
        _fill_grads(ours, gen_ours)
        _fill_grads(theirs, gen_theirs)
        opt_ours.step()
        _torch_step_then_clamp(opt_theirs, list(theirs.parameters()), c)
    return ours, theirs, opt_ours, opt_theirs


def _assert_close_to_scale(x, y, rtol, atol):
    """Elementwise rtol, and an absolute floor relative to the tensor's scale (state
    such as momentum buffers passes near zero through cancellation)."""
    scale = y.abs().max().item() if y.numel() else 0.0
    torch.testing.assert_close(x, y, rtol=rtol, atol=atol * max(scale, 1e-30) if atol else 0.0)


def _assert_state_close(opt_ours, opt_theirs, ours, theirs, rtol, atol):
    for p, q in zip(ours.parameters(), theirs.parameters()):
        _assert_close_to_scale(p.detach(), q.detach(), rtol, atol)
        s, t = opt_ours.state[p], opt_theirs.state[q]
        assert set(s) == set(t)
        for key in t:
            _assert_close_to_scale(s[key], t[key], rtol, atol)


@pytest.mark.parametrize("options", OPTIONS, ids=_option_id)
@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_rmsprop_then_clamp(device, backend, dtype, options):
    ours, theirs, opt_ours, opt_theirs = _run_pair(device, dtype, backend, options, steps=4)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    if backend == "reference":
        tol = dict(rtol=0, atol=0)  # the reference runs torch's own ops in torch's order
    _assert_state_close(opt_ours, opt_theirs, ours, theirs, **tol)
    assert all(p.abs().max() <= 0.05 for p in ours.parameters())


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_dcgan_critic_several_steps(device, backend):
    make = lambda device, dtype: dcgan_critic(3, 8).to(device=device, dtype=dtype)  # noqa: E731
    options = dict(centered=True, momentum=0.5, weight_decay=0.0, maximize=False)
    ours, theirs, opt_ours, opt_theirs = _run_pair(device, torch.float32, backend, options, steps=3, make=make)
    _assert_state_close(opt_ours, opt_theirs, ours, theirs, rtol=1e-5, atol=1e-6)


def _max_err(x, ref):
    return (x.double() - ref).abs().max().item()


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[-1]], ids=_option_id)
def test_low_precision_within_twice_eager_error(device, backend, dtype, options):
    """flash-attention's rule: at most twice as far from the float64 result as
    eager PyTorch in the same dtype, plus a floor of one unit in the last place."""
    c = 0.05
    base = _critic_with_odd_params(device, torch.float64)
    generator = torch.Generator().manual_seed(3)
    _fill_grads(base, generator)
    models = {name: copy.deepcopy(base) for name in ("ours", "eager", "exact")}
    for name in ("ours", "eager"):
        models[name].to(dtype)
    optimizers = {
        "ours": ClippedRMSprop(models["ours"].parameters(), lr=1e-2, clip_value=c, backend=backend, **options),
        "eager": torch.optim.RMSprop(models["eager"].parameters(), lr=1e-2, foreach=False, **options),
        "exact": torch.optim.RMSprop(models["exact"].parameters(), lr=1e-2, foreach=False, **options),
    }
    for _ in range(2):  # the second step starts from non-zero state
        optimizers["ours"].step()
        for name in ("eager", "exact"):
            _torch_step_then_clamp(optimizers[name], list(models[name].parameters()), c)
    ulp = torch.finfo(dtype).eps * c
    for p, e, x in zip(*(models[n].parameters() for n in ("ours", "eager", "exact"))):
        assert _max_err(p.detach(), x.detach()) <= 2 * _max_err(e.detach(), x.detach()) + ulp


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_params_without_grad_are_still_clipped(device, backend):
    model = mlp_critic(2, 8, 2).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10)
    frozen = model[0].weight
    optimizer = ClippedRMSprop(model.parameters(), clip_value=0.01, backend=backend)
    model(torch.randn(4, 2, device=device)).sum().backward()
    frozen.grad = None
    expected = frozen.detach().clone().clamp_(-0.01, 0.01)
    optimizer.step()
    assert torch.equal(frozen.detach(), expected)
    assert frozen not in optimizer.state or len(optimizer.state[frozen]) == 0
    assert all(p.abs().max() <= 0.01 for p in model.parameters())


def test_mixed_dtype_group():
    a = torch.nn.Parameter(torch.randn(10))
    b = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
    a2, b2 = copy.deepcopy(a), copy.deepcopy(b)
    ours = ClippedRMSprop([a, b], lr=1e-2, clip_value=0.5)
    theirs = torch.optim.RMSprop([a2, b2], lr=1e-2, foreach=False)
    for _ in range(3):
        for p, q in ((a, a2), (b, b2)):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        ours.step()
        _torch_step_then_clamp(theirs, [a2, b2], 0.5)
    torch.testing.assert_close(a, a2, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b, b2, rtol=1e-12, atol=1e-14)


def test_per_group_clip_value():
    a = torch.nn.Parameter(torch.full((4,), 3.0))
    b = torch.nn.Parameter(torch.full((4,), 3.0))
    opt = ClippedRMSprop([{"params": [a]}, {"params": [b], "clip_value": 0.5}], lr=0.0, clip_value=0.1)
    a.grad, b.grad = torch.ones(4), torch.ones(4)
    opt.step()
    assert torch.all(a == 0.1) and torch.all(b == 0.5)


OPTIONS_SD = dict(lr=1e-2, alpha=0.9, momentum=0.9, centered=True)


def _stepped(optimizer_cls, model, steps=2, **kwargs):
    optimizer = optimizer_cls(model.parameters(), **OPTIONS_SD, **kwargs)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        _fill_grads(model, generator)
        optimizer.step()
    return optimizer


def _continue_both(model_a, opt_a, model_b, opt_b):
    _fill_grads(model_a, torch.Generator().manual_seed(5))
    _fill_grads(model_b, torch.Generator().manual_seed(5))
    opt_a.step()
    opt_b.step()


def test_state_dict_loads_into_torch_rmsprop():
    torch.manual_seed(0)
    model = mlp_critic(2, 16, 2)
    ours = _stepped(ClippedRMSprop, model, clip_value=0.05)
    twin = copy.deepcopy(model)
    theirs = torch.optim.RMSprop(twin.parameters(), foreach=False, **OPTIONS_SD)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))  # state_dict() shares tensors
    for p, q in zip(model.parameters(), twin.parameters()):
        for key in ("square_avg", "grad_avg", "momentum_buffer", "step"):
            assert torch.equal(theirs.state[q][key], ours.state[p][key])
    # RMSprop continues from our state as our own update would, up to the clamp
    _continue_both(model, ours, twin, theirs)
    for p, q in zip(model.parameters(), twin.parameters()):
        _assert_close_to_scale(p.detach(), q.detach().clamp(-0.05, 0.05), rtol=1e-5, atol=1e-6)


def test_state_dict_from_torch_rmsprop_loads_into_ours():
    torch.manual_seed(0)
    model = mlp_critic(2, 16, 2)
    theirs = _stepped(torch.optim.RMSprop, model, foreach=False)
    twin = copy.deepcopy(model)
    ours = ClippedRMSprop(twin.parameters(), clip_value=0.07, **OPTIONS_SD)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    assert ours.param_groups[0]["clip_value"] == 0.07  # torch's groups lack it: our default fills in
    assert float(ours.state[next(twin.parameters())]["step"]) == 2.0
    _continue_both(model, theirs, twin, ours)
    for p, q in zip(model.parameters(), twin.parameters()):
        _assert_close_to_scale(q.detach(), p.detach().clamp(-0.07, 0.07), rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_is_exact():
    torch.manual_seed(0)
    model = mlp_critic(2, 16, 2)
    ours = _stepped(ClippedRMSprop, model, clip_value=0.05)
    twin = copy.deepcopy(model)
    restored = ClippedRMSprop(twin.parameters(), clip_value=0.5, **OPTIONS_SD)
    restored.load_state_dict(copy.deepcopy(ours.state_dict()))
    assert restored.param_groups[0]["clip_value"] == 0.05
    _continue_both(model, ours, twin, restored)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    assert float(ours.state[next(model.parameters())]["step"]) == 3.0


def test_closure_returns_loss_and_is_evaluated_with_grad():
    model = mlp_critic(2, 4, 1)
    opt = ClippedRMSprop(model.parameters())
    x = torch.randn(8, 2)

    def closure():
        opt.zero_grad()
        loss = model(x).mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_rejects_bad_clip_value(bad):
    with pytest.raises(ValueError, match="clip_value"):
        ClippedRMSprop(mlp_critic(2, 4, 1).parameters(), clip_value=bad)
    with pytest.raises(ValueError, match="clip_value"):
        ClippedRMSprop([{"params": mlp_critic(2, 4, 1).parameters(), "clip_value": bad}])


def test_rejects_bad_hyper_parameters_and_tensors():
    with pytest.raises(ValueError, match="lr must be finite and >= 0.0, got -1.0"):
        ClippedRMSprop(mlp_critic(2, 4, 1).parameters(), lr=-1.0)
    with pytest.raises(TypeError, match="dtype torch.int64"):
        ClippedRMSprop([torch.zeros(3, dtype=torch.int64)])
    with pytest.raises(ValueError, match="backend"):
        ClippedRMSprop(mlp_critic(2, 4, 1).parameters(), backend="gpu")


def test_repr_names_backend():
    text = repr(ClippedRMSprop(mlp_critic(2, 4, 1).parameters(), backend="cpu"))
    assert text.startswith("ClippedRMSprop[backend=cpu]") and "clip_value: 0.01" in text


@pytest.mark.parametrize("namespace", cpu_namespaces())
def test_opcheck_rmsprop_clip(namespace):
    def sample(centered, momentum):
        n = [5, 12]
        params = [torch.randn(k) for k in n]
        grads = [torch.randn(k) for k in n]
        square = [torch.rand(k) for k in n]
        gavg = [torch.randn(k) * 0.1 for k in n] if centered else []
        bufs = [torch.randn(k) for k in n] if momentum else []
        return (params, grads, square, gavg, bufs, 1e-2, 0.9, 1e-8, 0.01, 0.9 if momentum else 0.0, centered,
                False, 0.1)

    for centered, momentum in itertools.product([False, True], repeat=2):
        torch.library.opcheck(getattr(torch.ops, namespace).rmsprop_clip_.default, sample(centered, momentum))


BAD_CLIP_VALUES = [float("nan"), float("inf"), -0.5, 0.0]


def _two_groups(**second):
    big = [torch.nn.Parameter(torch.full((3,), 2.0)), torch.nn.Parameter(torch.full((3,), -2.0))]
    return big, [{"params": [big[0]]}, {"params": [big[1]], **second}]


@pytest.mark.parametrize("bad", BAD_CLIP_VALUES)
def test_construction_names_the_bad_group(bad):
    _, groups = _two_groups(clip_value=bad)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['clip_value'\] must be finite and > 0, got"):
        ClippedRMSprop(groups, clip_value=0.1)


@pytest.mark.parametrize("bad", BAD_CLIP_VALUES)
def test_add_param_group_refuses_a_bad_clip_value_and_keeps_the_groups(bad):
    params, groups = _two_groups()
    opt = ClippedRMSprop(groups[:1], clip_value=0.1)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['clip_value'\] must be finite and > 0"):
        opt.add_param_group({"params": [params[1]], "clip_value": bad})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [params[1]]})  # the refused group left nothing behind
    assert opt.param_groups[1]["clip_value"] == 0.1


def test_add_param_group_refuses_non_numbers_and_integer_params():
    params, groups = _two_groups()
    opt = ClippedRMSprop(groups[:1])
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['clip_value'\] must be a real number, got str"):
        opt.add_param_group({"params": [params[1]], "clip_value": "0.1"})
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['params'\]\[0\] has dtype torch.int64"):
        opt.add_param_group({"params": [torch.zeros(2, dtype=torch.int64)]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("bad", BAD_CLIP_VALUES)
def test_load_state_dict_refuses_a_bad_clip_value_before_changing_state(bad):
    _, groups = _two_groups()
    opt = ClippedRMSprop(groups, clip_value=0.1)
    state = copy.deepcopy(opt.state_dict())
    state["param_groups"][1]["clip_value"] = bad
    state["param_groups"][0]["lr"] = 0.5
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['clip_value'\] must be finite and > 0"):
        opt.load_state_dict(state)
    assert [g["clip_value"] for g in opt.param_groups] == [0.1, 0.1] and opt.param_groups[0]["lr"] == 5e-5


def test_load_state_dict_refuses_bad_settings_naming_the_group():
    _, groups = _two_groups()
    opt = ClippedRMSprop(groups)
    for key, value, error, message in [("lr", float("nan"), ValueError, "must be finite and >= 0.0, got nan"),
                                       ("centered", "no", TypeError, "must be a bool, got str")]:
        state = copy.deepcopy(opt.state_dict())
        state["param_groups"][1][key] = value
        with pytest.raises(error, match=rf"param_groups\[1\]\['{key}'\] {message}"):
            opt.load_state_dict(state)
    assert opt.param_groups[1]["centered"] is False


@pytest.mark.parametrize("bad", BAD_CLIP_VALUES)
@pytest.mark.parametrize("backend", backends_for("cpu"))
def test_step_refuses_a_clip_value_edited_in_param_groups(bad, backend):
    params, groups = _two_groups()
    opt = ClippedRMSprop(groups, lr=1e-2, clip_value=0.1, backend=backend)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.param_groups[1]["clip_value"] = bad
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['clip_value'\] must be finite and > 0"):
        opt.step()
    # nothing changed: every group is validated before group 0 is stepped
    assert all(torch.equal(p, b) for p, b in zip(params, before)) and len(opt.state) == 0
    opt.param_groups[1]["clip_value"] = 0.25
    opt.step()
    assert params[0].abs().max() <= 0.1 and params[1].abs().max() <= 0.25


def test_step_refuses_a_negative_lr_naming_the_group():
    params, groups = _two_groups()
    opt = ClippedRMSprop(groups)
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['lr'\] must be finite and >= 0.0, got -1.0"):
        opt.step()


# ---- a learning rate given as a tensor (capturable steps, lr schedules under CUDA graphs) ----


def _stepped_with_lr(device, backend, lr_of_step, lr_as_tensor, options, steps=4, seed=3):
    torch.manual_seed(seed)
    model = _critic_with_odd_params(device, torch.float32)
    lr = torch.tensor(lr_of_step(0), device=device) if lr_as_tensor else lr_of_step(0)
    optimizer = ClippedRMSprop(model.parameters(), lr=lr, alpha=0.9, eps=1e-6, clip_value=0.05, backend=backend,
                               **options)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        if lr_as_tensor:
            optimizer.param_groups[0]["lr"].fill_(lr_of_step(step))
        else:
            optimizer.param_groups[0]["lr"] = lr_of_step(step)
        _fill_grads(model, generator)
        optimizer.step()
    return model


@pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[-1]], ids=_option_id)
@pytest.mark.parametrize("device,backend", device_backend_pairs(with_reference=True))
def test_tensor_lr_equals_float_lr(device, backend, options):
    """A float32 tensor lr, updated in place every step (linear decay), gives the step of
    the float lr it holds: bit for bit in the fused kernels, which round the float lr to
    float32 too; to rounding in the eager reference (its arithmetic order differs)."""
    decay = lambda step: 1e-2 * (1 - step / 4)  # noqa: E731
    ours = _stepped_with_lr(device, backend, decay, True, options)
    theirs = _stepped_with_lr(device, backend, decay, False, options)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        if backend == "reference":
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(p, q)


@pytest.mark.parametrize("lr, error, match", [
    (torch.tensor([1e-3, 2e-3]), ValueError, "one element"),
    (torch.tensor(1, dtype=torch.int64), TypeError, "floating"),
])
def test_bad_tensor_lr_is_refused_naming_it(lr, error, match):
    with pytest.raises(error, match=match):
        ClippedRMSprop([torch.zeros(3, requires_grad=True)], lr=lr)


def test_tensor_lr_on_another_device_is_refused_at_step():
    param = torch.zeros(3, requires_grad=True)
    optimizer = ClippedRMSprop([param], lr=torch.tensor(1e-3))
    optimizer.param_groups[0]["lr"] = torch.tensor(1e-3, device="meta")
    param.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\] is on meta"):
        optimizer.step()
    assert torch.equal(param, torch.zeros(3))


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_captured_step_replays_with_the_current_tensor_lr(backend):
    """A step recorded in a CUDA graph reads the lr tensor at each replay: changing it in
    place between replays gives the eager steps with those learning rates."""
    decay = lambda step: 1e-2 * (1 - step / 8)  # noqa: E731
    torch.manual_seed(0)
    model = mlp_critic(3, 17, 2).cuda()
    eager = copy.deepcopy(model)
    lr = torch.tensor(decay(0), device="cuda")
    optimizer = ClippedRMSprop(model.parameters(), lr=lr, clip_value=0.05, capturable=True, backend=backend)
    reference_opt = ClippedRMSprop(eager.parameters(), lr=decay(0), clip_value=0.05, backend=backend)
    grads = [torch.randn(8, *p.shape, device="cuda") for p in model.parameters()]
    static_step = torch.zeros((), dtype=torch.int64, device="cuda")

    def step():
        for p, g in zip(model.parameters(), grads):
            p.grad = g.index_select(0, static_step).squeeze(0)
        optimizer.step()

    def reference_step(index):
        reference_opt.param_groups[0]["lr"] = decay(index)
        for p, g in zip(eager.parameters(), grads):
            p.grad = g[index].clone()
        reference_opt.step()

    graph, _, _ = capture_cuda_graph(step, warmup=2)  # two eager steps with grads[0] and decay(0)
    for _ in range(2):
        reference_step(0)
    for index in range(8):
        lr.fill_(decay(index))
        static_step.fill_(index)
        graph.replay()
        reference_step(index)
    torch.cuda.synchronize()
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_copies_and_pickles_keep_the_backend():
    import pickle

    opt = ClippedRMSprop(mlp_critic(2, 4, 1).parameters(), backend="reference")
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert twin.backend == "reference"
        assert twin.param_groups[0]["clip_value"] == opt.param_groups[0]["clip_value"]
