"""Training data that ships with fastgan's dependencies (no downloads).

2-D toy mixtures (docs/theory.md §2, mode collapse): ``8gaussians`` (8 modes on a ring of
radius 2, σ = 0.02), ``25gaussians`` (5×5 grid with spacing 2, σ = 0.05) and
``swissroll``; and ``digits``, scikit-learn's 1,797 8×8 handwritten digits scaled to
[-1, 1]. Every sample is drawn from a :class:`DataSampler`'s own ``torch.Generator``,
whose state goes into checkpoints.
"""
import math
from typing import Dict, Optional, Tuple

import torch

from .names import DATASETS

MIXTURES: Dict[str, Tuple[float, float]] = {
    # name: (scale of the centres, standard deviation of each component)
    "8gaussians": (2.0, 0.02),
    "25gaussians": (2.0, 0.05),
}


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"data must be one of {', '.join(DATASETS)}; got {name!r}")


def mixture_centers(name: str) -> torch.Tensor:
    """The K mode centres of a Gaussian mixture, (K, 2) float32: ``8gaussians``
    ``2·(cos 2πk/8, sin 2πk/8)``; ``25gaussians`` ``(2i, 2j)`` for i, j in −2..2."""
    if name == "8gaussians":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return (MIXTURES[name][0] * torch.stack([angles.cos(), angles.sin()], 1)).float()
    if name == "25gaussians":
        grid = MIXTURES[name][0] * torch.arange(-2, 3, dtype=torch.float32)
        return torch.cartesian_prod(grid, grid)
    raise ValueError(f"{name!r} is not a Gaussian mixture; mixtures: {', '.join(MIXTURES)}")


def mixture_std(name: str) -> float:
    """The per-component standard deviation σ of a mixture (isotropic)."""
    if name not in MIXTURES:
        raise ValueError(f"{name!r} is not a Gaussian mixture; mixtures: {', '.join(MIXTURES)}")
    return MIXTURES[name][1]


def sample_mixture(name: str, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """n samples (n, 2) of an equal-weight mixture: a uniform centre plus N(0, σ² I)."""
    centers = mixture_centers(name)
    index = torch.randint(len(centers), (n,), generator=generator)
    return centers[index] + mixture_std(name) * torch.randn(n, 2, generator=generator)


def sample_swissroll(n: int, generator: Optional[torch.Generator] = None, noise: float = 0.25) -> torch.Tensor:
    """n samples (n, 2) of the 2-D swiss roll used by WGAN-GP's toy experiments
    (scikit-learn's ``make_swiss_roll`` in the (x, z) plane, divided by 7.5):
    ``t = 1.5π(1 + 2u)``, ``(t cos t, t sin t) + noise · N(0, I)``, u ~ U[0, 1)."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    roll = torch.stack([t * t.cos(), t * t.sin()], 1) + noise * torch.randn(n, 2, generator=generator,
                                                                          dtype=torch.float64)
    return (roll / 7.5).float()


def load_digits() -> torch.Tensor:
    """scikit-learn's 8×8 digits as (1797, 1, 8, 8) float32 in [-1, 1] (pixel values
    0..16 mapped linearly)."""
    from sklearn.datasets import load_digits as sklearn_digits

    images = torch.as_tensor(sklearn_digits().images, dtype=torch.float32)
    return (images / 8.0 - 1.0).unsqueeze(1)


def sample_shape(name: str) -> Tuple[int, ...]:
    """Shape of one sample of a dataset: (2,) for the toy data, (1, 8, 8) for digits."""
    _check_name(name)
    return (1, 8, 8) if name == "digits" else (2,)


class DataSampler:
    """Draws batches of a dataset with its own ``torch.Generator`` (CPU), so a
    checkpoint can save and restore exactly where the data stream is.

    ``sample(n)`` returns (n, 2) toy samples or (n, 1, 8, 8) digits drawn uniformly
    with replacement, on ``device``.
    """

    def __init__(self, name: str, seed: int = 0, device: torch.device | str = "cpu"):
        _check_name(name)
        self.name = name
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(int(seed))
        self._images = load_digits() if name == "digits" else None

    def sample(self, n: int) -> torch.Tensor:
        if n <= 0:
            raise ValueError(f"n must be > 0, got {n}")
        if self.name in MIXTURES:
            batch = sample_mixture(self.name, n, self.generator)
        elif self.name == "swissroll":
            batch = sample_swissroll(n, self.generator)
        else:
            batch = self._images[torch.randint(len(self._images), (n,), generator=self.generator)]
        return batch.to(self.device)

    def state_dict(self) -> Dict[str, object]:
        return {"name": self.name, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        if state["name"] != self.name:
            raise ValueError(f"the checkpoint's data sampler is for {state['name']!r}, not {self.name!r}")
        self.generator.set_state(state["generator"].cpu())  # a checkpoint loaded onto a GPU holds it there
