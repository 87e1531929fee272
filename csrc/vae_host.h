// Host-side pieces shared by the CPU and CUDA launchers of the VAE ops: the checks a
// direct torch.ops call gets (the Python front end validates user input once, with
// messages naming the argument; fastgan/ops/vae.py makes the same checks for the fake
// and Triton ops), and input preparation.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

#include "empty.h"
#include "vae_math.h"

namespace fastgan {

// Checks `t` against `like` (the op's first tensor): dense floating point, like's dtype
// and device, shape (B, ...) with B >= 1 and elements per sample.
inline void check_vae_input(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name) {
  TORCH_CHECK(t.layout() == c10::kStrided && at::isFloatingType(t.scalar_type()), "fastgan::", op, ": ", name,
              " must be a dense floating-point tensor, got ", t.scalar_type());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "fastgan::", op, ": ", name, " has dtype ", t.scalar_type(),
              " but the first input has ", like.scalar_type());
  TORCH_CHECK(t.device() == like.device(), "fastgan::", op, ": ", name, " is on ", t.device(),
              " but the first input is on ", like.device());
  TORCH_CHECK(t.dim() >= 1 && t.size(0) >= 1 && t.numel() >= 1, "fastgan::", op, ": ", name,
              " must have shape (B, ...) with B >= 1 and elements per sample, got ", t.sizes());
}

// `t`, checked as check_vae_input does, as a contiguous tensor.
inline at::Tensor vae_input(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name) {
  check_vae_input(t, like, op, name);
  return t.contiguous();
}

inline void vae_same_shape(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name,
                           const char* like_name) {
  TORCH_CHECK(t.sizes().equals(like.sizes()), "fastgan::", op, ": ", name, " has shape ", t.sizes(), " but ",
              like_name, " has ", like.sizes());
}

