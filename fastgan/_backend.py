"""Backend selection shared by every fastgan op.

Each op has four implementations: ``"reference"`` (eager PyTorch, any device),
``"cpu"`` (C++ kernels, CPU tensors), ``"cuda"`` (CUDA kernels, CUDA tensors) and
``"triton"`` (Triton kernels: CUDA tensors, or CPU tensors when
``TRITON_INTERPRET=1``). ``"auto"`` picks the fastest that can run the tensors
at hand. The choice comes from, in order: the op's ``backend=`` argument, the
process-wide default set by :func:`set_backend` (or :func:`use_backend`), and
the ``FASTGAN_BACKEND`` environment variable; else ``"auto"``.
"""
import contextlib
import functools
import importlib.util
import os
from typing import Callable, Dict, Iterator, List, Optional

import torch

from . import _C
from ._C import backend_env as _getenv_backend
from ._extension import BUILD_INFO

BACKENDS = ("auto", "cuda", "triton", "cpu", "reference")
CONCRETE_BACKENDS = ("cuda", "triton", "cpu", "reference")
ENV_VAR = "FASTGAN_BACKEND"

_default: Optional[str] = None


class BackendError(RuntimeError):
    """The requested backend cannot run the given tensors in this process."""


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"{what} must be one of {BACKENDS}, got {name!r}")
    return name.lower()


#: Whether dynamo is tracing this Python code: the fast paths' guard (dynamo cannot
#: trace their C callers, so it traces the checked paths). torch.compiler.is_compiling
#: costs 3x more per call and is also true under non-strict export, whose fake and
#: functional tensors the C callers hand to torch's own Python API anyway.
_is_compiling = torch.compiler.is_dynamo_compiling


def _env_backend() -> Optional[str]:
    """$FASTGAN_BACKEND or None, through getenv(3), where os.environ's changes land:
    0.05 us per op call where os.environ.get costs 0.8 (a KeyError when unset).
    torch.compile traces os.environ instead (it cannot look into the C function)."""
    if _is_compiling():
        return os.environ.get(ENV_VAR) or None
    return _getenv_backend()


def set_backend(name: Optional[str]) -> None:
    """Set the process-wide default backend (``None`` restores the env/auto default)."""
    global _default
    _default = None if name is None else _check_name(name, "backend")


def get_backend() -> str:
    """The default backend now in force: set_backend's, else $FASTGAN_BACKEND, else "auto"."""
    if _default is not None:
        return _default
    env = _env_backend()
    if env:
        return _check_name(env, f"${ENV_VAR}")
    return "auto"


@contextlib.contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    """Context manager: ``with fastgan.use_backend("triton"): ...``."""
    global _default
    previous = _default
    set_backend(name)
    try:
        yield
    finally:
        _default = previous


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _can_run(backend: str, device: torch.device) -> Optional[str]:
    """None when `backend` can run tensors on `device`, else the reason it cannot."""
    kind = device.type
    if backend == "reference":
        return None
    if backend == "cpu":
        return None if kind == "cpu" else f"it runs CPU tensors only, these are on {device}"
    if backend == "cuda":
        if kind != "cuda":
            return f"it runs CUDA tensors only, these are on {device}"
        if not BUILD_INFO["cuda"]:
            return "fastgan._C was built without CUDA kernels (no nvcc at build time, or FASTGAN_CUDA=0)"
        return None
    if backend == "triton":
        if not _triton_installed():
            return "triton is not installed"
        if triton_interpret():
            return None if kind in ("cpu", "cuda") else f"it runs CPU or CUDA tensors, these are on {device}"
        if kind != "cuda":
            return f"without TRITON_INTERPRET=1 it runs CUDA tensors only, these are on {device}"
        return None
    raise ValueError(f"unknown backend {backend!r}")


def available_backends(device: Optional[torch.device] = None) -> List[str]:
    """Backends usable in this process: for `device` when given, else for any device
    this process has (CPU, and CUDA when available)."""
    devices = [torch.device(device)] if device is not None else [torch.device("cpu")]
    if device is None and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return [b for b in CONCRETE_BACKENDS if any(_can_run(b, d) is None for d in devices)]


# (requested name, device[, TRITON_INTERPRET for "triton"]) -> the backend it resolved to:
# every op call resolves its backend, and the answer changes with nothing else.
_RESOLVED: Dict[tuple, str] = {}


def resolve_backend(backend: Optional[str], device: torch.device, op: str) -> str:
    """The concrete backend that runs `op` on tensors of `device`."""
    requested = backend if backend is not None else _default if _default is not None else _env_backend() or "auto"
    if isinstance(requested, str):
        # The interpreter decides only whether Triton runs tensors off CUDA.
        key = (requested, device) if requested != "triton" else (requested, device, triton_interpret())
        resolved = _RESOLVED.get(key)
        if resolved is not None:
            return resolved
    name = _check_name(requested, "backend") if backend is not None else get_backend()
    if name == "auto":
        for candidate in ("cuda", "triton", "reference") if device.type == "cuda" else ("cpu", "reference"):
            if _can_run(candidate, device) is None:
                _RESOLVED[key] = candidate
                return candidate
    reason = _can_run(name, device)
    if reason is not None:
        raise BackendError(
            f"{op}: backend {name!r} cannot run these tensors: {reason}. "
            f"Usable here: {available_backends(device)} (or backend='auto')."
        )
    _RESOLVED[key] = name
    return name


def backend_table(impls: Dict[str, Callable], op: str) -> Callable:
    """An eager fast path's ``impls[resolve_backend(backend, device, op)](*args)`` as one
    C call, ``table(backend, *args)`` (csrc/backend_table.cpp), the device that of the
    first of ``args`` that is not None (a tensor, or a list's first tensor).
    NotImplemented when it declines: ``impls`` has no entry for the backend,
    resolve_backend refuses (the checked path then raises its error), or a tensor of
    ``args`` is not a plain tensor with elements (fast paths take the common call, the
    checked paths the rest). resolve_backend decides,
    once per (requested name, device type, TRITON_INTERPRET); the choice costs about
    0.1 us where resolve_backend's costs 0.4. Not for torch.compile, which cannot trace
    it."""
    return _C.backend_table(dict(impls), resolve_backend, op, globals())
