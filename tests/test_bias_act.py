"""bias_act: every backend against the eager reference, to the second order.

Low-precision tolerances follow flash-attention's rule: a kernel may be at most
twice as wrong (max abs error against a float64 reference) as eager PyTorch in the
same dtype, plus a small floor.
"""
import copy
import random
import zlib

import pytest
import torch
import torch.nn.functional as F
from conftest import (assert_flash_close, capture_cuda_graph, cpu_backends, cpu_namespaces, device_backend_pairs,
                      requires_cuda)

import fastgan
from fastgan import reference
from fastgan.nn import FusedBiasAct, FusedLeakyReLU, fuse_bias_act
from fastgan.ops import bias_act
from fastgan.ops.bias_act import ACTIVATIONS

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
PIECEWISE = ("relu", "lrelu")


def make_inputs(shape, dim, act, dtype, device, seed=0, bias=True):
    """x, b with z = x + b away from 0 for relu/lrelu (their derivative jumps there)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5
    if act in PIECEWISE:
        z = torch.where(z < 0, z - 0.25, z + 0.25)
    b = None
    if bias:
        nd = len(shape)
        b = torch.randn(shape[dim % nd], generator=g, dtype=torch.float64) * 0.5
        view = [1] * nd
        view[dim % nd] = -1
        z = z - b.reshape(view)
        b = b.to(device=device, dtype=dtype)
    return z.to(device=device, dtype=dtype), b


def all_orders(fn, x, b, dy, vx, vb):
    """y, (dx, db) and the grads of <dx, vx> + <db, vb> w.r.t. x, b and dy."""
    x = x.detach().requires_grad_()
    b = b.detach().requires_grad_() if b is not None else None
    dy = dy.detach().requires_grad_()
    y = fn(x, b)
    inputs = (x, b) if b is not None else (x,)
    first = torch.autograd.grad(y, inputs, dy, create_graph=True)
    dx = first[0]
    db = first[1] if b is not None else None
    s = (dx * vx).sum() + ((db * vb).sum() if b is not None else 0)
    second = torch.autograd.grad(s, inputs + (dy,), allow_unused=True)
    gx, gdy = second[0], second[-1]
    gb = second[1] if b is not None else None
    zero = lambda g, like: torch.zeros_like(like) if g is None else g  # noqa: E731
    return {"y": y, "dx": dx, "db": db, "d2x": zero(gx, x), "d2b": None if b is None else zero(gb, b),
            "d2dy": zero(gdy, dy)}


def check_against_reference(shape, dim, act, dtype, device, backend, alpha=None, gain=1.3, bias=True,
                            layout=None, seed=0):
    x, b = make_inputs(shape, dim, act, dtype, device, seed=seed, bias=bias)
    g = torch.Generator().manual_seed(seed + 1)
    dy = torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    vx = torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    vb = torch.randn(b.shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) if bias else None
    if layout is not None:
        x, dy, vx = layout(x), layout(dy), layout(vx)

    def fused(x_, b_):
        return bias_act(x_, b_, act, alpha, gain, dim, backend=backend)

    def eager(x_, b_):
        return reference.bias_act(x_, b_, act, alpha, gain, dim)

    up = lambda t: None if t is None else t.double()  # noqa: E731
    got = all_orders(fused, x, b, dy, vx, vb)
    same = all_orders(eager, x, b, dy, vx, vb)
    ref = all_orders(eager, up(x), up(b), up(dy), up(vx), up(vb))
    for key in got:
        if got[key] is None:
            assert ref[key] is None, key
            continue
        assert got[key].dtype == dtype, key
        assert_flash_close(got[key].detach(), same[key].detach(), ref[key].detach(), f"{act} {dtype} {key}")
    return got


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_matches_reference_all_orders(device, backend, dtype, act):
    # 8192 elements: the max error over them is a stable statistic for the 2x rule.
    check_against_reference((8, 16, 8, 8), 1, act, dtype, device, backend)


LAYOUTS = {
    "linear-2d": dict(shape=(9, 17), dim=1),
    "nchw": dict(shape=(3, 7, 5, 4), dim=1),
    "channels-last": dict(shape=(3, 7, 5, 4), dim=1, layout=lambda t: t.contiguous(memory_format=torch.channels_last)),
    "dim-2": dict(shape=(3, 4, 6, 5), dim=2),
    "dim-minus-1": dict(shape=(5, 3, 11), dim=-1),
    "1-d": dict(shape=(13,), dim=0),
    "sliced": dict(shape=(6, 5, 4), dim=1, layout=lambda t: torch.cat([t, t], 0)[::2]),
    "transposed": dict(shape=(7, 6), dim=1, layout=lambda t: t.t().contiguous().t()),
    "no-bias": dict(shape=(3, 7, 5), dim=1, bias=False),
    "one-channel": dict(shape=(4, 1, 3, 3), dim=1),
    "empty": dict(shape=(0, 5), dim=1),
    "several-chunks": dict(shape=(2, 5, 70, 70), dim=1),  # > one CPU chunk, many Triton blocks
    "several-chunks-2d": dict(shape=(700, 64), dim=1),
}


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("act", ["lrelu", "tanh", "silu"])
@pytest.mark.parametrize("case", list(LAYOUTS))
def test_layouts(device, backend, act, case):
    spec = dict(LAYOUTS[case])
    got = check_against_reference(spec.pop("shape"), spec.pop("dim"), act, torch.float32, device, backend, **spec)
    if case == "channels-last":
        assert got["y"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_channels_last_bfloat16_and_mismatched_grad_layout(device, backend):
    check_against_reference((2, 8, 3, 3), 1, "lrelu", torch.bfloat16, device, backend,
                            layout=lambda t: t.contiguous(memory_format=torch.channels_last))
    # y channels-last, the incoming gradient contiguous: staged into y's layout.
    x, b = make_inputs((2, 8, 3, 3), 1, "silu", torch.float32, device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    b.requires_grad_()
    dy = torch.randn(2, 8, 3, 3, device=device)
    y = bias_act(x, b, "silu", backend=backend)
    dx, db = torch.autograd.grad(y, (x, b), dy)
    x2, b2 = x.detach().requires_grad_(), b.detach().requires_grad_()
    ex, eb = torch.autograd.grad(reference.bias_act(x2, b2, "silu"), (x2, b2), dy)
    torch.testing.assert_close(dx, ex)
    torch.testing.assert_close(db, eb)


@pytest.mark.parametrize("namespace", cpu_namespaces())
@pytest.mark.parametrize("shape,dim", [((700, 64), 1), ((3, 40, 30, 30), 1), ((3, 40, 30, 30), 3), ((50000,), 0),
                                       ((256, 16384), 1)])
def test_grad_op_sums_the_bias_gradient(namespace, shape, dim):
    # db from bias_act_grad is dx summed over all dims but dim, for every layout, over
    # several CPU chunks and with a bias wide enough to widen them, and the same bits
    # whatever the thread count.
    ops = getattr(torch.ops, namespace)
    g = torch.Generator().manual_seed(3)
    dy, y = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    if len(shape) == 4:
        dy, y = (t.contiguous(memory_format=torch.channels_last) for t in (dy, y))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        dx, db = ops.bias_act_grad(dy, None, None, y, 2, 0.2, 1.3, dim, True)
        torch.set_num_threads(2)
        dx2, db2 = ops.bias_act_grad(dy, None, None, y, 2, 0.2, 1.3, dim, True)
    finally:
        torch.set_num_threads(threads)
    expected = dx.double().sum([d for d in range(dx.dim()) if d != dim]) if dx.dim() > 1 else dx.double()
    assert db.dtype == dy.dtype and db.shape == (shape[dim],)
    torch.testing.assert_close(db.double(), expected, rtol=1e-6, atol=1e-5)
    assert torch.equal(dx, dx2) and torch.equal(db, db2)
    no_db = ops.bias_act_grad(dy, None, None, y, 2, 0.2, 1.3, dim, False)[1]
    assert no_db.numel() == 0


@pytest.mark.parametrize("shape,dim", [((5, 7), 1), ((1000, 37), 1), ((300, 130), 1), ((2, 3, 50000), 2),
                                       ((120, 37, 3, 3), 1), ((64, 130, 2, 2), 1), ((3, 5, 4, 4), 1)])
@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_kernels_over_runs_of_rows(shape, dim, threads):
    # (B, C) and channels-last-like layouts (dim = last) walk a run of whole rows per
    # kernel call, after the rest of a row a CPU chunk starts in; C = 37 and 130 do not
    # divide the chunk, so chunks start mid-row. NCHW walks runs of H x W elements the
    # same way: 3 x 3 runs do not divide the chunk either, so one starts mid-run. All
    # three kernels, with the bias used by each (silu takes f' from z = x + b), against
    # the eager reference.
    g = torch.Generator().manual_seed(11)
    x, dy, ddx = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    b = torch.randn(shape[dim], generator=g, dtype=torch.float64)
    ops = torch.ops.fastgan
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        y = ops.bias_act(x, b, 5, 0.0, 1.3, dim)
        dx, db = ops.bias_act_grad(dy, x, b, None, 5, 0.0, 1.3, dim, True)
        d_dy, d_ref = ops.bias_act_grad2(ddx, dy, x, b, None, 5, 0.0, 1.3, dim, True)
    finally:
        torch.set_num_threads(previous)
    xr, br, dyr = x.clone().requires_grad_(True), b.clone().requires_grad_(True), dy.clone().requires_grad_(True)
    yr = reference.bias_act(xr, br, "silu", None, 1.3, dim)
    torch.testing.assert_close(y, yr.detach())
    dxr, dbr = torch.autograd.grad(yr, (xr, br), dyr, create_graph=True)
    torch.testing.assert_close(dx, dxr.detach())
    torch.testing.assert_close(db, dbr.detach())
    d_dyr, d_xr = torch.autograd.grad(dxr, (dyr, xr), ddx)
    torch.testing.assert_close(d_dy, d_dyr)
    torch.testing.assert_close(d_ref, d_xr)


@pytest.mark.parametrize("namespace", cpu_namespaces())
@pytest.mark.parametrize("act", ["lrelu", "silu"])
@pytest.mark.parametrize("shape,dim", [((64, 32), 1), ((3, 8, 5, 5), 1), ((700, 64), 0), ((9,), 0), ((), 0)])
def test_grad_op_reads_a_broadcast_gradient(namespace, act, shape, dim):
    # The gradient of a sum or a mean arrives as one value broadcast to the whole shape
    # (every stride 0); the op's dx and db equal those of its dense copy.
    ops = getattr(torch.ops, namespace)
    from fastgan.ops.bias_act import _ACTS

    act_id, alpha = _ACTS[act]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=g)
    bias = torch.randn(shape[dim], generator=g) if shape else None
    y = ops.bias_act(x, bias, act_id, alpha, 1.3, dim)
    ref = (None, None, y) if act == "lrelu" else (x, bias, None)
    dy = torch.tensor(0.75).expand(shape)
    need_db = bias is not None
    got = ops.bias_act_grad(dy, *ref, act_id, alpha, 1.3, dim, need_db)
    want = ops.bias_act_grad(dy.contiguous(), *ref, act_id, alpha, 1.3, dim, need_db)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-6)
    if namespace == "fastgan":  # the C++ kernel reads dy in place: no dense copy of it
        counts = _op_counts(lambda: ops.bias_act_grad(dy, *ref, act_id, alpha, 1.3, dim, need_db))
        assert "aten::copy_" not in counts, counts


# (act, alpha, gain): defaults, a negative gain, gain 0 and a negative lrelu slope (both take
# the derivative from x + b: y's sign no longer tells z's).
GRADCHECK_CASES = [(act, None, 1.3) for act in ACTIVATIONS] + [
    ("lrelu", 0.1, -0.7), ("relu", None, -2.0), ("tanh", None, -0.5), ("sigmoid", None, 0.0),
    ("lrelu", -0.3, 1.0), ("elu", 0.5, 2.0), ("relu", None, 0.0),
]


@pytest.mark.parametrize("backend", [b for b in fastgan.available_backends(torch.device("cpu")) if b != "reference"])
@pytest.mark.parametrize("act,alpha,gain", GRADCHECK_CASES)
def test_gradcheck_and_gradgradcheck(backend, act, alpha, gain):
    x, b = make_inputs((2, 3, 2, 2), 1, act, torch.float64, "cpu", seed=3)
    x.requires_grad_()
    b.requires_grad_()

    def fn(x_, b_):
        return bias_act(x_, b_, act, alpha, gain, backend=backend)

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("namespace", cpu_namespaces())
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "silu", "elu"])
def test_grad_op_is_differentiable_on_its_own(namespace, act):
    # bias_act_grad as a function of its own inputs (dy and its ref) has the
    # derivatives its autograd claims, not only along y = bias_act(x, b).
    ops = getattr(torch.ops, namespace)
    from fastgan.ops.bias_act import _ACTS

    act_id, alpha = _ACTS[act]
    g = torch.Generator().manual_seed(5)
    dy = torch.randn(3, 4, dtype=torch.float64, generator=g).requires_grad_()
    if act in ("tanh", "sigmoid"):  # ref = y
        y = (torch.rand(3, 4, dtype=torch.float64, generator=g) * 0.8 + 0.1).requires_grad_()
        assert torch.autograd.gradcheck(lambda d, y_: ops.bias_act_grad(d, None, None, y_, act_id, alpha, 1.5, 1, True),
                                        (dy, y))
    else:  # ref = z = x + b
        x = torch.randn(3, 4, dtype=torch.float64, generator=g).requires_grad_()
        b = torch.randn(4, dtype=torch.float64, generator=g).requires_grad_()
        assert torch.autograd.gradcheck(
            lambda d, x_, b_: ops.bias_act_grad(d, x_, b_, None, act_id, alpha, 1.5, 1, True), (dy, x, b))


@pytest.mark.parametrize("namespace", cpu_namespaces())
@pytest.mark.parametrize("act", ["silu", "tanh"])
def test_direct_op_call_with_a_negative_dim_to_the_second_order(namespace, act):
    # The front end passes dim >= 0; a direct op call may not, and the bias sums of its
    # backward and double backward still run over every dimension but dim.
    ops = getattr(torch.ops, namespace)
    from fastgan.ops.bias_act import _ACTS

    act_id, alpha = _ACTS[act]
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 2, 4, dtype=torch.float64, generator=g).requires_grad_()
    b = torch.randn(4, dtype=torch.float64, generator=g).requires_grad_()
    fn = lambda x_, b_: ops.bias_act(x_, b_, act_id, alpha, 1.5, -1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("act,alpha,gain", GRADCHECK_CASES)
def test_python_and_cpp_agree_on_the_saved_tensor(act, alpha, gain):
    # _ref_is_y (Python: the fake kernels' and Triton bodies' check) mirrors can_ref_y (C++):
    # the C++ op takes the derivative from y exactly when the Python check accepts y.
    from fastgan.ops.bias_act import _ACTS, _ref_is_y

    act_id, default_alpha = _ACTS[act]
    alpha = default_alpha if alpha is None else alpha
    y = torch.randn(3, 4)
    if act_id == 0:
        return
    if _ref_is_y(act_id, alpha, gain):
        torch.ops.fastgan.bias_act_grad(y, None, None, y, act_id, alpha, gain, 1, False)
    else:
        with pytest.raises(RuntimeError, match="cannot be taken from y"):
            torch.ops.fastgan.bias_act_grad(y, None, None, y, act_id, alpha, gain, 1, False)


@pytest.mark.parametrize("backend", [b for b in fastgan.available_backends(torch.device("cpu")) if b != "reference"])
def test_third_order_is_a_clear_error(backend):
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = bias_act(x, None, "tanh", backend=backend)
    (dx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (d2x,) = torch.autograd.grad(dx.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="third-order"):
        torch.autograd.grad(d2x.sum(), x)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_saved_tensors(act):
    # relu/lrelu/tanh/sigmoid keep only y for the backward; silu/elu x (and b); linear nothing.
    x = torch.randn(4, 5, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = bias_act(x, b, act, backend="cpu")
    ptrs = {t.data_ptr() for t in saved}
    if act == "linear":
        assert not saved
    elif act in ("relu", "lrelu", "tanh", "sigmoid"):
        assert ptrs == {y.data_ptr()}
    else:
        assert ptrs == {x.data_ptr(), b.data_ptr()}


def _op_counts(fn):
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key: e.count for e in prof.key_averages()}


@pytest.mark.parametrize("act,fused_double", [("lrelu", False), ("relu", False), ("tanh", True), ("silu", True)])
def test_double_backward_is_fused(act, fused_double):
    # Forward, first-order grad with create_graph, and its gradient: relu/lrelu run the
    # mask kernel for both orders (and send nothing back into y: no zeros, no bias sum);
    # the others run one bias_act_grad2 for both second-order terms.
    x = torch.randn(64, 32, requires_grad=True)
    b = torch.randn(32, requires_grad=True)
    dy = torch.randn(64, 32, requires_grad=True)
    v = torch.randn(64, 32)

    def run():
        (dx,) = torch.autograd.grad(bias_act(x, b, act, backend="cpu"), x, dy, create_graph=True)
        return torch.autograd.grad(dx, (dy, x, b), v, allow_unused=True)

    counts = _op_counts(run)
    assert counts["fastgan::bias_act"] == 1
    if fused_double:
        assert counts["fastgan::bias_act_grad2"] == 1
        # the first-order kernel, then (ref = y: tanh) the d_y term carried to x through it once more
        assert counts["fastgan::bias_act_grad"] == (2 if act == "tanh" else 1)
    else:
        assert counts["fastgan::bias_act_grad"] == 2 and "fastgan::bias_act_grad2" not in counts
        assert not {"aten::zeros", "aten::zeros_like", "aten::sum"} & set(counts), counts


def test_r1_penalty_skips_the_forward_graph_for_lrelu():
    # eager LeakyReLU's double backward sends zeros through every layer below it;
    # FusedLeakyReLU's sends nothing, so the penalty's backward runs fewer matmuls.
    torch.manual_seed(0)
    eager = _mlp(False)
    fused = fuse_bias_act(eager, backend="cpu")
    x = torch.randn(16, 6)

    def r1(model):
        def run():
            xg = x.clone().requires_grad_()
            (g,) = torch.autograd.grad(model(xg).sum(), xg, create_graph=True)
            return torch.autograd.grad(g.pow(2).sum(), list(model.parameters()), allow_unused=True)
        return run

    mm = lambda counts: sum(n for k, n in counts.items() if k in ("aten::mm", "aten::addmm"))  # noqa: E731
    assert mm(_op_counts(r1(fused))) < mm(_op_counts(r1(eager)))


def _opcheck_samples(dtype=torch.float32):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 5, 4, 2, generator=g).to(dtype)
    b = torch.randn(5, generator=g).to(dtype)
    cl = x.contiguous(memory_format=torch.channels_last)
    x2 = torch.randn(6, 7, generator=g).to(dtype)
    b2 = torch.randn(7, generator=g).to(dtype)
    return [(x, b, 1), (cl, b, 1), (x2, b2, 1), (x2, None, 1), (x2, b2[:6], 0)]


@pytest.mark.parametrize("namespace", cpu_namespaces())
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_opcheck(namespace, act):
    ops = getattr(torch.ops, namespace)
    from fastgan.ops.bias_act import _ACTS, _SECOND_ORDER, _ref_is_y

    act_id, alpha = _ACTS[act]
    gain = 1.25
    for x, b, dim in _opcheck_samples():
        for requires_grad in (False, True):
            xg = x.clone().requires_grad_(requires_grad)
            bg = None if b is None else b.clone().requires_grad_(requires_grad)
            torch.library.opcheck(ops.bias_act.default, (xg, bg, act_id, alpha, gain, dim))
            y = ops.bias_act(x, b, act_id, alpha, gain, dim)
            dy = torch.randn_like(x).requires_grad_(requires_grad)
            if act_id == 0:
                ref = (None, None, None)
            elif _ref_is_y(act_id, alpha, gain):
                ref = (None, None, y.clone().requires_grad_(requires_grad))
            else:
                ref = (xg, bg, None)
            for need_db in (False, True):
                torch.library.opcheck(ops.bias_act_grad.default, (dy, *ref, act_id, alpha, gain, dim, need_db))
            if act_id in _SECOND_ORDER and not requires_grad:  # (no third order to check)
                ddx = torch.randn_like(x)
                for need_ddy in (False, True):
                    torch.library.opcheck(ops.bias_act_grad2.default,
                                          (ddx, dy, *ref, act_id, alpha, gain, dim, need_ddy))


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_autocast(device, backend, dtype):
    # float32 parameters, low-precision activations: the output follows x, the bias
    # gradient reaches the float32 parameter.
    torch.manual_seed(0)
    linear = torch.nn.Linear(12, 16, bias=False).to(device)
    fused = FusedLeakyReLU(16, backend=backend).to(device)
    with torch.no_grad():
        fused.bias.normal_()
    eager_linear = torch.nn.Linear(12, 16).to(device)
    with torch.no_grad():
        eager_linear.weight.copy_(linear.weight)
        eager_linear.bias.copy_(fused.bias)
    x = torch.randn(8, 12, device=device)
    with torch.autocast(device, dtype=dtype):
        y = fused(linear(x))
        y_eager = F.leaky_relu(eager_linear(x), 0.2)
    assert y.dtype == dtype and y_eager.dtype == dtype
    # eager adds the bias inside the matmul (one rounding), fastgan after it (two)
    torch.testing.assert_close(y, y_eager, rtol=2e-2, atol=1e-2)
    y.float().pow(2).sum().backward()
    y_eager.float().pow(2).sum().backward()
    assert fused.bias.grad.dtype == torch.float32
    torch.testing.assert_close(fused.bias.grad, eager_linear.bias.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(linear.weight.grad, eager_linear.weight.grad, rtol=2e-2, atol=2e-2)


def test_autocast_conv_channels_last_bfloat16():
    conv = torch.nn.Conv2d(3, 8, 3, bias=False).to(memory_format=torch.channels_last)
    act = FusedBiasAct(8, "silu", bias_init=0.1)
    x = torch.randn(2, 3, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        y = act(h)
        expected = F.silu(h + act.bias.to(h.dtype).view(1, -1, 1, 1))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, expected)


def _mlp(fused, backend=None):
    layers = []
    for i, o in [(6, 32), (32, 32)]:
        if fused:
            layers += [torch.nn.Linear(i, o, bias=False), FusedLeakyReLU(o, backend=backend)]
        else:
            layers += [torch.nn.Linear(i, o), torch.nn.LeakyReLU(0.2)]
    return torch.nn.Sequential(*layers, torch.nn.Linear(32, 1))


def _convnet(fused, backend=None):
    layers = []
    for i, o in [(3, 8), (8, 16)]:
        if fused:
            layers += [torch.nn.Conv2d(i, o, 3, stride=2, padding=1, bias=False), FusedLeakyReLU(o, backend=backend)]
        else:
            layers += [torch.nn.Conv2d(i, o, 3, stride=2, padding=1), torch.nn.LeakyReLU(0.2)]
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(16 * 2 * 2, 1))


def _copy_params(fused, eager):
    """Copy eager's parameters into fused (biases move to the FusedLeakyReLU after each layer)."""
    eager_mods = list(eager)
    with torch.no_grad():
        for k, mod in enumerate(fused):
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                mod.weight.copy_(eager_mods[k].weight)
                if mod.bias is not None:
                    mod.bias.copy_(eager_mods[k].bias)
            elif isinstance(mod, FusedBiasAct):
                mod.bias.copy_(eager_mods[k - 1].bias)


