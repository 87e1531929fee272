// Schemas and CPU kernels of the VAE family (the negative ELBO, csrc/vae_math.h).
//
// vae_loss reads each sample's reconstruction once, writing its term and gradient,
// and its (mu, logvar) once, writing the KL and its gradients; the per-sample terms
// are then reduced over the batch. Its backward, vae_loss_backward, only scales the
// saved gradients by the loss's gradient (per sample for reduction "none"). The same
// op computes bernoulli_nll, gaussian_nll and gaussian_kl (the absent inputs are
// None). vae_reparameterize is one elementwise pass, its backward another.
//
// Sums are deterministic whatever the thread count: each sample is summed by one
// thread, in blocks of 16 lanes whose sums are added in order in double, and the
// samples are added in order in double.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")  // as gan_loss_cpu.cpp: lets the selects vectorise
#endif

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu_multi_tensor.h"
#include "cpu_types.h"
#include "empty.h"
#include "namespaces.h"
#include "vae_host.h"
#include "vae_math.h"

namespace fastgan {
namespace {

constexpr int kLanes = 16;
constexpr int64_t kLaneBlock = 2048;  // 128 terms a lane, then the block's sum joins a double total

// Sum of term(j) over [0, n) in kLanes independent lanes (vectorised, a fixed order).
template <typename T, typename Term>
inline __attribute__((always_inline)) T lane_block(int64_t n, const Term& term) {
  T lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) lanes[k] += term(j + k);
  for (int k = 0; j < n; ++j, ++k) lanes[k] += term(j);
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int k = 0; k < width; ++k) lanes[k] += lanes[k + width];
  return lanes[0];
}

// A sample's sum in a fixed order: block(begin, len) sums len <= kLaneBlock terms from
// begin in lanes; a sample of more terms adds its blocks' sums in double. One float32
// lane block over a whole sample would lose accuracy with its length (1e-5 relative at
// 3M features). Each block is its own call of a cloned function: a block loop around
// the inlined lanes kept GCC from vectorising them (4x slower per element).
template <typename T, typename Block>
T blocked_sum(int64_t n, const Block& block) {
  if (n <= kLaneBlock) return block(0, n);
  double total = 0.0;
  for (int64_t begin = 0; begin < n; begin += kLaneBlock)
    total += static_cast<double>(block(begin, std::min(kLaneBlock, n - begin)));
  return static_cast<T>(total);
}

// Sum over a block of one sample's reconstruction, writing g = scale * dt/drecon (and gv
// for the recon log-variance). KIND: 0 bernoulli, 1 gaussian with log-variance, 2 unit gaussian.
template <int KIND, typename scalar_t>
FASTGAN_CPU_CLONES acc_t<scalar_t> recon_block(const scalar_t* __restrict__ r, const scalar_t* __restrict__ x,
                                               const scalar_t* __restrict__ v, scalar_t* __restrict__ g,
                                               scalar_t* __restrict__ gv, int64_t n, acc_t<scalar_t> scale) {
  using T = acc_t<scalar_t>;
  return lane_block<T>(n, [&](int64_t j) __attribute__((always_inline)) {
    T t, d, dv;
    if constexpr (KIND == 0) {
      bernoulli_term(static_cast<T>(r[j]), static_cast<T>(x[j]), t, d);
    } else if constexpr (KIND == 1) {
      gaussian_term(static_cast<T>(r[j]), static_cast<T>(x[j]), static_cast<T>(v[j]), t, d, dv);
      gv[j] = static_cast<scalar_t>(scale * dv);
    } else {
      gaussian_unit_term(static_cast<T>(r[j]), static_cast<T>(x[j]), t, d);
    }
    g[j] = static_cast<scalar_t>(scale * d);
    return t;
  });
}

template <int KIND, typename scalar_t>
acc_t<scalar_t> recon_row(const scalar_t* r, const scalar_t* x, const scalar_t* v, scalar_t* g, scalar_t* gv,
                          int64_t n, acc_t<scalar_t> scale) {
  const bool has_v = KIND == 1;
  return blocked_sum<acc_t<scalar_t>>(n, [&](int64_t begin, int64_t len) {
    return recon_block<KIND>(r + begin, x + begin, has_v ? v + begin : v, g + begin, has_v ? gv + begin : gv, len,
                             scale);
  });
}

