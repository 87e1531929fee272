// Small CUDA helpers shared by fastgan's kernels.
#pragma once

#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

namespace fastgan {

// Streaming multiprocessors of `device`, cached (a driver query per launch adds up).
inline int multiprocessor_count(int device) {
  static int cached[64] = {0};
  if (device < 0 || device >= 64) device = 0;
  if (cached[device] == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&cached[device], cudaDevAttrMultiProcessorCount, device));
  }
  return cached[device];
}

template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) AlignedVector {
  scalar_t v[VEC];
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Sum of `value` over the block through `shared` (blockDim.x doubles; blockDim.x a power
// of two), in a fixed tree order: deterministic for a given block size. The result is
// valid in every thread, and `shared` may be reused as soon as it returns.
__device__ __forceinline__ double block_tree_sum(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

// Zeroed scratch memory for a kernel that leaves it zeroed when it finishes (a "last
// block done" counter the last block resets). Outside CUDA-graph capture: one buffer
// per (device, stream, tag), zeroed once, so no memset launch; kernels on one stream
// run in order, so no two launches share it at once. Under capture: a fresh zeroed
// buffer for each call (graph memory, zeroed by a memset node), never the cache: a
// cached buffer made during capture would live in one graph's private pool, and two
// graphs replayed on two streams would share it.
inline at::Tensor stream_workspace(const at::Device& device, cudaStream_t stream, int64_t bytes, int tag) {
  const auto options = at::TensorOptions().dtype(at::kByte).device(device);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return at::zeros({bytes}, options);
  static std::mutex mutex;
  static auto* cache = new std::map<std::tuple<int, cudaStream_t, int>, at::Tensor>();  // never freed: outlives CUDA
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(static_cast<int>(device.index()), stream, tag);
  auto it = cache->find(key);
  if (it == cache->end() || it->second.numel() < bytes) {
    if (it != cache->end()) cache->erase(it);
    it = cache->emplace(key, at::zeros({bytes}, options)).first;
  }
  return it->second;
}

// Tags of stream_workspace's users.
enum WorkspaceTag : int { kGanLossWorkspace = 0, kPenaltyWorkspace = 1, kVaeWorkspace = 2 };

}  // namespace fastgan
