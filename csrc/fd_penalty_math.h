// Per-element math of the first-order (finite-difference) R1/R2 penalties, shared by
// the CPU and CUDA launchers (the Triton kernels in kernels/fd_penalty.py mirror it).
//
// With critic outputs o = D(x) and p = D(x + sigma * eps), B rows:
//   perturb:  x + sigma * eps
//   P = w / B * sum_i q_i^2,  q_i = (p_i - o_i) / sigma   (w = gamma / 2)
//   dP/dp_i = -dP/do_i = c * q_i,  c = 2 u w / (B sigma)  (u: the loss's upstream gradient)
#pragma once

#include <cstdint>

#include "fast_math.h"

namespace fastgan {

template <typename T>
FASTGAN_MATH_HD T perturb_element(T x, T noise, T sigma) {
  return x + sigma * noise;
}

template <typename T>
FASTGAN_MATH_HD T fd_quotient(T perturbed, T output, T sigma) {
  return (perturbed - output) / sigma;
}

// c above: the factor of q_i in the gradient w.r.t. the perturbed outputs.
template <typename T>
FASTGAN_MATH_HD T fd_penalty_grad_coef(T upstream, T weight, T sigma, int64_t rows) {
  return T(2) * upstream * weight / (static_cast<T>(rows) * sigma);
}

}  // namespace fastgan
