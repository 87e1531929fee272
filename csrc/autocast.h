// The losses under torch.autocast: float32, as torch's own losses
// (binary_cross_entropy_with_logits, mse_loss, and softplus on CUDA are on autocast's
// float32 list). A loss op saves its logits-gradient s * t'(l) (s = 1/N for the mean)
// before the upstream gradient arrives; in float16 that product underflows where a
// GradScaler's scale, multiplied in first by eager's chain, would have kept it. So
// under autocast the loss ops take float32 copies of float16 and bfloat16 inputs (the
// casts are differentiable: the inputs' gradients come back in their own dtype, rounded
// once, after the scale) and return a float32 loss.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <optional>

namespace fastgan {

inline at::Tensor autocast_to_float(const at::Tensor& t) {
  const auto type = t.scalar_type();
  return type == at::kHalf || type == at::kBFloat16 ? t.to(at::kFloat) : t;
}

inline std::optional<at::Tensor> autocast_to_float(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? std::optional<at::Tensor>(autocast_to_float(*t)) : t;
}

// An autocast kernel: `call` runs with autocast off, on float32 copies of the half inputs.
template <typename Call>
auto call_in_float32(const Call& call) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  return call();
}

}  // namespace fastgan
