// Small CUDA helpers shared by fastgan's kernels.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <cstdint>

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

}  // namespace fastgan
