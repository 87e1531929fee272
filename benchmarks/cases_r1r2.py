"""R3GAN's discriminator step with R1 + R2 (issue 12), in three forms:

- ``eager``: the loss, then R1 and R2 by exact double backward in plain autograd;
- ``fastgan-<backend> exact``: fused loss + :func:`fastgan.ops.r1_r2_penalty` (fused norms
  and penalty backward; the double backward through the critic stays);
- ``fastgan-<backend> approx``: fused loss + ``r1_r2_penalty(approximate=True)``, the
  finite-difference form: two more critic forwards, first-order autograd only;
- ``fastgan-<backend> no penalty``: the loss alone, so that a penalty's cost is its step's
  time minus this one's.

Each step is R3GAN's: the RpGAN loss ``mean softplus(−(D(real) − D(fake)))`` (the
``"relativistic"`` kind) + γ/2 (R1 + R2) reusing the loss's forward passes, backward and
Adam (β = (0, 0.99)), on the toy MLP and the DCGAN-64 critic (no batch norm, as R3GAN's
critics). Each case's ``info`` holds how close the approximate penalty is to the exact one
on that critic and batch: the relative difference of the penalty value and of its
parameter gradient, for one noise draw (what a step sees) and averaged over 8 draws.
"""
import copy
from typing import Callable, Dict, Iterator

import torch

from fastgan import reference
from fastgan.models import dcgan_critic, mlp_critic
from fastgan.ops import discriminator_loss, r1_r2_penalty

from .cases_clip import _fastgan_backends
from .harness import Case, Variant

LOSS = "relativistic"  # RpGAN, R3GAN's discriminator loss
GAMMA = 1.0
SIGMA = 0.01
DRAWS = 8


def _critics(device: torch.device, sizes: str):
    cuda = device.type == "cuda"
    yield "mlp-toy 2-512x3-1", lambda: mlp_critic(2, 512, 3), (256, 2)
    if sizes == "all" or cuda:  # about a second a step on a CPU core: not --quick there
        yield "dcgan64 (no BN)", lambda: dcgan_critic(batch_norm=False), (64 if cuda else 16, 3, 64, 64)


def _eager_loss(critic, real, fake):
    x_real, x_fake = real.detach().requires_grad_(True), fake.detach().requires_grad_(True)
    real_logits, fake_logits = critic(x_real), critic(x_fake)
    loss = reference.discriminator_loss(real_logits, fake_logits, LOSS)
    return loss + reference.r1_penalty(None, x_real, GAMMA, real_logits) + \
        reference.r1_penalty(None, x_fake, GAMMA, fake_logits)


def _loss_only(backend: str) -> Callable:
    def loss(critic, real, fake):
        return discriminator_loss(critic(real), critic(fake), LOSS, backend=backend)

    return loss


def _fastgan_loss(backend: str, approximate: bool) -> Callable:
    def loss(critic, real, fake):
        if approximate:  # the penalty needs no input gradients
            x_real, x_fake = real, fake
        else:
            x_real, x_fake = real.detach().requires_grad_(True), fake.detach().requires_grad_(True)
        real_logits, fake_logits = critic(x_real), critic(x_fake)
        return discriminator_loss(real_logits, fake_logits, LOSS, backend=backend) + r1_r2_penalty(
            critic, x_real, x_fake, gamma=GAMMA, outputs_real=real_logits, outputs_fake=fake_logits,
            approximate=approximate, sigma=SIGMA, backend=backend)

    return loss


def _step(critic: torch.nn.Module, real, fake, loss_fn: Callable) -> Callable[[], None]:
    optimizer = torch.optim.Adam(critic.parameters(), lr=2e-4, betas=(0.0, 0.99))

    def step():
        optimizer.zero_grad(set_to_none=False)
        loss_fn(critic, real, fake).backward()
        optimizer.step()

    return step


def _flat_grad(value: torch.Tensor, critic: torch.nn.Module) -> torch.Tensor:
    grads = torch.autograd.grad(value, list(critic.parameters()), allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                      for g, p in zip(grads, critic.parameters())])


def approximation_error(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                        backend: str) -> Dict[str, float]:
    """How far the approximate γ/2 (R1 + R2) is from the exact one: relative differences of the
    value and of the parameter gradient, for one draw and for the mean of DRAWS draws."""
    exact = r1_r2_penalty(critic, real, fake, gamma=GAMMA, backend=backend)
    exact_grad = _flat_grad(exact, critic)
    generator = torch.Generator(device=real.device).manual_seed(0)
    values, grads = [], []
    for _ in range(DRAWS):
        approx = r1_r2_penalty(critic, real, fake, gamma=GAMMA, approximate=True, sigma=SIGMA, generator=generator,
                               backend=backend)
        values.append(approx.detach())
        grads.append(_flat_grad(approx, critic))

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    mean_value, mean_grad = torch.stack(values).mean(), torch.stack(grads).mean(0)
    return {"exact_penalty": exact.item(), "approx_penalty": values[0].item(),
            "penalty_rel_diff_1_draw": rel(values[0], exact.detach()),
            f"penalty_rel_diff_{DRAWS}_draws": rel(mean_value, exact.detach()),
            "grad_rel_diff_1_draw": rel(grads[0], exact_grad),
            f"grad_rel_diff_{DRAWS}_draws": rel(mean_grad, exact_grad)}


def r1r2_cases(device: torch.device, with_compile: bool, sizes: str) -> Iterator[Case]:
    for name, build, shape in _critics(device, sizes):
        torch.manual_seed(0)
        base = build().to(device)
        real = torch.randn(shape, device=device)
        fake = torch.randn(shape, device=device)
        variants = [Variant("eager", _step(copy.deepcopy(base), real, fake, _eager_loss))]
        info = {"parameters": sum(p.numel() for p in base.parameters()), "gamma": GAMMA, "sigma": SIGMA}
        for backend in _fastgan_backends(device):
            variants.append(Variant(f"fastgan-{backend} exact",
                                    _step(copy.deepcopy(base), real, fake, _fastgan_loss(backend, False))))
            variants.append(Variant(f"fastgan-{backend} approx",
                                    _step(copy.deepcopy(base), real, fake, _fastgan_loss(backend, True))))
            variants.append(Variant(f"fastgan-{backend} no penalty",
                                    _step(copy.deepcopy(base), real, fake, _loss_only(backend))))
            info.update({f"{backend}_{k}": v for k, v in approximation_error(base, real, fake, backend).items()})
        print(f"{name}: approximate vs exact penalty: " + ", ".join(
            f"{k} {v:.3g}" for k, v in info.items() if "rel_diff" in k or "penalty" in k), flush=True)
        yield Case("r3gan D step (R1+R2)", f"{name} B={shape[0]}", 0, variants, info=info)
        del base, variants
