"""The one way fastgan's Triton kernels become registered ops (``torch.ops.fastgan_triton``).

The ops' schemas and autograd are the C++ ones of the ``fastgan`` namespace
(csrc/namespaces.h): each family defines its schemas in both namespaces, and its C++
autograd serves both, so a Triton op costs the host what a C++ op does, except its
body. The body, registered here for CPU (the interpreter) and CUDA tensors, is the
only Python: it checks its own arguments, as the C++ ops do with ``TORCH_CHECK`` (a
direct ``torch.ops.fastgan_triton.*`` call gets an error naming the argument, never an
out-of-bounds read or write), bumps the version counters of what it writes in place,
and launches on the tensors' device (Triton launches on torch's current device).
"""
import functools
from typing import Callable, Optional, Tuple, Union

import torch

from .. import _C  # noqa: F401  (defines the fastgan_triton schemas)


def require(condition: bool, op: str, message: Union[str, Callable[[], str]]) -> None:
    """A registered op's own argument check (fake kernels and Triton bodies): RuntimeError
    ``fastgan::<op>: <message>`` unless `condition`, as the C++ ops' TORCH_CHECK. A
    formatted message is passed as a lambda, built only when the check fails (formatting
    dtypes and devices on every call cost microseconds)."""
    if not condition:
        raise RuntimeError(f"fastgan::{op}: {message() if callable(message) else message}")


def _first_tensor(args) -> Optional[torch.Tensor]:
    for arg in args:
        if isinstance(arg, torch.Tensor):
            return arg
        if isinstance(arg, (list, tuple)) and arg and isinstance(arg[0], torch.Tensor):
            return arg[0]
    return None


_LIBRARY = torch.library.Library("fastgan_triton", "IMPL")  # kept: the registrations live as long as it


def _mutated_positions(name: str) -> Tuple[int, ...]:
    """Positions of the arguments the schema of ``fastgan_triton::name`` writes (``Tensor(a!)``)."""
    schema = getattr(torch.ops.fastgan_triton, name).default._schema
    return tuple(i for i, arg in enumerate(schema.arguments) if arg.alias_info is not None and arg.alias_info.is_write)


def _bump_versions(args, positions: Tuple[int, ...]) -> None:
    for i in positions:
        written = args[i] if isinstance(args[i], (list, tuple)) else [args[i]]
        if written:
            torch.autograd.graph.increment_version(list(written))


def triton_op(name: str, check: Callable[..., None]) -> Callable:
    """Decorator: ``fn`` becomes the CPU and CUDA kernel of the C++-defined
    ``fastgan_triton::name``; each call runs ``check(*args)`` and then ``fn(*args)``
    with the CUDA device of the first tensor argument current."""
    written = _mutated_positions(name)

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def body(*args):
            check(*args)
            tensor = _first_tensor(args)
            if tensor is not None and tensor.is_cuda and tensor.get_device() != torch.cuda.current_device():
                with torch.cuda.device(tensor.device):
                    out = fn(*args)
            else:
                out = fn(*args)
            if written:
                _bump_versions(args, written)
            return out

        for key in ("CPU", "CUDA"):
            _LIBRARY.impl(name, body, key)
        return body

    return register
