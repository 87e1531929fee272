"""Training primitives and the main job (docs/theory.md §2, §3 and §5).

- :mod:`.recipes`: :func:`critic_step` / :func:`discriminator_step`, :func:`generator_step`,
  :class:`CriticStep` (``capture=True``: a CUDA graph), the ``"gan"``, ``"wgan"``,
  ``"wgan-gp"`` and ``"r3gan"`` recipes, their optimizers (:func:`set_lr` for tensor
  learning rates) and lazy regularisation;
- :mod:`.iteration`: :class:`TrainIteration`, ``n_critic`` critic steps and the generator
  step as one call, recorded as one CUDA graph when captured; :mod:`.graphs`: the one
  graph-recording helper;
- :mod:`.distributed`: torchrun / DDP runs equal to one large batch;
- :mod:`.vae`: the ``"vae"`` and ``"vae-gan"`` recipes;
- :mod:`.data`: 2-D Gaussian mixtures, swiss roll, scikit-learn's 8×8 digits;
- :mod:`.metrics`: modes covered / high-quality samples, exact W1, dual estimates;
  :mod:`.image_metrics`: a digits classifier's classes covered, class KL, Fréchet
  distance and confidence;
- :mod:`.checkpoint`: checksummed atomic checkpoints, RNG state, the run folder's lock;
  :mod:`.loop`: the training job;
- :mod:`.theory`: numerical checks of D*, V(D*, G) = −2 ln 2 + 2 JS, the W1 duality and
  the linear VAE against probabilistic PCA;
- :mod:`.cli`: ``python -m fastgan train|theory``.

The names below load with their module on first use (PEP 562), so the command line
answers ``--help`` before torch is imported.
"""
import importlib
from typing import Any, List

_HOMES = {
    "checkpoint": ("CheckpointError", "RunFolderBusy", "load_checkpoint", "lock_run_folder", "rng_state",
                   "save_checkpoint", "seed_everything", "set_rng_state"),
    "data": ("DATASETS", "DataSampler", "load_digits", "mixture_centers", "mixture_std", "sample_mixture",
             "sample_swissroll"),
    "loop": ("TrainConfig", "train"),
    "metrics": ("dual_estimate", "mode_metrics", "wasserstein1", "wasserstein1_1d"),
    "recipes": ("RECIPES", "CriticStep", "Recipe", "critic_step", "default_r1_r2_gamma", "discriminator_step",
                "generator_step", "get_recipe", "make_critic_step", "make_optimizers", "set_lr"),
    "iteration": ("TrainIteration",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
