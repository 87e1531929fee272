// Host-side pieces shared by the CPU and CUDA launchers of the GAN-loss ops:
// the light checks a direct torch.ops call gets (the Python front-end validates
// user input once, with messages naming the argument), and input preparation.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "empty.h"
#include "gan_loss_math.h"

namespace fastgan {

inline void check_gan_term(int64_t term, const char* op, const char* name) {
  TORCH_CHECK(term >= 0 && term < kGanTermCount, op, ": ", name, " must be a GAN loss term code in [0, ",
              int(kGanTermCount), "), got ", term);
}

// `t` as a flat contiguous tensor, after checking it against `like` (the first logits).
inline at::Tensor gan_loss_input(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name) {
  TORCH_CHECK(t.layout() == c10::kStrided, op, ": ", name, " must be a dense tensor");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name, " must be a floating-point tensor, got ",
              t.scalar_type());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but the logits have ", like.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ", t.device(), " but the logits are on ",
              like.device());
  return t.contiguous();
}

// The inputs of gan_loss ready for a kernel: loss = x_scale * sum t_x(x) + y_scale * sum t_y(y).
struct GanLossProblem {
  at::Tensor x, y;  // contiguous; y is an empty tensor when the op got none
  int x_term, y_term;
  double x_scale, y_scale;
  at::Tensor loss, x_grad, y_grad;  // outputs, allocated here, written by the kernel
};

// The terms and reduction gan_loss and its backward share.
inline void check_gan_loss_args(int64_t x_term, int64_t y_term, int64_t reduction, const char* op) {
  check_gan_term(x_term, op, "x_term");
  check_gan_term(y_term, op, "y_term");
  TORCH_CHECK(reduction == kReductionMean || reduction == kReductionSum, op,
              ": reduction must be 1 (mean) or 2 (sum), got ", reduction);
}

// s of a side of n logits: 1/n for the mean, 1 for the sum.
inline double gan_side_scale(int64_t n, int64_t reduction) {
  return reduction == kReductionMean ? 1.0 / static_cast<double>(n) : 1.0;
}

inline GanLossProblem prepare_gan_loss(const at::Tensor& x, const std::optional<at::Tensor>& y, int64_t x_term,
                                       int64_t y_term, int64_t reduction) {
  const char* op = "fastgan::gan_loss";
  check_gan_loss_args(x_term, y_term, reduction, op);
  GanLossProblem p;
  p.x = gan_loss_input(x, x, op, "x");
  p.y = y.has_value() ? gan_loss_input(*y, x, op, "y") : new_empty({0}, x.options());
  p.x_term = static_cast<int>(x_term);
  p.y_term = static_cast<int>(y_term);
  // The mean of an empty side is 0 * inf = NaN, as torch's mean of an empty tensor;
  // an absent side has scale 0 and adds nothing.
  p.x_scale = gan_side_scale(p.x.numel(), reduction);
  p.y_scale = y.has_value() ? gan_side_scale(p.y.numel(), reduction) : 0.0;
  p.loss = new_empty({}, x.options());
  // A linear side saves no gradient (its t' is constant): a 0-element tensor.
  auto saved = [&](const at::Tensor& t, int term) {
    return gan_term_is_linear(term) ? new_empty({0}, x.options()) : new_empty(t.sizes(), x.options());
  };
  p.x_grad = saved(x, p.x_term);
  p.y_grad = saved(p.y, p.y_term);
  return p;
}

// relativistic_loss(x, y, kind, reduction): the loss and both complete logits-gradients
// (its backward is gan_loss_backward's scaling of them). x and y are not optional.
struct RelativisticLossProblem {
  at::Tensor x, y;  // contiguous
  int kind;
  double x_scale, y_scale;  // s of each side (pair: both are s over the pairs)
  at::Tensor loss, x_grad, y_grad;  // outputs, allocated here, written by the kernels
};

