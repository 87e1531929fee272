// Checks of the finite-difference penalty ops' arguments, shared by the CPU and CUDA
// launchers (fastgan/ops/approximate_penalty.py makes the same checks for the fake and
// Triton ops): a direct torch.ops.fastgan call gets an error naming the argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "penalty_host.h"

namespace fastgan {

inline void check_fd_sigma(double sigma, const char* op) {
  TORCH_CHECK(std::isfinite(sigma) && sigma > 0.0, "fastgan::", op, ": sigma must be finite and > 0, got ", sigma);
}

inline void check_perturb_args(const at::Tensor& x, const at::Tensor& noise, double sigma) {
  check_penalty_batch(x, "perturb", "x");
  check_penalty_like(noise, x, "perturb", "noise", "x");
  check_fd_sigma(sigma, "perturb");
}

inline void check_fd_penalty_args(const at::Tensor& perturbed, const at::Tensor& outputs, double sigma, double weight,
                                  const char* op) {
  check_penalty_batch(perturbed, op, "perturbed");
  check_penalty_like(outputs, perturbed, op, "outputs", "perturbed");
  check_fd_sigma(sigma, op);
  TORCH_CHECK(std::isfinite(weight) && weight >= 0.0, "fastgan::", op, ": weight must be finite and >= 0, got ",
              weight);
}

inline void check_fd_penalty_backward_args(const at::Tensor& grad_loss, const at::Tensor& perturbed,
                                           const at::Tensor& outputs, double sigma, double weight) {
  const char* op = "finite_difference_penalty_backward";
  check_fd_penalty_args(perturbed, outputs, sigma, weight, op);
  TORCH_CHECK(grad_loss.dim() == 0, "fastgan::", op, ": grad_loss must have the loss's shape (), got ",
              grad_loss.sizes());
  TORCH_CHECK(grad_loss.scalar_type() == perturbed.scalar_type() && grad_loss.device() == perturbed.device(),
              "fastgan::", op, ": grad_loss must be ", perturbed.scalar_type(), " on ", perturbed.device(), ", got ",
              grad_loss.scalar_type(), " on ", grad_loss.device());
}

}  // namespace fastgan
