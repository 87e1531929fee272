"""Argument checks shared by fastgan's ops: they run once, in Python, before any
backend, so every backend sees validated input and errors name the argument."""
import math
import numbers
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch

TensorsLike = Union[torch.nn.Module, torch.Tensor, Iterable[torch.Tensor]]


def check_real(name: str, value, *, minimum: Optional[float] = None, positive: bool = False) -> float:
    """`value` as a float: TypeError unless a real number (a Python or numpy int or
    float, or a one-element real tensor), ValueError unless finite, >= `minimum` and,
    with `positive`, > 0."""
    if type(value) is not float:  # a float, the common case, needs no conversion
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"{name} must be a real number or a one-element real tensor, got {value!r}")
            value = value.item()
        value = float(value)
    if not math.isfinite(value) or (positive and value <= 0) or (minimum is not None and value < minimum):
        bound = " and > 0" if positive else ("" if minimum is None else f" and >= {minimum}")
        raise ValueError(f"{name} must be finite{bound}, got {value}")
    return value


def check_flag(name: str, value) -> bool:
    """`value` if it is a bool, else TypeError naming it (a string such as "no" is not False)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}")
    return value


def check_positive_finite(name: str, value) -> float:
    """`value` as a float, or ValueError/TypeError if it is not a finite number > 0."""
    return check_real(name, value, positive=True)


def check_batch(name: str, tensor) -> None:
    """A dense floating-point tensor of shape (B, ...) with B >= 1 and elements per sample."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(tensor).__name__}")
    check_floating(name, tensor)
    if tensor.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension: expected shape (B, ...), got {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} has a batch of 0 samples: expected shape (B, ...) with B >= 1")
    if tensor.numel() == 0:
        raise ValueError(f"{name} has no elements per sample: shape {tuple(tensor.shape)}")


def flatten_tensors(tensors: TensorsLike, argname: str) -> Tuple[List[torch.Tensor], Callable[[int], str]]:
    """The tensors in a module (its parameters), a tensor, or an iterable of tensors
    or optimizer param groups, and a function naming tensor i for error messages
    (``parameter 'net.0.weight'``, ``params[3]``). Names are built only on error:
    this runs on every optimizer step."""
    if isinstance(tensors, torch.nn.Module):
        module = tensors
        return list(module.parameters()), lambda i: f"parameter {list(module.named_parameters())[i][0]!r}"
    if isinstance(tensors, torch.Tensor):
        return [tensors], lambda i: argname
    try:
        items = tensors if type(tensors) is list else list(tensors)
    except TypeError:
        raise TypeError(
            f"{argname} must be an nn.Module, a tensor or an iterable of tensors, got {type(tensors).__name__}"
        ) from None
    if all([isinstance(item, torch.Tensor) for item in items]):
        return items, lambda i: f"{argname}[{i}]"
    flat: List[torch.Tensor] = []
    names: List[Callable[[], str]] = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and "params" in item:  # an optimizer-style param group
            inner, inner_name = flatten_tensors(item["params"], f"{argname}[{index}]['params']")
            flat += inner
            names += [lambda k=k, f=inner_name: f(k) for k in range(len(inner))]
        elif isinstance(item, torch.Tensor):
            flat.append(item)
            names.append(lambda index=index: f"{argname}[{index}]")
        else:
            raise TypeError(f"{argname}[{index}] must be a tensor, got {type(item).__name__}")
    return flat, lambda i: names[i]()


def floating_groups(
    tensors: List[torch.Tensor], name: Callable[[int], str]
) -> Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]]:
    """Check every tensor is a dense real floating-point tensor (TypeError naming
    the first that is not) and group them by (device, dtype). The grouping is
    torch's own (the one ``torch._foreach_*`` optimizers use, in C++): this runs
    on every clip of a whole critic."""
    if not tensors:
        return {}
    groups = torch._C._group_tensors_by_device_and_dtype([tensors], False)
    strided = torch.strided
    if not (all([dtype.is_floating_point for _, dtype in groups]) and all([t.layout is strided for t in tensors])):
        for index, tensor in enumerate(tensors):  # name the first offender
            check_floating(name(index), tensor)
    return {key: lists[0] for key, (lists, _) in groups.items()}


def check_floating(name: str, tensor: torch.Tensor) -> None:
    """TypeError unless `tensor` is a dense real floating-point tensor."""
    if tensor.layout != torch.strided:
        raise TypeError(f"{name} is a {tensor.layout} tensor; only dense (strided) tensors are supported")
    if not tensor.dtype.is_floating_point:
        raise TypeError(f"{name} has dtype {tensor.dtype}; only real floating-point tensors are supported")


def check_lr_tensor(name: str, lr: torch.Tensor, device: torch.device) -> None:
    """A learning rate given as a tensor (capturable optimizers): one floating-point
    element on `device`; its value is not read (that would synchronise the device)."""
    if not lr.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {lr.dtype}")
    if lr.numel() != 1:
        raise ValueError(f"{name} must have one element, got shape {tuple(lr.shape)}")
    if lr.device != device:
        raise ValueError(f"{name} is on {lr.device} but the parameters are on {device}")
