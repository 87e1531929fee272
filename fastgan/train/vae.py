"""VAE and VAE/GAN training (docs/theory.md §5) with fastgan's fused ELBO ops, run by
:func:`fastgan.train.loop.train` for ``recipe="vae"`` / ``"vae-gan"`` with the GAN job's
machinery: the run-folder lock, atomic checksummed checkpoints that resume bit for bit on
the CPU, ``log.json`` / ``summary.json``, the progress bar and the Evaluator's metrics.

Decoders. ``digits``: a Bernoulli decoder on the pixels mapped to [0, 1] (``(x + 1) / 2``):
the pixels are bounded grey levels, the sigmoid keeps the mean in range, and the
negative ELBO is :func:`fastgan.ops.vae_loss` in one fused call; a unit-variance Gaussian
would weigh the whole 64-pixel reconstruction (squared errors below 1) less than one nat
of KL and let the posterior collapse. 2-D data: a Gaussian decoder with a learned
per-coordinate log-variance (:func:`~fastgan.ops.gaussian_nll` + :func:`~fastgan.ops.gaussian_kl`),
since unit variance is 50× the mixtures' σ = 0.02. Samples are the decoder's mean at
z ~ N(0, I) (images: ``2·sigmoid(logits) − 1`` in [-1, 1]).

VAE/GAN (Larsen et al. 2016) on one batch x: ``μ, ln σ² = Enc(x)``, ``x̃ = Dec(μ + σ ε)``,
``x_p = Dec(z_p)``, z_p ~ N(0, I); ``Dis_l`` is the discriminator without its last layer.
``L_llike = −ln N(Dis_l(x); Dis_l(x̃), I)``; the encoder minimises
``KL + L_llike`` = ``vae_loss(Dis_l(x̃), Dis_l(x), μ, ln σ², likelihood="gaussian")``; the
decoder minimises ``γ·L_llike + generator_loss(Dis(x̃ ∪ x_p), "non_saturating")`` (the
non-saturating form of −L_GAN); the discriminator minimises
``discriminator_loss(Dis(x), Dis(x̃ ∪ x_p), "minimax")``. Each network's gradient is taken
of its own loss only (:func:`vae_gan_gradients`), so the GAN loss never reaches the
encoder and L_llike never trains the discriminator.
"""
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from .. import models, ops
from ..ops._caller import backward
from ..optim.steps import clear_grads, optimizer_step
from . import checkpoint as ckpt
from . import distributed
from .data import DataSampler
from .loop import (
    CHECKPOINT,
    LOG,
    SUMMARY,
    Evaluator,
    TrainConfig,
    _write_json,
    format_summary,
    restore_run,
)
from .recipes import adam, linear_decay_lr, set_lr

Stats = Dict[str, torch.Tensor]


@dataclass(frozen=True)
class VaeRecipe:
    """Hyper-parameters of a VAE recipe: Adam(lr, betas) for every network, the KL's
    weight ``beta`` (β-VAE; 1 is the ELBO) and VAE/GAN's ``gamma`` (γ, the feature
    reconstruction's weight in the decoder's loss against the GAN term)."""

    name: str
    lr: float
    betas: Tuple[float, float] = (0.9, 0.999)
    beta: float = 1.0
    gamma: float = 0.0


VAE_RECIPES: Dict[str, VaeRecipe] = {
    "vae": VaeRecipe("vae", lr=1e-3),
    # Larsen et al.: RMSprop 3e-4 in the paper's code; DCGAN's Adam here, as fastgan's "gan".
    "vae-gan": VaeRecipe("vae-gan", lr=2e-4, betas=(0.5, 0.999), gamma=0.05),
}


def get_vae_recipe(name: str, *, lr: Optional[float] = None) -> VaeRecipe:
    """The recipe `name` (``"vae"``, ``"vae-gan"``), with ``lr`` when given."""
    if name not in VAE_RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(VAE_RECIPES)}; got {name!r}")
    recipe = VAE_RECIPES[name] if lr is None else dataclasses.replace(VAE_RECIPES[name], lr=lr)
    if not recipe.lr > 0:
        raise ValueError(f"lr must be > 0, got {recipe.lr}")
    return recipe


