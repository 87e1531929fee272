"""Reference GAN architectures used by fastgan's tests, benchmarks and training
recipes (plain ``torch.nn``; swap layers for fastgan's fused ones as needed)."""
from typing import Sequence

import torch
from torch import nn


def mlp_critic(in_features: int = 2, hidden: int = 512, depth: int = 3, *, slope: float = 0.2) -> nn.Sequential:
    """MLP critic ``in → hidden ×depth → 1`` with LeakyReLU: input (B, in), output (B, 1).
    The WGAN-GP toy critic is ``mlp_critic(2, 512, 3)``."""
    layers = []
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.LeakyReLU(slope)]
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def dcgan_critic(channels: int = 3, width: int = 64, *, batch_norm: bool = True) -> nn.Sequential:
    """DCGAN critic for 64×64 images (Radford et al.; the WGAN paper's conv critic):
    input (B, channels, 64, 64), output (B, 1, 1, 1). With width 64 and batch norm:
    2.77M parameters in 11 tensors (5 bias-free convolutions, 3 batch norms)."""
    def block(cin: int, cout: int, norm: bool) -> Sequence[nn.Module]:
        layers = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        return layers + [nn.LeakyReLU(0.2, inplace=True)]

    return nn.Sequential(
        *block(channels, width, False),
        *block(width, 2 * width, batch_norm),
        *block(2 * width, 4 * width, batch_norm),
        *block(4 * width, 8 * width, batch_norm),
        nn.Conv2d(8 * width, 1, 4, 1, 0, bias=False),
    )


def wide_mlp_critic(in_features: int = 4096, hidden: int = 7500, depth: int = 4) -> nn.Sequential:
    """A large MLP critic for bandwidth-bound benchmarks: the default has
    about 200M parameters (4096·7500 + 3·7500² + biases ≈ 199.5M)."""
    return mlp_critic(in_features, hidden, depth)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
