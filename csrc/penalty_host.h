// Checks of the gradient-penalty ops' arguments, shared by the CPU and CUDA launchers:
// a direct torch.ops.fastgan call with bad arguments gets an error naming the argument,
// never an out-of-bounds read (the Python front end validates user input first;
// fastgan/ops/penalty.py makes the same checks for the fake and Triton ops).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "penalty_math.h"

namespace fastgan {

inline void check_penalty_batch(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.layout() == c10::kStrided && at::isFloatingType(t.scalar_type()), "fastgan::", op, ": ", name,
              " must be a dense floating-point tensor, got ", t.scalar_type());
  TORCH_CHECK(t.dim() >= 1 && t.size(0) >= 1 && t.numel() >= 1, "fastgan::", op, ": ", name,
              " must have shape (B, ...) with B >= 1 and elements per sample, got ", t.sizes());
}

inline void check_penalty_like(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name,
                               const char* like_name) {
  TORCH_CHECK(t.sizes().equals(like.sizes()), "fastgan::", op, ": ", name, " has shape ", t.sizes(), " but ",
              like_name, " has ", like.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "fastgan::", op, ": ", name, " has dtype ", t.scalar_type(),
              " but ", like_name, " has ", like.scalar_type());
  TORCH_CHECK(t.device() == like.device(), "fastgan::", op, ": ", name, " is on ", t.device(), " but ", like_name,
              " is on ", like.device());
}

// A (B,) tensor in the accumulation type of `batch`, on its device.
inline void check_penalty_per_row(const at::Tensor& t, const at::Tensor& batch, const char* op, const char* name) {
  const auto acc = batch.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(t.dim() == 1 && t.size(0) == batch.size(0), "fastgan::", op, ": ", name, " must have shape (B,) = (",
              batch.size(0), ",), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == acc, "fastgan::", op, ": ", name, " must have dtype ", acc,
              " (the accumulation type of ", batch.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == batch.device(), "fastgan::", op, ": ", name, " is on ", t.device(),
              " but the batch is on ", batch.device());
}

inline void check_penalty_reduction(int64_t reduction, const char* op) {
  TORCH_CHECK(reduction == kPenaltyNone || reduction == kPenaltyMean || reduction == kPenaltySum, "fastgan::", op,
              ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
}

inline void check_interpolate_args(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& eps) {
  check_penalty_batch(real, "interpolate", "real");
  check_penalty_like(fake, real, "interpolate", "fake", "real");
  check_penalty_per_row(eps, real, "interpolate", "eps");
}

inline void check_interpolate_backward_args(const at::Tensor& grad, const at::Tensor& eps) {
  check_penalty_batch(grad, "interpolate_backward", "grad");
  check_penalty_per_row(eps, grad, "interpolate_backward", "eps");
}

inline void check_grad_norm_penalty_args(const at::Tensor& grads, int64_t reduction) {
  check_penalty_batch(grads, "grad_norm_penalty", "grads");
  check_penalty_reduction(reduction, "grad_norm_penalty");
}

inline void check_grad_norm_penalty_backward_args(const at::Tensor& grad_loss, const at::Tensor& grads,
                                                  const at::Tensor& norms, int64_t reduction) {
  const char* op = "grad_norm_penalty_backward";
  check_penalty_batch(grads, op, "grads");
  check_penalty_reduction(reduction, op);
  check_penalty_per_row(norms, grads, op, "norms");
  const int64_t want = reduction == kPenaltyNone ? grads.size(0) : 1;
  TORCH_CHECK(grad_loss.numel() == want && (reduction == kPenaltyNone ? grad_loss.dim() == 1 : grad_loss.dim() == 0),
              "fastgan::", op, ": grad_loss must have the loss's shape (", reduction == kPenaltyNone ? "(B,)" : "()",
              "), got ", grad_loss.sizes());
  TORCH_CHECK(grad_loss.scalar_type() == grads.scalar_type() && grad_loss.device() == grads.device(), "fastgan::", op,
              ": grad_loss must be ", grads.scalar_type(), " on ", grads.device(), ", got ", grad_loss.scalar_type(),
              " on ", grad_loss.device());
}

}  // namespace fastgan
