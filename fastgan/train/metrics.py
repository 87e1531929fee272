"""Sample-quality metrics (docs/theory.md §2–3): modes covered and high-quality samples on
Gaussian mixtures (PacGAN's definition), exact empirical W1 in 1-D and 2-D, and a
critic's Kantorovich–Rubinstein dual estimate."""
from typing import Callable, Dict

import numpy as np
import torch

MODE_SAMPLES = 2500  # samples the mode metrics are measured on (PacGAN)


def mode_metrics(samples: torch.Tensor, centers: torch.Tensor, std: float,
                 threshold: float = 3.0) -> Dict[str, float]:
    """Modes covered and the share of high-quality samples.

    A sample x (row of `samples`, (N, d)) is high-quality when its Euclidean distance
    to the nearest centre (rows of `centers`, (K, d)) is at most ``threshold · std``;
    a mode is covered when at least one high-quality sample has it as nearest centre.
    Measured on N = 2,500 samples in fastgan's runs.

    Returns ``{"modes": covered count, "num_modes": K, "high_quality": share in [0, 1]}``.
    """
    if samples.dim() != 2 or centers.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples (N, d) and centers (K, d) must be 2-D with one d; got {tuple(samples.shape)} "
                         f"and {tuple(centers.shape)}")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    if len(samples) == 0 or len(centers) == 0:
        raise ValueError(f"samples and centers must not be empty; got {tuple(samples.shape)} and "
                         f"{tuple(centers.shape)}")
    x = samples.detach().double().cpu()
    c = centers.detach().double().cpu()
    dist = torch.cdist(x, c)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= threshold * std
    covered = torch.unique(nearest[good]).numel()
    return {"modes": float(covered), "num_modes": float(len(c)), "high_quality": float(good.double().mean())}


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} has non-finite values")
    return x


def wasserstein1_1d(x, y) -> float:
    """Exact W1 between the empirical distributions of 1-D samples x (n,) and y (m,).

    Equal sizes: ``mean |sort(x) − sort(y)|`` (docs/theory.md §3). Any sizes: the integral
    of the distance between the quantile functions, computed as
    ``∫ |F_x(t) − F_y(t)| dt`` over the merged sorted values (the CDFs are step
    functions, so the sum over the intervals is exact).
    """
    x = np.sort(_as_numpy(x, "x").reshape(-1))
    y = np.sort(_as_numpy(y, "y").reshape(-1))
    if len(x) == len(y):
        return float(np.mean(np.abs(x - y)))
    z = np.sort(np.concatenate([x, y]))
    cdf_x = np.searchsorted(x, z[:-1], side="right") / len(x)
    cdf_y = np.searchsorted(y, z[:-1], side="right") / len(y)
    return float(np.sum(np.abs(cdf_x - cdf_y) * np.diff(z)))


def wasserstein1(x, y) -> float:
    """Exact W1 with the Euclidean ground cost between the empirical (uniform)
    distributions of samples x (n, d) and y (m, d): 1-D through
    :func:`wasserstein1_1d`, otherwise an exact network-simplex transport plan
    (``ot.emd2`` from the Python Optimal Transport package). O(n·m) memory: meant for a
    few thousand points.

    Without that package, equal sizes (n = m, as in training's evaluation) are solved
    exactly by an optimal assignment (``scipy.optimize.linear_sum_assignment``): between
    two uniform distributions of n points some optimal plan is a permutation (Birkhoff),
    so ``W1 = min over permutations σ of (1/n) Σ |x_i − y_σ(i)|``. It is slower (about 4 s
    at n = 2,000 against 0.6 s); unequal sizes then raise ImportError."""
    x, y = _as_numpy(x, "x"), _as_numpy(y, "y")
    if x.ndim == y.ndim == 1 or (x.ndim == y.ndim == 2 and x.shape[1] == y.shape[1] == 1):
        return wasserstein1_1d(x, y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d) with one d, or both (n,); got {x.shape} and {y.shape}")
    try:
        import ot
    except ImportError:
        return _wasserstein1_by_assignment(x, y)

    cost = _euclidean_cost(x, y)
    a = np.full(len(x), 1.0 / len(x))
    b = np.full(len(y), 1.0 / len(y))
    return float(ot.emd2(a, b, cost, numItermax=10_000_000))


def _euclidean_cost(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x_i − y_j| from the differences (scipy's cdist; pot depends on scipy): ot.dist's
    |x|² + |y|² − 2 x·y cancels (W1(x, x) came out 3e-9, and 40% off for points near 1e5)."""
    from scipy.spatial.distance import cdist

    return cdist(x, y)


def _wasserstein1_by_assignment(x: np.ndarray, y: np.ndarray) -> float:
    """Exact W1 of two equal-size samples (n, d) by an optimal assignment."""
    if len(x) != len(y):
        raise ImportError(f"wasserstein1 of samples of different sizes ({len(x)} and {len(y)}) needs the Python "
                          f"Optimal Transport package: pip install pot")
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as exc:
        raise ImportError("wasserstein1 needs the Python Optimal Transport package (pip install pot) or, for "
                          "equal sample sizes, scipy") from exc
    cost = _euclidean_cost(x, y)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


@torch.no_grad()
def dual_estimate(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                  batch_size: int = 4096) -> float:
    """The critic's Kantorovich–Rubinstein estimate ``E_p f − E_q f``: mean of
    f over `real` (samples of p) minus mean over `fake` (samples of q). A lower bound
    of ``K · W1(p, q)`` for a K-Lipschitz f; evaluated in chunks of `batch_size`, with a
    module critic in eval mode (batch norm's running statistics: the estimate must not
    depend on the chunks, nor change them), then back in its own mode."""
    if len(real) == 0 or len(fake) == 0:
        raise ValueError(f"real and fake must not be empty; got {len(real)} and {len(fake)} samples")

    def mean_f(x: torch.Tensor) -> float:
        total = 0.0
        for chunk in x.split(batch_size):
            total += critic(chunk).double().sum().item()
        return total / len(x)

    training = isinstance(critic, torch.nn.Module) and critic.training
    if training:
        critic.eval()
    try:
        return mean_f(real) - mean_f(fake)
    finally:
        if training:
            critic.train()
