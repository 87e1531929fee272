"""Eager PyTorch references for every fastgan op: the ground truth each backend
is tested against and the ``backend="reference"`` implementation."""
from .clip import clip_, rmsprop_clip_
from .losses import discriminator_loss, gan_value, generator_loss

__all__ = ["clip_", "discriminator_loss", "gan_value", "generator_loss", "rmsprop_clip_"]