def _r1_grads(critic, x):
    x = x.detach().requires_grad_()
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    critic.zero_grad(set_to_none=True)
    g.pow(2).sum().backward()
    # None: the parameter does not reach the penalty (a bias before lrelu: the mask is
    # piecewise constant in it), the same as a zero gradient.
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in critic.parameters()]


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_r1_penalty_matches_leaky_relu_critic(device, backend, net):
    torch.manual_seed(0)
    build = _mlp if net == "mlp" else _convnet
    eager = build(False).to(device=device, dtype=torch.float64)
    fused = build(True, backend).to(device=device, dtype=torch.float64)
    _copy_params(fused, eager)
    x = torch.randn(5, 6, device=device, dtype=torch.float64) if net == "mlp" else torch.randn(
        4, 3, 8, 8, device=device, dtype=torch.float64)
    got = _r1_grads(fused, x)
    expected = dict(zip([n for n, _ in eager.named_parameters()], _r1_grads(eager, x)))
    names = [n for n, _ in fused.named_parameters()]
    # map fused names (k.bias on the FusedLeakyReLU) to the eager layer before it
    for name, grad in zip(names, got):
        k, kind = name.split(".")
        eager_name = f"{int(k) - 1}.bias" if isinstance(fused[int(k)], FusedBiasAct) else name
        torch.testing.assert_close(grad, expected[eager_name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_fuse_bias_act_rewrites_sequential(device, backend):
    torch.manual_seed(1)
    eager = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.LeakyReLU(0.1),
        torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ELU(0.7)),
        torch.nn.Flatten(), torch.nn.Linear(8 * 16, 10), torch.nn.Tanh(), torch.nn.Linear(10, 5), torch.nn.SiLU(),
        torch.nn.Linear(5, 1), torch.nn.Sigmoid(),
    ).to(device=device, dtype=torch.float64)
    fused = fuse_bias_act(eager, backend=backend)
    assert eager[0].bias is not None  # not in place: the original is untouched
    kinds = [type(m).__name__ for m in fused.modules()]
    assert kinds.count("FusedLeakyReLU") == 1 and kinds.count("FusedBiasAct") == 4
    assert fused[0].bias is None and fused[1].bias.shape == (8,) and fused[1].negative_slope == 0.1
    x = torch.randn(3, 3, 4, 4, device=device, dtype=torch.float64)
    torch.testing.assert_close(fused(x), eager(x))
    ge = dict(zip([n for n, _ in eager.named_parameters()], _r1_grads(eager, x)))
    gf = dict(zip([n for n, _ in fused.named_parameters()], _r1_grads(fused, x)))
    for name, grad in ge.items():
        if name not in gf:  # a moved bias: "<path>.<k>.bias" now lives in "<path>.<k + 1>.bias"
            *path, k, leaf = name.split(".")
            name = ".".join(path + [str(int(k) + 1), leaf])
        torch.testing.assert_close(gf.pop(name), grad, rtol=1e-10, atol=1e-12, msg=name)
    assert not gf


