// Per-element math of weight clipping and the clipped RMSprop step, shared by the
// CPU and CUDA launchers (so CPU tests check the arithmetic the GPU runs).
#pragma once

#include "common.h"

namespace fastgan {

// Hyper-parameters of one RMSprop step, converted once on the host to the
// accumulation type. `grad_sign` is -1 when maximising. The learning rate is an
// argument of rmsprop_clip_element: the CUDA kernel may read it from device memory.
template <typename T>
struct RmspropClipHyper {
  T alpha;
  T one_minus_alpha;
  T eps;
  T weight_decay;
  T momentum;
  T grad_sign;
  T clip;
  bool has_weight_decay;
};

// torch.lerp's formula (ATen/native/Lerp.h), which RMSprop's grad_avg.lerp_ uses.
template <typename T>
FASTGAN_HD T lerp_like_torch(T self, T end, T weight) {
  return (weight < T(0.5) && weight > T(-0.5)) ? self + weight * (end - self)
                                               : end - (end - self) * (T(1) - weight);
}

// One element of torch.optim.RMSprop's single-tensor step followed by clamp_(-c, c):
//   g   = sign * grad (+ weight_decay * param)
//   v   = alpha * v + (1 - alpha) * g^2
//   m   = lerp(m, g, 1 - alpha)                       (centered)
//   den = sqrt(v - m^2 if centered else v) + eps
//   b   = momentum * b + g / den; param -= lr * b     (momentum > 0)
//   param -= lr * g / den                             (otherwise)
//   param = clamp(param, -c, c)
template <bool CENTERED, bool MOMENTUM, typename T>
FASTGAN_HD void rmsprop_clip_element(T& param, T grad, T& square_avg, T& grad_avg, T& momentum_buffer,
                                     const RmspropClipHyper<T>& h, T lr) {
  T g = h.grad_sign * grad;
  if (h.has_weight_decay) g = g + h.weight_decay * param;
  square_avg = square_avg * h.alpha + h.one_minus_alpha * (g * g);
  T den;
  if (CENTERED) {
    grad_avg = lerp_like_torch(grad_avg, g, h.one_minus_alpha);
    den = fg_sqrt(square_avg - grad_avg * grad_avg) + h.eps;
  } else {
    den = fg_sqrt(square_avg) + h.eps;
  }
  T p;
  if (MOMENTUM) {
    momentum_buffer = momentum_buffer * h.momentum + g / den;
    p = param - lr * momentum_buffer;
  } else {
    p = param - lr * (g / den);
  }
  param = clamp_keep_nan(p, -h.clip, h.clip);
}

template <typename T>
RmspropClipHyper<T> make_rmsprop_clip_hyper(double alpha, double eps, double weight_decay, double momentum,
                                            bool maximize, double clip_value) {
  RmspropClipHyper<T> h;
  h.alpha = static_cast<T>(alpha);
  h.one_minus_alpha = static_cast<T>(1.0 - alpha);
  h.eps = static_cast<T>(eps);
  h.weight_decay = static_cast<T>(weight_decay);
  h.momentum = static_cast<T>(momentum);
  h.grad_sign = maximize ? T(-1) : T(1);
  h.clip = static_cast<T>(clip_value);
  h.has_weight_decay = weight_decay != 0.0;
  return h;
}

}  // namespace fastgan
