"""Eager calls into C++ with less host time than torch's Python API: registered ops
(``fastgan._C.op_caller``, csrc/op_caller.cpp) and autograd's entries (``backward``,
``grad_with_graph``, csrc/backward_call.cpp).

A ``torch.ops`` call converts its Python arguments against the op's schema on every
call and wraps every output: about 2 us of host time, more than a fused kernel costs
at a GAN step's sizes. An op caller converts plain tensors and numbers by kinds read
from the schema once, calls the same dispatcher (autograd, autocast, CUDA graphs,
dispatch modes behave as with ``torch.ops``) and returns only the outputs asked for.
Anything else (a Tensor subclass, a torch-function mode, keywords) goes to the
``torch.ops`` overload. ``torch.compile`` cannot trace into it, so the front ends take
their fast path only when not compiling and let dynamo trace the ``torch.ops`` call.
"""
from typing import Callable, Dict, Optional, Tuple

import torch

from .. import _C
from .._backend import _is_compiling


def op_caller(overload: "torch._ops.OpOverload", n_outputs: int = 1, bound: Tuple = ()) -> Callable:
    """``overload``'s call returning its first ``n_outputs`` outputs: one returns the
    tensor alone, more a tuple, none ``None``. ``bound``: its last arguments (numbers or
    bools, e.g. a family's codes), fixed here: ``op_caller(op, 1, (a, b))(x)`` is
    ``op(x, a, b)``'s first output, without converting a and b on every call."""
    schema = overload._schema
    return _C.op_caller(overload, schema.name, schema.overload_name, n_outputs, tuple(bound))


def op_callers(table: Dict[str, Callable], n_outputs: int = 1) -> Dict[str, Callable]:
    """A dispatch table (backend -> implementation) with each ``torch.ops`` overload
    replaced by its op caller (one per overload); other entries, the reference's
    functions, are kept."""
    callers: Dict[int, Callable] = {}
    for impl in table.values():
        if isinstance(impl, torch._ops.OpOverload) and id(impl) not in callers:
            callers[id(impl)] = op_caller(impl, n_outputs)
    return {name: callers.get(id(impl), impl) for name, impl in table.items()}


def backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` for a scalar loss, through the engine's C++ API when eager:
    ``Tensor.backward``'s Python wrapper costs about 21 us per call before the engine
    starts. A Tensor subclass, a torch-function mode or torch.compile get ``loss.backward()``."""
    if _is_compiling() or _C.backward(loss) is NotImplemented:
        loss.backward()


def grad_with_graph(total: torch.Tensor, inputs: torch.Tensor) -> Optional[torch.Tensor]:
    """``torch.autograd.grad(total, inputs, create_graph=True, allow_unused=True)[0]``
    (None where ``total`` does not depend on ``inputs``), through the engine's C++ API
    when eager (the Python wrapper costs about 17 us per call); else the Python API."""
    if not _is_compiling():
        grad = _C.grad_with_graph(total, inputs)
        if grad is not NotImplemented:
            return grad
    return torch.autograd.grad(total, inputs, create_graph=True, allow_unused=True)[0]


def without_grad(fn: Callable, *args):
    """``fn(*args)`` with gradient recording off: ``torch.no_grad()``'s effect for a
    fraction of its host cost (the optimizer steps and clipping run this every step)."""
    enabled = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    try:
        return fn(*args)
    finally:
        torch._C._set_grad_enabled(enabled)
