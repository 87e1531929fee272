"""GAN, WGAN, WGAN-GP and R3GAN training steps built only from fastgan's public ops
(docs/theory.md §2–3).

A training iteration is ``n_critic`` calls of :func:`critic_step` (alias
:func:`discriminator_step`) followed by one :func:`generator_step`. Steps return
a dict of detached 0-dim tensors (no ``.item()``: no host synchronisation, so
:class:`CriticStep` can record the critic step as a CUDA graph).
"""
import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .. import ops
from ..ops._caller import backward
from ..ops.losses import RELATIVISTIC_KINDS
from ..optim import ClippedRMSprop
from ..optim.steps import clear_grads, optimizer_step
from .graphs import GraphedCall, check_capturable

Batch = torch.Tensor
Stats = Dict[str, torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of a training recipe.

    d_loss / g_loss: ``kind`` of :func:`fastgan.ops.discriminator_loss` /
    :func:`fastgan.ops.generator_loss`. optimizer: ``"adam"`` for both networks, or
    ``"rmsprop"`` (the critic's is :class:`fastgan.optim.ClippedRMSprop` when
    ``clip_value`` is set). gp_weight: λ of the WGAN-GP penalty (0: none; None: the
    data's default, 0.1 on 2-D toy data and 10 on images). r1_gamma: γ of R1 (0: none).
    r1_r2_gamma: γ of R3GAN's ``γ/2 (R1 + R2)`` (:func:`fastgan.ops.r1_r2_penalty`; 0: none;
    None: the data's default, :func:`default_r1_r2_gamma`); approximate_penalty: its
    first-order finite-difference form with scale ``sigma`` instead of the exact double backward.
    reg_every: lazy regularisation (StyleGAN2 §B): the penalties are added to every
    ``reg_every``-th critic step's loss only, with their weight multiplied by ``reg_every``
    (1: every step, as in the papers). The optimizer keeps its settings: the penalty rides
    on a regular step, so a k-step cycle is k optimizer steps, not StyleGAN2's k + 1.
    """

    name: str
    d_loss: str
    g_loss: str
    n_critic: int
    optimizer: str
    lr: float
    betas: Tuple[float, float] = (0.5, 0.999)
    clip_value: Optional[float] = None
    gp_weight: Optional[float] = 0.0
    r1_gamma: float = 0.0
    reg_every: int = 1
    r1_r2_gamma: Optional[float] = 0.0
    approximate_penalty: bool = False
    sigma: float = 0.01


RECIPES: Dict[str, Recipe] = {
    # Goodfellow et al.: minimax D loss, non-saturating G loss; DCGAN's Adam.
    "gan": Recipe("gan", "minimax", "non_saturating", n_critic=1, optimizer="adam", lr=2e-4, betas=(0.5, 0.999)),
    # Arjovsky et al.: RMSprop(5e-5), clip c = 0.01, 5 critic steps per generator step.
    "wgan": Recipe("wgan", "wasserstein", "wasserstein", n_critic=5, optimizer="rmsprop", lr=5e-5,
                   clip_value=0.01),
    # Gulrajani et al.: Adam(1e-4, (0.5, 0.9)), 5 critic steps, λ = 0.1 on toy data, 10 on images.
    "wgan-gp": Recipe("wgan-gp", "wasserstein", "wasserstein", n_critic=5, optimizer="adam", lr=1e-4,
                      betas=(0.5, 0.9), gp_weight=None),
    # Huang et al. (R3GAN): RpGAN for D and G, γ/2 (R1 + R2) every step, Adam(β = (0, 0.99)), 1 critic step.
    "r3gan": Recipe("r3gan", "relativistic", "relativistic", n_critic=1, optimizer="adam", lr=2e-4,
                    betas=(0.0, 0.99), r1_r2_gamma=None),
}


def default_gp_weight(data: str) -> float:
    """WGAN-GP's λ: 0.1 for the 2-D toy data (the paper's toy code), 10 for images."""
    return 10.0 if data == "digits" else 0.1


TOY_GAMMA = 0.1
DIGITS_GAMMA = 1.0


def default_r1_r2_gamma(data: str) -> float:
    """R3GAN's γ (data-dependent; the paper: 0.05 on CIFAR-10, 150 on FFHQ-256), picked by
    the runs recorded in README §Training quality: TOY_GAMMA on the 2-D mixtures and swiss
    roll, DIGITS_GAMMA on the 8×8 digits."""
    return DIGITS_GAMMA if data == "digits" else TOY_GAMMA


def get_recipe(name: str, *, data: Optional[str] = None, **overrides) -> Recipe:
    """The recipe `name` ("gan", "wgan", "wgan-gp", "r3gan") with `overrides` (fields of
    :class:`Recipe`; None values are ignored) and the data-dependent weights (WGAN-GP's λ,
    R3GAN's γ) resolved for `data`."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}; got {name!r}")
    recipe = dataclasses.replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})
    if recipe.gp_weight is None:
        recipe = dataclasses.replace(recipe, gp_weight=default_gp_weight(data or "8gaussians"))
    if recipe.r1_r2_gamma is None:
        recipe = dataclasses.replace(recipe, r1_r2_gamma=default_r1_r2_gamma(data or "8gaussians"))
    if recipe.approximate_penalty and RECIPES[name].r1_r2_gamma == 0.0:
        raise ValueError(f"approximate_penalty approximates R3GAN's R1 + R2: it applies to recipe 'r3gan', "
                         f"not {name!r}")
    if not (0 < recipe.sigma < float("inf")):
        raise ValueError(f"sigma must be finite and > 0, got {recipe.sigma}")
    if isinstance(recipe.n_critic, bool) or not isinstance(recipe.n_critic, int) or recipe.n_critic < 1:
        raise ValueError(f"n_critic must be an integer >= 1, got {recipe.n_critic!r}")
    if not 0 < recipe.lr < float("inf"):
        raise ValueError(f"lr must be finite and > 0, got {recipe.lr}")
    if not all(0 <= w < float("inf") for w in (recipe.gp_weight, recipe.r1_gamma, recipe.r1_r2_gamma)):
        raise ValueError(f"gp_weight, r1_gamma and r1_r2_gamma must be finite and >= 0, got {recipe.gp_weight}, "
                         f"{recipe.r1_gamma} and {recipe.r1_r2_gamma}")
    if isinstance(recipe.reg_every, bool) or not isinstance(recipe.reg_every, int) or recipe.reg_every < 1:
        raise ValueError(f"reg_every must be an integer >= 1, got {recipe.reg_every!r}")
    return recipe


