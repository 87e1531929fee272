// CUDA kernels of the weight-clipping family: clip_ and rmsprop_clip_, each one
// multi-tensor launch per (device, dtype) group.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "clip_host.h"
#include "clip_math.h"
#include "multi_tensor_apply.cuh"

namespace fastgan {
namespace {

template <typename T>
struct ClipOp {
  T lo, hi;
  __device__ __forceinline__ void operator()(T (&x)[1]) const { x[0] = clamp_keep_nan(x[0], lo, hi); }
};

// Slots: 0 param, 1 grad, 2 square_avg, then grad_avg (centered), then momentum_buffer.
// The learning rate is `lr`, or `*lr_ptr` (the device's lr_tensor) when lr_ptr is set.
template <bool CENTERED, bool MOMENTUM, typename T>
struct RmspropClipOp {
  static constexpr int kDepth = 3 + CENTERED + MOMENTUM;
  RmspropClipHyper<T> h;
  T lr;
  const T* lr_ptr;
  __device__ __forceinline__ void operator()(T (&x)[kDepth]) const {
    T unused = T(0);
    T& grad_avg = CENTERED ? x[3] : unused;
    T& buffer = MOMENTUM ? x[kDepth - 1] : unused;
    rmsprop_clip_element<CENTERED, MOMENTUM>(x[0], x[1], x[2], grad_avg, buffer, h, lr_ptr ? __ldg(lr_ptr) : lr);
  }
};

void clip_cuda(at::TensorList tensors, double clip_value) {
  if (tensors.empty()) return;
  FlatTensorLists flat = flatten_tensor_lists({tensors}, {true}, {"tensors"}, "fastgan::clip_");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensors[0].scalar_type(), "clip_cuda", [&] {
    using T = acc_t<scalar_t>;
    // Bounds rounded to the storage type first, exactly as Tensor.clamp_ rounds them.
    const ClipOp<T> op{static_cast<T>(static_cast<scalar_t>(-clip_value)),
                       static_cast<T>(static_cast<scalar_t>(clip_value))};
    multi_tensor_elementwise<scalar_t, 1, 0x1>(flat, op);
  });
  flat.finish();
  bump_versions(tensors);
}

template <bool CENTERED, bool MOMENTUM, typename scalar_t>
void rmsprop_clip_launch(const FlatTensorLists& flat, const RmspropClipHyper<acc_t<scalar_t>>& h,
                         acc_t<scalar_t> lr, const acc_t<scalar_t>* lr_ptr) {
  using Op = RmspropClipOp<CENTERED, MOMENTUM, acc_t<scalar_t>>;
  // Every slot but the gradient (slot 1) is written.
  constexpr unsigned mask = ((1u << Op::kDepth) - 1u) & ~0x2u;
  multi_tensor_elementwise<scalar_t, Op::kDepth, mask>(flat, Op{h, lr, lr_ptr});
}

void rmsprop_clip_cuda(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                       at::TensorList grad_avgs, at::TensorList momentum_buffers, double lr, double alpha,
                       double eps, double weight_decay, double momentum, bool centered, bool maximize,
                       double clip_value, const c10::optional<at::Tensor>& lr_tensor) {
  if (params.empty()) return;
  check_lr_tensor(lr_tensor, params[0]);
  FlatTensorLists flat = flatten_rmsprop_lists(params, grads, square_avgs, grad_avgs, momentum_buffers,
                                               centered, momentum > 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[0].scalar_type(), "rmsprop_clip_cuda", [&] {
    using T = acc_t<scalar_t>;
    const auto h = make_rmsprop_clip_hyper<T>(alpha, eps, weight_decay, momentum, maximize, clip_value);
    // The kernel reads lr_tensor on the device (no host synchronisation; graph-safe),
    // converted to the compute type first when it has another dtype.
    at::Tensor lr_device;
    if (lr_tensor.has_value()) lr_device = lr_tensor->reshape({}).to(c10::CppTypeToScalarType<T>::value);
    const T* lr_ptr = lr_device.defined() ? lr_device.data_ptr<T>() : nullptr;
    dispatch_rmsprop_variant(centered, momentum > 0, [&](auto is_centered, auto has_momentum) {
      rmsprop_clip_launch<decltype(is_centered)::value, decltype(has_momentum)::value, scalar_t>(
          flat, h, static_cast<T>(lr), lr_ptr);
    });
  });
  flat.finish();
  bump_versions(params);
  bump_versions(square_avgs);
  if (centered) bump_versions(grad_avgs);
  if (momentum > 0) bump_versions(momentum_buffers);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("clip_", &clip_cuda);
  m.impl("rmsprop_clip_", &rmsprop_clip_cuda);
}

}  // namespace fastgan
