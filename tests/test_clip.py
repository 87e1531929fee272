"""clip_weights_: every backend equals Tensor.clamp_ bit for bit."""
import pytest
import torch
from conftest import cpu_namespaces, device_backend_pairs, requires_cuda, stable_seed

import fastgan
from fastgan.models import dcgan_critic, mlp_critic
from fastgan.ops import clip_weights_, rmsprop_clip_

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _odd_tensors(device, dtype, generator):
    """Odd sizes, a scalar, an empty tensor, and non-contiguous views of a larger base."""
    base = torch.randn(37, 29, generator=generator).to(device=device, dtype=dtype)
    permuted = torch.randn(3, 5, 7, generator=generator).to(device=device, dtype=dtype).permute(2, 0, 1)
    return [
        torch.randn(1, generator=generator).to(device=device, dtype=dtype),
        torch.randn((), generator=generator).to(device=device, dtype=dtype),
        torch.randn(0, 3).to(device=device, dtype=dtype),
        torch.randn(4099, generator=generator).to(device=device, dtype=dtype),
        torch.randn(13, 7, 3, generator=generator).to(device=device, dtype=dtype),
        base[1:30:2, ::3],  # strided view: must be written through to `base`
        torch.randn(29, 37, generator=generator).to(device=device, dtype=dtype).t(),
        permuted,  # dense but permuted: handled in place
    ]


def _critics(device, dtype):
    return {
        "mlp": mlp_critic(2, 33, 3).to(device=device, dtype=dtype),
        "dcgan": dcgan_critic(3, 8).to(device=device, dtype=dtype),
    }


