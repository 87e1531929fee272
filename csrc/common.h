// Shared macros and helpers for fastgan's CPU and CUDA kernels.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define FASTGAN_HD __host__ __device__ __forceinline__
#else
#define FASTGAN_HD inline
#endif

namespace fastgan {

// Float accumulation type for a storage type: float for float/half/bfloat16, double for double.
template <typename T>
struct AccType { using type = float; };
template <>
struct AccType<double> { using type = double; };
template <typename T>
using acc_t = typename AccType<T>::type;

FASTGAN_HD float fg_sqrt(float x) { return ::sqrtf(x); }
FASTGAN_HD double fg_sqrt(double x) { return ::sqrt(x); }

// torch.clamp semantics: a NaN input stays NaN (every comparison with NaN is false).
template <typename T>
FASTGAN_HD T clamp_keep_nan(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

}  // namespace fastgan
