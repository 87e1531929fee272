"""Loads the compiled extension ``fastgan._C`` and refuses a missing or stale one."""
import os

import torch

from ._source_hash import source_hash

INSTALL_HINT = "pip install --no-build-isolation -e .  (from the fastgan checkout)"


def _parse_build_info(text: str) -> dict:
    return dict(item.split("=", 1) for item in text.split(";") if "=" in item)


def load_extension() -> dict:
    """Import ``fastgan._C`` (registering the ``torch.ops.fastgan`` operators) and
    return its build information: ``{"source_hash", "torch", "cuda"}``.

    Raises ImportError naming the install command when the extension is missing,
    was built against another torch, or from other C++/CUDA sources than the
    checkout beside it (an editable install whose ``csrc/`` changed)."""
    try:
        from . import _C  # noqa: F401  (registers the operators)
    except ImportError as exc:
        raise ImportError(
            f"fastgan's compiled extension fastgan._C is missing or failed to load ({exc}). "
            f"Build it with: {INSTALL_HINT}"
        ) from exc
    info = _parse_build_info(torch.ops.fastgan.build_info())
    if info.get("torch") != torch.__version__:
        raise ImportError(
            f"fastgan._C was built against torch {info.get('torch')} but torch {torch.__version__} is "
            f"installed; rebuild it with: {INSTALL_HINT}"
        )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isdir(os.path.join(root, "csrc")) and os.environ.get("FASTGAN_SKIP_STALE_CHECK") != "1":
        current = source_hash(root)
        if info.get("source_hash") != current:
            raise ImportError(
                f"fastgan._C is stale: it was built from C++/CUDA sources {info.get('source_hash')} but "
                f"{os.path.join(root, 'csrc')} now hashes to {current}; rebuild it with: {INSTALL_HINT}"
            )
    info["cuda"] = info.get("cuda") == "1"
    return info


BUILD_INFO = load_extension()
