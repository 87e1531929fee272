"""Backend selection, the extension's build checks and the package layout."""
import os
import subprocess
import sys

import pytest
import torch
from conftest import HAS_CUDA

import fastgan
from fastgan import _C, _backend
from fastgan._backend import resolve_backend
from fastgan.ops import clip_weights_

CPU = torch.device("cpu")


def test_available_backends_on_this_machine():
    backends = fastgan.available_backends()
    assert "cpu" in backends and "reference" in backends
    # CI checks every Triton kernel in the interpreter: triton must be usable on CPU there.
    if os.environ.get("TRITON_INTERPRET") == "1":
        assert "triton" in fastgan.available_backends(CPU)
    assert ("cuda" in backends) == (HAS_CUDA and fastgan.BUILD_INFO["cuda"])


def test_auto_picks_cpu_kernel_for_cpu_tensors():
    assert resolve_backend("auto", CPU, "op") == "cpu"
    assert resolve_backend(None, CPU, "op") == "cpu"
    assert resolve_backend(None, torch.device("meta"), "op") == "reference"


def test_set_backend_and_context_manager():
    fastgan.set_backend("reference")
    assert fastgan.get_backend() == "reference"
    assert resolve_backend(None, CPU, "op") == "reference"
    with fastgan.use_backend("cpu"):
        assert fastgan.get_backend() == "cpu"
    assert fastgan.get_backend() == "reference"
    fastgan.set_backend(None)
    assert fastgan.get_backend() == "auto"


def test_env_variable(monkeypatch):
    monkeypatch.setenv("FASTGAN_BACKEND", "reference")
    assert fastgan.get_backend() == "reference"
    fastgan.set_backend("cpu")  # the process-wide default wins over the environment
    assert fastgan.get_backend() == "cpu"
    fastgan.set_backend(None)
    monkeypatch.setenv("FASTGAN_BACKEND", "fast")
    with pytest.raises(ValueError, match="FASTGAN_BACKEND"):
        fastgan.get_backend()


def test_argument_wins_over_default():
    fastgan.set_backend("reference")
    assert resolve_backend("cpu", CPU, "op") == "cpu"


def test_unknown_backend_names_choices():
    with pytest.raises(ValueError, match="'auto', 'cuda', 'triton', 'cpu', 'reference'"):
        fastgan.set_backend("gpu")
    with pytest.raises(ValueError, match="backend"):
        clip_weights_([torch.randn(3)], 0.1, backend="numpy")


def test_backend_that_cannot_run_the_tensors_says_why():
    with pytest.raises(fastgan.BackendError, match="CUDA tensors only, these are on cpu"):
        resolve_backend("cuda", CPU, "clip_weights_")
    with pytest.raises(fastgan.BackendError, match="CPU tensors only"):
        resolve_backend("cpu", torch.device("meta"), "clip_weights_")


