"""Eager fast paths' calls of registered ops (``fastgan._C.op_caller``, csrc/op_caller.cpp).

A ``torch.ops`` call converts its Python arguments against the op's schema on every
call and wraps every output: about 2 us of host time, more than a fused kernel costs
at a GAN step's sizes. An op caller converts plain tensors and numbers by kinds read
from the schema once, calls the same dispatcher (autograd, autocast, CUDA graphs,
dispatch modes behave as with ``torch.ops``) and returns only the outputs asked for.
Anything else (a Tensor subclass, a torch-function mode, keywords) goes to the
``torch.ops`` overload. ``torch.compile`` cannot trace into it, so the front ends take
their fast path only when not compiling and let dynamo trace the ``torch.ops`` call.
"""
from typing import Callable

import torch

from .. import _C


def op_caller(overload: "torch._ops.OpOverload", n_outputs: int = 1) -> Callable:
    """``overload``'s call returning its first ``n_outputs`` outputs: one returns the
    tensor alone, more a tuple, none ``None``."""
    schema = overload._schema
    return _C.op_caller(overload, schema.name, schema.overload_name, n_outputs)