def _scaled_randn_(tensors, generator, scale=0.05):
    with torch.no_grad():
        for t in tensors:
            t.copy_(torch.randn(t.shape, generator=generator, dtype=torch.float64).mul_(scale))


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("critic", ["mlp", "dcgan"])
def test_clip_matches_clamp_on_critics(device, backend, dtype, critic):
    generator = torch.Generator().manual_seed(stable_seed(critic, str(dtype)))
    model = _critics(device, dtype)[critic]
    params = list(model.parameters())
    _scaled_randn_(params, generator)  # about half the weights lie outside [-c, c]
    c = 0.03
    expected = [p.detach().clone().clamp_(-c, c) for p in params]
    clip_weights_(model, c, backend=backend)
    for p, e in zip(params, expected):
        assert torch.equal(p.detach(), e)
        assert p.requires_grad and p.is_leaf


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_odd_shapes_and_views(device, backend, dtype):
    generator = torch.Generator().manual_seed(1234)
    tensors = _odd_tensors(device, dtype, generator)
    base = tensors[5]._base
    c = 0.5
    reference = [t.clone().clamp_(-c, c) for t in tensors]
    untouched_base = base.clone()
    clip_weights_(tensors, c, backend=backend)
    for t, r in zip(tensors, reference):
        assert torch.equal(t, r)
    # the strided view wrote through, and only its own elements of the base changed
    mask = torch.zeros_like(untouched_base, dtype=torch.bool)
    mask[1:30:2, ::3] = True
    assert torch.equal(base[~mask], untouched_base[~mask])


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_clip_mixed_dtypes_keep_nan_and_signed_zero(device, backend):
    a = torch.tensor([float("nan"), -0.0, 0.0, 1.0, -1.0, float("inf"), -float("inf"), 0.25], device=device)
    b = a.to(torch.float64)
    c16 = a.to(torch.bfloat16)
    tensors = [a, b, c16]
    expected = [t.clone().clamp_(-0.5, 0.5) for t in tensors]
    clip_weights_(tensors, 0.5, backend=backend)
    for t, e in zip(tensors, expected):
        assert torch.equal(torch.isnan(t), torch.isnan(e))
        finite = ~torch.isnan(e)
        assert torch.equal(t[finite], e[finite])
        assert torch.equal(torch.signbit(t[finite]), torch.signbit(e[finite]))


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_clip_leaves_grad_and_autograd_state(device, backend):
    model = mlp_critic(3, 16, 2).to(device)
    model(torch.randn(5, 3, device=device)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    versions = [p._version for p in model.parameters()]
    clip_weights_(model.parameters(), 0.01, backend=backend)
    for p, g, v in zip(model.parameters(), grads, versions):
        assert torch.equal(p.grad, g)
        assert p.requires_grad and p.is_leaf and p.grad_fn is None
        assert p._version > v  # in-place writes are visible to autograd's checks
        assert p.abs().max() <= 0.01


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_clip_many_tensors_spans_several_launch_batches(device, backend):
    # More tensors than one CUDA argument block holds (162 for one list).
    generator = torch.Generator().manual_seed(7)
    tensors = [torch.randn(int(n), generator=generator).to(device) for n in torch.randint(1, 50, (400,))]
    expected = [t.clone().clamp_(-0.3, 0.3) for t in tensors]
    clip_weights_(tensors, 0.3, backend=backend)
    assert all(torch.equal(t, e) for t, e in zip(tensors, expected))


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_clip_large_tensor_multiple_chunks(device, backend):
    # Several kernel chunks (CPU 32768, CUDA 65536, Triton 2048 elements) plus a ragged tail.
    t = torch.randn(3 * 65536 + 123, device=device)
    expected = t.clone().clamp_(-0.1, 0.1)
    clip_weights_([t], 0.1, backend=backend)
    assert torch.equal(t, expected)


def test_clip_groups_param_groups_and_mixed_devices():
    model = mlp_critic(2, 8, 1)
    extra = torch.randn(10, dtype=torch.float64)
    groups = [{"params": list(model.parameters())}, {"params": [extra]}]
    expected = [p.detach().clone().clamp_(-0.1, 0.1) for p in model.parameters()] + [extra.clone().clamp_(-0.1, 0.1)]
    clip_weights_(groups, 0.1)
    got = [p.detach() for p in model.parameters()] + [extra]
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


@pytest.mark.parametrize("bad", [0.0, -0.01, float("nan"), float("inf"), -float("inf")])
def test_clip_rejects_bad_clip_value(bad):
    t = torch.randn(5)
    before = t.clone()
    with pytest.raises(ValueError, match="clip_value"):
        clip_weights_([t], bad)
    assert torch.equal(t, before)


def test_clip_rejects_non_number_clip_value():
    with pytest.raises(TypeError, match="clip_value"):
        clip_weights_([torch.randn(3)], "0.01")
    with pytest.raises(TypeError, match="clip_value"):
        clip_weights_([torch.randn(3)], True)


@pytest.mark.parametrize(
    "bad",
    [
        torch.arange(5),
        torch.ones(3, dtype=torch.bool),
        torch.randn(3, dtype=torch.complex64),
        torch.randn(4, 4).to_sparse(),
    ],
    ids=["int64", "bool", "complex", "sparse"],
)
def test_clip_rejects_bad_tensor_before_touching_any(bad):
    good = torch.randn(10)
    before = good.clone()
    with pytest.raises(TypeError, match=r"params\[1\]"):
        clip_weights_([good, bad], 0.01)
    assert torch.equal(good, before)


def test_clip_names_module_parameter():
    model = mlp_critic(2, 4, 1)
    model.register_parameter("counts", torch.nn.Parameter(torch.zeros(3, dtype=torch.int32), requires_grad=False))
    with pytest.raises(TypeError, match="'counts'"):
        clip_weights_(model, 0.01)


def test_clip_rejects_non_tensor_items():
    with pytest.raises(TypeError, match=r"params\[0\]"):
        clip_weights_([1.0], 0.01)
    with pytest.raises(TypeError, match="params"):
        clip_weights_(3, 0.01)


@pytest.mark.parametrize("backend", ["auto", "cpu", "reference", "triton"])
def test_clip_empty_is_noop(backend):
    clip_weights_([], 0.01, backend=backend)
    clip_weights_(torch.nn.Sequential(), 0.01, backend=backend)


def test_clip_wrong_backend_for_device_raises():
    with pytest.raises(fastgan.BackendError, match="cuda"):
        clip_weights_([torch.randn(3)], 0.1, backend="cuda")


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_clip_value_as_one_element_tensor(device, backend):
    t = torch.randn(100, device=device)
    expected = t.clone().clamp_(-0.2, 0.2)
    clip_weights_([t], torch.tensor(0.2), backend=backend)
    assert torch.equal(t, expected)


@requires_cuda
def test_clip_cuda_single_launch_per_group():
    from torch.profiler import ProfilerActivity, profile

    model = dcgan_critic().cuda()
    clip_weights_(model, 0.01, backend="cuda")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        clip_weights_(model, 0.01, backend="cuda")
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) == 1, [e.name for e in kernels]