// Sum of the KL over a block of one sample's latents, writing its gradients times `scale` (beta s).
template <typename scalar_t>
FASTGAN_CPU_CLONES acc_t<scalar_t> kl_block(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ lv,
                                            scalar_t* __restrict__ gmu, scalar_t* __restrict__ glv, int64_t n,
                                            acc_t<scalar_t> scale) {
  using T = acc_t<scalar_t>;
  return lane_block<T>(n, [&](int64_t j) __attribute__((always_inline)) {
    T kl, dmu, dlv;
    gaussian_kl_term(static_cast<T>(mu[j]), static_cast<T>(lv[j]), kl, dmu, dlv);
    gmu[j] = static_cast<scalar_t>(scale * dmu);
    glv[j] = static_cast<scalar_t>(scale * dlv);
    return kl;
  });
}

template <typename scalar_t>
acc_t<scalar_t> kl_row(const scalar_t* mu, const scalar_t* lv, scalar_t* gmu, scalar_t* glv, int64_t n,
                       acc_t<scalar_t> scale) {
  return blocked_sum<acc_t<scalar_t>>(n, [&](int64_t begin, int64_t len) {
    return kl_block(mu + begin, lv + begin, gmu + begin, glv + begin, len, scale);
  });
}

template <typename scalar_t>
void vae_loss_cpu_typed(VaeLossProblem& p) {
  using T = acc_t<scalar_t>;
  const T scale = static_cast<T>(p.scale), kl_scale = static_cast<T>(p.scale * p.beta);
  const T beta = static_cast<T>(p.beta);
  const int kind = !p.has_recon ? -1 : p.likelihood == kVaeBernoulli ? 0 : p.has_recon_logvar ? 1 : 2;
  auto ptr = [](const at::Tensor& t) { return t.defined() ? cpu_data<scalar_t>(t) : nullptr; };
  const scalar_t *r = ptr(p.recon), *x = ptr(p.target), *v = ptr(p.recon_logvar), *mu = ptr(p.mu),
                 *lv = ptr(p.logvar);
  scalar_t *g = ptr(p.recon_grad), *gv = ptr(p.recon_logvar_grad), *gmu = ptr(p.mu_grad), *glv = ptr(p.logvar_grad);
  const int64_t n = p.recon_len, m = p.latent_len;
  std::vector<T> row_terms(p.rows);
  auto run_rows = [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      T recon = T(0), kl = T(0);
      const int64_t o = b * n, q = b * m;
      if (kind == 0) recon = recon_row<0>(r + o, x + o, v, g + o, gv, n, scale);
      else if (kind == 1) recon = recon_row<1>(r + o, x + o, v + o, g + o, gv + o, n, scale);
      else if (kind == 2) recon = recon_row<2>(r + o, x + o, v, g + o, gv, n, scale);
      if (p.has_kl) kl = kl_row(mu + q, lv + q, gmu + q, glv + q, m, kl_scale);
      row_terms[b] = recon + beta * kl;
    }
  };
  const int64_t per_row = std::max<int64_t>(1, n + m);
  at::parallel_for(0, p.rows, std::max<int64_t>(1, kCpuChunk / per_row), run_rows);
  scalar_t* loss = cpu_data<scalar_t>(p.loss);
  if (p.reduction == kVaeNone) {
    for (int64_t b = 0; b < p.rows; ++b) loss[b] = static_cast<scalar_t>(row_terms[b]);
  } else {
    double total = 0.0;  // in order, in double: many samples lose nothing
    for (int64_t b = 0; b < p.rows; ++b) total += static_cast<double>(row_terms[b]);
    *loss = static_cast<scalar_t>(static_cast<T>(p.scale * total));
  }
}

using LossResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

