// Host-side pieces shared by the CPU and CUDA launchers of rmsprop_clip_.
#pragma once

#include <c10/util/Optional.h>

#include <type_traits>
#include <vector>

#include "tensor_lists.h"

namespace fastgan {

// Lists in kernel slot order: param, grad, square_avg, [grad_avg], [momentum_buffer].
inline FlatTensorLists flatten_rmsprop_lists(at::TensorList params, at::TensorList grads,
                                             at::TensorList square_avgs, at::TensorList grad_avgs,
                                             at::TensorList momentum_buffers, bool centered, bool use_momentum) {
  std::vector<at::TensorList> lists{params, grads, square_avgs};
  std::vector<bool> written{true, false, true};
  std::vector<const char*> names{"params", "grads", "square_avgs"};
  if (centered) lists.push_back(grad_avgs), written.push_back(true), names.push_back("grad_avgs");
  if (use_momentum) lists.push_back(momentum_buffers), written.push_back(true), names.push_back("momentum_buffers");
  return flatten_tensor_lists(lists, written, names, "fastgan::rmsprop_clip_");
}

// lr_tensor, when given: one floating-point element on the device of the params.
inline void check_lr_tensor(const c10::optional<at::Tensor>& lr_tensor, const at::Tensor& param) {
  if (!lr_tensor.has_value()) return;
  const at::Tensor& lr = *lr_tensor;
  TORCH_CHECK(at::isFloatingType(lr.scalar_type()), "fastgan::rmsprop_clip_: lr_tensor must be floating point, got ",
              lr.scalar_type());
  TORCH_CHECK(lr.numel() == 1, "fastgan::rmsprop_clip_: lr_tensor must have one element, got ", lr.numel());
  TORCH_CHECK(lr.device() == param.device(), "fastgan::rmsprop_clip_: lr_tensor is on ", lr.device(),
              " but params are on ", param.device());
}

// Calls fn(std::integral_constant<bool, centered>, std::integral_constant<bool, momentum>).
template <typename Fn>
void dispatch_rmsprop_variant(bool centered, bool use_momentum, const Fn& fn) {
  using T = std::true_type;
  using F = std::false_type;
  if (centered && use_momentum) fn(T{}, T{});
  else if (centered) fn(T{}, F{});
  else if (use_momentum) fn(F{}, T{});
  else fn(F{}, F{});
}

}  // namespace fastgan
