"""The one way fastgan's training code records work as a CUDA graph and replays it."""
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import nn


class GraphedCall:
    """``fn(*inputs)`` replayed from a CUDA graph, one real call per call.

    The first ``warmup`` calls run ``fn`` eagerly on a side stream (lazy initialisation:
    cuBLAS handles, optimizer state, Triton compiles), as ``torch.cuda.graph`` asks. The
    next call copies its inputs into static buffers, runs ``before_record`` (e.g.
    ``optimizer.zero_grad(set_to_none=True)``, so gradients are allocated in the graph's
    pool), records ``fn`` on the buffers and replays it; every later call copies its
    inputs in and replays. The returned outputs are the graph's static tensors,
    overwritten by the next replay. Inputs must keep the recorded shape, dtype and
    device (ValueError naming ``names[i]`` otherwise). Random numbers drawn in ``fn``
    come from the CUDA generator, whose graph-safe state gives every replay fresh ones.
    """

    def __init__(self, fn: Callable, *, warmup: int = 3, names: Sequence[str] = (), owner: str = "GraphedCall",
                 before_record: Optional[Callable[[], None]] = None):
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            # Without an eager call first, one-time work (optimizer state, zeroed sums) would be
            # recorded and redone at every replay.
            raise ValueError(f"{owner}: warmup must be an integer >= 1, got {warmup!r}")
        self.fn, self.warmup, self.names, self.owner = fn, warmup, tuple(names), owner
        self.before_record = before_record
        self.calls = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self._static: Tuple[torch.Tensor, ...] = ()
        self._out = None

    def __call__(self, *inputs: torch.Tensor):
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            device = inputs[0].device
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                out = self.fn(*inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            return out
        if self.graph is None:
            self._record(inputs)
        else:
            for index, (static, value) in enumerate(zip(self._static, inputs)):
                self._check_like(index, static, value)
                static.copy_(value, non_blocking=True)
        self.graph.replay()
        return self._out

    def _name(self, index: int) -> str:
        return self.names[index] if index < len(self.names) else f"input {index}"

    def _check_like(self, index: int, static: torch.Tensor, value: torch.Tensor) -> None:
        if value.shape != static.shape or value.dtype != static.dtype or value.device != static.device:
            raise ValueError(f"{self.owner}(capture=True): {self._name(index)} must keep the captured shape, dtype "
                             f"and device {tuple(static.shape)} {static.dtype} {static.device}; got "
                             f"{tuple(value.shape)} {value.dtype} {value.device}")

    def _record(self, inputs: Sequence[torch.Tensor]) -> None:
        for index, value in enumerate(inputs):
            if value.device.type != "cuda":
                raise ValueError(f"{self.owner}(capture=True) needs CUDA tensors; got {self._name(index)} on "
                                 f"{value.device}")
        self._static = tuple(value.detach().clone() for value in inputs)
        if self.before_record is not None:
            self.before_record()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._out = self.fn(*self._static)
        self.graph = graph


def check_capturable(modules: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """ValueError unless steps of `optimizers` on `modules` can be recorded as a CUDA
    graph: capturable optimizers, and every parameter on a CUDA device."""
    for optimizer in optimizers:
        for index, group in enumerate(optimizer.param_groups):
            if "capturable" in group and not group["capturable"]:
                raise ValueError(f"capture=True needs optimizers built with capturable=True (param group {index} "
                                 f"of {type(optimizer).__name__} is not); see make_optimizers(..., capturable=True)")
    devices = {p.device for module in modules for p in module.parameters()}
    if not torch.cuda.is_available() or any(d.type != "cuda" for d in devices):
        found = ", ".join(sorted(str(d) for d in devices)) or "no parameters"
        raise ValueError("capture=True records training steps as a CUDA graph and needs CUDA: the models' "
                         f"parameters are on {found}" +
                         ("" if torch.cuda.is_available() else " and torch sees no CUDA device") +
                         "; use capture=False on the CPU")
