"""The one way fastgan's Triton kernels become registered ops (``torch.ops.fastgan_triton``).

A Triton op's registered body is what a direct ``torch.ops.fastgan_triton.*`` call runs,
so it checks its own arguments, as the C++ ops do with ``TORCH_CHECK``: a bad call
gets an error naming the argument, never an out-of-bounds read or write. It then
launches on the tensors' device (Triton launches on torch's current device).
"""
import functools
from typing import Callable, Optional, Sequence

import torch


def require(condition: bool, op: str, message: str) -> None:
    """A registered op's own argument check (fake kernels and Triton bodies): RuntimeError
    ``fastgan::<op>: <message>`` unless `condition`, as the C++ ops' TORCH_CHECK."""
    if not condition:
        raise RuntimeError(f"fastgan::{op}: {message}")


def _first_tensor(args) -> Optional[torch.Tensor]:
    for arg in args:
        if isinstance(arg, torch.Tensor):
            return arg
        if isinstance(arg, (list, tuple)) and arg and isinstance(arg[0], torch.Tensor):
            return arg[0]
    return None


def triton_op(name: str, check: Callable[..., None], *, mutates_args: Sequence[str] = ()) -> Callable:
    """Decorator: register ``fn`` (annotated, as ``torch.library.custom_op`` needs) as
    ``fastgan_triton::name``; each call runs ``check(*args)`` and then ``fn(*args)``
    with the CUDA device of the first tensor argument current."""

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def body(*args):
            check(*args)
            tensor = _first_tensor(args)
            if tensor is not None and tensor.is_cuda and tensor.device.index != torch.cuda.current_device():
                with torch.cuda.device(tensor.device):
                    return fn(*args)
            return fn(*args)

        return torch.library.custom_op(f"fastgan_triton::{name}", body, mutates_args=tuple(mutates_args))

    return register
