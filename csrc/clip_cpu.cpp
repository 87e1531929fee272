// CPU kernels of the weight-clipping family: clip_ and rmsprop_clip_.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "clip_host.h"
#include "clip_math.h"
#include "cpu_multi_tensor.h"
#include "cpu_types.h"
#include "tensor_lists.h"

namespace fastgan {
namespace {

// lo and hi are the bounds rounded to scalar_t, so the result (x, lo or hi) is exact in scalar_t.
template <typename scalar_t>
FASTGAN_CPU_CLONES void clip_span(scalar_t* __restrict__ x, int64_t n, acc_t<scalar_t> lo, acc_t<scalar_t> hi) {
  using T = acc_t<scalar_t>;
  for (int64_t j = 0; j < n; ++j) x[j] = static_cast<scalar_t>(clamp_keep_nan(static_cast<T>(x[j]), lo, hi));
}

template <bool CENTERED, bool MOMENTUM, typename scalar_t>
FASTGAN_CPU_CLONES void rmsprop_clip_span(scalar_t* __restrict__ p, const scalar_t* __restrict__ g,
                                          scalar_t* __restrict__ v, scalar_t* __restrict__ m,
                                          scalar_t* __restrict__ b, int64_t n,
                                          const RmspropClipHyper<acc_t<scalar_t>> h, acc_t<scalar_t> lr) {
  using T = acc_t<scalar_t>;
  // Unswitched by hand on has_weight_decay, which the element function tests: left to
  // GCC, the float16 loops stayed scalar (and `if (h.has_weight_decay) loop(h)` alone
  // made the float32 centered loop 2x slower).
  auto loop = [&](const RmspropClipHyper<T>& hyper) __attribute__((always_inline)) {
    for (int64_t j = 0; j < n; ++j) {
      T pj = static_cast<T>(p[j]);
      T vj = static_cast<T>(v[j]);
      T mj = CENTERED ? static_cast<T>(m[j]) : T(0);
      T bj = MOMENTUM ? static_cast<T>(b[j]) : T(0);
      rmsprop_clip_element<CENTERED, MOMENTUM>(pj, static_cast<T>(g[j]), vj, mj, bj, hyper, lr);
      p[j] = static_cast<scalar_t>(pj);
      v[j] = static_cast<scalar_t>(vj);
      if (CENTERED) m[j] = static_cast<scalar_t>(mj);
      if (MOMENTUM) b[j] = static_cast<scalar_t>(bj);
    }
  };
  RmspropClipHyper<T> hyper = h;  // has_weight_decay a constant in each copy of the loop
  if (h.has_weight_decay) {
    hyper.has_weight_decay = true;
    loop(hyper);
  } else {
    hyper.has_weight_decay = false;
    loop(hyper);
  }
}

void clip_cpu(at::TensorList tensors, double clip_value) {
  if (tensors.empty()) return;
  FlatTensorLists flat = flatten_tensor_lists({tensors}, {true}, {"tensors"}, "fastgan::clip_");
  FASTGAN_CPU_DISPATCH(tensors[0].scalar_type(), "clip_cpu", [&] {
    using T = acc_t<scalar_t>;
    const T hi = static_cast<T>(static_cast<scalar_t>(clip_value));
    const T lo = static_cast<T>(static_cast<scalar_t>(-clip_value));
    std::vector<scalar_t*> data;
    for (auto& t : flat.lists[0]) data.push_back(cpu_data<scalar_t>(t));
    cpu_for_each_chunk(flat.numels, [&](int64_t t, int64_t begin, int64_t end) {
      clip_span(data[t] + begin, end - begin, lo, hi);
    });
  });
  flat.finish();
  bump_versions(tensors);
}

template <bool CENTERED, bool MOMENTUM, typename scalar_t>
void rmsprop_clip_lists_cpu(FlatTensorLists& flat, const RmspropClipHyper<acc_t<scalar_t>>& h,
                            acc_t<scalar_t> lr) {
  const size_t n = flat.numels.size();
  std::vector<scalar_t*> param(n), square(n), gavg(n, nullptr), buf(n, nullptr);
  std::vector<const scalar_t*> grad(n);
  for (size_t i = 0; i < n; ++i) {
    param[i] = cpu_data<scalar_t>(flat.lists[0][i]);
    grad[i] = cpu_data<scalar_t>(flat.lists[1][i]);
    square[i] = cpu_data<scalar_t>(flat.lists[2][i]);
    if (CENTERED) gavg[i] = cpu_data<scalar_t>(flat.lists[3][i]);
    if (MOMENTUM) buf[i] = cpu_data<scalar_t>(flat.lists[3 + CENTERED][i]);
  }
  cpu_for_each_chunk(flat.numels, [&](int64_t t, int64_t begin, int64_t end) {
    rmsprop_clip_span<CENTERED, MOMENTUM>(param[t] + begin, grad[t] + begin, square[t] + begin,
                                          CENTERED ? gavg[t] + begin : nullptr,
                                          MOMENTUM ? buf[t] + begin : nullptr, end - begin, h, lr);
  });
}

void rmsprop_clip_cpu(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                      at::TensorList grad_avgs, at::TensorList momentum_buffers, double lr, double alpha,
                      double eps, double weight_decay, double momentum, bool centered, bool maximize,
                      double clip_value, const c10::optional<at::Tensor>& lr_tensor) {
  if (params.empty()) return;
  check_lr_tensor(lr_tensor, params[0]);
  FlatTensorLists flat = flatten_rmsprop_lists(params, grads, square_avgs, grad_avgs, momentum_buffers,
                                               centered, momentum > 0);
  const double lr_value = lr_tensor.has_value() ? lr_tensor->item<double>() : lr;
  FASTGAN_CPU_DISPATCH(params[0].scalar_type(), "rmsprop_clip_cpu", [&] {
    const auto h = make_rmsprop_clip_hyper<acc_t<scalar_t>>(alpha, eps, weight_decay, momentum, maximize,
                                                            clip_value);
    dispatch_rmsprop_variant(centered, momentum > 0, [&](auto is_centered, auto has_momentum) {
      rmsprop_clip_lists_cpu<decltype(is_centered)::value, decltype(has_momentum)::value, scalar_t>(
          flat, h, static_cast<acc_t<scalar_t>>(lr_value));
    });
  });
  flat.finish();
  bump_versions(params);
  bump_versions(square_avgs);
  if (centered) bump_versions(grad_avgs);
  if (momentum > 0) bump_versions(momentum_buffers);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("clip_", &clip_cpu);
  m.impl("rmsprop_clip_", &rmsprop_clip_cpu);
}

}  // namespace fastgan
