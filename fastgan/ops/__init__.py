"""fastgan's fused training primitives. Each op takes ``backend=`` (see
:func:`fastgan.set_backend`) and is tested against its eager reference in
:mod:`fastgan.reference`."""
from .clip import clip_weights_, rmsprop_clip_
from .losses import discriminator_loss, gan_value, generator_loss

__all__ = ["clip_weights_", "discriminator_loss", "gan_value", "generator_loss", "rmsprop_clip_"]
