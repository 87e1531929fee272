"""Host overhead: the cost of a fused op's Python front end, dispatch and autograd,
measured on tiny tensors where the arithmetic is negligible.

As in a training step, each repetition builds ``COPIES`` copies of the op in one graph
and runs one backward, so the autograd engine's fixed entry cost is shared; the
reported figure is the time of a repetition (divide by ``COPIES`` for one op). Each
fastgan variant is paired with the eager PyTorch chain it replaces and, for the
optimizer cases, with ``torch._foreach_*``. Run on CPU with one thread, the numbers
are host time: what decides a small GAN step's speed on a GPU too.

The ``one ATen op`` variants are the floor of any fused op: one generated ATen op with
its autograd node (``torch.dot``, ``x + b``) on leaves of the same sizes, inside the
same sum and backward. No single op, fused or not, can beat it, so ``eager / floor``
bounds the speed-up a case can show. The ``torch.ops call`` variants call the same
registered op through ``torch.ops`` without the Python front end, as a user of the op
would; the front ends call it through ``fastgan._C.op_caller`` (about 2 us less per call
than ``torch.ops``), so fastgan - torch.ops call = front end - what the op caller saves.
"""
import math
from typing import List

import torch
import torch.nn.functional as F

from fastgan import models
from fastgan.models import mlp_critic
from fastgan.nn import fuse_bias_act
from fastgan.ops import bias_act, clip_weights_, discriminator_loss, grad_norm_penalty, gradient_penalty, interpolate
from fastgan.ops.bias_act import _ACTS
from fastgan.ops.losses import DISCRIMINATOR_TERMS, REDUCTIONS
from fastgan.optim import ClippedRMSprop
from fastgan.train import recipes
from fastgan.train.iteration import TrainIteration

from .cases_iteration import _eager_iteration, _eager_optimizers
from .harness import Case, Variant

COPIES = 16


def _leaves(shape, device, n=COPIES, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(device).requires_grad_(True) for _ in range(n)]


def _backward_of_sum(build):
    """A variant: sum of COPIES ops, then one backward."""
    def run():
        sum(build(i) for i in range(COPIES)).backward()
    return run


def _one_op_floor(numel, device) -> Variant:
    """torch.dot of two leaves of `numel` elements: one ATen op, one node, two gradients."""
    a, b = _leaves((numel,), device, seed=11), _leaves((numel,), device, seed=12)
    return Variant("one ATen op (floor)", _backward_of_sum(lambda i: torch.dot(a[i], b[i])))


def _namespace(backend):
    return torch.ops.fastgan_triton if backend == "triton" else torch.ops.fastgan


def _loss_case(device, backend) -> Case:
    real, fake = _leaves((64, 1), device, seed=1), _leaves((64, 1), device, seed=2)
    gan_loss = _namespace(backend).gan_loss.default
    terms, mean = DISCRIMINATOR_TERMS["minimax"], REDUCTIONS["mean"]

    def eager(i):
        return F.softplus(-real[i]).mean() + F.softplus(fake[i]).mean()

    return Case("overhead", f"minimax D loss fwd+bwd, B=64, x{COPIES}", 0, [
        Variant("eager", _backward_of_sum(eager)),
        Variant(f"fastgan-{backend}", _backward_of_sum(lambda i: discriminator_loss(real[i], fake[i],
                                                                                    backend=backend))),
        Variant(f"fastgan-{backend} torch.ops call", _backward_of_sum(
            lambda i: gan_loss(real[i], fake[i], *terms, mean)[0])),
        _one_op_floor(64, device),
    ], info={"copies": COPIES})


def _penalty_case(device, backend) -> Case:
    real, fake = _leaves((256, 2), device, seed=3), _leaves((256, 2), device, seed=4)
    eps = torch.rand(256, device=device)

    def eager(i):
        e = eps[:, None]
        x = e * real[i] + (1 - e) * fake[i]
        return ((x.flatten(1).norm(2, dim=1) - 1) ** 2).mean()

    def fused(i):
        return grad_norm_penalty(interpolate(real[i], fake[i], eps, backend=backend), backend=backend)

    return Case("overhead", f"interpolate + grad_norm_penalty fwd+bwd, (256, 2), x{COPIES}", 0, [
        Variant("eager", _backward_of_sum(eager)),
        Variant(f"fastgan-{backend}", _backward_of_sum(fused)),
        _one_op_floor(512, device),
    ], info={"copies": COPIES})


def _bias_act_case(device, backend) -> Case:
    x = _leaves((64, 32), device, seed=5)
    b = _leaves((32,), device, seed=6)
    gain = math.sqrt(2)
    op, (lrelu, alpha) = _namespace(backend).bias_act.default, _ACTS["lrelu"]
    return Case("overhead", f"bias_act lrelu fwd+bwd, (64, 32), x{COPIES}", 0, [
        Variant("eager", _backward_of_sum(lambda i: (F.leaky_relu(x[i] + b[i], 0.2) * gain).sum())),
        Variant(f"fastgan-{backend}", _backward_of_sum(
            lambda i: bias_act(x[i], b[i], "lrelu", gain=gain, backend=backend).sum())),
        Variant(f"fastgan-{backend} torch.ops call", _backward_of_sum(
            lambda i: op(x[i], b[i], lrelu, alpha, gain, 1).sum())),
        Variant("one ATen op (floor)", _backward_of_sum(lambda i: (x[i] + b[i]).sum())),
    ], info={"copies": COPIES})


