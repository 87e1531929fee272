// Autograd of the gradient-penalty ops (fastgan::interpolate, interpolate_backward,
// grad_norm_penalty, grad_norm_penalty_backward), in C++ for every device, as the
// other families' (see gan_loss_autograd.cpp): a Python autograd.Function costs more
// host time per call than the eager kernels it replaces.
//
//   interpolate:                x = e r + (1 - e) f      -> (e g, (1 - e) g): interpolate_backward
//   interpolate_backward:       linear in g; its own backward is interpolate itself
//   grad_norm_penalty:          dP/dg_b = u_b s coef(n_b) g_b: grad_norm_penalty_backward (norms are
//                               saved, not differentiated)
//   grad_norm_penalty_backward: second order of P: grad_norm_penalty_second_order, in ATen ops
//                               (CompositeImplicitAutograd, so it serves the Triton ops too and
//                               differentiates further)
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <tuple>
#include <utility>
#include <vector>

#include "autograd_utils.h"
#include "penalty_math.h"

namespace fastgan {
namespace {

using Pair = std::tuple<at::Tensor, at::Tensor>;

template <OpNamespace NS>
const auto& interpolate_op() {
  static const auto op = family_op(NS, "interpolate")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op;
}

template <OpNamespace NS>
const auto& interpolate_backward_op() {
  static const auto op = family_op(NS, "interpolate_backward")
                             .typed<Pair(const at::Tensor&, const at::Tensor&, bool, bool)>();
  return op;
}

template <OpNamespace NS>
const auto& penalty_op() {
  static const auto op = family_op(NS, "grad_norm_penalty")
                             .typed<Pair(const at::Tensor&, double, double, bool, int64_t)>();
  return op;
}

template <OpNamespace NS>
const auto& penalty_backward_op() {
  static const auto op = family_op(NS, "grad_norm_penalty_backward")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double, bool, int64_t)>();
  return op;
}

const auto& second_order_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastgan::grad_norm_penalty_second_order", "")
                             .typed<Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         double, double, bool, int64_t)>();
  return op;
}

void save_hyper(FusedContext* ctx, double center, double weight, bool one_sided, int64_t reduction) {
  ctx->saved_data["center"] = center;
  ctx->saved_data["weight"] = weight;
  ctx->saved_data["one_sided"] = one_sided;
  ctx->saved_data["reduction"] = reduction;
}

struct Hyper {
  double center, weight;
  bool one_sided;
  int64_t reduction;
};

Hyper load_hyper(FusedContext* ctx) {
  return {ctx->saved_data["center"].toDouble(), ctx->saved_data["weight"].toDouble(),
          ctx->saved_data["one_sided"].toBool(), ctx->saved_data["reduction"].toInt()};
}

template <OpNamespace NS>
struct InterpolateFunction : public FusedFunction<InterpolateFunction<NS>> {
  static at::Tensor forward(FusedContext* ctx, const at::Tensor& real, const at::Tensor& fake,
                            const at::Tensor& eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({eps});
    return interpolate_op<NS>().call(real, fake, eps);
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const bool need_real = ctx->needs_input_grad(0), need_fake = ctx->needs_input_grad(1);
    if (!(need_real || need_fake)) return {at::Tensor(), at::Tensor(), at::Tensor()};
    auto [grad_real, grad_fake] = call_in_backward(
        [&] { return interpolate_backward_op<NS>().call(grads[0], ctx->get_saved_variables()[0], need_real, need_fake); });
    return {need_real ? grad_real : at::Tensor(), need_fake ? grad_fake : at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
struct InterpolateBackwardFunction : public FusedFunction<InterpolateBackwardFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& grad, const at::Tensor& eps, bool need_real,
                               bool need_fake) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({eps});
    ctx->saved_data["need_real"] = need_real;
    ctx->saved_data["need_fake"] = need_fake;
    auto [grad_real, grad_fake] = interpolate_backward_op<NS>().call(grad, eps, need_real, need_fake);
    return {grad_real, grad_fake};
  }

