"""Test configuration.

Without a GPU, Triton kernels run in the interpreter on CPU tensors: that is how
CI checks every Triton kernel. TRITON_INTERPRET must be set before any fastgan
Triton module is imported (triton reads it when a kernel is decorated).
"""
import os
import zlib

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastgan  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def stable_seed(*parts) -> int:
    """A seed derived from `parts` that is the same in every process (Python salts the
    hash of strings per process, so hash() would make a failing case unreplayable)."""
    return zlib.crc32(repr(parts).encode()) % 2**31


def devices():
    """Devices every kernel test runs on: CPU always, CUDA when present."""
    return ["cpu"] + (["cuda"] if HAS_CUDA else [])


def backends_for(device):
    """The concrete backends that can run tensors on `device` in this process."""
    return fastgan.available_backends(torch.device(device))


def device_backend_pairs(with_reference: bool = False):
    """(device, backend) for every kernel backend usable on every device here; CUDA pairs
    are marked so they show as skipped, not missing, on a CPU-only machine. The reference
    backend is left out (a test comparing it with itself checks only plumbing) unless
    `with_reference`: for tests against an independent formula."""
    extra = ("reference",) if with_reference else ()
    pairs = [("cpu", b) for b in backends_for("cpu") if b != "reference" or with_reference]
    for backend in ("cuda", "triton") + extra:
        pairs.append(pytest.param("cuda", backend, marks=requires_cuda, id=f"cuda-{backend}"))
    return pairs


def cpu_backends(*names):
    """pytest params of backends run on CPU tensors: one this process cannot run there
    (triton without the interpreter, as on a GPU machine) is skipped, not an error."""
    usable = backends_for("cpu")
    return [pytest.param(name, marks=pytest.mark.skipif(name not in usable, reason=f"{name} cannot run CPU tensors "
                                                                                      "here"), id=name)
            for name in names]


@pytest.fixture(autouse=True)
def _reset_backend():
    fastgan.set_backend(None)
    yield
    fastgan.set_backend(None)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: tiny nets run faster so, and much faster when
    the CI machine's cores are busy (thread synchronisation)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def capture_cuda_graph(step, warmup=3):
    """Run `step` `warmup` times on a side stream (lazy init, Triton compiles), then
    record one call as a CUDA graph, as torch.cuda.graph asks. Returns (graph, the last
    warm-up result, the captured result)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            warm = step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    return graph, warm, captured