def test_fuse_bias_act_inplace_keeps_parameter_objects():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.LeakyReLU(), torch.nn.Linear(6, 2, bias=False),
                                torch.nn.ReLU(), torch.nn.Linear(2, 2), torch.nn.Softplus())
    bias = model[0].bias
    same = fuse_bias_act(model, inplace=True)
    assert same is model and model[1].bias is bias and model[0].bias is None
    assert isinstance(model[3], FusedBiasAct) and model[3].bias is None  # a bias-less layer: the activation alone
    assert isinstance(model[5], torch.nn.Softplus)  # not a fused activation
    assert sum(p.numel() for p in model.parameters()) == 4 * 6 + 6 + 6 * 2 + 2 * 2 + 2


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_fuse_bias_act_bias_free_dcgan_critic(device, backend):
    """DCGAN's conv layers have no bias: each LeakyReLU becomes a bias-free FusedLeakyReLU,
    the parameters are unchanged and the R1 gradients equal eager's."""
    from fastgan.models import dcgan_critic

    torch.manual_seed(0)
    eager = dcgan_critic(batch_norm=False).to(device=device, dtype=torch.float64)
    fused = fuse_bias_act(eager, backend=backend)
    assert [type(m).__name__ for m in fused].count("FusedLeakyReLU") == 4
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in eager.named_parameters()]
    x = torch.randn(2, 3, 64, 64, device=device, dtype=torch.float64)
    torch.testing.assert_close(fused(x), eager(x))
    for got, want in zip(_r1_grads(fused, x), _r1_grads(eager, x)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _value_and_grads(model, x, params):
    """model(x), and the gradients of ``|model(x)|^2 + |d sum(model(x)) / dx|^2`` (a double
    backward, as R1) with respect to `params` and x (zeros where unused)."""
    x = x.detach().requires_grad_()
    y = model(x)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    loss = y.square().sum() + gx.square().sum()
    grads = torch.autograd.grad(loss, list(params) + [x], allow_unused=True)
    return y.detach(), [torch.zeros_like(t) if g is None else g for g, t in zip(grads, list(params) + [x])]


def _assert_fusing_keeps_function(eager, inputs, backend):
    """fuse_bias_act(inplace) on a copy of `eager` gives the same outputs and the same
    gradients for every parameter (matched by object: in place keeps them) and input.
    Returns the fused model."""
    fused = copy.deepcopy(eager)
    pairs = list(zip(eager.parameters(), fused.parameters()))
    assert fuse_bias_act(fused, inplace=True, backend=backend) is fused
    for x in inputs:
        y_eager, g_eager = _value_and_grads(eager, x, [p for p, _ in pairs])
        y_fused, g_fused = _value_and_grads(fused, x, [q for _, q in pairs])
        torch.testing.assert_close(y_fused, y_eager, rtol=1e-10, atol=1e-12)
        for got, want in zip(g_fused, g_eager):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    return fused


def _kinds(model):
    return [type(m).__name__ for m in model.modules()]


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_fuse_bias_act_layer_used_twice_keeps_its_bias_on_both_uses(device, backend):
    torch.manual_seed(2)
    shared = torch.nn.Linear(5, 5)
    eager = torch.nn.Sequential(shared, torch.nn.LeakyReLU(0.1), shared, torch.nn.Tanh(), torch.nn.Linear(5, 1))
    eager = eager.to(device=device, dtype=torch.float64)
    x = torch.randn(4, 5, device=device, dtype=torch.float64)
    fused = _assert_fusing_keeps_function(eager, [x, x[0]], backend)
    assert _kinds(fused).count("FusedLeakyReLU") == 1 and _kinds(fused).count("FusedBiasAct") == 1
    assert fused[0].bias is None and fused[1].bias is fused[3].bias  # one bias, shared like the layer


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_fuse_bias_act_leaves_a_shared_layer_with_an_unfusable_use(device, backend):
    """A layer used once before an activation and once before something else keeps its
    bias (moving it would drop it from the second use); bias-free pairs still fuse."""
    torch.manual_seed(3)
    shared = torch.nn.Linear(4, 4)
    eager = torch.nn.Sequential(
        torch.nn.Sequential(shared, torch.nn.ReLU()), shared, torch.nn.Linear(4, 4, bias=False), torch.nn.SiLU(),
    ).to(device=device, dtype=torch.float64)
    x = torch.randn(3, 4, device=device, dtype=torch.float64)
    fused = _assert_fusing_keeps_function(eager, [x], backend)
    assert shared.bias is not None and isinstance(fused[0][1], torch.nn.ReLU)
    assert isinstance(fused[3], FusedBiasAct) and fused[3].bias is None


def _conv_nets():
    """(net, batched input, unbatched input with a spatial size equal to the channels)."""
    conv1 = torch.nn.Sequential(torch.nn.Conv1d(2, 5, 3, padding=1), torch.nn.ELU(0.5),
                                torch.nn.Conv1d(5, 3, 1), torch.nn.Sigmoid())
    conv2 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.SiLU(),
                                torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.LeakyReLU(0.2))
    conv3 = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 1), torch.nn.Tanh())
    return {"conv1d": (conv1, (2, 2, 5), (2, 5)), "conv2d": (conv2, (2, 3, 4, 4), (3, 4, 4)),
            "conv2d-odd": (conv2, (2, 3, 5, 6), (3, 5, 6)), "conv3d": (conv3, (2, 2, 3, 3, 3), (2, 3, 2, 3))}


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("net", sorted(_conv_nets()))
def test_fuse_bias_act_unbatched_conv_input(device, backend, net):
    """Unbatched (C, *spatial) input: the bias runs along C, also when a spatial size
    equals the channel count (it once ran along H there, and failed elsewhere)."""
    torch.manual_seed(4)
    eager, batched, unbatched = _conv_nets()[net]
    eager = eager.to(device=device, dtype=torch.float64)
    inputs = [torch.randn(shape, device=device, dtype=torch.float64) for shape in (batched, unbatched)]
    fused = _assert_fusing_keeps_function(eager, inputs, backend)
    assert any(isinstance(m, FusedBiasAct) and m.bias is not None for m in fused.modules())


