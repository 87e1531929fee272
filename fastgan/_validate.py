"""Argument checks shared by fastgan's ops: they run once, in Python, before any
backend, so every backend sees validated input and errors name the argument."""
import math
from collections import OrderedDict
from typing import Dict, Iterable, List, Tuple, Union

import torch

TensorsLike = Union[torch.nn.Module, torch.Tensor, Iterable[torch.Tensor]]


def check_positive_finite(name: str, value) -> float:
    """`value` as a float, or ValueError/TypeError if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number or a one-element real tensor, got {value!r}")
        value = value.item()
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def check_non_negative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def named_tensors(tensors: TensorsLike, argname: str) -> List[Tuple[str, torch.Tensor]]:
    """(name, tensor) pairs from a module (its parameters), a tensor, or an iterable
    of tensors; names are ``module.weight`` or ``params[3]`` for error messages."""
    if isinstance(tensors, torch.nn.Module):
        return [(f"parameter {name!r}", p) for name, p in tensors.named_parameters()]
    if isinstance(tensors, torch.Tensor):
        return [(argname, tensors)]
    try:
        items = list(tensors)
    except TypeError:
        raise TypeError(
            f"{argname} must be an nn.Module, a tensor or an iterable of tensors, got {type(tensors).__name__}"
        ) from None
    named = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and "params" in item:  # an optimizer-style param group
            named += named_tensors(item["params"], f"{argname}[{index}]['params']")
        elif isinstance(item, torch.Tensor):
            named.append((f"{argname}[{index}]", item))
        else:
            raise TypeError(f"{argname}[{index}] must be a tensor, got {type(item).__name__}")
    return named


def check_floating(name: str, tensor: torch.Tensor) -> None:
    """TypeError unless `tensor` is a dense real floating-point tensor."""
    if tensor.layout != torch.strided:
        raise TypeError(f"{name} is a {tensor.layout} tensor; only dense (strided) tensors are supported")
    if not tensor.dtype.is_floating_point:
        raise TypeError(f"{name} has dtype {tensor.dtype}; only real floating-point tensors are supported")


def group_by_device_dtype(
    tensors: Iterable[torch.Tensor],
) -> "OrderedDict[Tuple[torch.device, torch.dtype], List[int]]":
    """Indices of `tensors` grouped by (device, dtype), in order of first appearance."""
    groups: Dict[Tuple[torch.device, torch.dtype], List[int]] = OrderedDict()
    for index, tensor in enumerate(tensors):
        groups.setdefault((tensor.device, tensor.dtype), []).append(index)
    return groups
