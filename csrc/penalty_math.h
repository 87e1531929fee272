// Per-row and per-element math of the gradient penalties (THEORY.md §3), shared
// by the CPU and CUDA launchers.
//
// For a batch of gradients g (B rows of N elements) with per-row norms n_b:
//   term_b = (n_b - c)^2                    two-sided (WGAN-GP: c = 1; R1/R2: c = 0)
//   term_b = max(0, n_b - c)^2              one-sided (WGAN-LP)
//   P = w * term_b (reduction "none"), w * sum_b term_b ("sum"), w/B * sum_b term_b ("mean")
//   dP/dg_b = scale_b * coef(n_b) * g_b,  coef(n) = 2 (n - c) / n,
// with coef = 0 where the term is flat (one-sided and n <= c) and at n = 0 when
// c != 0 (0 is in the Clarke subgradient there; torch's norm backward also
// gives 0), and coef = 2 for c = 0 (no division: R1 at a zero gradient is finite).
#pragma once

#include <limits>

#include "common.h"

namespace fastgan {

enum PenaltyReduction : int64_t { kPenaltyNone = 0, kPenaltyMean = 1, kPenaltySum = 2 };

template <typename T>
FASTGAN_HD T penalty_term(T norm, T center, bool one_sided) {
  T d = norm - center;
  if (one_sided && d < T(0)) d = T(0);  // a NaN norm stays NaN
  return d * d;
}

template <typename T>
FASTGAN_HD T penalty_coef(T norm, T center, bool one_sided) {
  if (center == T(0)) return T(2);  // centers are >= 0, so one-sided is two-sided here
  if (one_sided && norm <= center) return T(0);
  if (norm == T(0)) return T(0);
  return T(2) * (norm - center) / norm;
}

// A row's factor of dP/dg: upstream * row_weight * coef(n). Where n is so small that
// 2 (n - c) / n overflows (a float32 row norm below about 6e-39 * c, i.e. subnormal), the
// row gets 0, as eager's norm backward gives it, rather than an infinite gradient that
// would turn a critic's weights to NaN. NaN and an infinite upstream gradient propagate.
template <typename T>
FASTGAN_HD T penalty_row_scale(T upstream, T row_weight, T norm, T center, bool one_sided) {
  const T scale = upstream * row_weight * penalty_coef(norm, center, one_sided);
  constexpr T kMax = std::numeric_limits<T>::max();
  const bool overflowed = (scale > kMax || scale < -kMax) && upstream <= kMax && upstream >= -kMax && norm <= kMax;
  return overflowed ? T(0) : scale;
}

// Scale that turns a row's term into its share of P: w, w, or w / B.
template <typename T>
FASTGAN_HD T penalty_row_weight(T weight, int64_t rows, int64_t reduction) {
  return reduction == kPenaltyMean ? weight / static_cast<T>(rows) : weight;
}

// x_hat = eps * real + (1 - eps) * fake, one eps per sample.
template <typename T>
FASTGAN_HD T interpolate_element(T real, T fake, T eps) {
  return eps * real + (T(1) - eps) * fake;
}

}  // namespace fastgan