_RANDOM_ACTIVATIONS = [lambda: torch.nn.LeakyReLU(0.1), torch.nn.ReLU, torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.SiLU,
                       lambda: torch.nn.ELU(0.5), torch.nn.Softplus, torch.nn.Identity]


def _random_net(rng):
    """A Sequential of 2-5 Linear or ConvNd layers (some bias-free, some used twice,
    some wrapped with their activation or alone in a nested Sequential), each followed
    by a random activation, fusable or not; and a batched and an unbatched input."""
    spatial = rng.choice([0, 1, 2, 3])  # 0: Linear layers
    width = rng.choice([3, 4, 5])  # equal widths so that any layer can be reused
    make = (lambda bias: torch.nn.Linear(width, width, bias=bias)) if spatial == 0 else (
        lambda bias: [torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d][spatial - 1](
            width, width, rng.choice([1, 3]), padding="same", bias=bias))
    layers = []
    modules = []
    for _ in range(rng.randint(2, 5)):
        layer = rng.choice(layers) if layers and rng.random() < 0.3 else make(rng.random() < 0.8)
        layers.append(layer)
        pair = [layer, rng.choice(_RANDOM_ACTIVATIONS)()]
        nest = rng.random()
        modules += [torch.nn.Sequential(*pair)] if nest < 0.2 else [torch.nn.Sequential(pair[0]), pair[1]] \
            if nest < 0.3 else pair
    size = [width] + [width if rng.random() < 0.5 else rng.choice([2, 5])] * spatial
    return torch.nn.Sequential(*modules).double(), [torch.randn([2] + size, dtype=torch.float64),
                                                    torch.randn(size, dtype=torch.float64)]


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_fuse_bias_act_random_nets(device, backend, one_thread):
    """Seeded random nets (shared layers, nesting, unbatched inputs, unfusable
    activations): fusing keeps the outputs and the first and second derivatives."""
    rng = random.Random(zlib.crc32(b"fuse_bias_act"))
    torch.manual_seed(zlib.crc32(b"fuse_bias_act"))
    fused_pairs = 0
    for _ in range(25):
        eager, inputs = _random_net(rng)
        eager = eager.to(device)
        fused = _assert_fusing_keeps_function(eager, [x.to(device) for x in inputs], backend)
        fused_pairs += sum(isinstance(m, FusedBiasAct) for m in fused.modules())
    assert fused_pairs >= 25  # the nets do exercise the rewrite


