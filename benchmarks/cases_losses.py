"""GAN losses (issue 3): forward + backward of every discriminator and generator
loss, for logits ``(B, 1)`` with B in {64, 256, 4096, 65536} and PatchGAN maps
``(64, 1, 30, 30)`` and ``(1024, 1, 128, 128)`` (16.8M logits a side).

Peers: eager ``torch.nn.functional`` + autograd (what GAN code writes:
``binary_cross_entropy_with_logits`` against ``ones_like`` / ``zeros_like``,
``mse_loss``, ``relu``, ``mean``), ``torch.compile`` of the same function
(``--compile``; on CUDA by default), and fastgan's kernels. Every variant runs the
loss and ``torch.autograd.grad`` w.r.t. the logits with a preallocated
``grad_output``, so launch counts are the loss's own.

The relativistic kinds (issue 12: RpGAN ``"relativistic"``, RaGAN
``"relativistic_average"``) run for D and G, G's gradient taken w.r.t. both logits;
eager is R3GAN's and BasicSR's ``F.softplus`` of the differences.

Bytes moved, the floor any implementation must move: read the logits and write
their gradient (plus two scalars).
"""
from typing import Callable, Iterator, List, Tuple

import torch
import torch.nn.functional as F

import fastgan
from fastgan.ops import discriminator_loss, generator_loss

from .harness import Case, Variant

SMALL = [(64, 1), (256, 1), (4096, 1), (64, 1, 30, 30)]
QUICK = [(256, 1), (64, 1, 30, 30)]  # --quick: a toy batch and a PatchGAN map
LARGE = [(65536, 1), (1024, 1, 128, 128)]
RELATIVISTIC = ["relativistic", "relativistic_average"]
D_KINDS = ["minimax", "wasserstein", "hinge", "least_squares"] + RELATIVISTIC
G_KINDS = ["non_saturating", "minimax", "wasserstein", "hinge", "least_squares"] + RELATIVISTIC


def eager_relativistic_loss(kind: str, higher: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """RpGAN (R3GAN) or RaGAN (ESRGAN) with `higher` the logits that should score higher."""
    if kind == "relativistic":
        return F.softplus(lower - higher).mean()
    return F.softplus(lower.mean() - higher).mean() + F.softplus(lower - higher.mean()).mean()


def eager_discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind in RELATIVISTIC:
        return eager_relativistic_loss(kind, real, fake)
    if kind == "minimax":
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    if kind == "wasserstein":
        return fake.mean() - real.mean()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return 0.5 * F.mse_loss(real, torch.ones_like(real)) + 0.5 * F.mse_loss(fake, torch.zeros_like(fake))


def eager_generator_loss(kind: str, fake: torch.Tensor, real: torch.Tensor = None) -> torch.Tensor:
    if kind in RELATIVISTIC:
        return eager_relativistic_loss(kind, fake, real)
    if kind == "non_saturating":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "minimax":
        return -F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    if kind in ("wasserstein", "hinge"):
        return -fake.mean()
    return 0.5 * F.mse_loss(fake, torch.ones_like(fake))


def _fastgan_backends(device: torch.device) -> List[str]:
    """fastgan's kernels for `device` (the interpreted Triton kernels are a test tool, not timed)."""
    return [b for b in fastgan.available_backends(device)
            if b != "reference" and not (b == "triton" and device.type == "cpu")]


def _forward_backward(loss_fn: Callable[..., torch.Tensor], inputs: Tuple[torch.Tensor, ...],
                      grad_output: torch.Tensor) -> Callable[[], object]:
    def run():
        return torch.autograd.grad(loss_fn(*inputs), inputs, grad_output)

    return run


def _check_agree(variants: List[Variant], inputs: Tuple[torch.Tensor, ...], name: str) -> None:
    """Every variant computes the same gradients as eager (a benchmark of a wrong kernel is worthless)."""
    want = variants[0].fn()
    for variant in variants[1:]:
        for got, ref in zip(variant.fn(), want):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6 / max(1, ref.numel()) ** 0.5,
                                       msg=lambda m: f"{name} {variant.name}: {m}")


def loss_cases(device: torch.device, with_compile: bool, sizes: str) -> Iterator[Case]:
    shapes = SMALL + LARGE if sizes == "all" else QUICK
    generator = torch.Generator(device=device).manual_seed(0)
    for shape in shapes:
        real = torch.randn(shape, device=device, generator=generator).mul_(2).requires_grad_()
        fake = torch.randn(shape, device=device, generator=generator).mul_(2).requires_grad_()
        grad_output = torch.ones((), device=device)
        label = "x".join(map(str, shape))
        for op, kinds in (("D", D_KINDS), ("G", G_KINDS)):
            for kind in kinds:
                inputs = (real, fake) if op == "D" or kind in RELATIVISTIC else (fake,)
                if op == "D":
                    eager = lambda r, f, kind=kind: eager_discriminator_loss(kind, r, f)  # noqa: E731
                    fused = lambda b, kind=kind: (lambda r, f: discriminator_loss(r, f, kind, backend=b))  # noqa: E731
                elif kind in RELATIVISTIC:  # G: gradients w.r.t. both logits
                    eager = lambda r, f, kind=kind: eager_generator_loss(kind, f, r)  # noqa: E731
                    fused = lambda b, kind=kind: (  # noqa: E731
                        lambda r, f: generator_loss(f, kind, real_logits=r, backend=b))
                else:
                    eager = lambda f, kind=kind: eager_generator_loss(kind, f)  # noqa: E731
                    fused = lambda b, kind=kind: (lambda f: generator_loss(f, kind, backend=b))  # noqa: E731
                variants = [Variant("eager", _forward_backward(eager, inputs, grad_output))]
                if with_compile:
                    variants.append(Variant("torch.compile", _forward_backward(torch.compile(eager), inputs,
                                                                               grad_output)))
                for backend in _fastgan_backends(device):
                    variants.append(Variant(f"fastgan-{backend}", _forward_backward(fused(backend), inputs,
                                                                                    grad_output)))
                suite = "discriminator" if op == "D" else "generator"
                _check_agree(variants, inputs, f"{suite} {kind} {label}")
                logits = sum(x.numel() for x in inputs)
                yield Case(suite, f"{kind} {label}", 2 * logits * real.element_size() + 2 * real.element_size(),
                           variants, info={"logits": logits, "kind": kind, "shape": label})
        del real, fake