LossResult vae_loss_cpu(const std::optional<at::Tensor>& recon, const std::optional<at::Tensor>& target,
                        const std::optional<at::Tensor>& recon_logvar, const std::optional<at::Tensor>& mu,
                        const std::optional<at::Tensor>& logvar, int64_t likelihood, double beta, int64_t reduction) {
  VaeLossProblem p = prepare_vae_loss(recon, target, recon_logvar, mu, logvar, likelihood, beta, reduction);
  FASTGAN_CPU_DISPATCH(p.loss.scalar_type(), "vae_loss_cpu", [&] { vae_loss_cpu_typed<scalar_t>(p); });
  return {p.loss, p.recon_grad, p.recon_logvar_grad, p.mu_grad, p.logvar_grad};
}

template <typename scalar_t>
FASTGAN_CPU_CLONES void scale_span(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, int64_t n,
                                   acc_t<scalar_t> g) {
  using T = acc_t<scalar_t>;
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<scalar_t>(g * static_cast<T>(in[j]));
}

// out[j] = g[j / len] * in[j] for j in [begin, end): each sample's saved gradient
// scaled by its own loss gradient, a run of rows of `len` elements in one call.
template <typename scalar_t>
FASTGAN_CPU_CLONES void scale_rows(const scalar_t* __restrict__ in, scalar_t* __restrict__ out,
                                   const scalar_t* __restrict__ g, int64_t begin, int64_t end, int64_t len) {
  using T = acc_t<scalar_t>;
  for (int64_t j = begin, b = begin / len; j < end; ++b) {
    const int64_t stop = std::min(end, (b + 1) * len);
    const T gb = static_cast<T>(g[b]);
    for (int64_t k = j; k < stop; ++k) out[k] = static_cast<scalar_t>(gb * static_cast<T>(in[k]));
    j = stop;
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> vae_loss_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& recon_grad, const at::Tensor& recon_logvar_grad,
    const at::Tensor& mu_grad, const at::Tensor& logvar_grad, int64_t reduction) {
  VaeLossBackwardProblem p =
      prepare_vae_loss_backward(grad_loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad, reduction);
  FASTGAN_CPU_DISPATCH(p.grad.scalar_type(), "vae_loss_backward_cpu", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t* g = cpu_data<scalar_t>(p.grad);
    std::vector<int64_t> numels(4);
    for (int i = 0; i < 4; ++i) numels[i] = p.out[i].numel();
    cpu_for_each_chunk(numels, [&](int64_t i, int64_t begin, int64_t end) {
      const scalar_t* in = cpu_data<scalar_t>(p.saved[i]);
      scalar_t* out = cpu_data<scalar_t>(p.out[i]);
      if (!p.per_row) {
        scale_span(in + begin, out + begin, end - begin, static_cast<T>(*g));
        return;
      }
      scale_rows(in, out, g, begin, end, numels[i] / p.rows);
    });
  });
  return {p.out[0], p.out[1], p.out[2], p.out[3]};
}

template <typename scalar_t>
FASTGAN_CPU_CLONES void reparameterize_span(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ lv,
                                            const scalar_t* __restrict__ eps, scalar_t* __restrict__ z, int64_t n) {
  using T = acc_t<scalar_t>;
  for (int64_t j = 0; j < n; ++j)
    z[j] = static_cast<scalar_t>(
        reparameterize_element(static_cast<T>(mu[j]), static_cast<T>(lv[j]), static_cast<T>(eps[j])));
}

template <typename scalar_t>
FASTGAN_CPU_CLONES void reparameterize_backward_span(const scalar_t* __restrict__ grad,
                                                     const scalar_t* __restrict__ lv,
                                                     const scalar_t* __restrict__ eps, scalar_t* __restrict__ out,
                                                     int64_t n) {
  using T = acc_t<scalar_t>;
  for (int64_t j = 0; j < n; ++j)
    out[j] = static_cast<scalar_t>(
        reparameterize_logvar_grad(static_cast<T>(grad[j]), static_cast<T>(lv[j]), static_cast<T>(eps[j])));
}

