// Autograd of the VAE ops (fastgan::vae_loss, vae_loss_backward, vae_reparameterize,
// vae_reparameterize_backward), in C++ for every device, as csrc/gan_loss_autograd.cpp
// (a Python autograd.Function costs as much host time as the eager kernels replaced).
// The fastgan_triton ops share it (csrc/namespaces.h).
//
// With s the batch scale (1/B for mean, else 1), g_b the loss's gradient (per sample
// for reduction none) and R, V, M, L the saved gradients of recon, recon_logvar, mu,
// logvar (csrc/vae_math.h):
//   vae_loss:   d/dinput = g_b * saved (vae_loss_backward: one launch); d/dtarget =
//               -g_b s recon (bernoulli) or -g_b R (gaussian), eager (data rarely needs it).
//               Double backward, for gradients G_R, G_V, G_M, G_L reaching the saved ones:
//                 bernoulli  drecon += s sigmoid'(l) G_R,       dtarget -= s G_R
//                 gaussian   drecon += s e^-v G_R - R G_V,      dtarget -= s e^-v G_R - R G_V,
//                            dv     += -R G_R + (s/2 - V) G_V   (e^-v = 1, no V without recon_logvar)
//                 kl         dmu += beta s G_M,                 dlogvar += (L + beta s / 2) G_L
//   vae_loss_backward: out_i = g_b S_i -> d/dg_b = sum_j G_i S_i (per sample for none), d/dS_i = g_b G_i
//   vae_reparameterize: dmu = dz, dlogvar = dz e^(logvar/2) eps / 2 (one launch; from eps, not z - mu,
//               which cancels where |mu| >> e^(logvar/2) |eps|), deps = dz e^(logvar/2)
//   vae_reparameterize_backward: o = g e^(lv/2) eps / 2 -> d/dg = G e^(lv/2) eps / 2 (the op),
//               d/dlv = G o / 2 (the op of G g, halved), d/deps = G g e^(lv/2) / 2
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/sigmoid.h>
#include <torch/library.h>

#include "autocast.h"
#include "autograd_utils.h"

#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "vae_math.h"

