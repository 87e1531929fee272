"""Hash of the C++/CUDA sources, shared by setup.py (baked into the build) and the
import-time staleness check. Standard library only: setup.py loads this file
before fastgan is importable."""
import glob
import hashlib
import os

SOURCE_PATTERNS = ("*.cpp", "*.cu", "*.h", "*.cuh")


def source_files(root: str) -> list:
    files = []
    for pattern in SOURCE_PATTERNS:
        files += glob.glob(os.path.join(root, "csrc", pattern))
    return sorted(files)


def source_hash(root: str) -> str:
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(os.path.relpath(path, root).replace(os.sep, "/").encode())
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:16]
