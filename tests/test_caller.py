"""fastgan.ops._caller: the eager calls into C++ that skip torch's Python layer.

op_caller (csrc/op_caller.cpp) must behave as the op's torch.ops overload in every case:
what it converts itself, and what it hands to the overload (subclasses, torch-function
modes, keywords, values of another type). backward and grad_with_graph
(csrc/backward_call.cpp) must behave as loss.backward() and torch.autograd.grad: the same
gradients, hooks, errors, and the Python API for what they do not handle."""
import pytest
import torch
from conftest import capture_cuda_graph, requires_cuda
from torch.overrides import TorchFunctionMode
from torch._subclasses.fake_tensor import FakeTensorMode

from fastgan.models import mlp_critic
from fastgan.ops import discriminator_loss, gradient_penalty
from fastgan.ops._caller import backward, grad_with_graph, op_caller, op_callers

GAN_LOSS = torch.ops.fastgan.gan_loss.default
CLIP = torch.ops.fastgan.clip_.default


def _logits(seed, n=16):
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def test_first_output_alone_or_a_tuple_of_the_first_n():
    x, y = _logits(1), _logits(2)
    want = GAN_LOSS(x, y, 0, 1, 1)
    loss = op_caller(GAN_LOSS)(x, y, 0, 1, 1)
    assert isinstance(loss, torch.Tensor)
    torch.testing.assert_close(loss, want[0], rtol=0, atol=0)
    both = op_caller(GAN_LOSS, 2)(x, y, 0, 1, 1)
    assert isinstance(both, tuple) and len(both) == 2
    for got, expected in zip(both, want):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_gradients_match_the_torch_ops_call():
    x, y = _logits(3), _logits(4)
    op_caller(GAN_LOSS)(x, y, 1, 0, 2).backward()
    a, b = _logits(3), _logits(4)
    GAN_LOSS(a, b, 1, 0, 2)[0].backward()
    torch.testing.assert_close(x.grad, a.grad, rtol=0, atol=0)
    torch.testing.assert_close(y.grad, b.grad, rtol=0, atol=0)


def test_optional_tensor_none_and_float_from_an_int():
    x = _logits(5)
    torch.testing.assert_close(op_caller(GAN_LOSS)(x, None, 0, 0, 1), GAN_LOSS(x, None, 0, 0, 1)[0])
    bias_act = torch.ops.fastgan.bias_act.default
    v, b = torch.randn(4, 3), torch.randn(3)
    torch.testing.assert_close(op_caller(bias_act)(v, b, 2, 0.2, 2, 1), bias_act(v, b, 2, 0.2, 2.0, 1),
                               rtol=0, atol=0)


def test_tensor_list_in_place_bumps_versions_and_returns_none():
    ts = [torch.randn(5) * 3, torch.randn(2, 2) * 3]
    versions = [t._version for t in ts]
    assert op_caller(CLIP, 0)(ts, 1.0) is None
    for t, v in zip(ts, versions):
        assert t.abs().max() <= 1.0
        assert t._version > v


def test_the_ops_errors_come_through():
    x = _logits(6)
    with pytest.raises(RuntimeError, match="x_term must be a GAN loss term code"):
        op_caller(GAN_LOSS)(x, None, 99, 0, 1)
    with pytest.raises(RuntimeError, match="x must be a floating-point tensor"):
        op_caller(GAN_LOSS)(torch.ones(4, dtype=torch.int64), None, 0, 0, 1)


@pytest.mark.parametrize("args", [
    lambda x: (x, None, "0", 0, 1),  # a str for an int: the overload's TypeError
    lambda x: (x, None, 2 ** 70, 0, 1),  # an int out of range
    lambda x: (x, 3, 0, 0, 1),  # not a tensor
    lambda x: (x, None, 0, 0),  # too few
])
def test_arguments_it_does_not_convert_behave_as_with_torch_ops(args):
    x = _logits(7)
    with pytest.raises((TypeError, RuntimeError)) as expected:
        GAN_LOSS(*args(x))
    with pytest.raises(expected.type):
        op_caller(GAN_LOSS)(*args(x))


