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
//            (from z: 1 - tanh^2 z = sech^2 z = 4e / (1 + e)^2, e = e^(-2|z|), without 1 - u^2's
//            cancellation where tanh saturates)
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
#include "fast_math.h"

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

// Whether the forward saves y rather than z = x + b: when y can give f', except tanh
// and sigmoid with gain != 1, whose f' = 1 - u^2 or u (1 - u) from u = y / gain carries
// the rounding of gain * f(z) and of the division, which cancels where f saturates
// (eager PyTorch saves f(z) itself; z is exact).
inline bool prefer_ref_y(int act, double alpha, double gain) {
  if ((act == kTanh || act == kSigmoid) && gain != 1.0) return false;
  return can_ref_y(act, alpha, gain);
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

// Logistic sigmoid without overflow: e = exp(-|z|) <= 1.
template <typename T>
FASTGAN_MATH_HD T stable_sigmoid(T z) {
  const T e = fg_exp(-fg_abs(z));
  const T inv = T(1) / (T(1) + e);
  const T e_inv = e * inv;
  return fg_select(fg_ge(z, T(0)), inv, e_inv);
}

// f(z). NaN propagates: relu keeps it (z < 0 is false), as torch.relu does.
template <int ACT, typename T>
FASTGAN_MATH_HD T act_value(T z, T alpha) {
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

// sech^2 z = 1 - tanh^2 z, as 4e / (1 + e)^2 with e = e^(-2|z|) <= 1.
template <typename T>
FASTGAN_MATH_HD T tanh_sech2(T z) {
  const T e = fg_exp(T(-2) * fg_abs(z));
  const T q = T(1) + e;
  return T(4) * e / (q * q);
}

// gain * f'(z) from ref (FROM_Y: ref = y = gain * f(z); else ref = z). The
// comparisons follow torch's backward formulas, so NaN and 0 pick the same branch:
// relu's threshold_backward (result <= 0 -> 0), leaky_relu_backward (z > 0),
// elu_backward (z <= 0 -> alpha e^z).
template <int ACT, bool FROM_Y, typename T>
FASTGAN_MATH_HD T grad_factor(T r, const Params<T>& p) {
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
    if (FROM_Y) {
      const T u = r * p.inv_gain;
      return p.gain * (T(1) - u * u);
    }
    return p.gain * tanh_sech2(r);
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
FASTGAN_MATH_HD T grad2_factor(T r, const Params<T>& p) {
  if (ACT == kTanh) {
    if (FROM_Y) return T(-2) * (r * p.inv_gain);
    return p.gain * (T(-2) * fg_tanh(r) * tanh_sech2(r));
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
FASTGAN_MATH_HD T forward_element(T x, T bias, const Params<T>& p) {
  return p.gain * act_value<ACT>(x + bias, p.alpha);
}

template <int ACT, bool FROM_Y, typename T>
FASTGAN_MATH_HD T grad_element(T dy, T ref, T bias, const Params<T>& p) {
  return grad_factor<ACT, FROM_Y>(FROM_Y ? ref : ref + bias, p) * dy;
}

// Both second-order outputs from one read of the inputs: d_dy = gain f' ddx and
// d_ref = D2 dy ddx.
template <int ACT, bool FROM_Y, typename T>
FASTGAN_MATH_HD void grad2_element(T ddx, T dy, T ref, T bias, const Params<T>& p, T& d_dy, T& d_ref) {
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
