"""Host side of fastgan's multi-tensor Triton kernels.

A launch covers many tensors through tables: the base address of tensor t in
list l at ``addresses[l, t]``, its size at ``numels[t]``, and for program p the
tensor ``chunk_tensor[p]`` and first element ``chunk_begin[p]`` of the chunk it
handles. Tables are cached by (addresses, sizes), so a training loop whose
parameters and state stay put pays for them once. They reach the device by an
asynchronous copy from pinned memory (no host synchronisation), which CUDA-graph
capture records as a node; a table used in a capture is kept for the life of the
process, since the graph reads it at every replay. A table built during a capture
holds its values only once the graph has replayed, so eager calls never use one.
"""
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Sequence, Tuple

import torch

from .._layout import is_non_overlapping_and_dense


class TensorTable(NamedTuple):
    addresses: torch.Tensor  # (depth, n_tensors) int64
    numels: torch.Tensor  # (n_tensors,) int64
    chunk_tensor: torch.Tensor  # (n_chunks,) int32
    chunk_begin: torch.Tensor  # (n_chunks,) int64
    n_tensors: int
    n_chunks: int
    aligned: bool  # every base address is a multiple of 16 bytes
    staging: tuple  # the pinned host copies, kept alive: a captured graph copies them at each replay


_CACHE: "OrderedDict[tuple, TensorTable]" = OrderedDict()
_CACHE_SIZE = 32
_CAPTURED: Dict[tuple, TensorTable] = {}  # tables a CUDA graph reads: never evicted


def _to_device(values, dtype: torch.dtype, device: torch.device, staging: list) -> torch.Tensor:
    host = torch.as_tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host.to(device)
    staging.append(host.pin_memory())
    return staging[-1].to(device, non_blocking=True)


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def tensor_table(lists: Sequence[Sequence[torch.Tensor]], block: int) -> TensorTable:
    """Tables for `lists` (equal-length lists of flat-addressable, non-empty tensors)."""
    device = lists[0][0].device
    pointers = tuple(tuple(t.data_ptr() for t in tensors) for tensors in lists)
    sizes = tuple(t.numel() for t in lists[0])
    key = (device, block, pointers, sizes)
    capturing = _capturing(device)
    table = (_CAPTURED.get(key) if capturing else None) or _CACHE.get(key)
    if table is not None:
        if key in _CACHE:
            _CACHE.move_to_end(key)
        if capturing:
            _CAPTURED[key] = table
        return table
    numels = torch.tensor(sizes, dtype=torch.int64)
    chunks = (numels + block - 1) // block
    chunk_tensor = torch.repeat_interleave(torch.arange(len(sizes), dtype=torch.int32), chunks)
    first_chunk = torch.cumsum(chunks, 0) - chunks
    chunk_begin = (torch.arange(chunk_tensor.numel(), dtype=torch.int64) - first_chunk[chunk_tensor.long()]) * block
    staging: list = []
    table = TensorTable(
        addresses=_to_device(pointers, torch.int64, device, staging),
        numels=_to_device(numels, torch.int64, device, staging),
        chunk_tensor=_to_device(chunk_tensor, torch.int32, device, staging),
        chunk_begin=_to_device(chunk_begin, torch.int64, device, staging),
        n_tensors=len(sizes),
        n_chunks=int(chunk_tensor.numel()),
        aligned=all(p % 16 == 0 for row in pointers for p in row),
        staging=tuple(staging),
    )
    if capturing:
        _CAPTURED[key] = table
    else:
        _CACHE[key] = table
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return table


def _flat_layout(tensors: Sequence[torch.Tensor]) -> bool:
    lead = tensors[0]
    return all(
        is_non_overlapping_and_dense(t) and (t.numel() <= 1 or t.stride() == lead.stride()) for t in tensors
    )


def flatten_lists(
    lists: Sequence[Sequence[torch.Tensor]], written: Sequence[bool]
) -> Tuple[List[List[torch.Tensor]], List[Tuple[torch.Tensor, torch.Tensor]]]:
    """Make tensor i of every list flat-addressable with one layout, dropping empty
    tensors. Returns the lists and the (user tensor, staging copy) pairs to copy
    back after the kernel, as csrc/tensor_lists.h does for the C++ kernels."""
    flat: List[List[torch.Tensor]] = [[] for _ in lists]
    write_back: List[Tuple[torch.Tensor, torch.Tensor]] = []
    for group in zip(*lists):
        if group[0].numel() == 0:
            continue
        keep = _flat_layout(group)
        for column, (tensor, is_written) in enumerate(zip(group, written)):
            if keep or tensor.is_contiguous():
                flat[column].append(tensor)
            else:
                staged = tensor.contiguous()
                if is_written:
                    write_back.append((tensor, staged))
                flat[column].append(staged)
    return flat, write_back


def finish(write_back: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> None:
    for tensor, staged in write_back:
        tensor.copy_(staged)
