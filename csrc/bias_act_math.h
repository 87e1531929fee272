// Per-element math of the fused bias + activation op, shared by the CPU and CUDA
// kernels (so CPU tests check the arithmetic the GPU runs).
//
//   forward:        z = x + b[c],  y = gain * f(z)
//   first order:    dx = gain * f'(z) * dy                       (db = dx summed over all but `dim`)
//   second order:   d(dx)/d(dy) . v = gain * f'(z) * v           (the first-order kernel again)
//                   d(dx)/d(ref) . v = D2(ref) * dy * v          (ref: the saved tensor, below)
//
// The derivatives are computed from one saved tensor `ref`, chosen per activation
// (the table below, mirrored by fastgan/ops/bias_act.py):
//
//   act      f(z)                       ref  gain*f' from ref           D2 = d(gain*f')/d(ref)
//   linear   z                          -    gain                       0
//   relu     max(z, 0)                  y    gain * [y/gain > 0]        0
//   lrelu    z > 0 ? z : alpha*z        y    gain * (y/gain > 0 ? 1 : alpha)   0     (alpha >= 0)
//   tanh     tanh(z)                    y    gain * (1 - u^2), u = y/gain      -2u
//   sigmoid  1 / (1 + e^-z)             y    gain * u (1 - u)                  1 - 2u
//   silu     z * sigmoid(z)             z    gain * s (1 + z (1 - s))          gain * s(1-s)(2 + z(1-2s))
//   elu      z > 0 ? z : alpha*expm1(z) z    gain * (z > 0 ? 1 : alpha e^z)    gain * (z < 0 ? alpha e^z : 0)
//
// With ref = y the forward need not keep x alive, and for relu/lrelu both the first
// and the second order are one mask multiply. D2 is the derivative with respect to
// ref itself: for ref = y it is the derivative with respect to y (for tanh:
// d/dy [gain (1 - (y/gain)^2)] = -2y/gain), which autograd then carries to x through
// the forward op's own backward. Whenever y cannot give f' (gain == 0, or lrelu with
// alpha < 0, where the sign of y no longer tells the sign of z), z = x + b is the ref:
// every activation has an `from z` form too.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common.h"

// Forced inline on the host too: with hundreds of instantiations in one file GCC's
// inliner runs out of budget and leaves fg_exp out of line, which keeps the element
// loops scalar (10x slower).
#if defined(__CUDACC__)
#define FASTGAN_BA_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define FASTGAN_BA_HD inline __attribute__((always_inline))
#else
#define FASTGAN_BA_HD inline
#endif