def test_keywords_go_to_the_overload():
    x, y = _logits(8), _logits(9)
    got = op_caller(GAN_LOSS)(x, y, x_term=0, y_term=1, reduction=1)
    torch.testing.assert_close(got, GAN_LOSS(x, y, 0, 1, 1)[0], rtol=0, atol=0)
    assert op_caller(GAN_LOSS, 0)(x, y, x_term=0, y_term=1, reduction=1) is None  # as when converted
    pair = op_caller(GAN_LOSS, 2)(x, y, x_term=0, y_term=1, reduction=1)
    assert isinstance(pair, tuple) and len(pair) == 2


class _Logged(torch.Tensor):
    calls = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_a_tensor_subclass_sees_its_torch_function():
    _Logged.calls.clear()
    x = _logits(10).detach().as_subclass(_Logged)
    loss = op_caller(GAN_LOSS)(x, None, 0, 0, 1)
    assert GAN_LOSS in _Logged.calls
    assert isinstance(loss, _Logged)


def test_a_torch_function_mode_sees_the_call():
    seen = []

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    x = _logits(11)
    with Mode():
        op_caller(GAN_LOSS)(x, None, 0, 0, 1)
    assert seen == [GAN_LOSS]


def test_dispatch_modes_run_in_the_dispatcher():
    """A fake-tensor mode (what torch.compile and export trace with) sees the call as the
    registered op and answers with its fake kernel."""
    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(8, 1))
        loss = op_caller(GAN_LOSS)(x, None, 0, 0, 1)
    assert type(loss).__name__ == "FakeTensor" and loss.shape == ()


def test_no_grad_and_autograd_graph_as_with_torch_ops():
    x = _logits(12)
    with torch.no_grad():
        assert not op_caller(GAN_LOSS)(x, None, 0, 0, 1).requires_grad
    assert op_caller(GAN_LOSS)(x, None, 0, 0, 1).grad_fn.name().endswith("GanLossFunction")


def test_op_callers_of_a_dispatch_table_keep_the_reference_and_share_one_caller_per_op():
    def reference(*args):
        return args

    table = op_callers({"cpu": GAN_LOSS, "cuda": GAN_LOSS, "reference": reference})
    assert table["reference"] is reference
    assert table["cpu"] is table["cuda"] and "gan_loss" in repr(table["cpu"])
    x = _logits(13)
    torch.testing.assert_close(table["cpu"](x, None, 0, 0, 1), GAN_LOSS(x, None, 0, 0, 1)[0], rtol=0, atol=0)


def test_refuses_a_schema_it_cannot_convert_and_too_many_outputs():
    with pytest.raises(RuntimeError, match="does not convert"):
        op_caller(torch.ops.aten.add.Tensor)  # Scalar alpha
    with pytest.raises(RuntimeError, match="has 3 outputs"):
        op_caller(GAN_LOSS, 4)
    assert "gan_loss" in repr(op_caller(GAN_LOSS))


