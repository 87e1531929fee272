"""Fused bias + activation modules: ``y = gain · act(x + b)`` in one kernel, with a
fused backward and double backward (see :func:`fastgan.ops.bias_act`)."""
import copy
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .._backend import _check_name
from .._validate import check_real
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
            ``(B, C, H, W)`` (NCHW or channels-last), -1 for ``(..., C)``, -3 for
            ``(B, C, H, W)`` and unbatched ``(C, H, W)`` alike.
        bias: whether to hold a bias parameter (``False``: ``y = gain · act(x)``).
        bias_init: initial value of every bias entry.
        backend: the fastgan backend (``None``: the process default).

    ``alpha``, ``gain`` and ``bias_init`` must be finite real numbers, ``bias`` a bool
    and ``dim`` an int (ValueError/TypeError naming the argument otherwise).

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
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        self.channels = channels
        self.act = act
        self.alpha = _ACTS[act][1] if alpha is None else check_real("alpha", alpha)
        self.gain = check_real("gain", gain)
        self.dim = dim
        self.backend = None if backend is None else _check_name(backend, "backend")
        if bias:
            bias_init = check_real("bias_init", bias_init)
            self.bias = nn.Parameter(torch.full((channels,), bias_init, device=device, dtype=dtype))
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
        negative_slope = check_real("negative_slope", negative_slope)
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


#: Layers whose bias can move into the activation after them: exact types only (a
#: subclass may use its bias differently, e.g. scaled as in equalized-lr layers).
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Activation type -> (act, the attribute holding its alpha or None); exact types only.
_ACTIVATIONS = {nn.LeakyReLU: ("lrelu", "negative_slope"), nn.ELU: ("elu", "alpha"), nn.ReLU: ("relu", None),
                nn.Tanh: ("tanh", None), nn.Sigmoid: ("sigmoid", None), nn.SiLU: ("silu", None)}


def _unhooked(module: nn.Module) -> bool:
    """No forward or backward hooks: a hook on the layer would see its output without bias."""
    return not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _plain_sequential(module: nn.Module) -> bool:
    """An nn.Sequential that calls its children in order (a subclass may not)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _fuses(layer: nn.Module, activation: Optional[nn.Module]) -> bool:
    """Whether `activation` right after `layer` can take over the layer's bias."""
    return (type(layer) in _LAYERS and type(activation) in _ACTIVATIONS and _unhooked(layer)
            and _unhooked(activation))


def _fused_activation(layer: nn.Module, activation: nn.Module, backend: Optional[str]) -> FusedBiasAct:
    """A bias-free fused module computing `activation` on `layer`'s output: the bias runs
    along the last dim after a Linear and along the channel dim after a ConvNd, counted
    from the end so that unbatched inputs ``(C, *spatial)`` work as batched ones."""
    if isinstance(layer, nn.Linear):
        channels, dim = layer.out_features, -1
    else:
        channels, dim = layer.out_channels, -(len(layer.kernel_size) + 1)
    act, alpha_attribute = _ACTIVATIONS[type(activation)]
    alpha = None if alpha_attribute is None else getattr(activation, alpha_attribute)
    if act == "lrelu":
        return FusedLeakyReLU(channels, alpha, dim=dim, bias=False, backend=backend)
    return FusedBiasAct(channels, act, alpha, dim=dim, bias=False, backend=backend)


def fuse_bias_act(module: nn.Module, inplace: bool = False, backend: Optional[str] = None) -> nn.Module:
    """Rewrite every ``Linear/Conv{1,2,3}d`` followed by ``LeakyReLU``, ``ReLU``,
    ``Tanh``, ``Sigmoid``, ``SiLU`` or ``ELU`` inside ``nn.Sequential`` containers (at
    any depth) into the layer without bias followed by a :class:`FusedBiasAct` /
    :class:`FusedLeakyReLU` that holds the same bias parameter (none when the layer
    had ``bias=False``, as in DCGAN: the activation alone, with its fused first and
    second derivatives). The result computes the same function (and gradients), for
    batched and unbatched inputs alike.

    A pair is left as it is unless rewriting it provably keeps the function: both
    modules must be of exactly those types (not subclasses) and without hooks, in an
    ``nn.Sequential`` whose forward is Sequential's own. A layer with a bias that is
    registered at several places (shared) is rewritten only if every place is such a
    pair; the fused activations then share its bias parameter. (A layer that a custom
    ``forward`` also calls on its own, outside its ``nn.Sequential`` (``self.body[0](x)``)
    or through an attribute not registered as a submodule, cannot be seen; there it
    would lose its bias: do not fuse such a model.)

    Returns the rewritten module: a deep copy unless ``inplace`` (then the bias
    Parameter objects are moved, not copied, so an optimizer built on the module
    still holds them). State-dict keys of moved biases change (``"0.bias"`` becomes
    ``"1.bias"``).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    backend = None if backend is None else _check_name(backend, "backend")
    if not inplace:
        module = copy.deepcopy(module)
    # Every place (parent, slot name) each submodule is registered at, and what follows it there.
    places: Dict[int, List[Tuple[nn.Module, str]]] = {}
    followers: Dict[Tuple[int, str], Optional[nn.Module]] = {}
    for parent in module.modules():
        names = list(parent._modules)
        for index, name in enumerate(names):
            child = parent._modules[name]
            if child is None:
                continue
            places.setdefault(id(child), []).append((parent, name))
            following = index + 1 < len(names) and _plain_sequential(parent)
            followers[(id(parent), name)] = parent._modules[names[index + 1]] if following else None
    rewrites = []
    for parent in module.modules():
        if not _plain_sequential(parent):
            continue
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            layer, activation = parent._modules[first], parent._modules[second]
            if not _fuses(layer, activation):
                continue
            if layer.bias is not None and not all(_fuses(layer, followers[(id(where), slot)])
                                                  for where, slot in places[id(layer)]):
                continue  # a shared layer used somewhere without a fusable activation after it
            rewrites.append((parent, second, layer, activation))
    for parent, second, layer, activation in rewrites:
        fused = _fused_activation(layer, activation, backend)
        fused.bias = layer.bias  # the same Parameter: optimizers holding it keep working
        parent._modules[second] = fused
    for _, _, layer, _ in rewrites:  # after every use of a shared layer took its bias
        layer.bias = None
    return module