namespace fastgan {
namespace bias_act {

// Keep in sync with _ACTS in fastgan/ops/bias_act.py.
enum Act : int { kLinear = 0, kRelu = 1, kLrelu = 2, kTanh = 3, kSigmoid = 4, kSilu = 5, kElu = 6, kNumActs = 7 };

// Whether f'' is nonzero somewhere (a second-order kernel exists).
inline constexpr bool has_second_order(int act) {
  return act == kTanh || act == kSigmoid || act == kSilu || act == kElu;
}

// Whether the derivatives can be taken from y for these constants.
inline bool can_ref_y(int act, double alpha, double gain) {
  if (gain == 0.0) return false;
  if (act == kRelu || act == kTanh || act == kSigmoid) return true;
  if (act == kLrelu) return alpha >= 0.0;
  return false;
}

// Constants in the compute type, rounded once on the host.
template <typename T>
struct Params {
  T alpha;
  T gain;
  T inv_gain;  // 1 / gain (0 when gain == 0; unused then, as ref = z)
};

template <typename T>
Params<T> make_params(double alpha, double gain) {
  return Params<T>{static_cast<T>(alpha), static_cast<T>(gain), static_cast<T>(gain != 0.0 ? 1.0 / gain : 0.0)};
}

// Quiet comparisons (false on NaN, like `<`, but raising no FP flag): under GCC's
// default -ftrapping-math only these let selects become vector blends, so the CPU
// loops vectorise. The CUDA kernels use the plain operators (same results).
#if defined(__CUDA_ARCH__)
#define FASTGAN_QUIET_CMP(name, op, builtin) \
  template <typename T>                        \
  FASTGAN_BA_HD bool name(T a, T b) {          \
    return a op b;                             \
  }
#else
#define FASTGAN_QUIET_CMP(name, op, builtin) \
  template <typename T>                        \
  FASTGAN_BA_HD bool name(T a, T b) {          \
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
FASTGAN_BA_HD T fg_select(bool c, T a, T b) {
#if defined(__CUDA_ARCH__)
  return c ? a : b;
#else
  using I = typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type;
  const I m = -static_cast<I>(c);
  return __builtin_bit_cast(T, static_cast<I>((m & __builtin_bit_cast(I, a)) | (~m & __builtin_bit_cast(I, b))));
#endif
}

FASTGAN_BA_HD float fg_abs(float x) { return ::fabsf(x); }
FASTGAN_BA_HD double fg_abs(double x) { return ::fabs(x); }

// ---- float32 exp, expm1 and tanh without libm calls ----
// libm's expf/tanhf are opaque calls that keep the CPU loops scalar; these are
// branch-free (selects only), so GCC vectorises them (AVX2/AVX-512 clones), and the
// CUDA kernels run the very same arithmetic. Accuracy about 1-2 ulp (Cephes' expf
// polynomial); NaN propagates, overflow gives inf, underflow 0 or a subnormal.
// float64 uses libm (exactness over speed).

FASTGAN_BA_HD int32_t fg_float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(x);
#else
  return __builtin_bit_cast(int32_t, x);
#endif
}

FASTGAN_BA_HD float fg_bits_float(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  return __builtin_bit_cast(float, i);
#endif
}

// 2^n for integer-valued n in [-126, 127].
FASTGAN_BA_HD float fg_pow2i(float n) { return fg_bits_float((static_cast<int32_t>(n) + 127) << 23); }

FASTGAN_BA_HD float fg_exp(float x) {
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

FASTGAN_BA_HD float fg_expm1(float x) {
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

FASTGAN_BA_HD float fg_tanh(float x) {
  // tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)), with the sign of x.
  const float em = fg_expm1(-2.0f * fg_abs(x));
  return ::copysignf(-em / (2.0f + em), x);
}

FASTGAN_BA_HD double fg_exp(double x) { return ::exp(x); }
FASTGAN_BA_HD double fg_expm1(double x) { return ::expm1(x); }
FASTGAN_BA_HD double fg_tanh(double x) { return ::tanh(x); }

// Logistic sigmoid without overflow: e = exp(-|z|) <= 1.
template <typename T>
FASTGAN_BA_HD T stable_sigmoid(T z) {
  const T e = fg_exp(-fg_abs(z));
  const T inv = T(1) / (T(1) + e);
  const T e_inv = e * inv;
  return fg_select(fg_ge(z, T(0)), inv, e_inv);
}

// f(z). NaN propagates: relu keeps it (z < 0 is false), as torch.relu does.
template <int ACT, typename T>
FASTGAN_BA_HD T act_value(T z, T alpha) {
  if (ACT == kLinear) return z;
  if (ACT == kRelu) return fg_select(fg_lt(z, T(0)), T(0), z);
  if (ACT == kLrelu) {
    const T neg = z * alpha;  // computed unconditionally: a select, not a branch (vectorises)
    return fg_select(fg_gt(z, T(0)), z, neg);
  }
  if (ACT == kTanh) return fg_tanh(z);
  if (ACT == kSigmoid) return stable_sigmoid(z);
  if (ACT == kSilu) return z * stable_sigmoid(z);
  if (ACT == kElu) {
    const T neg = alpha * fg_expm1(z);
    return fg_select(fg_gt(z, T(0)), z, neg);
  }
  return z;
}

// gain * f'(z) from ref (FROM_Y: ref = y = gain * f(z); else ref = z). The
// comparisons follow torch's backward formulas, so NaN and 0 pick the same branch:
// relu's threshold_backward (result <= 0 -> 0), leaky_relu_backward (z > 0),
// elu_backward (z <= 0 -> alpha e^z).
template <int ACT, bool FROM_Y, typename T>
FASTGAN_BA_HD T grad_factor(T r, const Params<T>& p) {
  if (ACT == kLinear) return p.gain;
  if (ACT == kRelu) {
    const T s = FROM_Y && p.gain < T(0) ? -r : r;  // has the sign of z (y = gain * relu(z))
    return fg_select(fg_le(s, T(0)), T(0), p.gain);
  }
  if (ACT == kLrelu) {
    const T s = FROM_Y && p.gain < T(0) ? -r : r;
    return fg_select(fg_gt(s, T(0)), p.gain, p.gain * p.alpha);
  }
  if (ACT == kTanh) {
    const T u = FROM_Y ? r * p.inv_gain : fg_tanh(r);
    return p.gain * (T(1) - u * u);
  }
  if (ACT == kSigmoid) {
    const T u = FROM_Y ? r * p.inv_gain : stable_sigmoid(r);
    return p.gain * (u * (T(1) - u));
  }
  if (ACT == kSilu) {
    const T s = stable_sigmoid(r);
    return p.gain * (s * (T(1) + r * (T(1) - s)));
  }
  if (ACT == kElu) {
    const T neg = p.gain * (p.alpha * fg_exp(r));
    return fg_select(fg_le(r, T(0)), neg, p.gain);
  }
  return p.gain;
}

// D2 = d(gain * f')/d(ref) (see the table above): the second-order factor.
template <int ACT, bool FROM_Y, typename T>
FASTGAN_BA_HD T grad2_factor(T r, const Params<T>& p) {
  if (ACT == kTanh) {
    if (FROM_Y) return T(-2) * (r * p.inv_gain);
    const T t = fg_tanh(r);
    return p.gain * (T(-2) * t * (T(1) - t * t));
  }
  if (ACT == kSigmoid) {
    if (FROM_Y) return T(1) - T(2) * (r * p.inv_gain);
    const T s = stable_sigmoid(r);
    return p.gain * (s * (T(1) - s) * (T(1) - T(2) * s));
  }
  if (ACT == kSilu) {
    const T s = stable_sigmoid(r);
    return p.gain * (s * (T(1) - s) * (T(2) + r * (T(1) - T(2) * s)));
  }
  // z < 0, not <= 0: torch's elu double backward takes f''(0) = 0 (f'(0) = alpha, the left limit).
  if (ACT == kElu) {
    const T neg = p.gain * (p.alpha * fg_exp(r));
    return fg_select(fg_lt(r, T(0)), neg, T(0));
  }
  return T(0);  // linear, relu, lrelu: f'' = 0 almost everywhere
}

// One element of each kernel. `bias` is 0 when there is none (or ref = y).
template <int ACT, typename T>
FASTGAN_BA_HD T forward_element(T x, T bias, const Params<T>& p) {
  return p.gain * act_value<ACT>(x + bias, p.alpha);
}

template <int ACT, bool FROM_Y, typename T>
FASTGAN_BA_HD T grad_element(T dy, T ref, T bias, const Params<T>& p) {
  return grad_factor<ACT, FROM_Y>(FROM_Y ? ref : ref + bias, p) * dy;
}

// Both second-order outputs from one read of the inputs: d_dy = gain f' ddx and
// d_ref = D2 dy ddx.
template <int ACT, bool FROM_Y, typename T>
FASTGAN_BA_HD void grad2_element(T ddx, T dy, T ref, T bias, const Params<T>& p, T& d_dy, T& d_ref) {
  const T r = FROM_Y ? ref : ref + bias;
  d_dy = grad_factor<ACT, FROM_Y>(r, p) * ddx;
  d_ref = grad2_factor<ACT, FROM_Y>(r, p) * dy * ddx;
}

// Calls fn(std::integral_constant<int, ACT>) for a runtime activation id.
template <typename Fn>
void dispatch_act(int act, const Fn& fn) {
  switch (act) {
    case kLinear: fn(std::integral_constant<int, kLinear>{}); break;
    case kRelu: fn(std::integral_constant<int, kRelu>{}); break;
    case kLrelu: fn(std::integral_constant<int, kLrelu>{}); break;
    case kTanh: fn(std::integral_constant<int, kTanh>{}); break;
    case kSigmoid: fn(std::integral_constant<int, kSigmoid>{}); break;
    case kSilu: fn(std::integral_constant<int, kSilu>{}); break;
    case kElu: fn(std::integral_constant<int, kElu>{}); break;
    default: break;
  }
}

}  // namespace bias_act
}  // namespace fastgan
