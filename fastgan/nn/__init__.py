"""Modules built on fastgan's fused ops: drop-in layers for critics and generators."""
from .bias_act import FusedBiasAct, FusedLeakyReLU, fuse_bias_act

__all__ = ["FusedBiasAct", "FusedLeakyReLU", "fuse_bias_act"]
