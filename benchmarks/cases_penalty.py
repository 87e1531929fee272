"""Gradient penalties (issue: fused gradient penalties).

Pieces: interpolate (forward) and grad_norm_penalty (forward + backward) over
shapes from toy 2-D batches to (16, 3, 1024, 1024) images, against the eager
formulas and the bandwidth floor. Whole WGAN-GP critic step (critic loss +
penalty, backward, Adam) on the toy MLP, the DCGAN-64 critic (no batch norm)
and the WGAN-GP CIFAR ResNet critic, with the nn critic and with its bias +
activation pairs rewritten as FusedBiasAct layers, against eager autograd, eager under
CUDA-graph capture (CUDA) and ``torch.compile`` with
``torch._dynamo.config.trace_autograd_ops`` (``--compile``).
"""
import copy
from typing import Callable, Iterator, List, Tuple

import torch

from fastgan import reference
from fastgan.models import ResNetCritic32, dcgan_critic, mlp_critic
from fastgan.nn import FusedBiasAct, fuse_bias_act
from fastgan.ops import grad_norm_penalty, gradient_penalty, interpolate

from .cases_clip import _fastgan_backends
from .harness import Case, Variant, graph_replay

PIECE_SHAPES = [(256, 2), (64, 3, 32, 32), (64, 3, 64, 64), (16, 3, 256, 256), (16, 3, 1024, 1024)]


def _piece_shapes(device: torch.device, sizes: str) -> List[Tuple[int, ...]]:
    if sizes != "all":
        return PIECE_SHAPES[:3]
    return PIECE_SHAPES if device.type == "cuda" else PIECE_SHAPES[:4]


def piece_cases(device: torch.device, sizes: str) -> Iterator[Case]:
    for shape in _piece_shapes(device, sizes):
        generator = torch.Generator(device=device).manual_seed(0)
        real = torch.randn(shape, device=device, generator=generator)
        fake = torch.randn(shape, device=device, generator=generator)
        eps = torch.rand(shape[0], device=device, generator=generator)
        nbytes = real.numel() * real.element_size()
        variants = [Variant("eager", lambda: reference.interpolate(real, fake, eps))]
        for backend in _fastgan_backends(device):
            variants.append(Variant(f"fastgan-{backend}", lambda b=backend: interpolate(real, fake, eps, backend=b)))
        yield Case("interpolate", str(shape), 3 * nbytes, variants)

        grads = (0.1 * real).requires_grad_(True)

        def eager_penalty():
            return torch.autograd.grad(reference.grad_norm_penalty(grads, weight=10.0), grads)

        variants = [Variant("eager", eager_penalty)]
        for backend in _fastgan_backends(device):
            variants.append(Variant(f"fastgan-{backend}", lambda b=backend: torch.autograd.grad(
                grad_norm_penalty(grads, weight=10.0, backend=b), grads)))
        yield Case("grad_norm_penalty fwd+bwd", str(shape), 3 * nbytes, variants)
        del real, fake, eps, grads


def _critics(device: torch.device, sizes: str):
    cuda = device.type == "cuda"
    yield "mlp-toy 2-512x3-1", lambda: mlp_critic(2, 512, 3), (256, 2)
    if sizes == "all" or cuda:  # about 0.5 s a step on a CPU core: not --quick there
        yield "dcgan64 (no BN)", lambda: dcgan_critic(batch_norm=False), (64 if cuda else 16, 3, 64, 64)
        yield "wgan-gp resnet32", lambda: ResNetCritic32(), (64 if cuda else 16, 3, 32, 32)


def _critic_step(critic: torch.nn.Module, real, fake, eps, penalty: Callable, capturable: bool = False):
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9), capturable=capturable)

    def loss():
        return critic(fake).mean() - critic(real).mean() + penalty(critic, real, fake, eps)

    def step():
        optimizer.zero_grad(set_to_none=False)
        loss().backward()
        optimizer.step()

    return step, loss


def _eager_penalty(critic, real, fake, eps):
    return reference.gradient_penalty(critic, real, fake, eps, weight=10.0)


def step_cases(device: torch.device, with_compile: bool, sizes: str) -> Iterator[Case]:
    for name, build, shape in _critics(device, sizes):
        torch.manual_seed(0)
        base = build().to(device)
        real = torch.randn(shape, device=device)
        fake = torch.randn(shape, device=device)
        eps = torch.rand(shape[0], device=device)
        eager_step, _ = _critic_step(copy.deepcopy(base), real, fake, eps, _eager_penalty)
        variants = [Variant("eager", eager_step)]
        for backend in _fastgan_backends(device):
            def fused_penalty(critic, real, fake, eps, b=backend):
                return gradient_penalty(critic, real, fake, eps=eps, backend=b)

            step, _ = _critic_step(copy.deepcopy(base), real, fake, eps, fused_penalty)
            variants.append(Variant(f"fastgan-{backend}", step))
            # the same critic with its bias + activation pairs as FusedBiasAct layers
            fused_critic = fuse_bias_act(base, backend=backend)
            if any(isinstance(m, FusedBiasAct) for m in fused_critic.modules()):
                step, _ = _critic_step(fused_critic, real, fake, eps, fused_penalty)
                variants.append(Variant(f"fastgan-{backend}+fused-critic", step))
                if device.type == "cuda" and backend == "cuda":
                    step, _ = _critic_step(fuse_bias_act(base, backend=backend), real, fake, eps, fused_penalty,
                                           capturable=True)
                    variants.append(Variant("fastgan-cuda+fused-critic+cuda-graph", graph_replay(step), graphed=True))
        if device.type == "cuda":
            step, _ = _critic_step(copy.deepcopy(base), real, fake, eps, _eager_penalty, capturable=True)
            variants.append(Variant("eager+cuda-graph", graph_replay(step), graphed=True))
        if with_compile:
            torch._dynamo.config.trace_autograd_ops = True
            critic = copy.deepcopy(base)
            step, loss = _critic_step(critic, real, fake, eps, _eager_penalty)
            compiled_loss = torch.compile(loss)
            optimizer = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))

            def compiled_step(compiled_loss=compiled_loss, optimizer=optimizer):
                optimizer.zero_grad(set_to_none=False)
                compiled_loss().backward()
                optimizer.step()

            variants.append(Variant("torch.compile", compiled_step))
        yield Case("wgan-gp critic step", f"{name} B={shape[0]}", 0, variants,
                   info={"parameters": sum(p.numel() for p in base.parameters())})
        del base, variants


def penalty_cases(device: torch.device, with_compile: bool, sizes: str) -> Iterator[Case]:
    yield from piece_cases(device, sizes)
    yield from step_cases(device, with_compile, sizes)
