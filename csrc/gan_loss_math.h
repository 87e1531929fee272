// Per-element math of the GAN losses (THEORY.md sections 2-3), shared by the CPU
// and CUDA kernels so the CPU tests check the arithmetic the GPU runs.
//
// Every loss is a sum over sides (real, fake) of scale * sum_i t(l_i), with t one
// of the terms below, l a logit and scale 1/N ("mean") or 1 ("sum"). For each term
// we need t, t' (the logits-gradient the forward saves) and t'' (double backward).
//
// Softplus terms use the stable forms of THEORY.md section 2, with D = sigmoid(l):
//   ln D = -softplus(-l),  ln(1 - D) = -softplus(l),
//   softplus(x) = max(x, 0) + log1p(exp(-|x|))       (never overflows)
//   sigmoid(x)  = 1 / (1 + e) if x >= 0 else e / (1 + e),  e = exp(-|x|)
//   sigmoid'(x) = sigmoid(x) sigmoid(-x) = e / (1 + e)^2
// so logits of +-1e4 give finite terms and derivatives. A NaN logit gives a NaN
// term; derivatives follow torch's own kernels (relu's gradient at NaN passes the
// incoming gradient, as threshold_backward does), so every backend and the eager
// reference agree element for element.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common.h"

// Element functions are always inlined: the CPU loops vectorise only when the whole
// term is in the loop body (FASTGAN_HD is only `inline` on the host).
#if defined(__CUDACC__)
#define FASTGAN_LOSS_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define FASTGAN_LOSS_HD inline __attribute__((always_inline))
#else
#define FASTGAN_LOSS_HD inline
#endif