def adam(module: nn.Module, lr, betas: Tuple[float, float], *, capturable: bool = False) -> torch.optim.Adam:
    """torch.optim.Adam over `module`'s parameters, fused (one kernel for all of them:
    at small sizes a step costs a third of the per-parameter loop's host time on a CPU,
    and one launch instead of foreach's several per group on a GPU) where torch's fused
    Adam runs (floating-point parameters on the CPU or CUDA), else torch's default."""
    params = list(module.parameters())
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, betas=betas, capturable=capturable, fused=True if fused else None)


def make_optimizers(recipe: Recipe, generator: nn.Module, critic: nn.Module, *, capturable: bool = False,
                    backend: Optional[str] = None) -> Tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """(generator optimizer, critic optimizer) for `recipe`. ``capturable=True`` builds
    optimizers whose steps can be recorded in a CUDA graph: state on the device, and
    the learning rate a float32 tensor on the device (:func:`set_lr` updates it in
    place, so a recorded step follows a schedule)."""
    def lr_for(module: nn.Module, value: float):
        if not capturable:
            return value
        return torch.tensor(value, dtype=torch.float32, device=next(module.parameters()).device)

    g_lr, d_lr = lr_for(generator, recipe.lr), lr_for(critic, recipe.lr)
    if recipe.optimizer == "adam":
        opt_g = adam(generator, g_lr, recipe.betas, capturable=capturable)
        opt_d = adam(critic, d_lr, recipe.betas, capturable=capturable)
    elif recipe.optimizer == "rmsprop":
        opt_g = torch.optim.RMSprop(generator.parameters(), lr=g_lr, capturable=capturable)
        if recipe.clip_value is not None:
            opt_d = ClippedRMSprop(critic.parameters(), lr=d_lr, clip_value=recipe.clip_value,
                                   capturable=capturable, backend=backend)
        else:
            opt_d = torch.optim.RMSprop(critic.parameters(), lr=d_lr, capturable=capturable)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {recipe.optimizer!r}")
    return opt_g, opt_d


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate: a float is replaced, a tensor (capturable
    optimizers) is filled in place, without host synchronisation, so CUDA graphs that
    recorded its steps read the new value at their next replay."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def linear_decay_lr(base_lr: float, step: int, steps: int) -> float:
    """``lr_decay="linear"``'s rate at 1-based `step` of `steps`: ``base · (1 − (step − 1)/steps)``,
    from the base rate at step 1 towards 0. Stateless, so a resumed run needs nothing saved."""
    return base_lr * (1 - (step - 1) / steps)


