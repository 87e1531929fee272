"""Every ```python block of README.md runs as written, on its own (fresh globals, CPU,
tiny tensors), so the examples cannot rot. Shell blocks are not run."""
import os
import re

import pytest
import torch

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks():
    """(line number, source) of each ```python block in README.md."""
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    return [(text.count("\n", 0, match.start()) + 1, match.group(1)) for match in FENCE.finditer(text)]


def test_every_python_fence_is_extracted():
    with open(README, encoding="utf-8") as handle:
        opened = sum(1 for line in handle if line.rstrip() == "```python")
    assert opened >= 5 and len(python_blocks()) == opened


@pytest.mark.parametrize("line,source", python_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_block_runs(line, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a block writes stays out of the checkout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: more threads only add synchronisation on a busy CPU
    try:
        exec(compile(source, f"README.md (block at line {line})", "exec"), {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(threads)