def test_bound_arguments_follow_the_call_ones():
    x, y = _logits(14), _logits(15)
    bound = op_caller(GAN_LOSS, 1, (0, 1, 1))
    loss = bound(x, y)
    torch.testing.assert_close(loss, GAN_LOSS(x, y, 0, 1, 1)[0], rtol=0, atol=0)
    loss.backward()
    a, b = _logits(14), _logits(15)
    GAN_LOSS(a, b, 0, 1, 1)[0].backward()
    torch.testing.assert_close(x.grad, a.grad, rtol=0, atol=0)
    # what it does not convert goes to torch.ops with the bound arguments after the call's
    calls = []

    class Logged(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            calls.append(args[2:])
            return super().__torch_function__(func, types, args, kwargs or {})

    got = bound(x.detach().as_subclass(Logged), y.detach())
    torch.testing.assert_close(got.as_subclass(torch.Tensor), GAN_LOSS(x, y, 0, 1, 1)[0].detach())
    assert (0, 1, 1) in calls
    with pytest.raises(RuntimeError, match="for argument 'y'"):
        bound(x)  # too few: torch.ops gets (x, 0, 1, 1) and names the argument


def test_refuses_to_bind_a_tensor_or_too_many():
    with pytest.raises(RuntimeError, match="cannot be bound"):
        op_caller(GAN_LOSS, 1, (None, 0, 1, 1))
    with pytest.raises(RuntimeError, match="cannot bind 6"):
        op_caller(GAN_LOSS, 1, (0,) * 6)
    with pytest.raises(RuntimeError, match="does not convert"):
        op_caller(GAN_LOSS, 1, (0, 1, 0.5))


def _net(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, generator=g).requires_grad_(True)
    w = torch.randn(3, 2, generator=g).requires_grad_(True)
    return x, w


def _loss(x, w):
    return torch.tanh(x @ w).pow(2).sum()


def test_backward_fills_the_same_gradients_as_tensor_backward():
    x, w = _net()
    backward(_loss(x, w))
    a, b = _net()
    _loss(a, b).backward()
    torch.testing.assert_close(x.grad, a.grad, rtol=0, atol=0)
    torch.testing.assert_close(w.grad, b.grad, rtol=0, atol=0)


def test_backward_runs_python_hooks_and_passes_their_errors_on():
    x, w = _net()
    seen = []
    w.register_hook(lambda g: seen.append(g.shape))
    backward(_loss(x, w))
    assert seen == [w.shape]

    def refuse(g):
        raise ValueError("hook refused")

    x, w = _net()
    w.register_hook(refuse)
    with pytest.raises(ValueError, match="hook refused"):
        backward(_loss(x, w))


def test_backward_errors_are_the_engines():
    x, w = _net()
    with pytest.raises(RuntimeError, match="does not require grad"):
        backward(_loss(x, w).detach())
    with pytest.raises(RuntimeError, match="scalar outputs"):
        backward(torch.tanh(x @ w))
    loss = _loss(x, w)
    backward(loss)
    with pytest.raises(RuntimeError, match="a second time"):
        backward(loss)


def test_backward_of_a_subclass_and_under_a_mode_takes_the_python_api():
    _Logged.calls.clear()
    x, w = _net()
    backward(_loss(x, w).as_subclass(_Logged))
    assert torch.Tensor.backward in _Logged.calls
    assert x.grad is not None
    seen = []

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    loss = _loss(*_net())
    with Mode():
        backward(loss)
    assert torch.Tensor.backward in seen


def test_grad_with_graph_is_autograd_grad_with_create_graph():
    x, w = _net()
    g = grad_with_graph(_loss(x, w), x)
    (want,) = torch.autograd.grad(_loss(x, w), x, create_graph=True)
    torch.testing.assert_close(g, want, rtol=0, atol=0)
    assert g.requires_grad  # a graph for the double backward
    (gw,) = torch.autograd.grad(g.square().sum(), w)
    (want_w,) = torch.autograd.grad(want.square().sum(), w)
    torch.testing.assert_close(gw, want_w, rtol=0, atol=0)


def test_grad_with_graph_of_an_unused_input_is_none():
    x, w = _net()
    assert grad_with_graph(_loss(x, w), torch.ones(2, requires_grad=True)) is None


def test_grad_with_graph_of_a_subclass_takes_the_python_api():
    _Logged.calls.clear()
    x, w = _net()
    g = grad_with_graph(_loss(x.as_subclass(_Logged), w), x)
    assert g is not None and g.shape == x.shape


@requires_cuda
def test_cuda_op_caller_replays_in_a_cuda_graph():
    x = torch.randn(64, 1, device="cuda")
    graph, _, loss = capture_cuda_graph(lambda: op_caller(GAN_LOSS)(x, None, 0, 0, 1))
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(loss, GAN_LOSS(x, None, 0, 0, 1)[0])


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_backward_with_python_autograd_on_the_engines_device_thread(backend):
    """On CUDA the engine runs a backward on its device thread while backward waits; the
    Triton ops' autograd is Python, so backward must have released the GIL (a deadlock
    otherwise), and grad_with_graph's double backward too."""
    def run(step):
        torch.manual_seed(0)
        critic = mlp_critic(2, 32, 2).cuda()
        real, fake = torch.randn(16, 2, device="cuda"), torch.randn(16, 2, device="cuda")
        eps = torch.rand(16, device="cuda")
        loss = discriminator_loss(critic(real), critic(fake), "wasserstein", backend=backend) + \
            gradient_penalty(critic, real, fake, eps=eps, backend=backend)
        step(loss)
        return [p.grad for p in critic.parameters()]

    for got, want in zip(run(backward), run(lambda loss: loss.backward()), strict=True):
        torch.testing.assert_close(got, want)