def critic_step(critic: nn.Module, generator: nn.Module, optimizer: torch.optim.Optimizer, real: Batch,
                z: Batch, *, loss: str = "wasserstein", gp_weight: float = 0.0, r1_gamma: float = 0.0,
                clip_value: Optional[float] = None, backend: Optional[str] = None, regularize: bool = True,
                reg_every: int = 1, eps: Optional[Batch] = None, r1_r2_gamma: float = 0.0,
                approximate: bool = False, sigma: float = 0.01,
                noise: Optional[Tuple[Batch, Batch]] = None) -> Stats:
    """One update of the critic (discriminator) f on a real batch and generated ``G(z)``.

    Minimises ``L = discriminator_loss(f(real), f(G(z)), loss)`` (``"minimax"``: BCE =
    −V(D, G); ``"wasserstein"``: ``E_q f − E_p f``) plus, if ``gp_weight`` λ > 0, the
    WGAN-GP penalty ``λ E (‖∇f(x̂)‖ − 1)²`` (:func:`fastgan.ops.gradient_penalty`) and,
    if ``r1_gamma`` γ > 0, R1 ``γ/2 E ‖∇f(real)‖²`` (:func:`fastgan.ops.r1_penalty`,
    reusing the real forward pass) and, if ``r1_r2_gamma`` γ > 0, R3GAN's
    ``γ/2 (E ‖∇f(real)‖² + E ‖∇f(G(z))‖²)`` (:func:`fastgan.ops.r1_r2_penalty`, reusing both
    forward passes; ``approximate=True``: its finite-difference form with scale
    ``sigma``, first-order autograd only). Then ``optimizer.step()`` and, if ``clip_value``
    is set, :func:`fastgan.ops.clip_weights_` (not needed with ClippedRMSprop).
    Lazy regularisation: ``regularize=False`` leaves the penalties out of this step, and
    on the steps that have them their weights are multiplied by ``reg_every``.

    Args:
        real: (B, ...) data batch. z: (B', latent) noise; G runs under no_grad.
        eps: (B,) WGAN-GP's interpolation weights (default: drawn by the penalty); a
            distributed step passes its rows of the global batch's draw.
        noise: the approximate R1 + R2's ``(ε_real, ε_fake)``, each shaped like `real`
            (default: drawn by the penalty, real's first); a distributed step passes its rows.
    Returns detached 0-dim tensors: ``d_loss`` (L), ``adv`` (the loss term), ``gp``,
    ``r1``, ``real_score`` / ``fake_score`` (mean critic output) and ``w_estimate``
    (``real_score − fake_score``, the batch's dual W1 estimate); with ``r1_r2_gamma`` > 0
    also ``r1_r2`` (the R1 + R2 term).
    """
    with torch.no_grad():
        fake = generator(z)
    clear_grads(optimizer)
    has_r1_r2 = r1_r2_gamma > 0
    gp_weight, r1_gamma, r1_r2_gamma = (gp_weight * reg_every, r1_gamma * reg_every, r1_r2_gamma * reg_every) \
        if regularize else (0.0, 0.0, 0.0)
    exact_r1_r2 = r1_r2_gamma > 0 and not approximate  # the exact penalty differentiates the inputs
    x_real = real.detach().requires_grad_(True) if r1_gamma > 0 or exact_r1_r2 else real
    x_fake = fake.detach().requires_grad_(True) if exact_r1_r2 else fake
    real_logits = critic(x_real)
    fake_logits = critic(x_fake)
    adv = ops.discriminator_loss(real_logits, fake_logits, loss, backend=backend)
    total = adv
    zero = adv.detach() * 0
    gp = r1 = r1_r2 = zero
    if gp_weight > 0:
        gp = ops.gradient_penalty(critic, real, fake, weight=gp_weight, eps=eps, backend=backend)
        total = total + gp
    if r1_gamma > 0:
        r1 = ops.r1_penalty(None, x_real, gamma=r1_gamma, outputs=real_logits, backend=backend)
        total = total + r1
    if r1_r2_gamma > 0:
        r1_r2 = ops.r1_r2_penalty(critic if approximate else None, x_real, x_fake, gamma=r1_r2_gamma,
                                  outputs_real=real_logits, outputs_fake=fake_logits, approximate=approximate,
                                  sigma=sigma, noise_real=None if noise is None else noise[0],
                                  noise_fake=None if noise is None else noise[1], backend=backend)
        total = total + r1_r2
    backward(total)
    optimizer_step(optimizer)
    if clip_value is not None:
        ops.clip_weights_(critic, clip_value, backend=backend)
    real_score, fake_score = real_logits.detach().mean(), fake_logits.detach().mean()
    stats = {"d_loss": total.detach(), "adv": adv.detach(), "gp": gp.detach(), "r1": r1.detach(),
             "real_score": real_score, "fake_score": fake_score, "w_estimate": real_score - fake_score}
    if has_r1_r2:
        stats["r1_r2"] = r1_r2.detach()
    return stats