class VAE(nn.Module):
    """Encoder and decoder of one dataset; ``forward(z)`` is the sample mean Dec(z) in data
    space, so the GAN Evaluator and plots take it as a generator.

    ``images=True``: the decoder emits Bernoulli logits of the pixels in [0, 1]; data and
    samples are in [-1, 1]. ``learned_variance=True`` adds a per-coordinate decoder
    log-variance (a parameter of shape ``data_shape``, initialised to 0)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, images: bool, data_shape: Tuple[int, ...],
                 learned_variance: bool = False):
        super().__init__()
        self.encoder, self.decoder, self.images = encoder, decoder, images
        self.decoder_logvar = nn.Parameter(torch.zeros(data_shape)) if learned_variance else None

    def to_data(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output → data space: ``2·sigmoid(l) − 1 = tanh(l / 2)`` for images, the mean otherwise."""
        return torch.tanh(out / 2) if self.images else out

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The likelihood's target: pixels mapped to [0, 1] for images, x otherwise."""
        return ((x + 1) / 2).clamp(0, 1) if self.images else x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Dec(z) in data space: z (B, latent_dim) → (B, 2) or (B, 1, 8, 8) in [-1, 1]."""
        return self.to_data(self.decoder(z))

    def negative_elbo(self, x: torch.Tensor, *, beta: float = 1.0, backend: Optional[str] = None,
                      reduction: str = "mean") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, reconstruction term, KL) of a batch x with one reparameterised sample:
        ``loss = −ln p(x | z) + β KL(q(z | x) ‖ N(0, I))``, reduced over the batch."""
        mu, logvar = self.encoder(x)
        out = self.decoder(ops.reparameterize(mu, logvar, backend=backend))
        kl = ops.gaussian_kl(mu, logvar, reduction=reduction, backend=backend)
        if self.decoder_logvar is None:
            likelihood = "bernoulli" if self.images else "gaussian"
            loss = ops.vae_loss(out, self.target(x), mu, logvar, likelihood=likelihood, beta=beta,
                                reduction=reduction, backend=backend)
            return loss, loss - beta * kl.detach(), kl
        recon = ops.gaussian_nll(x, out, self.decoder_logvar.expand_as(out), reduction=reduction, backend=backend)
        return recon + beta * kl, recon, kl


def build_vae_models(config: TrainConfig) -> Dict[str, nn.Module]:
    """``{"vae": VAE}``, plus ``"discriminator"`` for vae-gan: digits → the conv nets of
    :mod:`fastgan.models` (``digits_encoder``/``digits_decoder``, ``digits_critic``); 2-D
    data → MLPs ``hidden`` wide, 3 hidden layers."""
    digits = config.data == "digits"
    gan = config.recipe == "vae-gan"
    if digits:
        encoder, decoder = models.digits_encoder(config.latent_dim), models.digits_decoder(config.latent_dim)
    else:
        encoder = models.mlp_encoder(2, config.latent_dim, config.hidden, 3)
        decoder = models.mlp_generator(config.latent_dim, 2, config.hidden, 3)
    nets: Dict[str, nn.Module] = {"vae": VAE(encoder, decoder, images=digits, data_shape=(1, 8, 8) if digits else (2,),
                                             learned_variance=not digits and not gan)}
    if gan:
        nets["discriminator"] = models.digits_critic() if digits else models.mlp_critic(2, config.hidden, 3)
    return nets


def vae_step(vae: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, *, beta: float = 1.0,
             backend: Optional[str] = None) -> Stats:
    """One Adam step on the negative ELBO of batch x; returns detached ``loss``, ``recon``, ``kl``."""
    loss, recon, kl = vae.negative_elbo(x, beta=beta, backend=backend)
    clear_grads(optimizer)
    backward(loss)
    optimizer_step(optimizer)
    return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach()}


Grads = Tuple[torch.Tensor, ...]


