"""Training primitives and the main job (docs/theory.md §2–3).

- :mod:`.recipes`: :func:`critic_step` / :func:`discriminator_step`, :func:`generator_step`,
  :class:`CriticStep` (``capture=True``: a CUDA graph), the ``"gan"``, ``"wgan"`` and
  ``"wgan-gp"`` recipes and their optimizers;
- :mod:`.data`: 2-D Gaussian mixtures, swiss roll, scikit-learn's 8×8 digits;
- :mod:`.metrics`: modes covered / high-quality samples, exact W1, dual estimates;
- :mod:`.checkpoint`: atomic checkpoints and RNG state; :mod:`.loop`: the training job;
- :mod:`.theory`: numerical checks of D*, V(D*, G) = −2 ln 2 + 2 JS and the W1 duality;
- :mod:`.cli`: ``python -m fastgan train|theory``.
"""
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from .data import DATASETS, DataSampler, load_digits, mixture_centers, mixture_std, sample_mixture, sample_swissroll
from .loop import TrainConfig, train
from .metrics import dual_estimate, mode_metrics, wasserstein1, wasserstein1_1d
from .recipes import (RECIPES, CriticStep, Recipe, critic_step, discriminator_step, generator_step, get_recipe,
                      make_critic_step, make_optimizers)

__all__ = ["DATASETS", "RECIPES", "CriticStep", "DataSampler", "Recipe", "TrainConfig", "critic_step",
           "discriminator_step", "dual_estimate", "generator_step", "get_recipe", "load_checkpoint", "load_digits",
           "make_critic_step", "make_optimizers", "mixture_centers", "mixture_std", "mode_metrics", "rng_state",
           "sample_mixture", "sample_swissroll", "save_checkpoint", "seed_everything", "set_rng_state", "train",
           "wasserstein1", "wasserstein1_1d"]
