"""Eager references for the GAN losses (docs/theory.md §2–3): plain ``torch`` /
``torch.nn.functional`` ops, differentiated by autograd. They are the ground
truth of every backend's tests and the ``backend="reference"`` implementation.

With ``D = sigmoid(l)`` the log-probabilities use the stable forms of docs/theory.md
§2, through ``F.logsigmoid`` (exact for any finite logit, unlike ``F.softplus``
whose default ``threshold=20`` returns ``x`` above 20):

    ln D       = -softplus(-l) = logsigmoid(l)
    ln(1 - D)  = -softplus(l)  = logsigmoid(-l)

Discriminator losses (minimised by D), as a (real term, fake term) pair:

    minimax        -ln D(real),  -ln(1 - D(fake))     binary cross-entropy, = -V(D, G) for "mean"
    wasserstein    -real,        fake                 WGAN critic: mean(fake) - mean(real)
    hinge          relu(1 - real), relu(1 + fake)
    least_squares  (real - 1)^2 / 2, fake^2 / 2

Generator losses (minimised by G) on fake logits:

    non_saturating  -ln D(fake)          = softplus(-l)
    minimax          ln(1 - D(fake))     = -softplus(l)
    wasserstein, hinge  -fake
    least_squares   (fake - 1)^2 / 2

Relativistic losses (R3GAN's RpGAN, ESRGAN's RaGAN) compare real with fake logits:

    relativistic           D: softplus(-(real - fake)) per pair (real and fake of one shape)
                           G: softplus(-(fake - real))
    relativistic_average   D: softplus(-(real - mean(fake))), softplus(fake - mean(real))
                           G: softplus(real - mean(fake)),    softplus(-(fake - mean(real)))

(``softplus(-d) = -logsigmoid(d)``). ``reduction="none"`` gives RpGAN's per-pair terms,
and RaGAN's (real terms, fake terms) for D and G alike.

``reduction``: ``"none"`` returns the per-element terms (for the discriminator the
pair ``(real_terms, fake_terms)``); ``"mean"`` and ``"sum"`` reduce each side's
terms and add the sides. Inputs are not validated here (the ops do that).
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

DISCRIMINATOR_KINDS = ("minimax", "wasserstein", "hinge", "least_squares")
GENERATOR_KINDS = ("non_saturating", "minimax", "wasserstein", "hinge", "least_squares")
RELATIVISTIC_KINDS = ("relativistic", "relativistic_average")
REDUCTIONS = ("none", "mean", "sum")


def _reduce(terms: torch.Tensor, reduction: str) -> torch.Tensor:
    return terms.mean() if reduction == "mean" else terms.sum()


def discriminator_terms(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                        kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-element (real, fake) terms of the discriminator's loss of `kind`."""
    real, fake = real_logits, fake_logits
    if kind == "minimax":
        return -F.logsigmoid(real), -F.logsigmoid(-fake)
    if kind == "wasserstein":
        return -real, fake
    if kind == "hinge":
        return F.relu(1 - real), F.relu(1 + fake)
    if kind == "least_squares":
        return 0.5 * (real - 1).square(), 0.5 * fake.square()
    raise ValueError(f"unknown discriminator loss kind {kind!r}")


def generator_terms(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-element terms of the generator's loss of `kind`."""
    fake = fake_logits
    if kind == "non_saturating":
        return -F.logsigmoid(fake)
    if kind == "minimax":
        return F.logsigmoid(-fake)
    if kind in ("wasserstein", "hinge"):
        return -fake
    if kind == "least_squares":
        return 0.5 * (fake - 1).square()
    raise ValueError(f"unknown generator loss kind {kind!r}")


def relativistic_terms(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str,
                       player: str) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Per-element terms of the relativistic loss of `kind` for `player` ("D" or "G"):
    RpGAN's per-pair terms, or RaGAN's (real terms, fake terms)."""
    higher, lower = (real_logits, fake_logits) if player == "D" else (fake_logits, real_logits)
    if kind == "relativistic":
        return -F.logsigmoid(higher - lower)
    if kind != "relativistic_average":
        raise ValueError(f"unknown relativistic loss kind {kind!r}")
    higher_terms, lower_terms = -F.logsigmoid(higher - lower.mean()), -F.logsigmoid(higher.mean() - lower)
    return (higher_terms, lower_terms) if player == "D" else (lower_terms, higher_terms)


def _reduce_terms(terms, reduction):
    if reduction == "none":
        return terms
    if isinstance(terms, tuple):
        return _reduce(terms[0], reduction) + _reduce(terms[1], reduction)
    return _reduce(terms, reduction)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "minimax",
                       reduction: str = "mean") -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """The discriminator's (or critic's) loss of `kind`; see the module doc."""
    if kind in RELATIVISTIC_KINDS:
        return _reduce_terms(relativistic_terms(real_logits, fake_logits, kind, "D"), reduction)
    return _reduce_terms(discriminator_terms(real_logits, fake_logits, kind), reduction)


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating", reduction: str = "mean",
                   real_logits: Optional[torch.Tensor] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """The generator's loss of `kind`; see the module doc. The relativistic kinds need
    `real_logits`."""
    if kind in RELATIVISTIC_KINDS:
        return _reduce_terms(relativistic_terms(real_logits, fake_logits, kind, "G"), reduction)
    return _reduce_terms(generator_terms(fake_logits, kind), reduction)


def gan_value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``V(D, G) = E ln D(real) + E ln(1 - D(fake))`` with ``D = sigmoid(logits)``
    (docs/theory.md §2): ``-2 ln 2`` where D is 1/2 everywhere."""
    return F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean()
