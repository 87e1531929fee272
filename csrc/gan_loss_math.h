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
#include "fast_math.h"

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
FASTGAN_MATH_HD constexpr bool gan_term_is_linear(int term) { return term == kIdentity || term == kNegIdentity; }
FASTGAN_MATH_HD constexpr int gan_term_slope(int term) { return term == kIdentity ? 1 : -1; }

// Reduction codes, as torch's at::Reduction.
enum GanReduction : int { kReductionNone = 0, kReductionMean = 1, kReductionSum = 2 };

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
FASTGAN_MATH_HD SoftplusParts<T> softplus_parts(T x) {
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

// Relativistic losses couple the two sides, so they are not terms of one side but
// kinds of their own op, relativistic_loss; fastgan/ops/losses.py mirrors the codes
// (RELATIVISTIC_PAIR, RELATIVISTIC_AVERAGE). x is the side that should score higher
// (the discriminator's real logits, the generator's fake ones), y the other;
// s = 1/numel (mean) or 1 (sum):
//   pair    (RpGAN, x and y of one shape):  s * sum_i softplus(y_i - x_i)
//   average (RaGAN):  s_x sum_i softplus(mean(y) - x_i) + s_y sum_j softplus(y_j - mean(x))
enum RelativisticKind : int {
  kRelativisticPair = 0,
  kRelativisticAverage = 1,
  kRelativisticKindCount = 2,
};

// softplus(z) and its derivative sigmoid(z) for a relativistic difference z (y_i - x_i,
// mean(y) - x_i or y_j - mean(x)): the loss adds t; the direct part of the
// logits-gradient is -scale * sig for x (it enters z negated), +scale * sig for y.
template <typename T>
FASTGAN_MATH_HD void relativistic_term(T z, T& t, T& sig) {
  const SoftplusParts<T> p = softplus_parts(z);
  t = p.softplus;
  sig = p.sigmoid;
}

// t(l) and t'(l) together (the fused forward needs both and they share one exp).
template <int TERM, typename T>
FASTGAN_MATH_HD void gan_term_and_derivative(T l, T& t, T& dt) {
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
FASTGAN_MATH_HD T gan_term_second_derivative(T l) {
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
FASTGAN_MATH_HD T gan_term_order(T l) {
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
FASTGAN_MATH_HD T gan_term_order(T l, int order) {
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
