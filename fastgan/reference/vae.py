"""Eager references for the VAE ops (the negative ELBO): plain ``torch`` ops,
differentiated by autograd. They are the ground truth of every backend's tests and the
``backend="reference"`` implementation. Inputs are not validated here (the ops do that).

Per sample ``b`` (a row of the batch; sums run over every other dimension):

    reparameterize  z = mu + exp(logvar / 2) * eps
    gaussian_kl     KL_b  = 1/2 sum (mu^2 + exp(logvar) - 1 - logvar)   = KL(N(mu, e^logvar) || N(0, I))
    bernoulli_nll   nll_b = sum softplus(l) - x l                       = -ln Bernoulli(x; sigmoid(l))
    gaussian_nll    nll_b = 1/2 sum (ln 2pi + logvar + (x - mean)^2 / exp(logvar))   (logvar = 0 if None)
    vae_loss        nll_b + beta KL_b                                   = -ELBO_b for beta = 1

``reduction``: ``"none"`` returns the ``(B,)`` per-sample terms, ``"mean"`` their mean
over the batch, ``"sum"`` their sum.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F

REDUCTIONS = ("none", "mean", "sum")
LIKELIHOODS = ("bernoulli", "gaussian")
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _per_sample(terms: torch.Tensor) -> torch.Tensor:
    return terms.reshape(terms.shape[0], -1).sum(1)


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_sample
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``mu + exp(logvar / 2) * eps``."""
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per sample, reduced."""
    return _reduce(_per_sample(0.5 * (mu.square() + torch.exp(logvar) - 1 - logvar)), reduction)


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``sum softplus(l) - x l`` per sample (binary cross-entropy with logits), reduced.
    ``softplus(l) = -logsigmoid(-l)``, exact for any finite logit."""
    return _reduce(_per_sample(-F.logsigmoid(-logits) - target * logits), reduction)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, logvar: Optional[torch.Tensor] = None,
                 reduction: str = "mean") -> torch.Tensor:
    """``1/2 sum (ln 2pi + logvar + (x - mean)^2 / exp(logvar))`` per sample, reduced;
    unit variance when `logvar` is None."""
    if logvar is None:
        terms = HALF_LOG_2PI + 0.5 * (x - mean).square()
    else:
        terms = HALF_LOG_2PI + 0.5 * (logvar + (x - mean).square() * torch.exp(-logvar))
    return _reduce(_per_sample(terms), reduction)


def vae_loss(recon: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             likelihood: str = "bernoulli", beta: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """The negative ELBO with a beta-weighted KL: reconstruction NLL + beta KL, per sample, reduced.
    ``recon`` are logits (bernoulli) or the decoder's mean (gaussian, unit variance)."""
    if likelihood == "bernoulli":
        nll = bernoulli_nll(recon, target, "none")
    else:
        nll = gaussian_nll(target, recon, None, "none")
    return _reduce(nll + beta * gaussian_kl(mu, logvar, "none"), reduction)