class _ScaledBiasLinear(torch.nn.Linear):
    """An equalized-lr style layer: its forward scales the bias (moving it would drop the scale)."""

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight, self.bias * 0.5)


class _ReversedSequential(torch.nn.Sequential):
    def forward(self, x):
        for module in reversed(self):
            x = module(x)
        return x


def test_fuse_bias_act_leaves_pairs_it_cannot_prove_equal():
    """Subclassed layers or activations, hooked modules and Sequential subclasses with
    their own forward are left as they are (the result still computes the same)."""
    torch.manual_seed(5)
    hooked = torch.nn.Linear(3, 3)
    outputs_seen = []
    hooked.register_forward_hook(lambda module, args, output: outputs_seen.append(output.detach()))
    eager = torch.nn.Sequential(
        _ScaledBiasLinear(3, 3), torch.nn.ReLU(),
        hooked, torch.nn.Tanh(),
        _ReversedSequential(torch.nn.Tanh(), torch.nn.Linear(3, 3)),
    ).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    fused = _assert_fusing_keeps_function(eager, [x], "cpu")
    assert "FusedBiasAct" not in _kinds(fused)
    assert len(outputs_seen) == 2 and torch.equal(outputs_seen[0], outputs_seen[1])  # with its bias, both times


def test_fuse_bias_act_rejects_non_modules():
    with pytest.raises(TypeError, match="module must be an nn.Module, got list"):
        fuse_bias_act([torch.nn.Linear(2, 2), torch.nn.ReLU()])
    with pytest.raises(TypeError, match="inplace must be a bool, got str"):
        fuse_bias_act(torch.nn.Sequential(), inplace="yes")