  // d/dgrad <(e g, (1 - e) g), (u, v)> = e u + (1 - e) v: interpolate itself.
  static variable_list backward(FusedContext* ctx, variable_list grads) {
    if (!ctx->needs_input_grad(0)) return variable_list(4);
    const bool need_real = ctx->saved_data["need_real"].toBool(), need_fake = ctx->saved_data["need_fake"].toBool();
    const at::Tensor& like = need_real ? grads[0] : grads[1];
    const at::Tensor u = need_real ? grads[0] : at::zeros_like(like);
    const at::Tensor v = need_fake ? grads[1] : at::zeros_like(like);
    return {interpolate_op<NS>().call(u, v, ctx->get_saved_variables()[0]), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
struct PenaltyFunction : public FusedFunction<PenaltyFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& grads, double center, double weight,
                               bool one_sided, int64_t reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, norms] = penalty_op<NS>().call(grads, center, weight, one_sided, reduction);
    ctx->mark_non_differentiable({norms});
    ctx->save_for_backward({grads, norms});
    save_hyper(ctx, center, weight, one_sided, reduction);
    return {loss, norms};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Hyper h = load_hyper(ctx);
    return {call_in_backward([&] {
              return penalty_backward_op<NS>().call(grads[0], saved[0], saved[1], h.center, h.weight, h.one_sided,
                                                h.reduction);
            }),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
struct PenaltyBackwardFunction : public FusedFunction<PenaltyBackwardFunction<NS>> {
  static at::Tensor forward(FusedContext* ctx, const at::Tensor& grad_loss, const at::Tensor& grads,
                            const at::Tensor& norms, double center, double weight, bool one_sided, int64_t reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({grad_loss, grads, norms});
    save_hyper(ctx, center, weight, one_sided, reduction);
    return penalty_backward_op<NS>().call(grad_loss, grads, norms, center, weight, one_sided, reduction);
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Hyper h = load_hyper(ctx);
    auto [d_loss, d_grads] =
        second_order_op().call(saved[0], saved[1], saved[2], grads[0], h.center, h.weight, h.one_sided, h.reduction);
    return {ctx->needs_input_grad(0) ? d_loss : at::Tensor(), ctx->needs_input_grad(1) ? d_grads : at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Derivatives of dg_b = u_b s coef(n_b) g_b along v: w.r.t. u, s coef(n_b) <g_b, v_b>;
// w.r.t. g, u_b s (coef(n_b) v_b + coef'(n_b) <g_b, v_b> / n_b g_b), with
// coef(n) = 2 (n - c) / n and coef'(n) = 2c / n^2 (both 0 where P is flat; coef = 2 at
// c = 0). The latter is taken as u_b s (coef v_perp + 2 v_par), v split along
// ĝ = g_b / n_b (v_par = <ĝ, v_b> ĝ): the Hessian is 2 along ĝ and coef across it, so
// where c / n is large only v_perp's (rounded) part is scaled up. The sum form cancelled
// two terms of size c / n even for rows of one element, which lost c / n ulps (1e5 at a
// norm of 1e-5); those rows (ĝ = ±1, v_perp = 0) are now exact. In the accumulation type
// (coef' of a norm of 1e-4 overflows float16), rounded once to the storage type.
Pair penalty_second_order(const at::Tensor& grad_loss, const at::Tensor& grads, const at::Tensor& norms,
                          const at::Tensor& v, double center, double weight, bool one_sided, int64_t reduction) {
  const int64_t rows = grads.size(0);
  const auto dtype = grads.scalar_type(), acc = norms.scalar_type();
  std::vector<int64_t> shape(grads.dim(), 1);
  shape[0] = rows;
  const at::Tensor g = grads.to(acc), w = v.to(acc), n = norms;
  const double scale = reduction == kPenaltyMean ? weight / static_cast<double>(rows) : weight;
  const at::Tensor upstream = (reduction == kPenaltyNone ? grad_loss : grad_loss.expand({rows})).to(acc);
  const at::Tensor row_scale = upstream.mul(scale).reshape(shape);
  const at::Tensor gv = g.mul(w).reshape({rows, -1}).sum(1);
  if (center == 0.0) {  // coef = 2, coef' = 0
    at::Tensor d_loss = gv.mul(2.0 * scale);
    if (reduction != kPenaltyNone) d_loss = d_loss.sum();
    return {d_loss.to(dtype), row_scale.mul(w).mul(2.0).to(dtype)};
  }
  at::Tensor active = n.ne(0);
  if (one_sided) active = active.logical_and(n.gt(center));
  const at::Tensor safe_n = at::where(n.eq(0), at::ones_like(n), n);
  const at::Tensor coef = at::where(active, n.sub(center).mul(2.0).div(safe_n), at::zeros_like(n));
  at::Tensor d_loss = coef.mul(gv).mul(scale);
  if (reduction != kPenaltyNone) d_loss = d_loss.sum();
  const at::Tensor unit = g.div(safe_n.reshape(shape));
  // <ĝ, v> summed from ĝ, not gv / n: for a row of one element that is exactly ±v, so v_perp is 0.
  const at::Tensor along = unit.mul(w).reshape({rows, -1}).sum(1).reshape(shape);
  const at::Tensor v_par = unit.mul(along);
  const at::Tensor par_factor = active.to(acc).mul(2.0).reshape(shape);
  const at::Tensor d_grads = row_scale.mul(coef.reshape(shape).mul(w.sub(v_par)).add(par_factor.mul(v_par)));
  return {d_loss.to(dtype), d_grads.to(dtype)};
}

template <OpNamespace NS>
at::Tensor interpolate_autograd(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& eps) {
  return InterpolateFunction<NS>::apply(real, fake, eps);
}

template <OpNamespace NS>
Pair interpolate_backward_autograd(const at::Tensor& grad, const at::Tensor& eps, bool need_real, bool need_fake) {
  variable_list out = InterpolateBackwardFunction<NS>::apply(grad, eps, need_real, need_fake);
  return {std::move(out[0]), std::move(out[1])};
}

template <OpNamespace NS>
Pair penalty_autograd(const at::Tensor& grads, double center, double weight, bool one_sided, int64_t reduction) {
  variable_list out = PenaltyFunction<NS>::apply(grads, center, weight, one_sided, reduction);
  return {std::move(out[0]), std::move(out[1])};
}

template <OpNamespace NS>
at::Tensor penalty_backward_autograd(const at::Tensor& grad_loss, const at::Tensor& grads, const at::Tensor& norms,
                                     double center, double weight, bool one_sided, int64_t reduction) {
  return PenaltyBackwardFunction<NS>::apply(grad_loss, grads, norms, center, weight, one_sided, reduction);
}

template <OpNamespace NS>
void register_kernels(torch::Library& m) {
  m.impl("interpolate", &interpolate_autograd<NS>);
  m.impl("interpolate_backward", &interpolate_backward_autograd<NS>);
  m.impl("grad_norm_penalty", &penalty_autograd<NS>);
  m.impl("grad_norm_penalty_backward", &penalty_backward_autograd<NS>);
}

}  // namespace

// One op for both namespaces: ATen ops only, so it runs wherever its inputs are.
TORCH_LIBRARY_FRAGMENT(fastgan, m) {
  m.def(
      "grad_norm_penalty_second_order(Tensor grad_loss, Tensor grads, Tensor norms, Tensor v, float center, "
      "float weight, bool one_sided, int reduction) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastgan, CompositeImplicitAutograd, m) {
  m.impl("grad_norm_penalty_second_order", &penalty_second_order);
}

FASTGAN_AUTOGRAD_KERNELS(register_kernels)

}  // namespace fastgan
