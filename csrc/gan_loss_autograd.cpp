// Autograd of the GAN-loss ops (fastgan::gan_loss, gan_loss_backward,
// gan_loss_pointwise), in C++ for every device.
//
// At small batch sizes a training step is bound by host-side overhead, not by the
// GPU: torch.library.register_autograd's Python autograd.Function costs about as
// much per call as a dozen eager kernels, so these kernels are C++ like eager
// PyTorch's own, and serve the fastgan_triton ops too (csrc/namespaces.h).
//
//   gan_loss:           d/dx = grad_loss * x_grad            (gan_loss_backward: one launch);
//                       x_grad, y_grad are saved, not differentiable outputs (an output's
//                       autograd bookkeeping costs host time on every call). With
//                       create_graph the backward is grad_loss * s_x t_x'(x) from
//                       gan_loss_pointwise, differentiable in both: its own backward
//                       gives the double backward, s_x t_x''(x) (0 for a linear term)
//   gan_loss_backward:  (g * a, g * b) -> d/dg = sum(ga * a) + sum(gb * b), d/da = g * ga, d/db = g * gb
//                       where a linear side has a = s t' (a constant, not saved) and no d/da;
//                       its t'' is 0, so gan_loss's double backward adds nothing for it
//   gan_loss_pointwise: grad * t^(k)(l) -> d/dl = g * grad * t^(k+1)(l), d/dgrad = g * t^(k)(l)
//   relativistic_loss:  d/dx = grad_loss * x_grad, d/dy = grad_loss * y_grad (gan_loss_backward
//                       with a non-linear term code: a scaling of the complete saved gradients),
//                       + H [gx; gy] for gradients gx, gy that reached x_grad, y_grad (double
//                       backward), H the Hessian, from softplus'' = sigmoid' (gan_loss_pointwise
//                       of kSoftplus, order 2) at the differences z:
//     pair:    w = s sigmoid'(y - x) (gx - gy);  d/dx += w, d/dy -= w
//     average: u = s_x (sum(gy)/ny - gx), v = s_y (gy - sum(gx)/nx),
//              a = u sigmoid'(x - mean y), b = v sigmoid'(y - mean x);
//              d/dx += -a - sum(b)/nx,  d/dy += b + sum(a)/ny
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <utility>

#include "autocast.h"
#include "autograd_utils.h"
#include "gan_loss_math.h"

