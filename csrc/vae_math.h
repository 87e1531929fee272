// Per-element math of the VAE ops (the negative ELBO), shared by the CPU and CUDA
// kernels so the CPU tests check the arithmetic the GPU runs.
//
// Per sample b, with s the batch scale (1/B for "mean", else 1) and beta the KL weight:
//   bernoulli  t(l, x)     = softplus(l) - x l            dt/dl = sigmoid(l) - x
//   gaussian   t(m, x, v)  = (ln 2pi + v + (x - m)^2 e^-v) / 2
//                                  dt/dm = (m - x) e^-v,   dt/dv = (1 - (x - m)^2 e^-v) / 2
//   kl         k(mu, lv)   = (mu^2 + e^lv - 1 - lv) / 2
//                                  dk/dmu = mu,            dk/dlv = (e^lv - 1) / 2
//   reparameterize  z = mu + e^(lv/2) eps;  dlv = dz e^(lv/2) eps / 2
// softplus is the stable form of gan_loss_math.h (logits of +-1e4 stay finite); e^-v
// is computed once, so logvar of +-80 gives finite terms in float32. NaN propagates.
#pragma once

#include "common.h"
#include "fast_math.h"
#include "gan_loss_math.h"

namespace fastgan {

// Likelihood codes; fastgan/ops/vae.py mirrors them (LIKELIHOODS).
enum VaeLikelihood : int { kVaeBernoulli = 0, kVaeGaussian = 1, kVaeLikelihoodCount = 2 };
// Reduction codes over the batch, as torch's at::Reduction; fastgan/ops/vae.py (REDUCTIONS).
enum VaeReduction : int { kVaeNone = 0, kVaeMean = 1, kVaeSum = 2 };

constexpr double kVaeHalfLog2Pi = 0.91893853320467274178;  // ln(2 pi) / 2

// Bernoulli term and its logit-derivative.
template <typename T>
FASTGAN_MATH_HD void bernoulli_term(T l, T x, T& t, T& dl) {
  const SoftplusParts<T> p = softplus_parts(l);
  t = p.softplus - x * l;
  dl = p.sigmoid - x;
}

// Gaussian term with log-variance v, its mean-derivative and its v-derivative.
template <typename T>
FASTGAN_MATH_HD void gaussian_term(T m, T x, T v, T& t, T& dm, T& dv) {
  const T inv_var = fg_exp(-v);
  const T d = m - x;
  const T q = d * d * inv_var;
  t = T(kVaeHalfLog2Pi) + T(0.5) * (v + q);
  dm = d * inv_var;
  dv = T(0.5) * (T(1) - q);
}

// Unit-variance Gaussian term and its mean-derivative.
template <typename T>
FASTGAN_MATH_HD void gaussian_unit_term(T m, T x, T& t, T& dm) {
  const T d = m - x;
  t = T(kVaeHalfLog2Pi) + T(0.5) * d * d;
  dm = d;
}

// KL(N(mu, e^lv) || N(0, 1)) of one latent, and its derivatives.
template <typename T>
FASTGAN_MATH_HD void gaussian_kl_term(T mu, T lv, T& k, T& dmu, T& dlv) {
  const T var = fg_exp(lv);
  k = T(0.5) * (mu * mu + var - T(1) - lv);
  dmu = mu;
  dlv = T(0.5) * (var - T(1));
}

template <typename T>
FASTGAN_MATH_HD T reparameterize_element(T mu, T lv, T eps) {
  return mu + fg_exp(T(0.5) * lv) * eps;
}

// d z / d lv = e^(lv/2) eps / 2, from eps itself: z - mu would cancel where |mu| >> e^(lv/2) |eps|.
template <typename T>
FASTGAN_MATH_HD T reparameterize_logvar_grad(T grad, T lv, T eps) {
  return T(0.5) * grad * fg_exp(T(0.5) * lv) * eps;
}

// The scale of sample b's gradient: 1/B for the mean, else 1.
inline double vae_batch_scale(int64_t rows, int64_t reduction) {
  return reduction == kVaeMean ? 1.0 / static_cast<double>(rows) : 1.0;
}

}  // namespace fastgan