def _critic_with_grads(device):
    torch.manual_seed(7)
    critic = mlp_critic(2, 64, 3).to(device)
    for p in critic.parameters():
        p.grad = torch.randn_like(p)
    return critic


def _clip_case(device, backend) -> Case:
    critic = _critic_with_grads(device)
    params = list(critic.parameters())

    @torch.no_grad()
    def foreach():
        torch._foreach_clamp_min_(params, -0.01)
        torch._foreach_clamp_max_(params, 0.01)

    def eager():
        with torch.no_grad():
            for p in params:
                p.clamp_(-0.01, 0.01)

    return Case("overhead", "clip_weights_, toy MLP critic (8 tensors)", 0, [
        Variant("eager", eager),
        Variant("foreach", foreach),
        Variant(f"fastgan-{backend}", lambda: clip_weights_(params, 0.01, backend=backend)),
    ])


def _rmsprop_case(device, backend) -> Case:
    critics = [_critic_with_grads(device) for _ in range(3)]
    foreach_opt = torch.optim.RMSprop(critics[0].parameters(), lr=5e-5, foreach=True)
    eager_opt = torch.optim.RMSprop(critics[1].parameters(), lr=5e-5, foreach=False)
    fused_opt = ClippedRMSprop(critics[2].parameters(), lr=5e-5, clip_value=0.01, backend=backend)
    params = [list(c.parameters()) for c in critics]

    def foreach():
        foreach_opt.step()
        with torch.no_grad():
            torch._foreach_clamp_min_(params[0], -0.01)
            torch._foreach_clamp_max_(params[0], 0.01)

    def eager():
        eager_opt.step()
        with torch.no_grad():
            for p in params[1]:
                p.clamp_(-0.01, 0.01)

    return Case("overhead", "RMSprop step + clip, toy MLP critic (8 tensors)", 0, [
        Variant("eager", eager),
        Variant("foreach", foreach),
        Variant(f"fastgan-{backend}", fused_opt.step),
    ])


def _gradient_penalty_case(device, backend) -> Case:
    """The penalty around a critic: the critic's own passes are the same in both
    variants, so the difference is the penalty's host cost."""
    torch.manual_seed(8)
    critic = mlp_critic(2, 64, 3).to(device)
    real, fake = torch.randn(64, 2, device=device), torch.randn(64, 2, device=device)
    eps = torch.rand(64, device=device)

    def eager():
        e = eps[:, None]
        x = (e * real + (1 - e) * fake).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
        (((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean() * 10).backward()

    def fused():
        gradient_penalty(critic, real, fake, eps=eps, weight=10.0, backend=backend).backward()

    return Case("overhead", "gradient_penalty(critic) fwd+bwd, toy MLP 2-64x3-1, B=64", 0, [
        Variant("eager", eager),
        Variant(f"fastgan-{backend}", fused),
    ])


def _iteration_case(device, backend) -> Case:
    """A whole WGAN-GP iteration (5 critic steps and a generator step, Adam) on a toy
    2-16x3 MLP at B=8, where the time is nearly all host time: the uncaptured
    iteration a small GAN runs on a GPU. eager: plain PyTorch with torch.optim.Adam's
    defaults; fastgan: TrainIteration (fused loss and penalty, make_optimizers' fused
    Adam); the fused-critic variant also runs the critic's bias and LeakyReLU through
    bias_act (fuse_bias_act)."""
    recipe = recipes.get_recipe("wgan-gp", data="8gaussians")
    reals = torch.randn(recipe.n_critic, 8, 2, generator=torch.Generator().manual_seed(9)).to(device)

    def build(fuse: bool, eager: bool = False):
        torch.manual_seed(0)
        gen, critic = models.mlp_generator(2, 2, 16, 3).to(device), mlp_critic(2, 16, 3).to(device)
        if fuse:
            critic = fuse_bias_act(critic, backend=backend)
        if eager:
            return (gen, critic) + _eager_optimizers(recipe, gen, critic, False)
        return (gen, critic) + recipes.make_optimizers(recipe, gen, critic)

    gen, critic, opt_g, opt_d = build(False, eager=True)
    variants = [Variant("eager", lambda: _eager_iteration(gen, critic, opt_g, opt_d, reals, 2, recipe.gp_weight))]
    for fuse in (False, True):
        iteration = TrainIteration(recipe, *build(fuse), latent_dim=2, backend=backend)
        variants.append(Variant(f"fastgan-{backend}" + (" fused critic" if fuse else ""),
                                (lambda it: lambda: it(reals, 0))(iteration)))
    return Case("overhead", "WGAN-GP iteration (5 critic steps + G), toy MLP 2-16x3, B=8", 0, variants,
                info={"n_critic": recipe.n_critic, "batch": 8})


def overhead_cases(device: torch.device, compile_peers: bool, sizes: str) -> List[Case]:
    """The host-overhead cases on `device` (CPU: the cpu backend; CUDA: cuda and triton),
    timed without a cache flush: a training loop's host code and data stay warm."""
    backends = ["cpu"] if device.type == "cpu" else ["cuda", "triton"]
    cases = []
    for build in (_loss_case, _penalty_case, _bias_act_case, _clip_case, _rmsprop_case, _gradient_penalty_case,
                  _iteration_case):
        case = build(device, backends[0])
        for backend in backends[1:]:
            case.variants += [v for v in build(device, backend).variants if v.name.startswith("fastgan")]
        case.flush = False
        cases.append(case)
    return cases
