// Host-side pieces shared by the CPU and CUDA launchers of rmsprop_clip_.
#pragma once

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