def test_triton_needs_interpreter_for_cpu_tensors(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(fastgan.BackendError, match="TRITON_INTERPRET"):
        resolve_backend("triton", CPU, "op")


def test_auto_never_fails_where_reference_succeeds():
    for device in (CPU, torch.device("meta")):
        assert resolve_backend("auto", device, "op") in fastgan.available_backends(device)
    t = torch.randn(4, device="meta")
    clip_weights_([t], 0.1)  # meta tensors: reference runs, so auto must too


def test_build_info():
    info = fastgan.BUILD_INFO
    assert info["torch"] == torch.__version__
    assert len(info["source_hash"]) == 16


def _run_python(code, cwd, env=None):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_stale_extension_is_refused(tmp_path):
    """A checkout whose csrc/ differs from the build must not import silently."""
    code = (
        "import fastgan._extension as e, fastgan._source_hash as h\n"
        "h.source_hash = lambda root: 'edited-sources'\n"
        "e.source_hash = h.source_hash\n"
        "try:\n"
        "    e.load_extension()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = _run_python(code, tmp_path)
    assert "stale" in result.stdout and "pip install --no-build-isolation -e ." in result.stdout, result.stderr


def test_kernels_installed_as_fastgan_kernels_not_top_level(tmp_path):
    repo_kernels = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    result = _run_python(
        "import importlib.util, fastgan.kernels\n"
        "print(fastgan.kernels.__file__)\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "print(spec.origin if spec else None)\n",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    fastgan_kernels, top_level = result.stdout.split()
    assert os.path.dirname(fastgan_kernels) == repo_kernels
    assert top_level == "None" or not top_level.startswith(repo_kernels)


def test_import_does_not_import_triton(tmp_path):
    result = _run_python("import sys, fastgan, fastgan.ops; print('triton' in sys.modules)", tmp_path)
    assert result.stdout.strip() == "False", result.stderr


def test_cpu_and_cuda_kernels_share_their_element_math():
    # CPU tests check the GPU's arithmetic only if the element math is the same on both
    # sides: no libm/CUDA-intrinsic transcendental chosen for the device alone.
    import glob
    import re

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
    device_only = re.compile(r"::(expf|logf|log1pf|expm1f|tanhf)\(|__expf|__logf|__tanhf")
    for path in glob.glob(os.path.join(root, "*_math.h")) + glob.glob(os.path.join(root, "fast_math.h")):
        with open(path) as f:
            text = f.read()
        assert not device_only.search(text), (path, device_only.search(text).group(0))


# ---- backend_table: the fast paths' choice and call, made in C ----


def _impl(name):
    return lambda *args: (name, len(args))


def _table(calls):
    """A table of tagged implementations whose resolve_backend answers are counted."""
    def resolve(backend, device, op):
        calls.append((backend, device.type))
        return resolve_backend(backend, device, op)
    return _C.backend_table({"cpu": _impl("cpu"), "triton": _impl("triton")}, resolve, "op", vars(_backend))


def test_backend_table_follows_the_argument_the_default_and_the_environment(monkeypatch):
    calls = []
    table, x = _table(calls), torch.randn(3)
    monkeypatch.delenv("FASTGAN_BACKEND", raising=False)
    assert table(None, x) == ("cpu", 1)  # auto
    assert table("cpu", x, 0.5, x) == ("cpu", 3)  # the implementation gets the call's arguments
    assert table("reference", x) is NotImplemented  # no entry: the checked path runs it
    fastgan.set_backend("reference")
    assert table(None, x) is NotImplemented
    assert table("cpu", x) == ("cpu", 1)  # the argument wins over the default
    with fastgan.use_backend("cpu"):
        assert table(None, x) == ("cpu", 1)
    assert table(None, x) is NotImplemented
    fastgan.set_backend(None)
    monkeypatch.setenv("FASTGAN_BACKEND", "reference")
    assert table(None, x) is NotImplemented
    monkeypatch.setenv("FASTGAN_BACKEND", "cpu")
    assert table(None, x) == ("cpu", 1)
    # resolve_backend answered each (name, device type) once
    assert sorted(set(calls)) == sorted(calls) == sorted([("auto", "cpu"), ("cpu", "cpu"), ("reference", "cpu")])


def test_backend_table_declines_what_resolve_backend_refuses_and_odd_calls(monkeypatch):
    calls = []
    table, x = _table(calls), torch.randn(3)
    assert table("cuda", x) is NotImplemented  # BackendError: the checked path raises it
    assert table("gpu", x) is NotImplemented  # ValueError, likewise
    assert table(3, x) is NotImplemented and table(None, x.numpy()) is NotImplemented
    assert table(None, torch.nn.Parameter(x)) == ("cpu", 1)  # a parameter is a plain tensor

    class Subclass(torch.Tensor):
        pass

    assert table(None, x.as_subclass(Subclass)) is NotImplemented  # the checked path runs it
    assert table(None) is NotImplemented and table(None, x, backend=None) is NotImplemented
    # the call's other tensors: plain, with elements; anything else passes through
    assert table(None, x, None, [x], 2.0) == ("cpu", 4)
    assert table(None, x, x.as_subclass(Subclass)) is NotImplemented
    assert table(None, torch.empty(0)) is NotImplemented and table(None, x, torch.empty(2, 0)) is NotImplemented
    # the first argument that is not None picks the device (vae_loss's KL alone has no recon)
    assert table(None, None, x, None) == ("cpu", 3) and table(None, None, None) is NotImplemented
    assert table(None, None, x.numpy(), x) is NotImplemented
    # a list's first tensor picks the device (clip_'s parameters)
    assert table(None, [x, x], 0.1) == ("cpu", 2) and table(None, [], 0.1) is NotImplemented
    # refusals are asked again, not cached; the parameter's ("auto", cpu) was resolved once
    assert calls == [("cuda", "cpu"), ("gpu", "cpu"), ("auto", "cpu")]
    table("cuda", x)
    assert len(calls) == 4


def test_backend_table_keys_triton_by_the_interpreter(monkeypatch):
    calls = []
    table, x = _table(calls), torch.randn(3)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert table("triton", x) is NotImplemented  # Triton cannot run CPU tensors without it
    if fastgan._backend._triton_installed():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert table("triton", x) == ("triton", 1)
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        assert table("triton", x) is NotImplemented
