"""fastgan: fused Triton and C++/CUDA kernels for GAN training.

``import fastgan.ops`` for the fused primitives, ``fastgan.optim`` for optimizers,
``fastgan.nn`` for fused layers, ``fastgan.models`` for reference architectures;
:func:`set_backend`, :func:`use_backend` and :func:`available_backends` choose
among the ``"cuda"``, ``"triton"``, ``"cpu"`` and ``"reference"`` implementations.
"""
import importlib
from typing import Any, List

__version__ = "0.1.0"

# Loaded on first use (PEP 562), so ``python -m fastgan --help`` answers before torch is imported.
_FROM_BACKEND = ("BACKENDS", "BackendError", "available_backends", "get_backend", "resolve_backend", "set_backend",
                 "use_backend")
_SUBMODULES = ("models", "nn", "ops", "optim", "reference")

__all__ = ["BACKENDS", "BUILD_INFO", "BackendError", "available_backends", "get_backend", "models", "nn", "ops",
           "optim", "reference", "resolve_backend", "set_backend", "use_backend"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _FROM_BACKEND or name == "BUILD_INFO":
        # ops register with torch.library on import: the public names come with them, as before
        importlib.import_module(".ops", __name__)
        module = importlib.import_module("._extension" if name == "BUILD_INFO" else "._backend", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastgan' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