at::Tensor vae_reparameterize_cpu(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps) {
  check_vae_reparameterize(mu, logvar, eps, "vae_reparameterize", "mu", "logvar", "eps");
  const at::Tensor m = mu.contiguous(), v = logvar.contiguous(), e = eps.contiguous();
  at::Tensor z = new_empty(m.sizes(), m.options());
  FASTGAN_CPU_DISPATCH(m.scalar_type(), "vae_reparameterize_cpu", [&] {
    const scalar_t *mp = cpu_data<scalar_t>(m), *vp = cpu_data<scalar_t>(v), *ep = cpu_data<scalar_t>(e);
    scalar_t* zp = cpu_data<scalar_t>(z);
    cpu_for_each_chunk({m.numel()}, [&](int64_t, int64_t begin, int64_t end) {
      reparameterize_span(mp + begin, vp + begin, ep + begin, zp + begin, end - begin);
    });
  });
  return z;
}

at::Tensor vae_reparameterize_backward_cpu(const at::Tensor& grad, const at::Tensor& logvar,
                                           const at::Tensor& eps) {
  check_vae_reparameterize(grad, logvar, eps, "vae_reparameterize_backward", "grad", "logvar", "eps");
  const at::Tensor g = grad.contiguous(), v = logvar.contiguous(), e = eps.contiguous();
  at::Tensor out = new_empty(g.sizes(), g.options());
  FASTGAN_CPU_DISPATCH(g.scalar_type(), "vae_reparameterize_backward_cpu", [&] {
    const scalar_t *gp = cpu_data<scalar_t>(g), *vp = cpu_data<scalar_t>(v), *ep = cpu_data<scalar_t>(e);
    scalar_t* op = cpu_data<scalar_t>(out);
    cpu_for_each_chunk({g.numel()}, [&](int64_t, int64_t begin, int64_t end) {
      reparameterize_backward_span(gp + begin, vp + begin, ep + begin, op + begin, end - begin);
    });
  });
  return out;
}

void define_ops(torch::Library& m) {
  // The negative ELBO, fused (csrc/vae_math.h): per sample b,
  //   loss_b = sum_j t(recon, target[, recon_logvar])_bj + beta * sum_k KL(mu, logvar)_bk
  // with t the bernoulli (likelihood 0) or gaussian (1; unit variance without
  // recon_logvar) negative log-likelihood; reduction 0 (none) returns (B,), 1 (mean)
  // and 2 (sum) reduce over b. The saved gradients are d loss / d input for mean and
  // sum, d loss_b / d input_b for none; (0,) for an absent input. Either (recon,
  // target) or (mu, logvar) may be absent. Autograd: csrc/vae_autograd.cpp.
  m.def(
      "vae_loss(Tensor? recon, Tensor? target, Tensor? recon_logvar, Tensor? mu, Tensor? logvar, int likelihood, "
      "float beta, int reduction) -> (Tensor loss, Tensor recon_grad, Tensor recon_logvar_grad, Tensor mu_grad, "
      "Tensor logvar_grad)");
  // grad_loss times each saved gradient of vae_loss (per sample for reduction 0): its whole backward.
  m.def(
      "vae_loss_backward(Tensor grad_loss, Tensor recon_grad, Tensor recon_logvar_grad, Tensor mu_grad, "
      "Tensor logvar_grad, int reduction) -> (Tensor, Tensor, Tensor, Tensor)");
  // z = mu + exp(logvar / 2) * eps, elementwise.
  m.def("vae_reparameterize(Tensor mu, Tensor logvar, Tensor eps) -> Tensor");
  // d z / d logvar times grad: grad * exp(logvar / 2) * eps / 2.
  m.def("vae_reparameterize_backward(Tensor grad, Tensor logvar, Tensor eps) -> Tensor");
}

}  // namespace

FASTGAN_DEFINE_OPS(define_ops)

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("vae_loss", &vae_loss_cpu);
  m.impl("vae_loss_backward", &vae_loss_backward_cpu);
  m.impl("vae_reparameterize", &vae_reparameterize_cpu);
  m.impl("vae_reparameterize_backward", &vae_reparameterize_backward_cpu);
}

}  // namespace fastgan