namespace fastgan {
namespace {

using LossResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using PairResult = std::tuple<at::Tensor, at::Tensor>;

template <OpNamespace NS>
const auto& loss_op() {
  static const auto op = family_op(NS, "gan_loss")
                             .typed<LossResult(const at::Tensor&, const std::optional<at::Tensor>&, int64_t,
                                               int64_t, int64_t)>();
  return op;
}

template <OpNamespace NS>
const auto& backward_op() {
  static const auto op = family_op(NS, "gan_loss_backward")
                             .typed<PairResult(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const std::optional<at::Tensor>&, int64_t,
                                               int64_t, int64_t)>();
  return op;
}

std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

template <OpNamespace NS>
const auto& pointwise_op() {
  static const auto op =
      family_op(NS, "gan_loss_pointwise")
          .typed<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&, int64_t, int64_t)>();
  return op;
}

template <OpNamespace NS>
const auto& relativistic_op() {
  static const auto op = family_op(NS, "relativistic_loss")
                             .typed<LossResult(const at::Tensor&, const at::Tensor&, int64_t, int64_t)>();
  return op;
}

template <OpNamespace NS>
struct GanLossFunction : public FusedFunction<GanLossFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& y,
                               int64_t x_term, int64_t y_term, int64_t reduction) {
    at::Tensor loss, x_grad, y_grad;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(loss, x_grad, y_grad) = loss_op<NS>().call(x, y, x_term, y_term, reduction);
    }
    ctx->mark_non_differentiable({x_grad, y_grad});
    ctx->set_materialize_grads(false);
    ctx->saved_data["x_term"] = x_term;
    ctx->saved_data["y_term"] = y_term;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["has_y"] = y.has_value();
    ctx->save_for_backward({x, y.has_value() ? *y : at::Tensor(), x_grad, y_grad});
    return {loss, x_grad, y_grad};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const bool has_y = ctx->saved_data["has_y"].toBool();
    at::Tensor dx, dy;
    if (grads[0].defined()) {
      const variable_list saved = ctx->get_saved_variables();
      const at::Tensor &x = saved[0], &y = saved[1], &x_grad = saved[2], &y_grad = saved[3];
      const int64_t x_term = ctx->saved_data["x_term"].toInt(), y_term = ctx->saved_data["y_term"].toInt();
      const int64_t reduction = ctx->saved_data["reduction"].toInt();
      if (at::GradMode::is_enabled()) {
        // create_graph: grad_loss * s t'(l), differentiable w.r.t. the logits and grad_loss.
        auto side = [&](const at::Tensor& logits, int64_t term) {
          at::Tensor d = pointwise_op<NS>().call(logits, grads[0].expand_symint(logits.sym_sizes()), term, 1);
          return reduction == kReductionMean ? d.div(c10::Scalar(logits.sym_numel())) : d;  // symbolic under tracing
        };
        dx = side(x, x_term);
        if (has_y) dy = side(y, y_term);
      } else {
        std::tie(dx, dy) = call_in_backward(
            [&] { return backward_op<NS>().call(grads[0], x_grad, y_grad, x, optional_of(y), x_term, y_term, reduction); });
      }
    }
    return {dx, has_y ? dy : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
struct GanLossBackwardFunction : public FusedFunction<GanLossBackwardFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& grad, const at::Tensor& x_grad,
                               const at::Tensor& y_grad, const at::Tensor& x, const std::optional<at::Tensor>& y,
                               int64_t x_term, int64_t y_term, int64_t reduction) {
    at::Tensor x_out, y_out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(x_out, y_out) = backward_op<NS>().call(grad, x_grad, y_grad, x, y, x_term, y_term, reduction);
    }
    ctx->set_materialize_grads(false);
    ctx->saved_data["x_term"] = x_term;
    ctx->saved_data["y_term"] = y_term;
    ctx->saved_data["mean"] = reduction == kReductionMean;
    ctx->save_for_backward({grad, x_grad, y_grad, x, y.has_value() ? *y : at::Tensor()});
    return {x_out, y_out};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &grad = saved[0], &x_grad = saved[1], &y_grad = saved[2], &x = saved[3], &y = saved[4];
    const int x_term = static_cast<int>(ctx->saved_data["x_term"].toInt());
    const int y_term = static_cast<int>(ctx->saved_data["y_term"].toInt());
    const bool x_linear = gan_term_is_linear(x_term), y_linear = gan_term_is_linear(y_term);
    const bool mean = ctx->saved_data["mean"].toBool();
    at::Tensor d_grad, d_x_grad, d_y_grad;
    if (ctx->needs_input_grad(0)) {
      const auto acc = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
      // sum(g * a) for a side's a = saved gradient, or the constant s * t' of a linear term;
      // the products in acc (exact for float16/bfloat16 factors): rounded to the logits'
      // dtype, two sides' large products that cancel lost 7% of a bfloat16 RaGAN sum.
      auto dot = [&](const at::Tensor& g, const at::Tensor& a, const at::Tensor& logits, int term) {
        if (!gan_term_is_linear(term)) return g.to(acc).mul(a).sum();
        at::Tensor sum = gan_term_slope(term) < 0 ? g.sum(acc).neg() : g.sum(acc);
        return mean ? sum.div(c10::Scalar(logits.sym_numel())) : sum;  // symbolic under tracing
      };
      d_grad = at::zeros({}, grad.options().dtype(acc));
      if (grads[0].defined()) d_grad = d_grad.add(dot(grads[0], x_grad, x, x_term));
      if (grads[1].defined()) d_grad = d_grad.add(dot(grads[1], y_grad, y, y_term));
      d_grad = d_grad.to(grad.scalar_type()).reshape(grad.sizes());
    }
    if (grads[0].defined() && ctx->needs_input_grad(1) && !x_linear) d_x_grad = grads[0].mul(grad);
    if (grads[1].defined() && ctx->needs_input_grad(2) && !y_linear) d_y_grad = grads[1].mul(grad);
    return {d_grad, d_x_grad, d_y_grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
struct GanPointwiseFunction : public FusedFunction<GanPointwiseFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& logits, const std::optional<at::Tensor>& grad,
                               int64_t term, int64_t order) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = pointwise_op<NS>().call(logits, grad, term, order);
    }
    ctx->saved_data["term"] = term;
    ctx->saved_data["order"] = order;
    ctx->save_for_backward({logits, grad.has_value() ? *grad : at::Tensor()});
    return {out};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &grad = saved[1];
    const int64_t term = ctx->saved_data["term"].toInt(), order = ctx->saved_data["order"].toInt();
    const at::Tensor& g = grads[0];
    at::Tensor d_logits, d_grad;
    if (ctx->needs_input_grad(0)) {
      TORCH_CHECK(order < 2, "fastgan GAN losses: third derivatives are not implemented");
      d_logits = pointwise_op<NS>().call(logits, grad.defined() ? g.mul(grad) : g, term, order + 1);
    }
    if (grad.defined() && ctx->needs_input_grad(1)) d_grad = pointwise_op<NS>().call(logits, g, term, order);
    return {d_logits, d_grad, at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
struct RelativisticLossFunction : public FusedFunction<RelativisticLossFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& x, const at::Tensor& y, int64_t kind,
                               int64_t reduction) {
    at::Tensor loss, x_grad, y_grad;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(loss, x_grad, y_grad) = relativistic_op<NS>().call(x, y, kind, reduction);
    }
    ctx->set_materialize_grads(false);  // first-order backward gets no gradient for x_grad, y_grad
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["reduction"] = reduction;
    ctx->save_for_backward({x, y, x_grad, y_grad});
    return {loss, x_grad, y_grad};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &y = saved[1], &x_grad = saved[2], &y_grad = saved[3];
    const int64_t kind = ctx->saved_data["kind"].toInt(), reduction = ctx->saved_data["reduction"].toInt();
    const bool mean = reduction == kReductionMean;
    at::Tensor dx, dy;
    if (grads[0].defined())
      std::tie(dx, dy) = backward_op<NS>().call(grads[0], x_grad, y_grad, x, y, kSoftplusNeg, kSoftplusNeg, reduction);
    if (grads[1].defined() || grads[2].defined()) {
      auto add = [](at::Tensor& d, const at::Tensor& v) { d = d.defined() ? d.add(v) : v; };
      const at::Tensor gx = grads[1].defined() ? grads[1] : at::zeros_like(x);
      const at::Tensor gy = grads[2].defined() ? grads[2] : at::zeros_like(y);
      // s * softplus''(z) * g; the divisions are symbolic under tracing
      auto curvature = [&](const at::Tensor& z, const at::Tensor& g, const at::Tensor& side) {
        at::Tensor v = pointwise_op<NS>().call(z, g, kSoftplus, 2);
        return mean ? v.div(c10::Scalar(side.sym_numel())) : v;
      };
      if (kind == kRelativisticPair) {
        const at::Tensor w = curvature(y.sub(x), gx.sub(gy), x);
        add(dx, w);
        add(dy, w.neg());
      } else {
        const c10::Scalar nx(x.sym_numel()), ny(y.sym_numel());
        const at::Tensor a = curvature(x.sub(y.mean()), gy.sum().div(ny).sub(gx), x);
        const at::Tensor b = curvature(y.sub(x.mean()), gy.sub(gx.sum().div(nx)), y);
        add(dx, a.neg().sub(b.sum().div(nx)));
        add(dy, b.add(a.sum().div(ny)));
      }
    }
    return {dx, dy, at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
LossResult gan_loss_autograd(const at::Tensor& x, const std::optional<at::Tensor>& y, int64_t x_term,
                             int64_t y_term, int64_t reduction) {
  variable_list out = GanLossFunction<NS>::apply(x, y, x_term, y_term, reduction);
  return {std::move(out[0]), std::move(out[1]), std::move(out[2])};
}

template <OpNamespace NS>
PairResult gan_loss_backward_autograd(const at::Tensor& grad, const at::Tensor& x_grad, const at::Tensor& y_grad,
                                      const at::Tensor& x, const std::optional<at::Tensor>& y, int64_t x_term,
                                      int64_t y_term, int64_t reduction) {
  variable_list out = GanLossBackwardFunction<NS>::apply(grad, x_grad, y_grad, x, y, x_term, y_term, reduction);
  return {std::move(out[0]), std::move(out[1])};
}

template <OpNamespace NS>
LossResult relativistic_loss_autograd(const at::Tensor& x, const at::Tensor& y, int64_t kind, int64_t reduction) {
  variable_list out = RelativisticLossFunction<NS>::apply(x, y, kind, reduction);
  return {std::move(out[0]), std::move(out[1]), std::move(out[2])};
}

template <OpNamespace NS>
at::Tensor gan_loss_pointwise_autograd(const at::Tensor& logits, const std::optional<at::Tensor>& grad, int64_t term,
                                       int64_t order) {
  return GanPointwiseFunction<NS>::apply(logits, grad, term, order)[0];
}

template <OpNamespace NS>
void register_kernels(torch::Library& m) {
  m.impl("gan_loss", &gan_loss_autograd<NS>);
  m.impl("gan_loss_backward", &gan_loss_backward_autograd<NS>);
  m.impl("gan_loss_pointwise", &gan_loss_pointwise_autograd<NS>);
  m.impl("relativistic_loss", &relativistic_loss_autograd<NS>);
}

template <OpNamespace NS>
LossResult gan_loss_autocast(const at::Tensor& x, const std::optional<at::Tensor>& y, int64_t x_term, int64_t y_term,
                             int64_t reduction) {
  return call_in_float32(
      [&] { return loss_op<NS>().call(autocast_to_float(x), autocast_to_float(y), x_term, y_term, reduction); });
}

template <OpNamespace NS>
LossResult relativistic_loss_autocast(const at::Tensor& x, const at::Tensor& y, int64_t kind, int64_t reduction) {
  return call_in_float32(
      [&] { return relativistic_op<NS>().call(autocast_to_float(x), autocast_to_float(y), kind, reduction); });
}

template <OpNamespace NS>
at::Tensor gan_loss_pointwise_autocast(const at::Tensor& logits, const std::optional<at::Tensor>& grad, int64_t term,
                                       int64_t order) {
  return call_in_float32(
      [&] { return pointwise_op<NS>().call(autocast_to_float(logits), autocast_to_float(grad), term, order); });
}

template <OpNamespace NS>
void register_autocast_kernels(torch::Library& m) {
  m.impl("gan_loss", &gan_loss_autocast<NS>);
  m.impl("gan_loss_pointwise", &gan_loss_pointwise_autocast<NS>);
  m.impl("relativistic_loss", &relativistic_loss_autocast<NS>);
}

}  // namespace

FASTGAN_AUTOGRAD_KERNELS(register_kernels)
FASTGAN_AUTOCAST_KERNELS(register_autocast_kernels)

}  // namespace fastgan
