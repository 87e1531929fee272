"""fastgan: fused Triton and C++/CUDA kernels for GAN training.

``import fastgan.ops`` for the fused primitives, ``fastgan.optim`` for optimizers,
``fastgan.nn`` for fused layers, ``fastgan.models`` for reference architectures;
:func:`set_backend`, :func:`use_backend` and :func:`available_backends` choose
among the ``"cuda"``, ``"triton"``, ``"cpu"`` and ``"reference"`` implementations.
"""
from ._backend import (BACKENDS, BackendError, available_backends, get_backend, resolve_backend, set_backend,
                       use_backend)
from ._extension import BUILD_INFO
from . import models, ops, optim, reference  # noqa: E402  (ops register with torch.library on import)
from . import nn  # noqa: E402

__version__ = "0.1.0"

__all__ = ["BACKENDS", "BUILD_INFO", "BackendError", "available_backends", "get_backend", "models", "nn", "ops",
           "optim", "reference", "resolve_backend", "set_backend", "use_backend"]
