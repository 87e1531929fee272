// Autograd of the finite-difference penalty ops, in C++ for every device, as the other
// families' (see penalty_autograd.cpp):
//
//   perturb:                            y = x + sigma eps  -> dy/dx = identity (eps is a constant)
//   finite_difference_penalty:          (dP/dp, dP/do) = (c q, -c q): finite_difference_penalty_backward
//   finite_difference_penalty_backward: bilinear in (u, p - o); along (v_p, v_o), with v = v_p - v_o:
//                                       d/du = 2 w / (B sigma^2) <p - o, v>,
//                                       d/dp = -d/do = c(u) v / sigma: the backward op itself at (v_p, v_o)
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "autograd_utils.h"

#include <tuple>
#include <utility>

namespace fastgan {
namespace {

using Pair = std::tuple<at::Tensor, at::Tensor>;

template <OpNamespace NS>
const auto& perturb_op() {
  static const auto op = family_op(NS, "perturb")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>();
  return op;
}

template <OpNamespace NS>
const auto& fd_penalty_op() {
  static const auto op = family_op(NS, "finite_difference_penalty")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, double)>();
  return op;
}

template <OpNamespace NS>
const auto& fd_penalty_backward_op() {
  static const auto op = family_op(NS, "finite_difference_penalty_backward")
          .typed<Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double, bool, bool)>();
  return op;
}

template <OpNamespace NS>
struct PerturbFunction : public FusedFunction<PerturbFunction<NS>> {
  static at::Tensor forward(FusedContext* ctx, const at::Tensor& x, const at::Tensor& noise, double sigma) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return perturb_op<NS>().call(x, noise, sigma);
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    return {ctx->needs_input_grad(0) ? grads[0] : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
struct FdPenaltyFunction : public FusedFunction<FdPenaltyFunction<NS>> {
  static at::Tensor forward(FusedContext* ctx, const at::Tensor& perturbed, const at::Tensor& outputs, double sigma,
                            double weight) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({perturbed, outputs});
    ctx->saved_data["sigma"] = sigma;
    ctx->saved_data["weight"] = weight;
    return fd_penalty_op<NS>().call(perturbed, outputs, sigma, weight);
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const bool need_p = ctx->needs_input_grad(0), need_o = ctx->needs_input_grad(1);
    if (!(need_p || need_o)) return variable_list(4);
    const variable_list saved = ctx->get_saved_variables();
    auto [grad_p, grad_o] =
        fd_penalty_backward_op<NS>().call(grads[0], saved[0], saved[1], ctx->saved_data["sigma"].toDouble(),
                                      ctx->saved_data["weight"].toDouble(), need_p, need_o);
    return {need_p ? grad_p : at::Tensor(), need_o ? grad_o : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
struct FdPenaltyBackwardFunction : public FusedFunction<FdPenaltyBackwardFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& grad_loss, const at::Tensor& perturbed,
                               const at::Tensor& outputs, double sigma, double weight, bool need_perturbed,
                               bool need_outputs) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({grad_loss, perturbed, outputs});
    ctx->saved_data["sigma"] = sigma;
    ctx->saved_data["weight"] = weight;
    ctx->saved_data["need_perturbed"] = need_perturbed;
    ctx->saved_data["need_outputs"] = need_outputs;
    auto [grad_p, grad_o] =
        fd_penalty_backward_op<NS>().call(grad_loss, perturbed, outputs, sigma, weight, need_perturbed, need_outputs);
    return {grad_p, grad_o};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &grad_loss = saved[0], &p = saved[1], &o = saved[2];
    const double sigma = ctx->saved_data["sigma"].toDouble(), weight = ctx->saved_data["weight"].toDouble();
    // An output that was not computed (need_* false) or not used has no cotangent: 0.
    const bool has_vp = ctx->saved_data["need_perturbed"].toBool() && grads[0].defined();
    const bool has_vo = ctx->saved_data["need_outputs"].toBool() && grads[1].defined();
    variable_list out(7);
    if (!(has_vp || has_vo)) return out;
    const at::Tensor vp = has_vp ? grads[0] : at::zeros_like(p);
    const at::Tensor vo = has_vo ? grads[1] : at::zeros_like(p);
    if (ctx->needs_input_grad(0)) {
      const auto acc = p.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
      const double scale = 2.0 * weight / (static_cast<double>(p.size(0)) * sigma * sigma);
      out[0] = p.to(acc).sub(o.to(acc)).mul(vp.to(acc).sub(vo.to(acc))).sum().mul(scale).to(grad_loss.scalar_type());
    }
    const bool need_p = ctx->needs_input_grad(1), need_o = ctx->needs_input_grad(2);
    if (need_p || need_o) {
      auto [d_p, d_o] = fd_penalty_backward_op<NS>().call(grad_loss, vp, vo, sigma, weight, need_p, need_o);
      if (need_p) out[1] = d_p;
      if (need_o) out[2] = d_o;
    }
    return out;
  }
};

template <OpNamespace NS>
at::Tensor perturb_autograd(const at::Tensor& x, const at::Tensor& noise, double sigma) {
  return PerturbFunction<NS>::apply(x, noise, sigma);
}

template <OpNamespace NS>
at::Tensor fd_penalty_autograd(const at::Tensor& perturbed, const at::Tensor& outputs, double sigma, double weight) {
  return FdPenaltyFunction<NS>::apply(perturbed, outputs, sigma, weight);
}

template <OpNamespace NS>
Pair fd_penalty_backward_autograd(const at::Tensor& grad_loss, const at::Tensor& perturbed, const at::Tensor& outputs,
                                  double sigma, double weight, bool need_perturbed, bool need_outputs) {
  variable_list out =
      FdPenaltyBackwardFunction<NS>::apply(grad_loss, perturbed, outputs, sigma, weight, need_perturbed, need_outputs);
  return {std::move(out[0]), std::move(out[1])};
}

template <OpNamespace NS>
void register_kernels(torch::Library& m) {
  m.impl("perturb", &perturb_autograd<NS>);
  m.impl("finite_difference_penalty", &fd_penalty_autograd<NS>);
  m.impl("finite_difference_penalty_backward", &fd_penalty_backward_autograd<NS>);
}

}  // namespace

FASTGAN_AUTOGRAD_KERNELS(register_kernels)

}  // namespace fastgan
