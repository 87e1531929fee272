"""setup.py's build plan, without compiling: which sources are built and why, that the
compile commands never carry the csrc hash (it lives in a generated header, so a
changed source does not recompile every file), and that the header is rewritten only
when its content changes (ninja then leaves module.cpp alone)."""
import os

import pytest
import setuptools
import torch

from fastgan._source_hash import source_hash

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plan(monkeypatch, **env):
    """Execute setup.py with ``setuptools.setup`` stubbed out under the environment
    ``env`` (None deletes a variable); return its globals."""
    for name in ("FASTGAN_CUDA", "TORCH_CUDA_ARCH_LIST", "CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(name, raising=False)  # restored after the test, like those set below
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: None)
    monkeypatch.chdir(ROOT)
    namespace = {"__file__": os.path.join(ROOT, "setup.py"), "__name__": "fastgan_setup"}
    with open(os.path.join(ROOT, "setup.py")) as handle:
        exec(compile(handle.read(), "setup.py", "exec"), namespace)
    return namespace


def _cuda_sources(namespace):
    return [s for s in namespace["EXTENSION"].sources if s.endswith(".cu")]


def test_compile_commands_do_not_carry_the_source_hash(monkeypatch):
    extension = plan(monkeypatch, FASTGAN_CUDA="0")["EXTENSION"]
    flags = [str(d) for d in extension.define_macros] + [str(a) for a in extension.extra_compile_args.values()]
    assert not any("FASTGAN_SOURCE_HASH" in flag for flag in flags)
    assert os.path.join(ROOT, "build", "generated") in extension.include_dirs
    with open(os.path.join(ROOT, "csrc", "module.cpp")) as handle:
        assert '#include "fastgan_source_hash.h"' in handle.read()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a visible GPU selects the CUDA build")
def test_no_gpu_and_no_arch_list_builds_cpu_only_and_says_how(monkeypatch):
    namespace = plan(monkeypatch)
    assert _cuda_sources(namespace) == []
    assert "CUDA kernels skipped" in namespace["BUILD_PLAN"] and "TORCH_CUDA_ARCH_LIST" in namespace["BUILD_PLAN"]


def test_fastgan_cuda_0_skips_cuda_even_with_an_arch_list(monkeypatch):
    namespace = plan(monkeypatch, FASTGAN_CUDA="0", TORCH_CUDA_ARCH_LIST="9.0")
    assert _cuda_sources(namespace) == [] and "FASTGAN_CUDA=0" in namespace["BUILD_PLAN"]


def test_an_arch_list_builds_the_cuda_kernels_for_it(monkeypatch):
    namespace = plan(monkeypatch, TORCH_CUDA_ARCH_LIST="9.0")
    if namespace["CUDA_HOME"] is None or torch.version.cuda is None:
        pytest.skip("no CUDA toolkit or CUDA torch here")
    assert len(_cuda_sources(namespace)) >= 4
    assert "architectures 9.0" in namespace["BUILD_PLAN"] and "FASTGAN_CUDA=0 skips" in namespace["BUILD_PLAN"]


def test_bad_fastgan_cuda_is_refused_by_name(monkeypatch):
    with pytest.raises(SystemExit, match="FASTGAN_CUDA must be 0, 1 or auto"):
        plan(monkeypatch, FASTGAN_CUDA="maybe")


def test_source_hash_header_rewritten_only_when_it_changes(monkeypatch, tmp_path):
    namespace = plan(monkeypatch, FASTGAN_CUDA="0")
    namespace["GENERATED_DIR"] = str(tmp_path)  # not the checkout's build/
    header = tmp_path / "fastgan_source_hash.h"
    namespace["_write_source_hash_header"]()
    assert f'#define FASTGAN_SOURCE_HASH "{source_hash(ROOT)}"' in header.read_text()
    os.utime(header, ns=(1, 1))
    namespace["_write_source_hash_header"]()
    assert header.stat().st_mtime_ns == 1  # same content: untouched, so ninja recompiles nothing
    header.write_text('#define FASTGAN_SOURCE_HASH "old"\n')
    namespace["_write_source_hash_header"]()
    assert source_hash(ROOT) in header.read_text()