namespace fastgan {
namespace {

using OptTensor = std::optional<at::Tensor>;
using LossResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using BackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

template <OpNamespace NS>
const auto& loss_op() {
  static const auto op = family_op(NS, "vae_loss")
                             .typed<LossResult(const OptTensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                                               const OptTensor&, int64_t, double, int64_t)>();
  return op;
}

template <OpNamespace NS>
const auto& backward_op() {
  static const auto op = family_op(NS, "vae_loss_backward")
                             .typed<BackwardResult(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, int64_t)>();
  return op;
}

template <OpNamespace NS>
const auto& reparameterize_op() {
  static const auto op = family_op(NS, "vae_reparameterize")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op;
}

template <OpNamespace NS>
const auto& reparameterize_backward_op() {
  static const auto op = family_op(NS, "vae_reparameterize_backward")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op;
}

at::Tensor defined_or_empty(const OptTensor& t) { return t.has_value() ? *t : at::Tensor(); }

// g (the loss's gradient) shaped to broadcast against a (B, ...) tensor like `like`.
at::Tensor per_sample(const at::Tensor& g, const at::Tensor& like, bool per_row) {
  if (!per_row) return g;
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = -1;  // B, without reading a size that may be symbolic
  return g.reshape(shape);
}

void accumulate(at::Tensor& into, const at::Tensor& term) { into = into.defined() ? into.add(term) : term; }

template <OpNamespace NS>
struct VaeLossFunction : public FusedFunction<VaeLossFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const OptTensor& recon, const OptTensor& target,
                               const OptTensor& recon_logvar, const OptTensor& mu, const OptTensor& logvar,
                               int64_t likelihood, double beta, int64_t reduction) {
    at::Tensor loss, rg, vg, mg, lg;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(loss, rg, vg, mg, lg) = loss_op<NS>().call(recon, target, recon_logvar, mu, logvar, likelihood, beta,
                                                      reduction);
    }
    ctx->set_materialize_grads(false);  // first-order backward gets no gradient for the saved ones
    ctx->saved_data["likelihood"] = likelihood;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["rows"] = (recon.has_value() ? *recon : *mu).sym_size(0);  // symbolic under tracing
    ctx->saved_data["has_kl"] = mu.has_value();
    ctx->save_for_backward({defined_or_empty(recon), defined_or_empty(target), defined_or_empty(recon_logvar), rg,
                            vg, mg, lg});
    return {loss, rg, vg, mg, lg};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &recon = saved[0], &recon_logvar = saved[2], &R = saved[3], &V = saved[4], &M = saved[5],
                     &L = saved[6];
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const bool bernoulli = ctx->saved_data["likelihood"].toInt() == kVaeBernoulli, per_row = reduction == kVaeNone;
    const double beta = ctx->saved_data["beta"].toDouble();
    const c10::SymInt rows = ctx->saved_data["rows"].toSymInt();
    // t * s, s = 1/B for the mean (a division: B may be symbolic), else 1.
    auto scaled = [&](const at::Tensor& t) { return reduction == kVaeMean ? t.div(c10::Scalar(rows)) : t; };
    const bool has_recon = recon.defined(), has_v = recon_logvar.defined();
    const bool has_kl = ctx->saved_data["has_kl"].toBool();
    at::Tensor d_recon, d_target, d_v, d_mu, d_lv;
    if (grads[0].defined()) {
      at::Tensor a, b, c, d;
      std::tie(a, b, c, d) = backward_op<NS>().call(grads[0], R, V, M, L, reduction);
      if (has_recon) d_recon = a;
      if (has_v) d_v = b;
      if (has_kl) {
        d_mu = c;
        d_lv = d;
      }
      if (has_recon && ctx->needs_input_grad(1))
        d_target = bernoulli ? scaled(per_sample(grads[0], recon, per_row).mul(recon)).neg() : a.neg();
    }
    const at::Tensor &G_R = grads[1], &G_V = grads[2], &G_M = grads[3], &G_L = grads[4];
    if (has_recon && G_R.defined()) {
      at::Tensor curvature;  // d R / d recon, elementwise
      if (bernoulli) curvature = scaled(at::sigmoid(recon).mul(at::sigmoid(recon.neg())));
      else curvature = has_v ? scaled(at::exp(recon_logvar.neg())) : scaled(at::ones_like(recon));
      const at::Tensor term = curvature.mul(G_R);
      accumulate(d_recon, term);
      if (ctx->needs_input_grad(1)) accumulate(d_target, bernoulli ? scaled(G_R).neg() : term.neg());
      if (has_v) accumulate(d_v, R.mul(G_R).neg());
    }
    if (has_v && G_V.defined()) {
      const at::Tensor cross = R.mul(G_V);
      accumulate(d_recon, cross.neg());
      if (ctx->needs_input_grad(1)) accumulate(d_target, cross);
      accumulate(d_v, scaled(G_V).mul(0.5).sub(V.mul(G_V)));
    }
    if (has_kl && G_M.defined()) accumulate(d_mu, scaled(G_M).mul(beta));
    if (has_kl && G_L.defined()) accumulate(d_lv, L.mul(G_L).add(scaled(G_L).mul(beta / 2)));
    return {d_recon, d_target, d_v, d_mu, d_lv, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
struct VaeLossBackwardFunction : public FusedFunction<VaeLossBackwardFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& grad_loss, const at::Tensor& rg,
                               const at::Tensor& vg, const at::Tensor& mg, const at::Tensor& lg, int64_t reduction) {
    at::Tensor a, b, c, d;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(a, b, c, d) = backward_op<NS>().call(grad_loss, rg, vg, mg, lg, reduction);
    }
    ctx->set_materialize_grads(false);
    ctx->saved_data["reduction"] = reduction;
    ctx->save_for_backward({grad_loss, rg, vg, mg, lg});
    return {a, b, c, d};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grad_loss = saved[0];
    const bool per_row = ctx->saved_data["reduction"].toInt() == kVaeNone;
    at::Tensor d_grad;
    variable_list out(6);
    for (int i = 0; i < 4; ++i) {
      const at::Tensor &G = grads[i], &S = saved[i + 1];
      if (!G.defined() || S.sym_numel() == 0) continue;
      if (ctx->needs_input_grad(0)) {
        const auto acc = S.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
        at::Tensor dot = G.to(acc).mul(S);  // products in acc, as gan_loss_autograd.cpp's dot
        std::vector<int64_t> features(S.dim() - 1);  // every dimension but the batch
        for (int64_t k = 1; k < S.dim(); ++k) features[k - 1] = k;
        dot = !per_row ? dot.sum(acc) : features.empty() ? dot.to(acc) : dot.sum(features, false, acc);
        accumulate(d_grad, dot);
      }
      if (ctx->needs_input_grad(i + 1)) out[i + 1] = G.mul(per_sample(grad_loss, S, per_row));
    }
    if (d_grad.defined()) out[0] = d_grad.to(grad_loss.scalar_type()).reshape(grad_loss.sizes());
    return out;
  }
};