def test_modules_repr_and_defaults():
    m = FusedLeakyReLU(16)
    assert repr(m) == "FusedLeakyReLU(16, negative_slope=0.2, gain=1.0)"
    assert torch.equal(m.bias, torch.zeros(16))
    m = FusedBiasAct(8, "elu", gain=2.0, bias_init=0.5)
    assert repr(m) == "FusedBiasAct(8, act='elu', alpha=1.0, gain=2.0, dim=1)"
    assert torch.equal(m.bias, torch.full((8,), 0.5))
    assert repr(FusedBiasAct(3, "tanh", bias=False, dim=-1)) == "FusedBiasAct(3, act='tanh', gain=1.0, dim=-1, bias=False)"
    assert FusedBiasAct(4, dtype=torch.float64).bias.dtype == torch.float64
    with pytest.raises(ValueError, match="act"):
        FusedBiasAct(4, "gelu")
    with pytest.raises(ValueError, match="channels"):
        FusedBiasAct(0)
    with pytest.raises(ValueError, match="gain"):
        FusedLeakyReLU(4, gain=float("nan"))


def test_gain_and_alpha_defaults():
    x = torch.randn(4, 5)
    b = torch.randn(5)
    torch.testing.assert_close(bias_act(x, b), F.leaky_relu(x + b, 0.2))
    torch.testing.assert_close(bias_act(x, b, "elu"), F.elu(x + b, 1.0))
    torch.testing.assert_close(bias_act(x, b, "lrelu", 0.05, 2 ** 0.5), F.leaky_relu(x + b, 0.05) * 2 ** 0.5)
    torch.testing.assert_close(bias_act(x, None, "relu"), F.relu(x))


