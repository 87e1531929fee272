// Multi-tensor apply for CUDA, in the spirit of apex's multi_tensor_apply:
// the pointers and sizes of up to kMaxTensors tensors ride in the kernel's
// argument block (under 4 KB), so one launch covers a whole critic. Each block
// walks chunks of kChunk elements with a grid-stride loop and finds its tensor
// by binary search over the cumulative chunk counts: a 200M-parameter tensor
// and a bias vector cost the same single launch.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "common.h"
#include "cuda_utils.cuh"
#include "tensor_lists.h"

namespace fastgan {

constexpr int kChunk = 1 << 16;
constexpr int kBlockThreads = 512;

template <int DEPTH>
struct TensorListMeta {
  static constexpr int kMaxTensors = 3900 / (8 * DEPTH + 16);
  void* ptrs[DEPTH][kMaxTensors];
  int64_t numel[kMaxTensors];
  int64_t chunk_start[kMaxTensors + 1];
  int n_tensors;
};

// Applies op(T (&x)[DEPTH]) to every element of the chunk [begin, begin + n) of
// tensor t, reading all DEPTH lists and writing back those in WRITE_MASK.
// 16-byte vector loads when every list's chunk is 16-byte aligned.
template <typename scalar_t, int DEPTH, unsigned WRITE_MASK, typename ElementOp>
__device__ __forceinline__ void apply_chunk(const TensorListMeta<DEPTH>& meta, int t, int64_t begin, int n,
                                            const ElementOp& op) {
  using T = acc_t<scalar_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  using Vec = AlignedVector<scalar_t, VEC>;
  scalar_t* ptr[DEPTH];
  bool aligned = true;
#pragma unroll
  for (int l = 0; l < DEPTH; ++l) {
    ptr[l] = static_cast<scalar_t*>(meta.ptrs[l][t]) + begin;
    aligned = aligned && (reinterpret_cast<uintptr_t>(ptr[l]) % sizeof(Vec) == 0);
  }
  const int n_vec = aligned ? n / VEC : 0;
  for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
    Vec vec[DEPTH];
#pragma unroll
    for (int l = 0; l < DEPTH; ++l) vec[l] = reinterpret_cast<const Vec*>(ptr[l])[i];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      T x[DEPTH];
#pragma unroll
      for (int l = 0; l < DEPTH; ++l) x[l] = static_cast<T>(vec[l].v[k]);
      op(x);
#pragma unroll
      for (int l = 0; l < DEPTH; ++l)
        if (WRITE_MASK & (1u << l)) vec[l].v[k] = static_cast<scalar_t>(x[l]);
    }
#pragma unroll
    for (int l = 0; l < DEPTH; ++l)
      if (WRITE_MASK & (1u << l)) reinterpret_cast<Vec*>(ptr[l])[i] = vec[l];
  }
  for (int i = n_vec * VEC + threadIdx.x; i < n; i += blockDim.x) {
    T x[DEPTH];
#pragma unroll
    for (int l = 0; l < DEPTH; ++l) x[l] = static_cast<T>(ptr[l][i]);
    op(x);
#pragma unroll
    for (int l = 0; l < DEPTH; ++l)
      if (WRITE_MASK & (1u << l)) ptr[l][i] = static_cast<scalar_t>(x[l]);
  }
}

template <typename scalar_t, int DEPTH, unsigned WRITE_MASK, typename ElementOp>
__global__ void __launch_bounds__(kBlockThreads)
    multi_tensor_elementwise_kernel(TensorListMeta<DEPTH> meta, ElementOp op) {
  const int64_t total = meta.chunk_start[meta.n_tensors];
  for (int64_t c = blockIdx.x; c < total; c += gridDim.x) {
    int lo = 0, hi = meta.n_tensors;  // largest t with chunk_start[t] <= c
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (meta.chunk_start[mid] <= c) lo = mid;
      else hi = mid;
    }
    const int64_t begin = (c - meta.chunk_start[lo]) * kChunk;
    const int n = static_cast<int>(std::min<int64_t>(kChunk, meta.numel[lo] - begin));
    apply_chunk<scalar_t, DEPTH, WRITE_MASK>(meta, lo, begin, n, op);
  }
}

// Runs op over every element of the flat lists: one launch per kMaxTensors tensors.
template <typename scalar_t, int DEPTH, unsigned WRITE_MASK, typename ElementOp>
void multi_tensor_elementwise(const FlatTensorLists& flat, const ElementOp& op) {
  std::vector<int64_t> nonempty;
  for (int64_t i = 0; i < flat.size(); ++i)
    if (flat.numels[i] > 0) nonempty.push_back(i);
  if (nonempty.empty()) return;
  const at::Device device = flat.lists[0][0].device();
  c10::cuda::CUDAGuard guard(device);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index());
  const int max_blocks = multiprocessor_count(device.index()) * (2048 / kBlockThreads);
  TensorListMeta<DEPTH> meta;
  meta.n_tensors = 0;
  meta.chunk_start[0] = 0;
  for (size_t k = 0; k < nonempty.size(); ++k) {
    const int64_t i = nonempty[k];
    const int slot = meta.n_tensors++;
    for (int l = 0; l < DEPTH; ++l) meta.ptrs[l][slot] = flat.lists[l][i].data_ptr();
    meta.numel[slot] = flat.numels[i];
    meta.chunk_start[slot + 1] = meta.chunk_start[slot] + (flat.numels[i] + kChunk - 1) / kChunk;
    if (meta.n_tensors == TensorListMeta<DEPTH>::kMaxTensors || k + 1 == nonempty.size()) {
      const int64_t chunks = meta.chunk_start[meta.n_tensors];
      const int blocks = static_cast<int>(std::min<int64_t>(chunks, max_blocks));
      multi_tensor_elementwise_kernel<scalar_t, DEPTH, WRITE_MASK><<<blocks, kBlockThreads, 0, stream>>>(meta, op);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      meta.n_tensors = 0;
    }
  }
}

}  // namespace fastgan
