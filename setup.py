"""Build fastgan and its compiled extension ``fastgan._C``.

C++ CPU kernels are always built. CUDA kernels are added when torch has CUDA and
``nvcc`` is found, unless ``FASTGAN_CUDA=0``. ``FASTGAN_CUDA=1`` makes a missing
toolkit an error instead of a silent CPU-only build.

Install with ``pip install --no-build-isolation -e .`` (the extension must be
compiled against the torch that will import it).
"""
import glob
import importlib.util
import os
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    """torch guesses CUDA_HOME from the ``nvcc`` on PATH; a wrapper script there
    (e.g. /usr/local/bin/nvcc) misleads it. Prefer a real toolkit folder."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += sorted(glob.glob("/usr/local/cuda*"), reverse=True)
    for home in candidates:
        if os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")) and os.path.isfile(
            os.path.join(home, "bin", "nvcc")
        ):
            os.environ["CUDA_HOME"] = home
            return


_find_cuda_home()

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as exc:  # pragma: no cover - message for users
    raise SystemExit(
        "fastgan needs torch installed before it is built: "
        "pip install torch && pip install --no-build-isolation -e ."
    ) from exc


def _want_cuda():
    flag = os.environ.get("FASTGAN_CUDA", "auto").lower()
    has_toolkit = torch.version.cuda is not None and CUDA_HOME is not None
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        if not has_toolkit:
            raise SystemExit("FASTGAN_CUDA=1 but torch has no CUDA or nvcc was not found (set CUDA_HOME)")
        return True
    return has_toolkit


def _load_source_hash():
    spec = importlib.util.spec_from_file_location("_fastgan_source_hash", os.path.join(ROOT, "fastgan", "_source_hash.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_hash


def _extension():
    cpp = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cu = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    with_cuda = _want_cuda()
    sources = cpp + (cu if with_cuda else [])
    define = [
        ("FASTGAN_SOURCE_HASH", '"%s"' % _load_source_hash()(ROOT)),
        ("FASTGAN_TORCH_VERSION", '"%s"' % torch.__version__),
    ]
    # -fno-math-errno lets sqrt vectorise; never -ffast-math: NaN must propagate like torch.
    cxx = ["-O3", "-fno-math-errno", "-fopenmp"]
    if not with_cuda:
        return CppExtension("fastgan._C", sources, define_macros=define, extra_compile_args={"cxx": cxx})
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # No GPU to detect: build for Ampere and Hopper, with PTX for newer chips.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
    define.append(("FASTGAN_WITH_CUDA", None))
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    return CUDAExtension(
        "fastgan._C", sources, define_macros=define, extra_compile_args={"cxx": cxx, "nvcc": nvcc}
    )


setup(
    name="fastgan",
    version="0.1.0",
    description="Fused Triton and C++/CUDA kernels for GAN training: gradient penalties, weight clipping, GAN losses",
    packages=["fastgan", "fastgan.kernels"] + ["fastgan." + p for p in find_packages("fastgan")],
    package_dir={"fastgan": "fastgan", "fastgan.kernels": "kernels"},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={"triton": ["triton"], "bench": ["matplotlib"], "test": ["pytest"],
                    # the training job: progress bar, plots, digits data, exact 2-D W1
                    "train": ["tqdm", "matplotlib", "scikit-learn", "pot"]},
    entry_points={"console_scripts": ["fastgan = fastgan.train.cli:main"]},
)
