"""fastgan's fused training primitives. Each op takes ``backend=`` (see
:func:`fastgan.set_backend`) and is tested against its eager reference in
:mod:`fastgan.reference`."""
from .approximate_penalty import (approximate_r1_penalty, approximate_r2_penalty, finite_difference_penalty, perturb,
                                  r1_r2_penalty)
from .bias_act import bias_act
from .clip import clip_weights_, rmsprop_clip_
from .losses import discriminator_loss, gan_value, generator_loss
from .penalty import (grad_norm_penalty, gradient_penalty, input_gradients, interpolate, r1_penalty,
                      r2_penalty)
from .vae import bernoulli_nll, gaussian_kl, gaussian_nll, reparameterize, vae_loss

__all__ = ["approximate_r1_penalty", "approximate_r2_penalty", "bernoulli_nll", "bias_act", "clip_weights_",
           "discriminator_loss", "finite_difference_penalty", "gan_value", "gaussian_kl", "gaussian_nll",
           "generator_loss", "grad_norm_penalty", "gradient_penalty", "input_gradients", "interpolate", "perturb",
           "r1_penalty", "r1_r2_penalty", "r2_penalty", "reparameterize", "rmsprop_clip_", "vae_loss"]
