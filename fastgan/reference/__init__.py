"""Eager PyTorch references for every fastgan op: the ground truth each backend
is tested against and the ``backend="reference"`` implementation."""
from .approximate_penalty import approximate_r1_penalty, finite_difference_penalty, perturb
from .bias_act import bias_act
from .clip import clip_, rmsprop_clip_
from .losses import discriminator_loss, gan_value, generator_loss
from .penalty import critic_input_gradients, grad_norm_penalty, gradient_penalty, interpolate, r1_penalty
from .vae import bernoulli_nll, gaussian_kl, gaussian_nll, reparameterize, vae_loss

__all__ = ["approximate_r1_penalty", "bernoulli_nll", "bias_act", "clip_", "critic_input_gradients",
           "discriminator_loss", "finite_difference_penalty", "gan_value", "gaussian_kl", "gaussian_nll",
           "generator_loss", "grad_norm_penalty", "gradient_penalty", "interpolate", "perturb", "r1_penalty",
           "reparameterize", "rmsprop_clip_", "vae_loss"]