def test_nan_and_inf_propagate_like_eager():
    x = torch.tensor([[float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 3.0, -3.0, 1e30, -1e30]])
    for act in ACTIVATIONS:
        for backend in fastgan.available_backends(torch.device("cpu")):
            got = bias_act(x, None, act, backend=backend)
            torch.testing.assert_close(got, reference.bias_act(x, None, act), equal_nan=True, msg=f"{act} {backend}")


@pytest.mark.parametrize("backend", [b for b in fastgan.available_backends(torch.device("cpu")) if b != "reference"])
@pytest.mark.parametrize("act", ["lrelu", "tanh", "silu"])
def test_torch_compile_forward_and_backward(backend, act):
    x, b = make_inputs((4, 6, 3, 3), 1, act, torch.float32, "cpu")

    @torch.compile(fullgraph=True, backend="aot_eager")
    def fn(x_, b_):
        return bias_act(x_, b_, act, gain=1.5, backend=backend) * 2

    xg, bg = x.clone().requires_grad_(), b.clone().requires_grad_()
    y = fn(xg, bg)
    dy = torch.randn_like(y)
    dx, db = torch.autograd.grad(y, (xg, bg), dy)
    xe, be = x.clone().requires_grad_(), b.clone().requires_grad_()
    ye = reference.bias_act(xe, be, act, None, 1.5) * 2
    ex, eb = torch.autograd.grad(ye, (xe, be), dy)
    torch.testing.assert_close(y, ye)
    torch.testing.assert_close(dx, ex)
    torch.testing.assert_close(db, eb)


def test_benchmark_suite_runs(tmp_path):
    import json

    from benchmarks.run import main

    assert main(["--suite", "bias_act", "--device", "cpu", "--quick", "--reps", "1", "--warmup", "1",
                 "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bias_act-cpu.json").read_text())["results"]
    cases = {r["case"].split()[0] for r in rows}
    assert {"fwd", "fwd+bwd", "fwd+bwd+dbl", "r1"} <= cases
    assert {r["variant"] for r in rows} >= {"eager", "fastgan-cpu"}


# ---- argument errors, named ----


@pytest.mark.parametrize("backend", cpu_backends("cpu", "triton"))
def test_negative_dim_takes_the_fused_path(backend):
    # fuse_bias_act's modules pass dim=-1: the same op call as dim = ndim - 1, with the
    # same values and gradients (and no detour through the front end's checks).
    g = torch.Generator().manual_seed(4)
    x, b = torch.randn(6, 5, 3, generator=g), torch.randn(3, generator=g)
    grads = []
    for dim in (2, -1):
        xi, bi = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
        y = bias_act(xi, bi, "silu", gain=1.3, dim=dim, backend=backend)
        y.backward(torch.ones_like(y))
        grads.append((y.detach(), xi.grad, bi.grad))
    for a, c in zip(*grads):
        torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_errors_name_the_argument():
    x = torch.randn(4, 5, 3)
    b = torch.randn(5)
    with pytest.raises(ValueError, match="act must be one of"):
        bias_act(x, b, "gelu")
    with pytest.raises(ValueError, match="bias must be 1-D of size"):
        bias_act(x, torch.randn(4))
    with pytest.raises(ValueError, match="bias must be 1-D"):
        bias_act(x, torch.randn(5, 1))
    with pytest.raises(TypeError, match="bias has dtype torch.float64"):
        bias_act(x, b.double())
    with pytest.raises(TypeError, match="bias has dtype torch.int64"):
        bias_act(x, torch.arange(5))
    with pytest.raises(ValueError, match="bias is on meta"):
        bias_act(x, torch.randn(5, device="meta"))
    with pytest.raises(IndexError, match="dim 3 is out of range"):
        bias_act(x, b, dim=3)
    with pytest.raises(IndexError, match="dim -4 is out of range"):
        bias_act(x, b, dim=-4)
    with pytest.raises(TypeError, match="dim must be an int"):
        bias_act(x, b, dim=1.0)
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        bias_act(torch.arange(6).view(2, 3), torch.randn(3))
    with pytest.raises(TypeError, match="x has dtype torch.complex64"):
        bias_act(torch.randn(2, 3, dtype=torch.complex64), None)
    with pytest.raises(TypeError, match="x has dtype torch.bool"):
        bias_act(torch.ones(2, 3, dtype=torch.bool), None)
    with pytest.raises(TypeError, match="x must be a tensor"):
        bias_act([1.0, 2.0], None)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="alpha must be finite"):
            bias_act(x, b, "lrelu", alpha=bad)
        with pytest.raises(ValueError, match="gain must be finite"):
            bias_act(x, b, gain=bad)
    with pytest.raises(TypeError, match="gain must be a real number"):
        bias_act(x, b, gain="2")
    with pytest.raises(fastgan.BackendError, match="cuda"):
        bias_act(x, b, backend="cuda")