def vae_gan_gradients(vae: VAE, discriminator: nn.Sequential, x: torch.Tensor, *, gamma: float, beta: float = 1.0,
                      backend: Optional[str] = None) -> Tuple[Grads, Grads, Grads, Stats]:
    """Larsen et al.'s three losses on batch x (see the module docstring) and the gradient
    of each network's own loss w.r.t. its own parameters only: returns (encoder grads,
    decoder grads, discriminator grads) as tuples matching ``.parameters()``, and the
    detached statistics ``enc_loss``, ``llike``, ``kl``, ``dec_loss``, ``g_loss``, ``d_loss``."""
    features, head = discriminator[:-1], discriminator[-1]
    mu, logvar = vae.encoder(x)
    x_rec = vae(ops.reparameterize(mu, logvar, backend=backend))
    x_prior = vae(torch.randn_like(mu))
    f_real = features(x)
    f_rec = features(x_rec)
    fake_logits = head(torch.cat([f_rec, features(x_prior)]))
    enc_loss = ops.vae_loss(f_rec, f_real.detach(), mu, logvar, likelihood="gaussian", beta=beta, backend=backend)
    kl = ops.gaussian_kl(mu.detach(), logvar.detach(), backend=backend)
    g_loss = ops.generator_loss(fake_logits, "non_saturating", backend=backend)
    dec_loss = gamma * enc_loss + g_loss  # the KL does not depend on the decoder: its gradient is γ ∇L_llike
    d_loss = ops.discriminator_loss(head(f_real), fake_logits, "minimax", backend=backend)
    enc_grads = torch.autograd.grad(enc_loss, tuple(vae.encoder.parameters()), retain_graph=True)
    dec_grads = torch.autograd.grad(dec_loss, tuple(vae.decoder.parameters()), retain_graph=True)
    d_grads = torch.autograd.grad(d_loss, tuple(discriminator.parameters()))
    stats = {"enc_loss": enc_loss, "llike": enc_loss - beta * kl, "kl": kl, "dec_loss": dec_loss, "g_loss": g_loss,
             "d_loss": d_loss}
    return enc_grads, dec_grads, d_grads, {k: v.detach() for k, v in stats.items()}


def vae_gan_step(vae: VAE, discriminator: nn.Sequential, opt_vae: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, x: torch.Tensor, *, gamma: float, beta: float = 1.0,
                 backend: Optional[str] = None) -> Stats:
    """One VAE/GAN step: :func:`vae_gan_gradients` on batch x, then one step of the
    encoder+decoder optimizer and one of the discriminator's."""
    enc, dec, dis, stats = vae_gan_gradients(vae, discriminator, x, gamma=gamma, beta=beta, backend=backend)
    for params, grads in ((vae.encoder.parameters(), enc), (vae.decoder.parameters(), dec),
                          (discriminator.parameters(), dis)):
        for p, g in zip(params, grads):
            p.grad = g
    opt_vae.step()
    opt_d.step()
    return stats