inline void check_vae_reduction(int64_t reduction, const char* op) {
  TORCH_CHECK(reduction == kVaeNone || reduction == kVaeMean || reduction == kVaeSum, "fastgan::", op,
              ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
}

// The inputs of vae_loss ready for a kernel. Per sample b:
//   loss_b = sum_j t(recon, target[, recon_logvar])_bj + beta * sum_k k(mu, logvar)_bk
// reduced over b (none: (B,); mean: / B; sum), with the gradients scaled likewise.
struct VaeLossProblem {
  at::Tensor recon, target, recon_logvar, mu, logvar;  // contiguous; undefined when absent
  bool has_recon = false, has_recon_logvar = false, has_kl = false;
  int likelihood = kVaeBernoulli, reduction = kVaeMean;
  double beta = 1.0, scale = 1.0;
  int64_t rows = 0, recon_len = 0, latent_len = 0;
  // Outputs, allocated here: the loss and the saved gradients ((0,) for an absent input).
  at::Tensor loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad;
};

inline VaeLossProblem prepare_vae_loss(const std::optional<at::Tensor>& recon,
                                       const std::optional<at::Tensor>& target,
                                       const std::optional<at::Tensor>& recon_logvar,
                                       const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& logvar,
                                       int64_t likelihood, double beta, int64_t reduction) {
  const char* op = "vae_loss";
  check_vae_reduction(reduction, op);
  TORCH_CHECK(likelihood >= 0 && likelihood < kVaeLikelihoodCount, "fastgan::", op,
              ": likelihood must be 0 (bernoulli) or 1 (gaussian), got ", likelihood);
  TORCH_CHECK(std::isfinite(beta) && beta >= 0.0, "fastgan::", op, ": beta must be finite and >= 0, got ", beta);
  TORCH_CHECK(recon.has_value() == target.has_value(), "fastgan::", op,
              ": recon and target must be given together");
  TORCH_CHECK(mu.has_value() == logvar.has_value(), "fastgan::", op, ": mu and logvar must be given together");
  TORCH_CHECK(recon.has_value() || mu.has_value(), "fastgan::", op, ": needs recon and target, or mu and logvar");
  TORCH_CHECK(!recon_logvar.has_value() || (recon.has_value() && likelihood == kVaeGaussian), "fastgan::", op,
              ": recon_logvar needs recon and the gaussian likelihood");
  const at::Tensor& first = recon.has_value() ? *recon : *mu;
  VaeLossProblem p;
  p.likelihood = static_cast<int>(likelihood);
  p.reduction = static_cast<int>(reduction);
  p.beta = beta;
  p.rows = first.dim() >= 1 ? first.size(0) : 0;
  if (recon.has_value()) {
    p.has_recon = true;
    p.recon = vae_input(*recon, first, op, "recon");
    p.target = vae_input(*target, first, op, "target");
    vae_same_shape(p.target, p.recon, op, "target", "recon");
    if (recon_logvar.has_value()) {
      p.has_recon_logvar = true;
      p.recon_logvar = vae_input(*recon_logvar, first, op, "recon_logvar");
      vae_same_shape(p.recon_logvar, p.recon, op, "recon_logvar", "recon");
    }
    p.recon_len = p.recon.numel() / p.rows;
  }
  if (mu.has_value()) {
    p.has_kl = true;
    p.mu = vae_input(*mu, first, op, "mu");
    p.logvar = vae_input(*logvar, first, op, "logvar");
    vae_same_shape(p.logvar, p.mu, op, "logvar", "mu");
    TORCH_CHECK(p.mu.size(0) == p.rows, "fastgan::", op, ": mu has ", p.mu.size(0), " samples but recon has ",
                p.rows);
    p.latent_len = p.mu.numel() / p.rows;
  }
  p.scale = vae_batch_scale(p.rows, reduction);
  const auto options = first.options();
  p.loss = reduction == kVaeNone ? new_empty({p.rows}, options) : new_empty({}, options);
  auto saved = [&](bool present, const at::Tensor& like) {
    return present ? new_empty(like.sizes(), options) : new_empty({0}, options);
  };
  p.recon_grad = saved(p.has_recon, p.recon);
  p.recon_logvar_grad = saved(p.has_recon_logvar, p.recon_logvar);
  p.mu_grad = saved(p.has_kl, p.mu);
  p.logvar_grad = saved(p.has_kl, p.logvar);
  return p;
}

// vae_loss_backward: out_i = grad_loss[b] * saved_i[b, ...] for the four saved gradients
// (grad_loss of shape (B,) for reduction none, else one element); (0,) stays (0,).
struct VaeLossBackwardProblem {
  at::Tensor grad, saved[4], out[4];
  int64_t rows = 0;
  bool per_row = false;
};

inline VaeLossBackwardProblem prepare_vae_loss_backward(const at::Tensor& grad_loss, const at::Tensor& recon_grad,
                                                        const at::Tensor& recon_logvar_grad,
                                                        const at::Tensor& mu_grad, const at::Tensor& logvar_grad,
                                                        int64_t reduction) {
  const char* op = "vae_loss_backward";
  check_vae_reduction(reduction, op);
  static const char* const kNames[4] = {"recon_grad", "recon_logvar_grad", "mu_grad", "logvar_grad"};
  const at::Tensor* saved[4] = {&recon_grad, &recon_logvar_grad, &mu_grad, &logvar_grad};
  VaeLossBackwardProblem p;
  p.per_row = reduction == kVaeNone;
  p.rows = -1;
  for (int i = 0; i < 4; ++i) {
    const at::Tensor& s = *saved[i];
    TORCH_CHECK(s.layout() == c10::kStrided && at::isFloatingType(s.scalar_type()), "fastgan::", op, ": ",
                kNames[i], " must be a dense floating-point tensor, got ", s.scalar_type());
    TORCH_CHECK(s.scalar_type() == grad_loss.scalar_type() && s.device() == grad_loss.device(), "fastgan::", op,
                ": ", kNames[i], " must be ", grad_loss.scalar_type(), " on ", grad_loss.device(), ", got ",
                s.scalar_type(), " on ", s.device());
    const bool absent = s.dim() == 1 && s.size(0) == 0;
    if (!absent) {
      TORCH_CHECK(s.dim() >= 1 && s.size(0) >= 1, "fastgan::", op, ": ", kNames[i],
                  " must be (0,) or have shape (B, ...) with B >= 1, got ", s.sizes());
      TORCH_CHECK(p.rows < 0 || s.size(0) == p.rows, "fastgan::", op, ": ", kNames[i], " has ", s.size(0),
                  " samples but another saved gradient has ", p.rows);
      p.rows = s.size(0);
    }
    p.saved[i] = s.contiguous();
  }
  TORCH_CHECK(p.rows >= 1, "fastgan::", op, ": every saved gradient is empty");
  TORCH_CHECK(p.per_row ? (grad_loss.dim() == 1 && grad_loss.size(0) == p.rows)
                        : (grad_loss.dim() == 0 && grad_loss.numel() == 1),
              "fastgan::", op, ": grad_loss must have the loss's shape (", p.per_row ? "(B,)" : "()", " with B = ",
              p.rows, "), got ", grad_loss.sizes());
  p.grad = grad_loss.contiguous();
  for (int i = 0; i < 4; ++i) p.out[i] = new_empty(p.saved[i].sizes(), p.saved[i].options());
  return p;
}

// vae_reparameterize(mu, logvar, eps) and its backward(grad, logvar, eps): all one shape.
inline void check_vae_reparameterize(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, const char* op,
                                     const char* a_name, const char* b_name, const char* c_name) {
  check_vae_input(a, a, op, a_name);
  check_vae_input(b, a, op, b_name);
  check_vae_input(c, a, op, c_name);
  vae_same_shape(b, a, op, b_name, a_name);
  vae_same_shape(c, a, op, c_name, a_name);
}

}  // namespace fastgan
