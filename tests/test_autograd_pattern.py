"""The families' one C++ autograd pattern (csrc/autograd_utils.h::FusedFunction), on the
CPU ops: the graph bookkeeping torch::autograd::Function did for them and that their
numerical tests do not look at."""
import gc
import weakref

import pytest
import torch
import torch.autograd.forward_ad as fwAD

from fastgan.ops import bias_act, discriminator_loss, grad_norm_penalty, interpolate


def _leaf(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


# name: (inputs, the op on them) for one op of each family with saved tensors
OPS = {
    "gan_loss": (lambda: (_leaf(8, 1, seed=1), _leaf(8, 1, seed=2)),
                 lambda real, fake: discriminator_loss(real, fake, backend="cpu")),
    "bias_act": (lambda: (_leaf(8, 4, seed=3), _leaf(4, seed=4)),
                 lambda x, b: bias_act(x, b, "silu", backend="cpu").sum()),
    "penalty": (lambda: (_leaf(8, 3, seed=5), _leaf(8, 3, seed=6)),
                lambda real, fake: grad_norm_penalty(interpolate(real, fake, torch.full((8,), 0.3), backend="cpu"),
                                                     backend="cpu")),
}


@pytest.mark.parametrize("name", OPS)
def test_outputs_and_nodes_are_freed_without_the_garbage_collector(name):
    """Saved outputs must not hold their own node (no reference cycle): once the output
    is dropped, the node goes, and with it the tensors it saved (here non-leaf inputs
    that nothing else holds)."""
    leaves, op = OPS[name][0](), OPS[name][1]
    enabled = gc.isenabled()
    gc.disable()
    try:
        inputs = [t * 1 for t in leaves]
        out = op(*inputs)
        dead = [weakref.ref(t) for t in (out, *inputs)]
        del out, inputs
        assert all(ref() is None for ref in dead)
    finally:
        if enabled:
            gc.enable()


@pytest.mark.parametrize("name", OPS)
def test_a_second_backward_through_freed_buffers_raises(name):
    inputs, op = OPS[name][0](), OPS[name][1]
    out = op(*inputs)
    out.backward(retain_graph=True)
    first = [t.grad.clone() for t in inputs]
    out.backward()  # retained: the same gradients again
    for t, g in zip(inputs, first):
        torch.testing.assert_close(t.grad, 2 * g)
    with pytest.raises(RuntimeError, match="second time"):
        out.backward()


def test_no_node_without_an_input_that_needs_a_gradient():
    real, fake = torch.randn(8, 1), torch.randn(8, 1)
    assert discriminator_loss(real, fake, backend="cpu").grad_fn is None
    with torch.no_grad():
        assert discriminator_loss(_leaf(8, 1), fake, backend="cpu").grad_fn is None


def test_node_is_named_after_the_family_function():
    x, b = OPS["bias_act"][0]()
    assert "BiasActFunction" in bias_act(x, b, "lrelu", backend="cpu").grad_fn.name()


def test_modifying_a_saved_tensor_in_place_is_detected():
    x = _leaf(8, 4)
    y = bias_act(x * 1, None, "tanh", backend="cpu")  # tanh saves y
    loss = y.sum()
    with torch.no_grad():
        y.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_a_gradient_reaching_only_a_saved_output_flows_back():
    """relativistic_loss's x_grad is a differentiable output: a gradient into it alone
    (what a double backward sends) reaches the logits, where the first-order path gets none."""
    real, fake = _leaf(8, 1), _leaf(8, 1, seed=9)
    _, x_grad, _ = torch.ops.fastgan.relativistic_loss.default(real, fake, 0, 1)
    (g,) = torch.autograd.grad(x_grad.sum(), real)
    # x_grad = -sigmoid(fake - real) / n, so d/dreal sum(x_grad) = sigmoid'(fake - real) / n
    s = torch.sigmoid(fake.detach() - real.detach())
    torch.testing.assert_close(g, s * (1 - s) / real.numel())


def test_a_non_differentiable_output_gets_no_history():
    """gan_loss marks its saved gradients non-differentiable: only the loss has a grad_fn."""
    loss, x_grad, y_grad = torch.ops.fastgan.gan_loss.default(_leaf(8, 1), _leaf(8, 1, seed=9), 0, 1, 1)
    assert loss.grad_fn is not None
    assert not x_grad.requires_grad and not y_grad.requires_grad


def test_forward_mode_ad_is_refused():
    x, b = OPS["bias_act"][0]()
    with fwAD.dual_level():
        dual = fwAD.make_dual(x.detach(), torch.ones_like(x))
        with pytest.raises(RuntimeError, match="forward-mode AD is not implemented"):
            bias_act(dual, b.detach(), "lrelu", backend="cpu")


@pytest.mark.parametrize("name", OPS)
def test_saved_tensor_hooks_see_every_saved_tensor(name):
    """A first-order backward reads saved tensors straight from their storage, but not
    when saved-tensor hooks hold them: then each is unpacked through its hook."""
    make, op = OPS[name]
    plain = make()
    op(*plain).backward()
    hooked, unpacked = make(), []

    def unpack(t):
        unpacked.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), unpack):
        out = op(*hooked)
    out.backward()
    assert unpacked
    for a, b in zip(plain, hooked):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("name", OPS)
def test_first_and_second_order_backward_agree_on_saved_tensors(name):
    """create_graph=True unpacks the saved tensors with their graph; without it the
    backward reads them as saved. Both give the same first-order gradient."""
    make, op = OPS[name]
    a, b = make(), make()
    ga = torch.autograd.grad(op(*a), a)
    gb = torch.autograd.grad(op(*b), b, create_graph=True)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y.detach(), rtol=0, atol=0)
        assert y.requires_grad
