"""Fused bias + activation modules: ``y = gain · act(x + b)`` in one kernel, with a
fused backward and double backward (see :func:`fastgan.ops.bias_act`)."""
import copy
import math
from typing import Optional

import torch
from torch import nn

from ..ops.bias_act import ACTIVATIONS, _ACTS, bias_act


class FusedBiasAct(nn.Module):
    r"""Bias add, activation and gain in one fused kernel: ``y = gain · act(x + b)``.

    Put it after a ``Linear`` or ``Conv2d`` built with ``bias=False``: the pair computes
    what ``Linear/Conv2d(bias=True)`` followed by the activation does, with one
    memory pass instead of two or three, and a backward and double backward (R1,
    WGAN-GP) that are fused kernels too.

    Args:
        channels: size of the bias, ``x.shape[dim]``.
        act: ``"linear"``, ``"relu"``, ``"lrelu"``, ``"tanh"``, ``"sigmoid"``, ``"silu"``
            or ``"elu"``.
        alpha: lrelu's negative slope (default 0.2) or elu's alpha (default 1.0).
        gain: scale applied after the activation.
        dim: the dimension of ``x`` the bias runs along: 1 for ``(B, C)`` and
            ``(B, C, H, W)`` (NCHW or channels-last), -1 for ``(..., C)``.
        bias: whether to hold a bias parameter (``False``: ``y = gain · act(x)``).
        bias_init: initial value of every bias entry.
        backend: the fastgan backend (``None``: the process default).

    Shape:
        - Input: ``(*)`` with ``x.shape[dim] == channels``.
        - Output: same shape, dtype and layout as the input.

    Under ``torch.autocast`` the float32 bias is cast to the input's dtype and the
    output follows the input.
    """

    def __init__(self, channels: int, act: str = "lrelu", alpha: Optional[float] = None, gain: float = 1.0,
                 dim: int = 1, bias: bool = True, bias_init: float = 0.0, backend: Optional[str] = None, *,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if not isinstance(act, str) or act not in _ACTS:
            raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
        alpha = _ACTS[act][1] if alpha is None else float(alpha)
        if not math.isfinite(alpha) or not math.isfinite(float(gain)):
            raise ValueError(f"alpha and gain must be finite, got alpha={alpha}, gain={gain}")
        self.channels = channels
        self.act = act
        self.alpha = alpha
        self.gain = float(gain)
        self.dim = dim
        self.backend = backend
        if bias:
            self.bias = nn.Parameter(torch.full((channels,), float(bias_init), device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(x, self.bias, self.act, self.alpha, self.gain, self.dim, backend=self.backend)

    def extra_repr(self) -> str:
        text = f"{self.channels}, act={self.act!r}"
        if self.act in ("lrelu", "elu"):
            text += f", alpha={self.alpha}"
        text += f", gain={self.gain}, dim={self.dim}"
        if self.bias is None:
            text += ", bias=False"
        if self.backend is not None:
            text += f", backend={self.backend!r}"
        return text


class FusedLeakyReLU(FusedBiasAct):
    r"""``y = gain · leaky_relu(x + b, negative_slope)`` in one fused kernel: the drop-in
    for ``Linear/Conv2d(bias=True)`` + ``nn.LeakyReLU`` in critics (build the layer with
    ``bias=False`` and put this after it).

    Args:
        channels: size of the bias, ``x.shape[dim]``.
        negative_slope: the slope for ``x + b < 0`` (default 0.2, as in DCGAN/StyleGAN critics).
        gain: scale applied after the activation (StyleGAN uses ``sqrt(2)``).
        dim, bias, bias_init, backend: as in :class:`FusedBiasAct`.

    Shape:
        - Input: ``(*)`` with ``x.shape[dim] == channels``: ``(B, C)`` or ``(B, C, H, W)``.
        - Output: same shape as the input.

    The backward saves only the output ``y`` (its sign is the mask), and the double
    backward is the same mask kernel again.
    """

    def __init__(self, channels: int, negative_slope: float = 0.2, gain: float = 1.0, dim: int = 1,
                 bias: bool = True, bias_init: float = 0.0, backend: Optional[str] = None, *, device=None,
                 dtype=None):
        super().__init__(channels, "lrelu", negative_slope, gain, dim, bias, bias_init, backend, device=device,
                         dtype=dtype)

    @property
    def negative_slope(self) -> float:
        return self.alpha

    def extra_repr(self) -> str:
        text = f"{self.channels}, negative_slope={self.alpha}, gain={self.gain}"
        if self.dim != 1:
            text += f", dim={self.dim}"
        if self.bias is None:
            text += ", bias=False"
        if self.backend is not None:
            text += f", backend={self.backend!r}"
        return text


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _fused_for(layer: nn.Module, activation: nn.Module, backend: Optional[str]) -> Optional[FusedBiasAct]:
    """The fused module replacing `activation` after `layer`, or None when the pair does not fuse."""
    if not isinstance(layer, _LAYERS):
        return None
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    dim = -1 if isinstance(layer, nn.Linear) else 1
    if isinstance(activation, nn.LeakyReLU):
        fused = FusedLeakyReLU(channels, activation.negative_slope, dim=dim, bias=False, backend=backend)
    elif isinstance(activation, nn.ELU):
        fused = FusedBiasAct(channels, "elu", activation.alpha, dim=dim, bias=False, backend=backend)
    else:
        act = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}.get(type(activation))
        if act is None:
            return None
        fused = FusedBiasAct(channels, act, dim=dim, bias=False, backend=backend)
    if layer.bias is not None:  # a bias-less layer gets the activation alone (its fused derivatives)
        fused.bias = layer.bias  # the same Parameter: optimizers holding it keep working
        layer.bias = None
    return fused


def fuse_bias_act(module: nn.Module, inplace: bool = False, backend: Optional[str] = None) -> nn.Module:
    """Rewrite every ``Linear/Conv{1,2,3}d`` followed by ``LeakyReLU``, ``ReLU``,
    ``Tanh``, ``Sigmoid``, ``SiLU`` or ``ELU`` inside ``nn.Sequential`` containers (at
    any depth) into the layer without bias followed by a :class:`FusedBiasAct` /
    :class:`FusedLeakyReLU` that holds the same bias parameter (none when the layer
    had ``bias=False``, as in DCGAN: the activation alone, with its fused first and
    second derivatives). The result computes the same function (and gradients).

    Returns the rewritten module: a deep copy unless ``inplace`` (then the bias
    Parameter objects are moved, not copied, so an optimizer built on the module
    still holds them). State-dict keys of moved biases change (``"0.bias"`` becomes
    ``"1.bias"``).
    """
    if not inplace:
        module = copy.deepcopy(module)
    for child in list(module.modules()):
        if not isinstance(child, nn.Sequential):
            continue
        names = list(child._modules)
        for first, second in zip(names, names[1:]):
            fused = _fused_for(child._modules[first], child._modules[second], backend)
            if fused is not None:
                child._modules[second] = fused
    return module