@pytest.mark.parametrize("namespace", cpu_namespaces())
def test_opcheck_clip(namespace):
    for tensors in ([torch.randn(5), torch.randn(3, 4)], [torch.randn(7, dtype=torch.float64)]):
        torch.library.opcheck(getattr(torch.ops, namespace).clip_.default, (tensors, 0.1))


def test_clip_works_under_compile():
    model = mlp_critic(2, 8, 1)

    @torch.compile(fullgraph=True, backend="eager")
    def clip(params):
        torch.ops.fastgan.clip_(params, 0.05)

    params = [p.detach() for p in model.parameters()]
    expected = [p.clone().clamp_(-0.05, 0.05) for p in params]
    clip(params)
    assert all(torch.equal(p, e) for p, e in zip(params, expected))



@requires_cuda
def test_triton_rmsprop_with_changing_lr_never_synchronises():
    # Per-step scalars are kernel arguments: an lr that decays every step adds no cache
    # entry and no blocking host-to-device copy.
    params = [torch.randn(64, 32, device="cuda"), torch.randn(32, device="cuda")]
    grads = [torch.randn_like(p) for p in params]
    squares = [torch.zeros_like(p) for p in params]
    rmsprop_clip_(params, grads, squares, [], [], lr=1e-3, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                  centered=False, maximize=False, clip_value=0.01, backend="triton")  # tables built once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(5):
            rmsprop_clip_(params, grads, squares, [], [], lr=1e-3 * (1 - step / 5), alpha=0.99, eps=1e-8,
                          weight_decay=0.0, momentum=0.0, centered=False, maximize=False, clip_value=0.01,
                          backend="triton")
    finally:
        torch.cuda.set_sync_debug_mode("default")


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_clip_captured_on_fresh_tensors_replays_correctly(backend):
    # The first call on new tensors builds the Triton launch tables inside the capture:
    # it must not raise, and the tables must outlive the capture (the graph reads them).
    clip_weights_([torch.randn(8, device="cuda")], 0.05, backend=backend)  # loads the kernel: not while capturing
    params = [torch.randn(300, device="cuda"), torch.randn(17, 5, device="cuda")]
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.cuda.graph(graph):
        clip_weights_(params, 0.05, backend=backend)
    for _ in range(2):
        with torch.no_grad():
            for p in params:
                p.normal_()
        expected = [p.clamp(-0.05, 0.05) for p in params]
        graph.replay()
        torch.cuda.synchronize()
        for p, e in zip(params, expected):
            assert torch.equal(p, e)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_clip_runs_on_the_tensors_device(backend):
    # Triton launches on torch's current device: the op sets the tensors' device.
    params = [torch.randn(1000, device="cuda:1")]
    expected = params[0].clamp(-0.1, 0.1)
    with torch.cuda.device(0):
        clip_weights_(params, 0.1, backend=backend)
    assert torch.equal(params[0], expected)


def test_multi_tensor_tables_built_in_a_capture_wait_for_its_replay(monkeypatch):
    """A table built while a CUDA graph is captured reaches the device only when the graph
    replays: a capture may reuse it, an eager call must build its own."""
    from collections import OrderedDict

    from fastgan.kernels import _multi_tensor

    monkeypatch.setattr(_multi_tensor, "_CACHE", OrderedDict())
    monkeypatch.setattr(_multi_tensor, "_CAPTURED", {})
    key_tensors = [[torch.zeros(5), torch.zeros(3)]]
    monkeypatch.setattr(_multi_tensor, "_capturing", lambda device: True)
    captured = _multi_tensor.tensor_table(key_tensors, 4)
    assert _multi_tensor.tensor_table(key_tensors, 4) is captured  # a capture reuses it
    monkeypatch.setattr(_multi_tensor, "_capturing", lambda device: False)
    eager = _multi_tensor.tensor_table(key_tensors, 4)
    assert eager is not captured
    assert _multi_tensor.tensor_table(key_tensors, 4) is eager
    monkeypatch.setattr(_multi_tensor, "_capturing", lambda device: True)
    assert _multi_tensor.tensor_table(key_tensors, 4) is captured
    assert eager.chunk_begin.tolist() == [0, 4, 0] and eager.numels.tolist() == [5, 3]
