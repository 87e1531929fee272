"""VAE loss (issue 14): forward + backward of the negative ELBO, ``vae_loss``, for a
``(64, 784)`` reconstruction (MNIST-sized, bernoulli) and a ``(64, 3, 64, 64)`` image
(gaussian), each with a 128-dim latent.

Peers: the eager chain VAE code writes (``binary_cross_entropy_with_logits`` or
``mse_loss`` summed per sample, ``-0.5 * sum(1 + logvar - mu^2 - exp(logvar))``,
mean over the batch) + autograd, ``torch.compile`` of it (``--compile``; on CUDA by
default), and fastgan's kernels. Every variant runs the loss and
``torch.autograd.grad`` w.r.t. (recon, mu, logvar) with a preallocated ``grad_output``.

Bytes moved, the floor any implementation must move: read recon, target, mu and logvar
once and write their gradients (the target's is not needed).
"""
import math
from typing import Iterator

import torch
import torch.nn.functional as F

from fastgan.ops import vae_loss

from .cases_losses import _check_agree, _fastgan_backends, _forward_backward
from .harness import Case, Variant

LATENT = 128
SHAPES = [((64, 784), "bernoulli"), ((64, 3, 64, 64), "gaussian")]


def eager_vae_loss(likelihood: str, recon: torch.Tensor, target: torch.Tensor, mu: torch.Tensor,
                   logvar: torch.Tensor) -> torch.Tensor:
    """The negative ELBO as VAE code writes it (the PyTorch VAE example), per-sample mean."""
    batch = recon.shape[0]
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(recon, target, reduction="sum")
    else:
        nll = 0.5 * F.mse_loss(recon, target, reduction="sum") + 0.5 * math.log(2 * math.pi) * target.numel()
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (nll + kl) / batch


def vae_cases(device: torch.device, with_compile: bool, sizes: str) -> Iterator[Case]:
    generator = torch.Generator(device=device).manual_seed(0)
    for shape, likelihood in SHAPES:
        recon = torch.randn(shape, device=device, generator=generator).requires_grad_()
        target = torch.rand(shape, device=device, generator=generator)
        mu = torch.randn(shape[0], LATENT, device=device, generator=generator).requires_grad_()
        logvar = (0.5 * torch.randn(shape[0], LATENT, device=device, generator=generator)).requires_grad_()
        inputs = (recon, mu, logvar)
        grad_output = torch.ones((), device=device)

        def eager(r, m, v, likelihood=likelihood):
            return eager_vae_loss(likelihood, r, target, m, v)

        def fused(backend, likelihood=likelihood):
            return lambda r, m, v: vae_loss(r, target, m, v, likelihood=likelihood, backend=backend)

        variants = [Variant("eager", _forward_backward(eager, inputs, grad_output))]
        if with_compile:
            variants.append(Variant("torch.compile", _forward_backward(torch.compile(eager), inputs, grad_output)))
        for backend in _fastgan_backends(device):
            variants.append(Variant(f"fastgan-{backend}", _forward_backward(fused(backend), inputs, grad_output)))
        label = "x".join(map(str, shape))
        _check_agree(variants, inputs, f"vae_loss {likelihood} {label}")
        elements = recon.numel() + mu.numel()
        # read recon, target, mu, logvar; write the gradients of recon, mu, logvar
        bytes_moved = (3 * recon.numel() + 4 * mu.numel()) * recon.element_size()
        yield Case("vae_loss", f"{likelihood} {label} z{LATENT}", bytes_moved, variants,
                   info={"elements": elements, "likelihood": likelihood, "shape": label})
