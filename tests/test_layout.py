"""fastgan._layout: the dense and batch-major rules the fake kernels and Triton bodies
check on every call, against brute force (every element's memory offset) on every
permutation of small shapes, slices and expansions."""
import itertools

import pytest
import torch

from fastgan import _layout


def _offsets(t: torch.Tensor):
    """The memory offset of every element, in index order."""
    return [sum(i * s for i, s in zip(index, t.stride())) for index in itertools.product(*map(range, t.shape))]


def _dense(t: torch.Tensor) -> bool:
    return sorted(_offsets(t)) == list(range(t.numel()))


def _batch_major(t: torch.Tensor) -> bool:
    """Dense, and sample b's elements occupy offsets [b N, (b + 1) N)."""
    if t.dim() == 0 or not _dense(t):
        return False
    per_sample = t.numel() // t.shape[0]
    offsets = _offsets(t)
    return all(sorted(offsets[b * per_sample:(b + 1) * per_sample]) == list(range(b * per_sample, (b + 1) * per_sample))
               for b in range(t.shape[0]))


@pytest.mark.parametrize("shape", [(1,), (3,), (2, 3), (1, 3), (3, 1), (2, 3, 4), (4, 1, 3), (2, 2, 1, 3)])
def test_layout_rules_match_brute_force(shape):
    base = torch.randn(*shape)
    for perm in itertools.permutations(range(len(shape))):
        permuted = base.permute(perm)
        for t in (permuted, permuted.contiguous(), permuted[::2], base.expand(2, *shape)):
            assert _layout.is_non_overlapping_and_dense(t) == _dense(t), (shape, perm, t.stride())
            assert _layout.is_batch_major(t) == _batch_major(t), (shape, perm, t.stride())
    assert not _layout.is_batch_major(torch.tensor(1.0))