def test_cpp_ops_check_their_inputs():
    # Direct op calls (bypassing the front-end) fail cleanly instead of reading out of bounds.
    x = torch.randn(4, 5)
    with pytest.raises(RuntimeError, match="bias must be 1-D of size 5"):
        torch.ops.fastgan.bias_act(x, torch.randn(4), 2, 0.2, 1.0, 1)
    with pytest.raises(RuntimeError, match="unknown activation"):
        torch.ops.fastgan.bias_act(x, None, 9, 0.2, 1.0, 1)
    with pytest.raises(RuntimeError, match="cannot be taken from y"):
        torch.ops.fastgan.bias_act_grad(x, None, None, x, 2, -0.2, 1.0, 1, False)
    with pytest.raises(RuntimeError, match="y has shape"):
        torch.ops.fastgan.bias_act_grad(x, None, None, torch.randn(5, 4), 2, 0.2, 1.0, 1, False)
    with pytest.raises(RuntimeError, match="second derivative"):
        torch.ops.fastgan.bias_act_grad2(x, x, None, None, x, 2, 0.2, 1.0, 1, True)


# ---- GPU only ----


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_launches_per_order(backend):
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(64, 256, 8, 8, device="cuda", requires_grad=True)
    b = torch.randn(256, device="cuda", requires_grad=True)

    def count(fn):
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)

    with torch.no_grad():
        assert count(lambda: bias_act(x, b, backend=backend)) == 1
    y = bias_act(x, b, backend=backend)
    dy = torch.randn_like(y).requires_grad_()
    # backward: the mask kernel and the bias reduction
    assert count(lambda: torch.autograd.grad(y, (x, b), dy, retain_graph=True)) <= 2
    (dx,) = torch.autograd.grad(y, x, dy, create_graph=True)
    v = torch.ones_like(dx)
    # double backward of lrelu: one mask-kernel call
    assert count(lambda: torch.autograd.grad(dx, dy, v, retain_graph=True)) == 1


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("act", ["lrelu", "tanh", "silu"])
def test_cuda_graph_capture(backend, act):
    critic = torch.nn.Sequential(torch.nn.Linear(16, 32, bias=False), FusedBiasAct(32, act, backend=backend),
                                 torch.nn.Linear(32, 1)).cuda()
    x = torch.randn(8, 16, device="cuda", requires_grad=True)

    def step():
        (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
        # (allow_unused: lrelu's bias does not reach an R1 penalty)
        return torch.autograd.grad(g.pow(2).sum(), list(critic.parameters()), allow_unused=True)

    graph, expected, out = capture_cuda_graph(step)
    graph.replay()
    torch.cuda.synchronize()
    for o, e in zip(out, expected):
        assert (o is None) == (e is None)
        if o is not None:
            torch.testing.assert_close(o, e)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_tanh_second_derivative_bfloat16_saturated_with_gain(device, backend):
    # From a rounded bfloat16 y, tanh' = 1 - (y/gain)^2 cancels where tanh saturates: the
    # second derivative came out with the wrong sign. The forward keeps z there instead.
    x = torch.tensor([[2.5, 3.0, -2.75, 4.0]], dtype=torch.bfloat16, device=device)
    b = torch.tensor([0.25, 0.5, -0.5, 0.0], dtype=torch.bfloat16, device=device)
    v = torch.ones_like(x)

    def second(x, b, **kwargs):
        x = x.clone().requires_grad_(True)
        y = fastgan.ops.bias_act(x, b, "tanh", gain=1.7, **kwargs)
        (dx,) = torch.autograd.grad(y, x, v, create_graph=True)
        return torch.autograd.grad(dx, x, v)[0]

    exact = second(x.double(), b.double(), backend="reference")
    got = second(x, b, backend=backend).double()
    assert torch.equal(torch.sign(got), torch.sign(exact)), (got, exact)
    assert (got - exact).abs().max() <= 0.02 * exact.abs().max(), (got, exact)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_tanh_derivatives_from_z_keep_relative_accuracy_where_it_saturates(device, backend):
    """gain != 1 takes tanh's derivatives from z: 1 - tanh^2 as sech^2 = 4e / (1 + e)^2
    keeps float32's relative accuracy at |z| of 2-6, where 1 - t^2 cancelled (2.6e-4
    relative in a fuzz trial's second derivative)."""
    z = torch.linspace(2.0, 6.0, 64, dtype=torch.float64)
    z = torch.cat([z, -z])
    x = z.float().to(device).requires_grad_()
    y = bias_act(x, None, "tanh", gain=-0.7, backend=backend)
    d1, = torch.autograd.grad(y.sum(), x, create_graph=True)
    d2, = torch.autograd.grad(d1.sum(), x)
    z64 = x.detach().double().cpu()
    sech2 = 1 / torch.cosh(z64) ** 2
    torch.testing.assert_close(d1.detach().double().cpu(), -0.7 * sech2, rtol=2e-6, atol=0)
    torch.testing.assert_close(d2.double().cpu(), -0.7 * -2 * torch.tanh(z64) * sech2, rtol=2e-6, atol=0)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_tanh_and_elu_keep_relative_accuracy_near_zero(device, backend, dtype):
    """tanh and elu near 0 through expm1 (csrc/fast_math.h's fg_expm1; kernels/_common.py's
    expm1 for Triton): (1 - e)/(1 + e) and e^z - 1 cancel there (Triton's tanh was 40%
    off at z = 1e-7). Values and tanh's second derivative from z (gain != 1) against float64."""
    z = torch.logspace(-10, -0.15, 48, dtype=torch.float64)
    z = torch.cat([z, -z])
    x = z.to(dtype).to(device).requires_grad_()
    rtol = 1e-6 if dtype == torch.float32 else 1e-13
    z64 = x.detach().double().cpu()
    y = bias_act(x, None, "tanh", gain=-0.7, backend=backend)
    d1, = torch.autograd.grad(y.sum(), x, create_graph=True)
    d2, = torch.autograd.grad(d1.sum(), x)
    tanh = torch.tanh(z64)
    torch.testing.assert_close(y.detach().double().cpu(), -0.7 * tanh, rtol=rtol, atol=0)
    torch.testing.assert_close(d2.double().cpu(), -0.7 * -2 * tanh / torch.cosh(z64) ** 2, rtol=rtol, atol=0)
    elu = bias_act(x.detach(), None, "elu", alpha=1.5, gain=1.0, backend=backend)
    torch.testing.assert_close(elu.double().cpu(), torch.where(z64 > 0, z64, 1.5 * torch.expm1(z64)),
                               rtol=rtol, atol=0)
