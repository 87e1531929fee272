"""Optimizers with fused fastgan kernels."""
from .rmsprop import ClippedRMSprop

__all__ = ["ClippedRMSprop"]