template <OpNamespace NS>
struct VaeReparameterizeFunction : public FusedFunction<VaeReparameterizeFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                               const at::Tensor& eps) {
    at::Tensor z;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      z = reparameterize_op<NS>().call(mu, logvar, eps);
    }
    ctx->save_for_backward({logvar, eps});
    return {z};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &logvar = saved[0], &eps = saved[1], &g = grads[0];
    at::Tensor d_mu, d_lv, d_eps;
    if (ctx->needs_input_grad(0)) d_mu = g;
    if (ctx->needs_input_grad(1)) d_lv = reparameterize_backward_op<NS>().call(g, logvar, eps);
    if (ctx->needs_input_grad(2)) d_eps = g.mul(at::exp(logvar.mul(0.5)));
    return {d_mu, d_lv, d_eps};
  }
};

template <OpNamespace NS>
struct VaeReparameterizeBackwardFunction : public FusedFunction<VaeReparameterizeBackwardFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& grad, const at::Tensor& logvar,
                               const at::Tensor& eps) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = reparameterize_backward_op<NS>().call(grad, logvar, eps);
    }
    ctx->save_for_backward({grad, logvar, eps});
    return {out};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &grad = saved[0], &logvar = saved[1], &eps = saved[2], &G = grads[0];
    at::Tensor d_grad, d_lv, d_eps;
    if (ctx->needs_input_grad(0)) d_grad = reparameterize_backward_op<NS>().call(G, logvar, eps);
    if (ctx->needs_input_grad(1)) d_lv = reparameterize_backward_op<NS>().call(G.mul(grad), logvar, eps).mul(0.5);
    if (ctx->needs_input_grad(2)) d_eps = G.mul(grad).mul(at::exp(logvar.mul(0.5))).mul(0.5);
    return {d_grad, d_lv, d_eps};
  }
};

template <OpNamespace NS>
LossResult vae_loss_autograd(const OptTensor& recon, const OptTensor& target, const OptTensor& recon_logvar,
                             const OptTensor& mu, const OptTensor& logvar, int64_t likelihood, double beta,
                             int64_t reduction) {
  variable_list out = VaeLossFunction<NS>::apply(recon, target, recon_logvar, mu, logvar, likelihood, beta, reduction);
  return {std::move(out[0]), std::move(out[1]), std::move(out[2]), std::move(out[3]), std::move(out[4])};
}

template <OpNamespace NS>
BackwardResult vae_loss_backward_autograd(const at::Tensor& grad_loss, const at::Tensor& rg, const at::Tensor& vg,
                                          const at::Tensor& mg, const at::Tensor& lg, int64_t reduction) {
  variable_list out = VaeLossBackwardFunction<NS>::apply(grad_loss, rg, vg, mg, lg, reduction);
  return {std::move(out[0]), std::move(out[1]), std::move(out[2]), std::move(out[3])};
}

template <OpNamespace NS>
at::Tensor vae_reparameterize_autograd(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps) {
  return VaeReparameterizeFunction<NS>::apply(mu, logvar, eps)[0];
}

template <OpNamespace NS>
at::Tensor vae_reparameterize_backward_autograd(const at::Tensor& grad, const at::Tensor& logvar,
                                                const at::Tensor& eps) {
  return VaeReparameterizeBackwardFunction<NS>::apply(grad, logvar, eps)[0];
}

template <OpNamespace NS>
void register_kernels(torch::Library& m) {
  m.impl("vae_loss", &vae_loss_autograd<NS>);
  m.impl("vae_loss_backward", &vae_loss_backward_autograd<NS>);
  m.impl("vae_reparameterize", &vae_reparameterize_autograd<NS>);
  m.impl("vae_reparameterize_backward", &vae_reparameterize_backward_autograd<NS>);
}

template <OpNamespace NS>
LossResult vae_loss_autocast(const OptTensor& recon, const OptTensor& target, const OptTensor& recon_logvar,
                             const OptTensor& mu, const OptTensor& logvar, int64_t likelihood, double beta,
                             int64_t reduction) {
  return call_in_float32([&] {
    return loss_op<NS>().call(autocast_to_float(recon), autocast_to_float(target), autocast_to_float(recon_logvar),
                              autocast_to_float(mu), autocast_to_float(logvar), likelihood, beta, reduction);
  });
}

template <OpNamespace NS>
void register_autocast_kernels(torch::Library& m) {
  m.impl("vae_loss", &vae_loss_autocast<NS>);
}

}  // namespace

FASTGAN_AUTOGRAD_KERNELS(register_kernels)
FASTGAN_AUTOCAST_KERNELS(register_autocast_kernels)

}  // namespace fastgan
