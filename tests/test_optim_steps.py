"""fastgan.optim.steps: the training step's optimizer calls without torch.optim's Python
around its kernels. The update must be torch's, bit for bit, and every case the lean
path does not cover must reach torch.optim itself."""
import copy
import warnings

import pytest
import torch
from conftest import requires_cuda

from fastgan.models import mlp_critic
from fastgan.optim.steps import clear_grads, optimizer_step


def _pair(device="cpu", lr=None, **options):
    torch.manual_seed(0)
    net = mlp_critic(2, 8, 2).to(device)
    twin = copy.deepcopy(net)
    lr = lr or (lambda value: value)
    groups = lambda m: [{"params": list(m.parameters())[:2], "lr": lr(3e-3)},  # noqa: E731
                        {"params": list(m.parameters())[2:], "lr": lr(1e-3)}]
    return (net, torch.optim.Adam(groups(net), **options)), (twin, torch.optim.Adam(groups(twin), **options))


def _grads(nets, seed, skip=None):
    g = torch.Generator().manual_seed(seed)
    for i, ps in enumerate(zip(*(n.parameters() for n in nets))):
        grad = None if i == skip else torch.randn(ps[0].shape, generator=g).to(ps[0].device)
        for p in ps:
            p.grad = None if grad is None else grad.clone()


def _step_both(pair, steps, skip_at=None):
    """`steps` steps of both optimizers on the same gradients (parameter 3 left out at step
    `skip_at`), ours through optimizer_step; the parameters must agree bit for bit."""
    (net, ours), (twin, theirs) = pair
    for seed in range(steps):
        _grads([net, twin], seed, skip=3 if seed == skip_at else None)
        optimizer_step(ours)
        theirs.step()
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
    return ours, theirs


@pytest.fixture
def torch_steps(monkeypatch):
    """Counts the calls of torch.optim.Adam.step (its Python step, not the kernels)."""
    calls = []
    # Adam's step without torch's hook wrapper, which the first Adam built in this process
    # put around it: the optimizers built below wrap `counted` with it again.
    original = torch.optim.Adam.step
    if getattr(original, "hooked", False):
        original = original.__wrapped__

    def counted(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counted)
    return calls


@pytest.mark.parametrize("options", [dict(betas=(0.5, 0.9)), dict(weight_decay=0.1), dict(maximize=True, eps=1e-6)])
def test_fused_adam_steps_are_torchs_bit_for_bit(options, torch_steps):
    ours, theirs = _step_both(_pair(fused=True, **options), 4, skip_at=2)
    assert torch_steps.count(ours) == 1  # the first step, which initialises the state
    for a, b in zip(ours.state.values(), theirs.state.values(), strict=True):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a[key], b[key])


@pytest.mark.parametrize("options", [dict(fused=False), dict(fused=True, amsgrad=True),
                                     dict(fused=True, decoupled_weight_decay=True, weight_decay=0.1)])
def test_what_the_lean_path_does_not_cover_is_torchs_step(options, torch_steps):
    ours, _ = _step_both(_pair(**options), 3)
    assert torch_steps.count(ours) == 3


def test_hooks_and_schedulers_get_torchs_step(torch_steps):
    (net, ours), _ = _pair(fused=True)
    _grads([net], 0)
    optimizer_step(ours)
    seen = []
    handle = ours.register_step_post_hook(lambda opt, args, kwargs: seen.append(opt))
    _grads([net], 1)
    optimizer_step(ours)
    assert seen == [ours]
    handle.remove()
    scheduler = torch.optim.lr_scheduler.StepLR(ours, step_size=1)
    _grads([net], 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()" warning
        optimizer_step(ours)
        scheduler.step()
    assert torch_steps.count(ours) == 3


def test_other_optimizers_step_as_before():
    torch.manual_seed(1)
    net = mlp_critic(2, 8, 2)
    twin = copy.deepcopy(net)
    ours, theirs = torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    _grads([net, twin], 0)
    optimizer_step(ours)
    theirs.step()
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_clear_grads_sets_every_gradient_to_none():
    (net, opt), _ = _pair(fused=True)
    _grads([net], 0)
    clear_grads(opt)
    assert all(p.grad is None for p in net.parameters())


def test_clear_grads_calls_an_optimizers_own_zero_grad():
    calls = []

    class Own(torch.optim.SGD):
        def zero_grad(self, set_to_none=True):
            calls.append(set_to_none)
            super().zero_grad(set_to_none)

    net = mlp_critic(2, 8, 2)
    _grads([net], 0)
    clear_grads(Own(net.parameters(), lr=0.1))
    assert calls == [True] and all(p.grad is None for p in net.parameters())


@requires_cuda
@pytest.mark.parametrize("capturable", [False, True])
def test_cuda_fused_adam_steps_are_torchs_bit_for_bit(capturable, torch_steps):
    """On CUDA, with a float lr or, capturable, a tensor lr on the device (as make_optimizers
    builds for a captured iteration)."""
    lr = (lambda value: torch.tensor(value, device="cuda")) if capturable else None
    ours, _ = _step_both(_pair("cuda", lr, fused=True, capturable=capturable), 4)
    assert torch_steps.count(ours) == 1