namespace fastgan {

// Term codes; fastgan/ops/losses.py mirrors them (TERMS).
enum GanTerm : int {
  kSoftplusNeg = 0,     // softplus(-l)  = -ln D        BCE of a real logit (label 1); non-saturating G
  kSoftplus = 1,        // softplus(l)   = -ln(1 - D)   BCE of a fake logit (label 0)
  kNegSoftplus = 2,     // -softplus(l)  =  ln(1 - D)   minimax G; V's fake term
  kNegSoftplusNeg = 3,  // -softplus(-l) =  ln D        V's real term
  kIdentity = 4,        //  l                           WGAN critic on fakes
  kNegIdentity = 5,     // -l                           WGAN critic on reals; WGAN and hinge G
  kHingeReal = 6,       // relu(1 - l)                  hinge D on reals
  kHingeFake = 7,       // relu(1 + l)                  hinge D on fakes
  kHalfSquareOne = 8,   // (l - 1)^2 / 2                least-squares D on reals; least-squares G
  kHalfSquare = 9,      // l^2 / 2                      least-squares D on fakes
  kGanTermCount = 10,
};

// Linear terms (+-l) have a constant derivative, t' = +-1: their forward saves no
// gradient and their backward writes grad * scale * t' without reading one.
FASTGAN_LOSS_HD constexpr bool gan_term_is_linear(int term) { return term == kIdentity || term == kNegIdentity; }
FASTGAN_LOSS_HD constexpr int gan_term_slope(int term) { return term == kIdentity ? 1 : -1; }

// Reduction codes, as torch's at::Reduction.
enum GanReduction : int { kReductionNone = 0, kReductionMean = 1, kReductionSum = 2 };

#if !defined(__CUDA_ARCH__)
#if defined(__GNUC__)
#define FASTGAN_HOST_ALWAYS_INLINE __attribute__((always_inline))
#else
#define FASTGAN_HOST_ALWAYS_INLINE
#endif
// Host float32 exp and log1p for the two arguments the softplus terms need, written
// branch-free so that GCC vectorises the CPU element loops (glibc's expf and log1pf
// are scalar calls: 20-40 ns an element, several times eager PyTorch's
// Sleef-vectorised ops). Cephes' expf and logf polynomials: within 1 ulp (exp) and
// 1.3 ulp (log1p) of the exact values. GCC if-converts the selects only without
// -ftrapping-math (gan_loss_cpu.cpp says so). Device code uses CUDA's expf and
// log1pf, float64 uses libm.
inline FASTGAN_HOST_ALWAYS_INLINE float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// exp(x) for x <= 0, -inf and NaN included. Results below e^-87.3 (1.2e-38, where
// float32's normal range ends) are flushed to 0: the losses and gradients they feed
// are then off by less than 1.2e-38.
inline FASTGAN_HOST_ALWAYS_INLINE float exp_nonpositive(float x) {
  const float xc = x < -87.3f ? -87.3f : x;                       // NaN stays NaN
  const float shifter = 12582912.0f;                              // 1.5 * 2^23: adding it rounds to an integer
  float n = (xc * 1.44269504088896341f + shifter) - shifter;      // round(x / ln 2), in [-126, 0]
  n = n == n ? n : 0.0f;                                          // NaN: keep the int conversion defined
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;  // x - n ln 2 (Cody-Waite)
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float two_n = bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  return x < -87.3f ? 0.0f : p * two_n;
}

// log1p(e) for e in [0, 1] (NaN gives NaN): u = 1 + e rounded, log(u) by Cephes'
// logf on [sqrt(1/2), sqrt(2)], plus the first-order correction for u's rounding.
inline FASTGAN_HOST_ALWAYS_INLINE float log1p_unit(float e) {
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
#endif

// exp(x) for x <= 0 and log1p(e) for e in [0, 1]: the only arguments the terms use.
FASTGAN_LOSS_HD float fg_exp(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  return exp_nonpositive(x);
#endif
}
FASTGAN_LOSS_HD double fg_exp(double x) { return ::exp(x); }
FASTGAN_LOSS_HD float fg_log1p(float x) {
#if defined(__CUDA_ARCH__)
  return ::log1pf(x);
#else
  return log1p_unit(x);
#endif
}
FASTGAN_LOSS_HD double fg_log1p(double x) { return ::log1p(x); }

// |x| without fabs overloads; NaN stays NaN.
template <typename T>
FASTGAN_LOSS_HD T fg_abs(T x) {
  return x < T(0) ? -x : x;
}

// The pieces every softplus term needs, from one exp: e = exp(-|x|),
// softplus(x), sigmoid(x), sigmoid(-x) and sigmoid'(x).
template <typename T>
struct SoftplusParts {
  T softplus;     // softplus(x)
  T sigmoid;      // sigmoid(x)  = softplus'(x)
  T sigmoid_neg;  // sigmoid(-x) = 1 - sigmoid(x), without cancellation
  T curvature;    // sigmoid(x) sigmoid(-x) = softplus''(x)
};

template <typename T>
FASTGAN_LOSS_HD SoftplusParts<T> softplus_parts(T x) {
  const T e = fg_exp(-fg_abs(x));  // in (0, 1]; NaN for NaN
  const T r = T(1) / (T(1) + e);
  const bool nonneg = x >= T(0);
  SoftplusParts<T> p;
  // (x > 0 ? x : 0) rather than fmax: the NaN reaches the result through log1p(e).
  // Selects pick values computed anyway, so the CPU loops vectorise.
  p.softplus = (x > T(0) ? x : T(0)) + fg_log1p(e);
  p.sigmoid = (nonneg ? T(1) : e) * r;
  p.sigmoid_neg = (nonneg ? e : T(1)) * r;
  p.curvature = e * r * r;
  return p;
}

// t(l) and t'(l) together (the fused forward needs both and they share one exp).
template <int TERM, typename T>
FASTGAN_LOSS_HD void gan_term_and_derivative(T l, T& t, T& dt) {
  if constexpr (TERM == kSoftplusNeg) {
    const SoftplusParts<T> p = softplus_parts(-l);
    t = p.softplus;
    dt = -p.sigmoid;  // d/dl softplus(-l) = -sigmoid(-l)
  } else if constexpr (TERM == kSoftplus) {
    const SoftplusParts<T> p = softplus_parts(l);
    t = p.softplus;
    dt = p.sigmoid;
  } else if constexpr (TERM == kNegSoftplus) {
    const SoftplusParts<T> p = softplus_parts(l);
    t = -p.softplus;
    dt = -p.sigmoid;
  } else if constexpr (TERM == kNegSoftplusNeg) {
    const SoftplusParts<T> p = softplus_parts(-l);
    t = -p.softplus;
    dt = p.sigmoid;
  } else if constexpr (TERM == kIdentity) {
    t = l;
    dt = T(1);
  } else if constexpr (TERM == kNegIdentity) {
    t = -l;
    dt = T(-1);
  } else if constexpr (TERM == kHingeReal) {
    const T u = T(1) - l;
    t = u > T(0) ? u : (u <= T(0) ? T(0) : u);  // relu, NaN stays NaN
    dt = u <= T(0) ? T(0) : T(-1);              // threshold_backward: passes at u > 0 and at NaN
  } else if constexpr (TERM == kHingeFake) {
    const T u = T(1) + l;
    t = u > T(0) ? u : (u <= T(0) ? T(0) : u);
    dt = u <= T(0) ? T(0) : T(1);
  } else if constexpr (TERM == kHalfSquareOne) {
    const T d = l - T(1);
    t = T(0.5) * d * d;
    dt = d;
  } else {
    static_assert(TERM == kHalfSquare, "unknown GAN loss term");
    t = T(0.5) * l * l;
    dt = l;
  }
}

// t''(l): sigmoid' for the softplus terms, 0 for the piecewise-linear ones
// (hinge's kink has measure zero; torch's relu double backward is 0 too), 1 for
// the squares.
template <int TERM, typename T>
FASTGAN_LOSS_HD T gan_term_second_derivative(T l) {
  if constexpr (TERM == kSoftplusNeg || TERM == kSoftplus) {
    return softplus_parts(l).curvature;  // sigmoid' is even: same for l and -l
  } else if constexpr (TERM == kNegSoftplus || TERM == kNegSoftplusNeg) {
    return -softplus_parts(l).curvature;
  } else if constexpr (TERM == kIdentity || TERM == kNegIdentity || TERM == kHingeReal || TERM == kHingeFake) {
    return T(0);
  } else {
    static_assert(TERM == kHalfSquareOne || TERM == kHalfSquare, "unknown GAN loss term");
    return T(1);
  }
}

// t^(ORDER)(l) for ORDER 0, 1, 2.
template <int TERM, int ORDER, typename T>
FASTGAN_LOSS_HD T gan_term_order(T l) {
  if constexpr (ORDER == 2) {
    return gan_term_second_derivative<TERM>(l);
  } else {
    T t, dt;
    gan_term_and_derivative<TERM>(l, t, dt);
    return ORDER == 0 ? t : dt;
  }
}

// The same for a runtime order (device code: a uniform branch).
template <int TERM, typename T>
FASTGAN_LOSS_HD T gan_term_order(T l, int order) {
  return order == 0 ? gan_term_order<TERM, 0>(l) : order == 1 ? gan_term_order<TERM, 1>(l) : gan_term_order<TERM, 2>(l);
}

// Calls fn(std::integral_constant<int, TERM>{}) for a runtime term code (checked
// by the caller): one switch outside the element loops, so each loop is compiled
// for one term. Used from host launchers (host lambdas) and from kernels (device
// lambdas): nv_exec_check_disable lets the __host__ __device__ template call either.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <typename Fn>
FASTGAN_HD auto dispatch_gan_term(int term, const Fn& fn) -> decltype(fn(std::integral_constant<int, 0>{})) {
  switch (term) {
    case kSoftplusNeg: return fn(std::integral_constant<int, kSoftplusNeg>{});
    case kSoftplus: return fn(std::integral_constant<int, kSoftplus>{});
    case kNegSoftplus: return fn(std::integral_constant<int, kNegSoftplus>{});
    case kNegSoftplusNeg: return fn(std::integral_constant<int, kNegSoftplusNeg>{});
    case kIdentity: return fn(std::integral_constant<int, kIdentity>{});
    case kNegIdentity: return fn(std::integral_constant<int, kNegIdentity>{});
    case kHingeReal: return fn(std::integral_constant<int, kHingeReal>{});
    case kHingeFake: return fn(std::integral_constant<int, kHingeFake>{});
    case kHalfSquareOne: return fn(std::integral_constant<int, kHalfSquareOne>{});
    default: return fn(std::integral_constant<int, kHalfSquare>{});
  }
}

}  // namespace fastgan
