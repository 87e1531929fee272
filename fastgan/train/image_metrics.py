"""Image metrics for generated 8×8 digits, measured with a small classifier trained once on
scikit-learn's digits: classes covered and the KL of the predicted class histogram to
uniform (mode collapse on images), a Fréchet distance in the classifier's feature space
(FID's recipe with a digits classifier in place of Inception), and the mean classifier
confidence (sharpness: blurry samples get unsure predictions).

The classifier is an MLP ``64 → 128 → 128 → 10`` (ReLU) trained full-batch in float64
from a fixed seed on 80% of the digits (a fixed split; the other 20% is held out) in a
few seconds, then cached: in this process, and on disk as a checksummed
:func:`~fastgan.train.checkpoint.save_checkpoint` file under ``$FASTGAN_CACHE`` (default
``~/.cache/fastgan``), rebuilt when missing or unreadable.
"""
import functools
import math
import os
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import nn

from . import checkpoint as ckpt
from .data import load_digits

NUM_CLASSES = 10
FEATURES = 128
HELD_OUT = 0.2
SEED = 20_160_616
TRAIN_STEPS = 400
CACHE_VERSION = 1  # bump when the classifier's definition or training changes
COVERED_SHARE = 0.1  # a class is covered when it holds >= 10% of its uniform share of the samples


def cache_dir() -> str:
    """``$FASTGAN_CACHE``, else ``~/.cache/fastgan``."""
    return os.environ.get("FASTGAN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fastgan")


def _classifier() -> nn.Sequential:
    """The untrained network. nn.Linear's default init would draw from the global RNG, that
    is the training run's stream: a run's first evaluation (which builds the classifier)
    would shift every later draw, and a resumed run would not repeat a straight one. The
    draws happen on a forked RNG; the weights are then set by training or loading."""
    with torch.random.fork_rng(devices=[]):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, FEATURES), nn.ReLU(), nn.Linear(FEATURES, FEATURES),
                             nn.ReLU(), nn.Linear(FEATURES, NUM_CLASSES)).double()


def digits_split() -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits (in [-1, 1], (N, 1, 8, 8) float64) and labels split by a fixed
    permutation: (train images, train labels, held-out images, held-out labels), 80% / 20%."""
    from sklearn.datasets import load_digits as sklearn_digits

    images = load_digits().double()
    labels = torch.as_tensor(sklearn_digits().target, dtype=torch.long)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SEED))
    cut = round(len(images) * (1 - HELD_OUT))
    train, held = order[:cut], order[cut:]
    return images[train], labels[train], images[held], labels[held]


def train_classifier() -> nn.Sequential:
    """Train the classifier from its fixed seed (full-batch Adam, weight decay 1e-4) on the
    training split; returns it in eval mode (float64)."""
    x, y, _, _ = digits_split()
    generator = torch.Generator().manual_seed(SEED)
    net = _classifier()
    with torch.no_grad():
        for p in net.parameters():  # seeded init, independent of the global RNG
            bound = 1 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.05
            p.uniform_(-bound, bound, generator=generator)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    with torch.enable_grad():  # callers may hold no_grad
        for _ in range(TRAIN_STEPS):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    return net.eval().requires_grad_(False)


@functools.lru_cache(maxsize=1)
def digits_classifier() -> nn.Sequential:
    """The cached classifier (see the module docstring): input (B, 1, 8, 8) in [-1, 1]
    float64, output (B, 10) logits; ``net[:-1]`` gives the (B, 128) features."""
    path = os.path.join(cache_dir(), f"digits-classifier-v{CACHE_VERSION}.pt")
    net = _classifier()
    try:
        net.load_state_dict(ckpt.load_checkpoint(path)["state"])
        return net.eval().requires_grad_(False)
    except (ckpt.CheckpointError, KeyError, TypeError, RuntimeError):
        pass  # missing or unreadable: rebuild (a few seconds)
    net = train_classifier()
    try:
        ckpt.save_checkpoint(path, {"state": net.state_dict()})
    except OSError:
        pass  # a read-only home still gets the in-process cache
    return net


@torch.no_grad()
def held_out_accuracy() -> float:
    """The cached classifier's accuracy on the held-out 20% of the digits."""
    _, _, x, y = digits_split()
    return float((digits_classifier()(x).argmax(1) == y).double().mean())


@dataclass(frozen=True)
class _Predictions:
    features: torch.Tensor  # (N, 128) float64
    probs: torch.Tensor  # (N, 10)


@torch.no_grad()
def _predict(images: torch.Tensor) -> _Predictions:
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise ValueError(f"images must be (N, 1, 8, 8) digits, got {tuple(images.shape)}")
    if len(images) < 2:
        raise ValueError(f"images must hold at least 2 samples, got {len(images)}")
    net = digits_classifier()
    x = images.detach().cpu().double()
    features = net[:-1](x)
    return _Predictions(features, torch.softmax(net[-1](features), 1))


def _gaussian_stats(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return features.mean(0), torch.cov(features.T)


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """``|μ1 − μ2|² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)`` between N(μ1, Σ1) and N(μ2, Σ2) (d,) / (d, d),
    with ``tr (Σ1 Σ2)^½ = Σ √λ_i(Σ1^½ Σ2 Σ1^½)`` from symmetric eigendecompositions."""
    vals, vecs = torch.linalg.eigh(cov1.double())
    root1 = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    inner = torch.linalg.eigvalsh(root1 @ cov2.double() @ root1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).double().square().sum() + cov1.trace() + cov2.trace() - 2 * inner)


class DigitsMetrics:
    """Metrics of generated digits against a fixed real set ``real`` (N, 1, 8, 8) in [-1, 1]
    (its feature statistics are computed once). Calling it on generated images
    (M, 1, 8, 8) returns:

    - ``classes``: classes covered, those predicted for >= 10% of their uniform share
      (``M / 100`` samples): 10 when every digit is drawn, 1 under full collapse;
    - ``class_kl``: ``KL(p̂ ‖ U) = Σ_c p̂_c ln(10 p̂_c)`` of the predicted class histogram,
      0 (uniform) to ln 10 ≈ 2.303 (one class);
    - ``fd``: the Fréchet distance between Gaussians fitted to the classifier's 128
      penultimate features of the generated and the real images;
    - ``confidence``: the mean of the classifier's top softmax probability.

    Non-finite images give NaN for every metric."""

    def __init__(self, real: torch.Tensor):
        self.real_stats = _gaussian_stats(_predict(real).features)

    def __call__(self, images: torch.Tensor) -> Dict[str, float]:
        if not bool(torch.isfinite(images).all()):
            return {key: math.nan for key in ("classes", "class_kl", "fd", "confidence")}
        pred = _predict(images)
        share = torch.bincount(pred.probs.argmax(1), minlength=NUM_CLASSES).double() / len(images)
        kl = float(torch.where(share > 0, share * (share * NUM_CLASSES).log(), torch.zeros_like(share)).sum())
        return {"classes": float((share >= COVERED_SHARE / NUM_CLASSES).sum()), "class_kl": kl,
                "fd": frechet_distance(*_gaussian_stats(pred.features), *self.real_stats),
                "confidence": float(pred.probs.max(1).values.mean())}