inline RelativisticLossProblem prepare_relativistic_loss(const at::Tensor& x, const at::Tensor& y, int64_t kind,
                                                         int64_t reduction) {
  const char* op = "fastgan::relativistic_loss";
  TORCH_CHECK(kind >= 0 && kind < kRelativisticKindCount, op, ": kind must be a relativistic loss kind code in [0, ",
              int(kRelativisticKindCount), "), got ", kind);
  TORCH_CHECK(reduction == kReductionMean || reduction == kReductionSum, op,
              ": reduction must be 1 (mean) or 2 (sum), got ", reduction);
  RelativisticLossProblem p;
  p.x = gan_loss_input(x, x, op, "x");
  p.y = gan_loss_input(y, x, op, "y");
  p.kind = static_cast<int>(kind);
  TORCH_CHECK(p.kind != kRelativisticPair || y.sizes().equals(x.sizes()), op, ": y has shape ", y.sizes(),
              " but x has shape ", x.sizes(), "; kind 0 (pair) needs one shape");
  p.x_scale = gan_side_scale(p.x.numel(), reduction);
  p.y_scale = gan_side_scale(p.y.numel(), reduction);
  p.loss = new_empty({}, x.options());
  p.x_grad = new_empty(x.sizes(), x.options());
  p.y_grad = new_empty(y.sizes(), x.options());
  return p;
}

// gan_loss_backward: grad * x_grad for a saved gradient, grad * s_x * t_x' for a linear
// side (likewise y), with grad the loss's one-element gradient.
struct GanLossBackwardProblem {
  at::Tensor grad, x_grad, y_grad, x_out, y_out;
  bool x_linear, y_linear;
  double x_const, y_const;  // s * t' of a linear side
};

inline GanLossBackwardProblem prepare_gan_loss_backward(const at::Tensor& grad, const at::Tensor& x_grad,
                                                        const at::Tensor& y_grad, const at::Tensor& x,
                                                        const std::optional<at::Tensor>& y, int64_t x_term,
                                                        int64_t y_term, int64_t reduction) {
  const char* op = "fastgan::gan_loss_backward";
  check_gan_loss_args(x_term, y_term, reduction, op);
  TORCH_CHECK(grad.numel() == 1, op, ": grad must have one element (the loss's gradient), got shape ",
              grad.sizes());
  GanLossBackwardProblem p;
  p.x_grad = gan_loss_input(x_grad, x, op, "x_grad");
  p.y_grad = gan_loss_input(y_grad, x, op, "y_grad");
  p.grad = gan_loss_input(grad, x, op, "grad");
  // The shape of a side's saved gradient: the logits', or {0} for a linear term.
  static constexpr int64_t kNone[] = {0};
  auto side = [&](const at::Tensor& logits, const at::Tensor& saved, int64_t term, const char* name, bool& linear,
                  double& constant) {
    linear = gan_term_is_linear(static_cast<int>(term));
    constant = linear ? gan_term_slope(static_cast<int>(term)) * gan_side_scale(logits.numel(), reduction) : 0.0;
    const at::IntArrayRef want = linear ? at::IntArrayRef(kNone) : logits.sizes();
    TORCH_CHECK(saved.sizes().equals(want), op, ": ", name, " has shape ", saved.sizes(), " but expected ", want,
                linear ? " (a linear term saves no gradient)" : "");
  };
  side(x, p.x_grad, x_term, "x_grad", p.x_linear, p.x_const);
  if (y.has_value()) {
    side(*y, p.y_grad, y_term, "y_grad", p.y_linear, p.y_const);
  } else {  // no y: y_grad and y_out are empty
    TORCH_CHECK(p.y_grad.numel() == 0, op, ": y_grad must be empty when y is absent");
    p.y_linear = false;
    p.y_const = 0.0;
  }
  p.x_out = new_empty(x.sizes(), x.options());
  p.y_out = new_empty(y.has_value() ? y->sizes() : p.y_grad.sizes(), x.options());
  return p;
}

// gan_loss_pointwise: out = grad * t^(order)(logits) (grad = 1 when absent).
struct GanPointwiseProblem {
  at::Tensor logits, grad, out;  // grad undefined when absent
  int term, order;
};

inline GanPointwiseProblem prepare_gan_pointwise(const at::Tensor& logits, const std::optional<at::Tensor>& grad,
                                                 int64_t term, int64_t order) {
  const char* op = "fastgan::gan_loss_pointwise";
  check_gan_term(term, op, "term");
  TORCH_CHECK(order >= 0 && order <= 2, op, ": order must be 0, 1 or 2, got ", order);
  GanPointwiseProblem p;
  p.logits = gan_loss_input(logits, logits, op, "logits");
  if (grad.has_value()) {
    TORCH_CHECK(grad->sizes().equals(logits.sizes()), op, ": grad has shape ", grad->sizes(),
                " but the logits have shape ", logits.sizes());
    p.grad = gan_loss_input(*grad, logits, op, "grad");
  }
  p.term = static_cast<int>(term);
  p.order = static_cast<int>(order);
  p.out = new_empty(logits.sizes(), logits.options());
  return p;
}

}  // namespace fastgan
