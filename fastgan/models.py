"""Reference GAN architectures used by fastgan's tests, benchmarks and training
recipes (plain ``torch.nn``; swap layers for fastgan's fused ones as needed)."""
from typing import Sequence, Tuple

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


class _ResidualCriticBlock(nn.Module):
    """WGAN-GP's critic block: [relu] conv3x3 relu conv3x3 [mean-pool], plus a 1x1
    (and pooled) shortcut; the first block has no leading relu (its input is the image)."""

    def __init__(self, cin: int, cout: int, down: bool, first: bool = False):
        super().__init__()
        self.first, self.down = first, down
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if (cin != cout or down) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else torch.relu(x)
        h = self.conv2(torch.relu(self.conv1(h)))
        skip = x
        if self.down:
            h = nn.functional.avg_pool2d(h, 2)
            skip = nn.functional.avg_pool2d(skip, 2) if self.first else skip
        skip = self.shortcut(skip)
        if self.down and not self.first:
            skip = nn.functional.avg_pool2d(skip, 2)
        return h + skip


class ResNetCritic32(nn.Module):
    """The WGAN-GP CIFAR-10 ResNet critic (Gulrajani et al., 2017): input (B, 3, 32, 32),
    four residual blocks of `width` channels (two down-sampling), relu, global mean,
    linear; output (B, 1). No normalisation (a gradient penalty needs none)."""

    def __init__(self, width: int = 128, channels: int = 3):
        super().__init__()
        self.blocks = nn.Sequential(
            _ResidualCriticBlock(channels, width, down=True, first=True),
            _ResidualCriticBlock(width, width, down=True),
            _ResidualCriticBlock(width, width, down=False),
            _ResidualCriticBlock(width, width, down=False),
        )
        self.linear = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.relu(self.blocks(x)).mean(dim=(2, 3)))


def wide_mlp_critic(in_features: int = 4096, hidden: int = 7500, depth: int = 4) -> nn.Sequential:
    """A large MLP critic for bandwidth-bound benchmarks: the default has
    about 200M parameters (4096·7500 + 3·7500² + biases ≈ 199.5M)."""
    return mlp_critic(in_features, hidden, depth)


def mlp_generator(latent_dim: int = 2, out_features: int = 2, hidden: int = 512, depth: int = 3) -> nn.Sequential:
    """MLP generator ``latent → hidden ×depth → out`` with ReLU and a linear output:
    input z (B, latent_dim), output (B, out_features). WGAN-GP's toy generator is
    ``mlp_generator(2, 2, 512, 3)``."""
    layers = []
    width = latent_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def digits_critic(width: int = 64, *, slope: float = 0.2) -> nn.Sequential:
    """Small convolutional critic for 8×8 one-channel images (scikit-learn's digits):
    conv 4×4/2 → (width, 4, 4) → conv 4×4/2 → (2·width, 2, 2) → linear; LeakyReLU, no
    normalisation (safe with gradient penalties). Input (B, 1, 8, 8), output (B, 1)."""
    return nn.Sequential(
        nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(slope),
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(slope),
        nn.Flatten(), nn.Linear(2 * width * 4, 1),
    )


def digits_generator(latent_dim: int = 32, width: int = 64) -> nn.Sequential:
    """Small DCGAN-style generator for 8×8 one-channel images in [-1, 1]: z (B, latent_dim)
    → linear → (2·width, 2, 2) → transposed conv 4×4/2 → (width, 4, 4) → transposed conv
    4×4/2 → tanh; output (B, 1, 8, 8). Batch norm after the hidden layers."""
    return nn.Sequential(
        nn.Linear(latent_dim, 2 * width * 4), nn.Unflatten(1, (2 * width, 2, 2)),
        nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh(),
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class GaussianEncoder(nn.Module):
    """A VAE encoder: ``body`` maps x to (B, 2·latent_dim), split into the posterior's mean
    and log-variance, each (B, latent_dim)."""

    def __init__(self, body: nn.Module, latent_dim: int):
        super().__init__()
        self.body, self.latent_dim = body, latent_dim

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.body(x).split(self.latent_dim, dim=1)
        return mu, logvar


def mlp_encoder(in_features: int = 2, latent_dim: int = 2, hidden: int = 512, depth: int = 3) -> GaussianEncoder:
    """MLP VAE encoder ``in → hidden ×depth → 2·latent`` (ReLU): x (B, in) → (mu, logvar),
    each (B, latent_dim)."""
    return GaussianEncoder(mlp_generator(in_features, 2 * latent_dim, hidden, depth), latent_dim)


def digits_encoder(latent_dim: int = 32, width: int = 64, *, slope: float = 0.2) -> GaussianEncoder:
    """VAE encoder for 8×8 digits, :func:`digits_critic`'s body with a (2·latent_dim) head:
    x (B, 1, 8, 8) → (mu, logvar), each (B, latent_dim)."""
    body = nn.Sequential(*digits_critic(width, slope=slope)[:-1], nn.Linear(2 * width * 4, 2 * latent_dim))
    return GaussianEncoder(body, latent_dim)


def digits_decoder(latent_dim: int = 32, width: int = 64) -> nn.Sequential:
    """VAE decoder for 8×8 digits: :func:`digits_generator` without batch norm and tanh,
    z (B, latent_dim) → Bernoulli logits (B, 1, 8, 8) of the pixels mapped to [0, 1]."""
    return nn.Sequential(
        nn.Linear(latent_dim, 2 * width * 4), nn.Unflatten(1, (2 * width, 2, 2)), nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(width, 1, 4, 2, 1),
    )
