"""fastgan._layout: the dense and batch-major rules the fake kernels and Triton bodies
check on every call, against their definitions on every permutation of small shapes."""
import itertools

import pytest
import torch

from fastgan import _layout


def _dense_by_definition(t: torch.Tensor) -> bool:
    """Elements fill numel() consecutive slots: sorted by stride, each stride is the
    product of the smaller dimensions' sizes (size-1 dimensions ignored)."""
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(t.shape, t.stride()) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _batch_major_by_definition(t: torch.Tensor) -> bool:
    if t.dim() == 0 or not _dense_by_definition(t):
        return False
    return t.shape[0] <= 1 or t.stride(0) * t.shape[0] == t.numel()


@pytest.mark.parametrize("shape", [(1,), (3,), (2, 3), (1, 3), (3, 1), (2, 3, 4), (4, 1, 3), (2, 2, 1, 3), (0, 3),
                                   (3, 0, 2)])
def test_layout_rules_match_their_definitions(shape):
    base = torch.randn(*shape)
    for perm in itertools.permutations(range(len(shape))):
        permuted = base.permute(perm)
        for t in (permuted, permuted.contiguous(), permuted[::2], base.expand(2, *shape)):
            assert _layout.is_non_overlapping_and_dense(t) == _dense_by_definition(t), (shape, perm, t.stride())
            assert _layout.is_batch_major(t) == _batch_major_by_definition(t), (shape, perm, t.stride())
    assert not _layout.is_batch_major(torch.tensor(1.0))