@torch.no_grad()
def reconstruct(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Dec(μ(x)) in data space, in eval mode."""
    was_training = vae.training
    vae.eval()
    try:
        return vae(vae.encoder(x)[0])
    finally:
        vae.train(was_training)


def run_vae(config: TrainConfig, recipe: VaeRecipe, ranks: distributed.Ranks, *, resume: bool, progress: bool,
            log: Optional[Callable[[str], Any]]) -> Dict[str, Any]:
    """The body of :func:`fastgan.train.loop.train` for the VAE recipes (one process): each
    step is one :func:`vae_step` / :func:`vae_gan_step` on a fresh batch; every interval a
    record of the mean statistics, the Evaluator's metrics on prior samples and
    ``recon_mse`` (mean squared reconstruction error of the fixed real set), and a
    checkpoint. The checkpoint's ``generator`` is the VAE and ``critic`` the discriminator
    (``{}`` for ``vae``); ``opt_g`` / ``opt_d`` likewise."""
    device = torch.device(config.device)
    path = os.path.join(config.out, CHECKPOINT)
    ckpt.seed_everything(config.seed)
    nets = {k: v.to(device) for k, v in build_vae_models(config).items()}
    vae, disc = nets["vae"], nets.get("discriminator")
    modules = {"generator": vae, **({"critic": disc} if disc is not None else {})}
    optimizers = {key: adam(module, recipe.lr, recipe.betas)
                  for key, module in (("opt_g", vae), ("opt_d", disc)) if module is not None}
    sampler = DataSampler(config.data, seed=config.seed, device=device)
    records: List[Dict[str, Any]] = []
    start, elapsed = 0, 0.0
    if resume:
        start, elapsed, records = restore_run(path, config, modules, optimizers, sampler, ranks)
    evaluate = Evaluator(config)

    def checkpoint(step: int) -> None:
        state = {"config": dataclasses.asdict(config), "step": step, "elapsed": elapsed, "critic": {}, "opt_d": {},
                 **{k: m.state_dict() for k, m in {**modules, **optimizers}.items()},
                 "sampler": sampler.state_dict(), "rng": ckpt.rng_state(), "records": json.dumps(records)}
        ckpt.save_checkpoint(path, state)
        _write_json(os.path.join(config.out, LOG), {"config": dataclasses.asdict(config),
                                                   "recipe": dataclasses.asdict(recipe), "records": records})

    bar = None
    if progress:
        from .progress import progress_bar

        bar = progress_bar(config.steps, start, f"{config.recipe} {config.data}")
    sums: Dict[str, torch.Tensor] = {}
    count = 0
    t0 = time.perf_counter()
    last = config.steps if config.stop_after is None else min(config.steps, config.stop_after)
    for step in range(start + 1, last + 1):
        if config.lr_decay == "linear":
            for opt in optimizers.values():
                set_lr(opt, linear_decay_lr(recipe.lr, step, config.steps))
        x = sampler.sample(config.batch_size)
        if disc is None:
            stats = vae_step(vae, optimizers["opt_g"], x, beta=recipe.beta, backend=config.backend)
        else:
            stats = vae_gan_step(vae, disc, optimizers["opt_g"], optimizers["opt_d"], x, gamma=recipe.gamma,
                                 beta=recipe.beta, backend=config.backend)
        sums = {k: sums.get(k, 0) + v for k, v in stats.items()}
        count += 1
        if bar is not None:
            bar.update(1)
        if step % config.interval == 0 or step == last:
            now = time.perf_counter()
            elapsed += now - t0
            record: Dict[str, Any] = {"step": step, "time_s": round(elapsed, 3)}
            record.update({k: float(v) / count for k, v in sums.items()})
            sums, count = {}, 0
            record.update(evaluate(vae, disc))
            record["recon_mse"] = float((reconstruct(vae, evaluate.real) - evaluate.real).square().mean())
            record["eval_s"] = round(time.perf_counter() - now, 3)
            records.append(record)
            checkpoint(step)
            t0 = time.perf_counter()
            if bar is not None:
                bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "d_loss", "kl", "classes", "fd", "w1")
                                 if k in record})
    if bar is not None:
        bar.close()

    last_record = records[-1] if records else {}
    summary = {"recipe": config.recipe, "data": config.data, "device": config.device,
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "steps": last_record.get("step", 0), "time_s": last_record.get("time_s", 0.0),
               "steps_per_s": (last_record["step"] / last_record["time_s"]) if last_record.get("time_s") else None,
               "lr": recipe.lr, "lr_decay": config.lr_decay, "beta": recipe.beta, "gamma": recipe.gamma,
               "batch_size": config.batch_size, "seed": config.seed, "world_size": 1, "final": last_record,
               "out": config.out}
    _write_json(os.path.join(config.out, SUMMARY), summary)
    if config.plots and records:
        from . import plots

        real = evaluate.real[:64]
        plots.plot_vae_run(config.out, config.recipe, config.data, evaluate.real, evaluate.samples(vae), real,
                           reconstruct(vae, real), records)
    if log is not None:
        log(format_summary(summary))
    return summary
