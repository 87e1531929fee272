"""Critic weight clipping and the clipped RMSprop step (issue: fused clipping).

Peers: the per-parameter eager loop (what WGAN code does), ``torch._foreach_clamp_min_/max_``,
``torch.compile`` of the loop (``--compile``; on CUDA by default), eager
``RMSprop(foreach=False)`` + loop clamp and ``RMSprop(foreach=True)`` + ``_foreach`` clamp.
"""
from typing import Callable, Iterator, List

import torch

import fastgan
from fastgan.models import dcgan_critic, mlp_critic, wide_mlp_critic
from fastgan.ops import clip_weights_
from fastgan.optim import ClippedRMSprop

from .harness import Case, Variant

CLIP = 0.01
CRITICS = [
    ("dcgan64 (2.8M, 11 tensors)", lambda: dcgan_critic()),
    ("mlp-toy 2-512x3-1 (0.5M, 8 tensors)", lambda: mlp_critic(2, 512, 3)),
    ("mlp-200M (8 tensors)", lambda: wide_mlp_critic()),
]


def _fastgan_backends(device: torch.device) -> List[str]:
    """fastgan's kernels for `device` (the interpreted Triton kernels are a test tool, not timed)."""
    return [b for b in fastgan.available_backends(device)
            if b != "reference" and not (b == "triton" and device.type == "cpu")]


def _make_params(build: Callable[[], torch.nn.Module], device: torch.device) -> List[torch.nn.Parameter]:
    with torch.device(device):
        params = list(build().parameters())
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in params:
            p.normal_(0.0, 0.02, generator=generator)  # about a third outside [-c, c]
            p.grad = torch.randn(p.shape, device=device, generator=generator) * 1e-3
    return params


def clip_cases(device: torch.device, with_compile: bool, sizes: str) -> Iterator[Case]:
    critics = CRITICS if sizes == "all" else CRITICS[:2]
    for name, build in critics:
        params = _make_params(build, device)
        n_bytes = sum(p.numel() * p.element_size() for p in params)

        def eager():
            with torch.no_grad():
                for p in params:
                    p.clamp_(-CLIP, CLIP)

        def foreach():
            with torch.no_grad():
                torch._foreach_clamp_min_(params, -CLIP)
                torch._foreach_clamp_max_(params, CLIP)

        variants = [Variant("eager", eager), Variant("foreach", foreach)]
        if with_compile:
            compiled = torch.compile(eager)
            variants.append(Variant("torch.compile", compiled))
        for backend in _fastgan_backends(device):
            variants.append(Variant(f"fastgan-{backend}", lambda b=backend: clip_weights_(params, CLIP, backend=b)))
        yield Case("clip", name, 2 * n_bytes, variants, info={"parameters": sum(p.numel() for p in params)})

        # RMSprop + clip: read p, g, v; write p, v (alpha 0.99, no momentum, not centered: the WGAN setting).
        eager_opt = torch.optim.RMSprop(params, lr=5e-5, foreach=False)
        foreach_opt = torch.optim.RMSprop(params, lr=5e-5, foreach=True)

        def eager_step():
            eager_opt.step()
            eager()

        def foreach_step():
            foreach_opt.step()
            foreach()

        variants = [Variant("eager", eager_step), Variant("foreach", foreach_step)]
        for backend in _fastgan_backends(device):
            fused = ClippedRMSprop(params, lr=5e-5, clip_value=CLIP, backend=backend)
            variants.append(Variant(f"fastgan-{backend}", fused.step))
        yield Case("rmsprop+clip", name, 5 * n_bytes, variants, info={"parameters": sum(p.numel() for p in params)})
        del params, eager_opt, foreach_opt, variants