discriminator_step = critic_step


def generator_step(generator: nn.Module, critic: nn.Module, optimizer: torch.optim.Optimizer, z: Batch, *,
                   loss: str = "wasserstein", backend: Optional[str] = None, real: Optional[Batch] = None) -> Stats:
    """One update of the generator G: minimise ``generator_loss(f(G(z)), loss)``
    (``"non_saturating"``: ``−E ln D(G(z))``; ``"wasserstein"``: ``−E f(G(z))``;
    the relativistic kinds compare with the critic's logits on `real`, a (B, ...) data
    batch, as R3GAN's ``mean softplus(f(real) − f(G(z)))``: a forward pass without
    gradient, since only G is trained here). The critic's parameters are frozen for the
    backward pass (no critic gradients are computed) and restored after. z: (B, latent).
    Returns ``{"g_loss": 0-dim tensor}``."""
    relativistic = loss in RELATIVISTIC_KINDS
    if relativistic != (real is not None):
        raise ValueError(f"generator_step: real (a data batch) is read by the relativistic losses only; "
                         f"loss={loss!r} was given real={'a batch' if real is not None else None}")
    frozen = [p for p in critic.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        clear_grads(optimizer)
        fake_logits = critic(generator(z))
        if relativistic:
            with torch.no_grad():
                real_logits = critic(real)
            g_loss = ops.generator_loss(fake_logits, loss, real_logits=real_logits, backend=backend)
        else:
            g_loss = ops.generator_loss(fake_logits, loss, backend=backend)
        backward(g_loss)
        optimizer_step(optimizer)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return {"g_loss": g_loss.detach()}


class CriticStep:
    """:func:`critic_step` with fixed models, optimizer and hyper-parameters, called as
    ``step(real, z)``; ``capture=True`` records it as a CUDA graph and replays it.

    Capture: the first ``warmup`` calls run eagerly on a side stream (lazy
    initialisation: cuBLAS handles, optimizer state); the next call copies its batch
    into static input buffers, records one step with ``torch.cuda.graph`` and replays
    it; every later call ``copy_``\\ s the batch into the buffers and replays. Each call
    is exactly one training step on its own batch. The returned tensors are the graph's
    static outputs, overwritten by the next call (clone them to keep them). Batches
    must keep the first captured shape, dtype and device. The optimizer must be built
    with ``capturable=True`` (see :func:`make_optimizers`); random numbers (WGAN-GP's ε)
    come from the CUDA generator, which graphs replay safely. CPU tensors cannot be
    captured: ``capture=True`` raises ``ValueError`` there.
    """

    def __init__(self, critic: nn.Module, generator: nn.Module, optimizer: torch.optim.Optimizer, *,
                 loss: str = "wasserstein", gp_weight: float = 0.0, r1_gamma: float = 0.0,
                 clip_value: Optional[float] = None, backend: Optional[str] = None, capture: bool = False,
                 warmup: int = 3, reg_every: int = 1, r1_r2_gamma: float = 0.0, approximate: bool = False,
                 sigma: float = 0.01):
        self.critic, self.generator, self.optimizer = critic, generator, optimizer
        self.kwargs = dict(loss=loss, gp_weight=gp_weight, r1_gamma=r1_gamma, clip_value=clip_value,
                           backend=backend, reg_every=reg_every, r1_r2_gamma=r1_r2_gamma, approximate=approximate,
                           sigma=sigma)
        self._has_penalty = bool(gp_weight or r1_gamma or r1_r2_gamma)
        if capture and reg_every > 1 and self._has_penalty:
            raise ValueError("capture=True records one critic step as a CUDA graph; lazy regularisation "
                             f"(reg_every={reg_every}) alternates two different steps: use capture=False")
        self.capture = bool(capture)
        self.calls = 0
        self._graphed: Optional[GraphedCall] = None
        if self.capture:
            check_capturable([critic, generator], [optimizer])
            self._graphed = GraphedCall(
                lambda real, z: critic_step(critic, generator, optimizer, real, z, **self.kwargs), warmup=warmup,
                names=("real", "z"), owner="CriticStep", before_record=lambda: optimizer.zero_grad(set_to_none=True))

    @property
    def graph(self) -> Optional[torch.cuda.CUDAGraph]:
        """The recorded CUDA graph (None before the capture, and without capture)."""
        return None if self._graphed is None else self._graphed.graph

    def __call__(self, real: Batch, z: Batch, regularize: bool = True, eps: Optional[Batch] = None,
                 noise: Optional[Tuple[Batch, Batch]] = None) -> Stats:
        """One critic step on `real` and G(`z`); ``regularize=False``: without the
        penalties (lazy regularisation's steps between two regularised ones); `eps` and
        `noise`: see :func:`critic_step` (eager steps only: a captured step draws its own)."""
        self.calls += 1
        if self._graphed is None:
            return critic_step(self.critic, self.generator, self.optimizer, real, z, regularize=regularize,
                               eps=eps, noise=noise, **self.kwargs)
        if eps is not None or noise is not None:
            raise ValueError("CriticStep(capture=True) draws WGAN-GP's eps and the approximate penalty's noise "
                             "inside the graph: pass eps=None and noise=None")
        if not regularize and self._has_penalty:
            raise ValueError("CriticStep(capture=True) records the step with its penalties: regularize=False "
                             "needs capture=False")
        return self._graphed(real, z)


def make_critic_step(recipe: Recipe, critic: nn.Module, generator: nn.Module, optimizer: torch.optim.Optimizer,
                     *, capture: bool = False, backend: Optional[str] = None) -> CriticStep:
    """A :class:`CriticStep` configured by `recipe` (clipping is in ClippedRMSprop's step)."""
    clip = recipe.clip_value if (recipe.clip_value is not None and not isinstance(optimizer, ClippedRMSprop)) \
        else None
    return CriticStep(critic, generator, optimizer, loss=recipe.d_loss, gp_weight=float(recipe.gp_weight),
                      r1_gamma=float(recipe.r1_gamma), clip_value=clip, backend=backend, capture=capture,
                      reg_every=recipe.reg_every, r1_r2_gamma=float(recipe.r1_r2_gamma),
                      approximate=recipe.approximate_penalty, sigma=recipe.sigma)

