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


def cpu_namespaces():
    """pytest params of the op namespaces whose ops run CPU tensors here: fastgan_triton
    only with the interpreter (on a GPU machine it is skipped, not an error)."""
    usable = "triton" in backends_for("cpu")
    return ["fastgan", pytest.param("fastgan_triton", id="fastgan_triton", marks=pytest.mark.skipif(
        not usable, reason="Triton runs CPU tensors only under TRITON_INTERPRET=1"))]


@pytest.fixture(autouse=True)
def _reset_backend():
    fastgan.set_backend(None)
    yield
    fastgan.set_backend(None)


# Floor of the flash-attention tolerance rule, relative to the largest reference value (at
# least 1): four units in the last place (float64: its reference is eager float64 itself).
FLASH_FLOOR = {torch.float64: 1e-12,
               **{d: 4 * torch.finfo(d).eps for d in (torch.float32, torch.bfloat16, torch.float16)}}


def assert_flash_close(out, eager, ref64, what=""):
    """flash-attention's rule: ``|out - ref64|max <= 2 |eager - ref64|max + floor``, with
    `eager` the eager PyTorch result in out's dtype and `ref64` the float64 result (None:
    out must be None or all zeros)."""
    if ref64 is None:
        assert out is None or out.abs().max() == 0, what
        return
    assert out.shape == ref64.shape, what
    if out.numel() == 0:
        return
    err = (out.double() - ref64).abs().max().item()
    eager_err = (eager.double() - ref64).abs().max().item()
    scale = max(1.0, ref64.abs().max().item())
    bound = 2 * eager_err + FLASH_FLOOR[out.dtype] * scale
    assert err <= bound, f"{what}: error {err:.3g} > bound {bound:.3g} (eager error {eager_err:.3g})"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    if not config.pluginmanager.hasplugin("timeout"):  # pytest-timeout's marker, known without the plugin
        config.addinivalue_line("markers", "timeout(seconds): pytest-timeout's per-test limit")


def pytest_collection_modifyitems(config, items):
    """Mark ``gpu`` every test that needs a CUDA GPU: those that ``requires_cuda`` skips
    without one and those parametrized on CUDA ("cuda" in their id). The GPU check
    (benchmarks/device_run.sh) runs ``-m gpu`` first: ``-k cuda`` missed the capture
    tests whose ids do not say cuda."""
    reason = requires_cuda.kwargs["reason"]
    for item in items:
        if "cuda" in item.name or any(mark.kwargs.get("reason") == reason for mark in item.iter_markers("skipif")):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: tiny nets run faster so, and much faster when
    the CI machine's cores are busy (thread synchronisation)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_compiled_matches_eager(step, inputs):
    """``torch.compile(step, fullgraph=True)`` (aot_eager) gives the loss and the gradients
    w.r.t. every input that eager `step` gives, each run on fresh leaves cloned from `inputs`."""
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    ours, want = [], []
    for fn, out in ((compiled, ours), (step, want)):
        leaves = [t.clone().requires_grad_() for t in inputs]
        loss = fn(*leaves)
        out += [loss.detach(), *torch.autograd.grad(loss, leaves)]
    for a, b in zip(ours, want):
        torch.testing.assert_close(a, b)


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
