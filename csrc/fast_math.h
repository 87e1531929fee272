// Float math shared by every CPU and CUDA kernel: the same arithmetic on both sides,
// so CPU tests check what the GPU computes. float32 exp, expm1, tanh and log1p are
// branch-free polynomials (Cephes) rather than libm calls: libm's are opaque scalar
// calls that keep the CPU loops from vectorising, and CUDA's expf/log1pf differ from
// them in the last bits. float64 uses libm on both sides (exactness over speed).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common.h"

// Element functions of every family, forced inline on the host too: the CPU loops
// vectorise only when the whole element function is in the loop body, and with hundreds
// of instantiations in one file GCC's inliner runs out of budget and leaves fg_exp out
// of line, which keeps the element loops scalar (10x slower).
#if defined(__CUDACC__)
#define FASTGAN_MATH_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define FASTGAN_MATH_HD inline __attribute__((always_inline))
#else
#define FASTGAN_MATH_HD inline
#endif

namespace fastgan {

// Quiet comparisons (false on NaN, like `<`, but raising no FP flag): under GCC's
// default -ftrapping-math only these let selects become vector blends, so the CPU
// loops vectorise. The CUDA kernels use the plain operators (same results).
#if defined(__CUDA_ARCH__)
#define FASTGAN_QUIET_CMP(name, op, builtin) \
  template <typename T>                        \
  FASTGAN_MATH_HD bool name(T a, T b) {          \
    return a op b;                             \
  }
#else
#define FASTGAN_QUIET_CMP(name, op, builtin) \
  template <typename T>                        \
  FASTGAN_MATH_HD bool name(T a, T b) {          \
    return builtin(a, b);                      \
  }
#endif
FASTGAN_QUIET_CMP(fg_lt, <, __builtin_isless)
FASTGAN_QUIET_CMP(fg_le, <=, __builtin_islessequal)
FASTGAN_QUIET_CMP(fg_gt, >, __builtin_isgreater)
FASTGAN_QUIET_CMP(fg_ge, >=, __builtin_isgreaterequal)
#undef FASTGAN_QUIET_CMP

// c ? a : b with both a and b evaluated. A plain `?:` lets GCC sink a's or b's
// arithmetic into a branch, which it may then not vectorise (speculating an FP
// multiply that could raise a flag is off-limits under -ftrapping-math); a
// bitwise select keeps the loops branch-free. CUDA: the plain select.
template <typename T>
FASTGAN_MATH_HD T fg_select(bool c, T a, T b) {
#if defined(__CUDA_ARCH__)
  return c ? a : b;
#else
  using I = typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type;
  const I m = -static_cast<I>(c);
  return __builtin_bit_cast(T, static_cast<I>((m & __builtin_bit_cast(I, a)) | (~m & __builtin_bit_cast(I, b))));
#endif
}

FASTGAN_MATH_HD float fg_abs(float x) { return ::fabsf(x); }
FASTGAN_MATH_HD double fg_abs(double x) { return ::fabs(x); }

// ---- float32 exp, expm1 and tanh without libm calls ----
// libm's expf/tanhf are opaque calls that keep the CPU loops scalar; these are
// branch-free (selects only), so GCC vectorises them (AVX2/AVX-512 clones), and the
// CUDA kernels run the very same arithmetic. Accuracy about 1-2 ulp (Cephes' expf
// polynomial); NaN propagates, overflow gives inf, underflow 0 or a subnormal.
// float64 uses libm (exactness over speed).

FASTGAN_MATH_HD int32_t fg_float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(x);
#else
  return __builtin_bit_cast(int32_t, x);
#endif
}

FASTGAN_MATH_HD float fg_bits_float(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  return __builtin_bit_cast(float, i);
#endif
}

// 2^n for integer-valued n in [-126, 127].
FASTGAN_MATH_HD float fg_pow2i(float n) { return fg_bits_float((static_cast<int32_t>(n) + 127) << 23); }

FASTGAN_MATH_HD float fg_exp(float x) {
  // Clamp (NaN stays NaN) so that n stays in [-150, 129], then e^x = 2^n e^r with
  // |r| <= ln2/2, 2^n applied as two exact powers of two (gradual overflow/underflow).
  const float xc = fg_select(fg_lt(x, -104.0f), -104.0f, fg_select(fg_gt(x, 89.0f), 89.0f, x));
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float n = (xc * 1.44269504088896341f + magic) - magic;
  n = fg_select(n == n, n, 0.0f);
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 = 0.693359375 - 2.12194440e-4
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const float half = n * 0.5f;
  const float rounded = (half + magic) - magic;
  const float n1 = rounded - fg_select(fg_lt(half, rounded), 1.0f, 0.0f);  // floor(n / 2)
  return p * fg_pow2i(n1) * fg_pow2i(n - n1);
}

FASTGAN_MATH_HD float fg_expm1(float x) {
  // Taylor polynomial near 0 (no cancellation), e^x - 1 elsewhere.
  float p = 1.0f / 362880.0f;
  p = p * x + 1.0f / 40320.0f;
  p = p * x + 1.0f / 5040.0f;
  p = p * x + 1.0f / 720.0f;
  p = p * x + 1.0f / 120.0f;
  p = p * x + 1.0f / 24.0f;
  p = p * x + 1.0f / 6.0f;
  p = p * x + 0.5f;
  const float small = x + (x * x) * p;
  const float large = fg_exp(x) - 1.0f;
  return fg_select(fg_lt(fg_abs(x), 0.5f), small, large);
}

FASTGAN_MATH_HD float fg_tanh(float x) {
  // tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)), with the sign of x.
  const float em = fg_expm1(-2.0f * fg_abs(x));
  return ::copysignf(-em / (2.0f + em), x);
}

FASTGAN_MATH_HD double fg_exp(double x) { return ::exp(x); }
FASTGAN_MATH_HD double fg_expm1(double x) { return ::expm1(x); }
FASTGAN_MATH_HD double fg_tanh(double x) { return ::tanh(x); }

// log1p(e) for e in [0, 1] (NaN gives NaN): u = 1 + e rounded, log(u) by Cephes'
// logf on [sqrt(1/2), sqrt(2)], plus the first-order correction for u's rounding.
FASTGAN_MATH_HD float fg_log1p(float e) {
  const float u = 1.0f + e;
  const float c = e - (u - 1.0f);          // the rounding error of u, exactly
  const bool big = u > 1.41421356237f;     // then u / 2 in [0.707, 1], and ln 2 added
  const float f = (big ? 0.5f * u : u) - 1.0f;
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = f * z * y - 0.5f * z;
  return ((f + y) + c / u) + (big ? 0.693147180559945309f : 0.0f);
}
FASTGAN_MATH_HD double fg_log1p(double x) { return ::log1p(x); }

}  // namespace fastgan
