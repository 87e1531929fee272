"""Whole training iterations (issue 11): ``n_critic`` critic steps and one generator
step, the unit a GAN user waits for.

Variants: ``eager`` — the iteration as plain PyTorch code writes it (autograd.grad for
the penalty, torch.optim.Adam with its defaults); ``fastgan`` — :class:`fastgan.train.iteration.TrainIteration`
uncaptured; on CUDA also ``eager+graph`` (the eager iteration recorded as one CUDA
graph, capturable Adam) and ``fastgan+graph`` (TrainIteration(capture=True), the
default of ``fastgan train --device cuda``); with compile peers (``--compile``, default on
CUDA) ``torch.compile`` of the eager critic loss, penalty included (autograd.grad traced,
``trace_autograd_ops``; the whole iteration does not compile: dynamo splits it at the
backward, and AOT autograd has no double backward). Every repetition is one real iteration
(training goes on across repetitions) on the case's fixed real batches, with fresh z and ε.
Each variant trains its own models and optimizers.
"""
from typing import List

import torch
from torch import nn

from fastgan import models
from fastgan.train import recipes
from fastgan.train.graphs import GraphedCall
from fastgan.train.iteration import TrainIteration

from .harness import Case, Variant


def _linear_generator(latent_dim: int, shape) -> nn.Module:
    """A one-layer generator for image critics (the critic step dominates the iteration)."""
    size = 1
    for n in shape:
        size *= n
    return nn.Sequential(nn.Linear(latent_dim, size), nn.Tanh(), nn.Unflatten(1, tuple(shape)))


def _critic_loss(critic, real, fake, eps, gp_weight):
    """WGAN-GP's critic loss as its users write it in PyTorch."""
    x = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    gp = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
    return critic(fake).mean() - critic(real).mean() + gp_weight * gp


def _eager_iteration(gen, critic, opt_g, opt_d, reals, latent_dim, gp_weight, critic_loss=_critic_loss):
    """WGAN-GP as its users write it in PyTorch."""
    batch = reals.shape[1]
    for real in reals:
        z = torch.randn(batch, latent_dim, device=real.device)
        with torch.no_grad():
            fake = gen(z)
        opt_d.zero_grad(set_to_none=True)
        eps = torch.rand(batch, *([1] * (real.dim() - 1)), device=real.device)
        critic_loss(critic, real, fake, eps, gp_weight).backward()
        opt_d.step()
    z = torch.randn(batch, latent_dim, device=reals.device)
    for p in critic.parameters():
        p.requires_grad_(False)
    opt_g.zero_grad(set_to_none=True)
    (-critic(gen(z)).mean()).backward()
    opt_g.step()
    for p in critic.parameters():
        p.requires_grad_(True)


def _eager_optimizers(recipe, gen: nn.Module, critic: nn.Module, capturable: bool):
    """(opt_g, opt_d) as a PyTorch user builds them: torch.optim.Adam with its defaults
    (foreach on CUDA, the per-parameter loop on the CPU; capturable for a CUDA graph),
    where fastgan's make_optimizers picks the fused Adam."""
    assert recipe.optimizer == "adam" and recipe.reg_every == 1, "the eager iteration is written for Adam recipes"
    lr = (lambda: torch.tensor(recipe.lr, device=next(critic.parameters()).device)) if capturable else \
        (lambda: recipe.lr)
    return tuple(torch.optim.Adam(m.parameters(), lr=lr(), betas=recipe.betas, capturable=capturable)
                 for m in (gen, critic))


def _case(device, name, make_gen, make_critic, sample_shape, batch, latent_dim, with_compile) -> Case:
    recipe = recipes.get_recipe("wgan-gp", data="8gaussians" if len(sample_shape) == 1 else "digits")
    data = torch.Generator().manual_seed(0)
    reals = torch.randn(recipe.n_critic, batch, *sample_shape, generator=data).to(device)
    capture = device.type == "cuda"
    variants = []

    def build(graphed: bool, eager: bool = False):
        torch.manual_seed(0)
        gen, critic = make_gen().to(device), make_critic().to(device)
        if eager:
            return (gen, critic) + _eager_optimizers(recipe, gen, critic, graphed)
        return (gen, critic) + recipes.make_optimizers(recipe, gen, critic, capturable=graphed)

    for graphed in ([False, True] if capture else [False]):
        gen, critic, opt_g, opt_d = build(graphed, eager=True)
        run = (lambda g, c, og, od: lambda batches: _eager_iteration(g, c, og, od, batches, latent_dim,
                                                                     recipe.gp_weight))(gen, critic, opt_g, opt_d)
        if graphed:
            run = GraphedCall(run, names=("reals",), owner="eager+graph",
                              before_record=(lambda og, od: lambda: (og.zero_grad(set_to_none=True),
                                                                     od.zero_grad(set_to_none=True)))(opt_g, opt_d))
        variants.append(Variant("eager+graph" if graphed else "eager", (lambda f: lambda: f(reals))(run), graphed=graphed))
    if with_compile:
        loss = torch.compile(_critic_loss, dynamic=False)  # one static graph per case

        def compiled(setup=build(False, eager=True)):  # bound now: the loop below rebinds gen, critic, ...
            with torch._dynamo.config.patch(trace_autograd_ops=True):
                _eager_iteration(*setup, reals, latent_dim, recipe.gp_weight, loss)

        variants.append(Variant("torch.compile", compiled))
    for graphed in ([False, True] if capture else [False]):
        gen, critic, opt_g, opt_d = build(graphed)
        iteration = TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=latent_dim, capture=graphed)
        variants.append(Variant("fastgan+graph" if graphed else "fastgan",
                                (lambda it: lambda: it(reals, 0))(iteration), graphed=graphed))
    return Case("iteration", f"WGAN-GP iteration (5 critic steps + G), {name}, B={batch}", 0, variants,
                info={"n_critic": recipe.n_critic, "batch": batch}, flush=False)


def iteration_cases(device: torch.device, compile_peers: bool, sizes: str) -> List[Case]:
    """Toy MLP (WGAN-GP's toy setting: 2-512x3-1 critic and generator, B=256), a DCGAN-64
    critic (3x64x64) and WGAN-GP's CIFAR ResNet-32 critic (3x32x32), the image critics with
    a one-layer generator (B=16 with --quick on the CPU, else 64)."""
    quick = sizes == "small"
    cases = [_case(device, "toy MLP 2-512x3", lambda: models.mlp_generator(2, 2, 512, 3),
                   lambda: models.mlp_critic(2, 512, 3), (2,), 256, 2, compile_peers)]
    image_batch = 16 if quick and device.type == "cpu" else 64
    cases.append(_case(device, "DCGAN-64 critic", lambda: _linear_generator(128, (3, 64, 64)),
                       lambda: models.dcgan_critic(3, 64, batch_norm=False), (3, 64, 64), image_batch, 128,
                       compile_peers))
    cases.append(_case(device, "ResNet-32 critic", lambda: _linear_generator(128, (3, 32, 32)),
                       lambda: models.ResNetCritic32(), (3, 32, 32), image_batch, 128, compile_peers))
    return cases
