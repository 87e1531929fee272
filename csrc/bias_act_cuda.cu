// CUDA kernels of the fused bias + activation op: bias_act, bias_act_grad and
// bias_act_grad2, one launch each, plus a reduction for bias_act_grad's bias gradient
// (math in bias_act_math.h, layout and checks in bias_act_host.h). One elementwise
// kernel template serves all three: each thread moves 16-byte vectors of every input
// and output, and finds the bias of the vector's elements with one division (a cursor
// then steps through channels), so NCHW, channels-last and (B, C) run at the same speed.
#include <ATen/Dispatch.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "bias_act_host.h"
#include "cuda_utils.cuh"

namespace fastgan {
namespace bias_act {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20;  // grid-stride beyond this

// Pointers of one launch. A null output is not written (bias_act_grad2's d_dy when
// not needed); a null bias means no bias.
template <typename scalar_t, int NIN, int NOUT>
struct Args {
  const scalar_t* in[NIN];
  scalar_t* out[NOUT];
  const scalar_t* bias;
  bool aligned;  // every input and output is 16-byte aligned: vector path
};

// Channel of consecutive elements o, o + 1, ...: one division, then increments.
template <typename index_t>
struct ChannelCursor {
  index_t r, c;
  const index_t inner, channels;
  __device__ __forceinline__ ChannelCursor(index_t o, index_t inner_, index_t channels_)
      : inner(inner_), channels(channels_) {
    const index_t q = o / inner;
    r = o - q * inner;
    c = q % channels;
  }
  __device__ __forceinline__ void next() {
    if (++r == inner) {
      r = 0;
      if (++c == channels) c = 0;
    }
  }
};

template <typename scalar_t, int NIN, int NOUT, typename index_t, typename Op>
__global__ void __launch_bounds__(kThreads)
    bias_act_kernel(const Args<scalar_t, NIN, NOUT> a, index_t n, index_t inner, index_t channels, const Op op) {
  using T = acc_t<scalar_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  using Vec = AlignedVector<scalar_t, VEC>;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  const index_t first = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const index_t n_vec = a.aligned ? n / VEC : 0;
  for (index_t v = first; v < n_vec; v += stride) {
    Vec in[NIN];
#pragma unroll
    for (int l = 0; l < NIN; ++l) in[l] = reinterpret_cast<const Vec*>(a.in[l])[v];
    T bias[VEC];
    if (a.bias != nullptr) {
      ChannelCursor<index_t> cursor(v * VEC, inner, channels);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        bias[k] = static_cast<T>(a.bias[cursor.c]);
        cursor.next();
      }
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) bias[k] = T(0);
    }
    Vec out[NOUT];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      T x[NIN], y[NOUT];
#pragma unroll
      for (int l = 0; l < NIN; ++l) x[l] = static_cast<T>(in[l].v[k]);
      op(x, bias[k], y);
#pragma unroll
      for (int m = 0; m < NOUT; ++m) out[m].v[k] = static_cast<scalar_t>(y[m]);
    }
#pragma unroll
    for (int m = 0; m < NOUT; ++m)
      if (a.out[m] != nullptr) reinterpret_cast<Vec*>(a.out[m])[v] = out[m];
  }
  // The elements after the last whole vector (all of them when unaligned).
  for (index_t o = n_vec * VEC + first; o < n; o += stride) {
    T x[NIN], y[NOUT];
#pragma unroll
    for (int l = 0; l < NIN; ++l) x[l] = static_cast<T>(a.in[l][o]);
    const T bias = a.bias != nullptr ? static_cast<T>(a.bias[(o / inner) % channels]) : T(0);
    op(x, bias, y);
#pragma unroll
    for (int m = 0; m < NOUT; ++m)
      if (a.out[m] != nullptr) a.out[m][o] = static_cast<scalar_t>(y[m]);
  }
}

template <int ACT, typename T>
struct ForwardOp {
  Params<T> p;
  __device__ __forceinline__ void operator()(const T (&x)[1], T bias, T (&y)[1]) const {
    y[0] = forward_element<ACT>(x[0], bias, p);
  }
};

// Inputs: dy, then ref (absent for linear).
template <int ACT, bool FROM_Y, int NIN, typename T>
struct GradOp {
  Params<T> p;
  __device__ __forceinline__ void operator()(const T (&x)[NIN], T bias, T (&y)[1]) const {
    y[0] = grad_element<ACT, FROM_Y>(x[0], x[NIN - 1], bias, p);
  }
};

// Inputs: ddx, dy, ref; outputs: d_dy, d_ref.
template <int ACT, bool FROM_Y, typename T>
struct Grad2Op {
  Params<T> p;
  __device__ __forceinline__ void operator()(const T (&x)[3], T bias, T (&y)[2]) const {
    grad2_element<ACT, FROM_Y>(x[0], x[1], x[2], bias, p, y[0], y[1]);
  }
};

template <typename scalar_t, int NIN, int NOUT, typename Op>
void launch(Args<scalar_t, NIN, NOUT> a, const FlatLayout& layout, const Op& op) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  const int64_t n = layout.n;
  bool aligned = true;
  for (int l = 0; l < NIN; ++l) aligned = aligned && aligned16(a.in[l]);
  for (int m = 0; m < NOUT; ++m) aligned = aligned && aligned16(a.out[m]);
  a.aligned = aligned;
  const int64_t work = aligned ? std::max<int64_t>(n / VEC, n % VEC) : n;
  const int64_t blocks = std::min<int64_t>(std::max<int64_t>(1, (work + kThreads - 1) / kThreads), kMaxBlocks);
  auto stream = c10::cuda::getCurrentCUDAStream();
  // 32-bit indices (cheaper divisions) while every index and index + stride fits.
  if (n + blocks * kThreads * VEC < std::numeric_limits<int32_t>::max()) {
    bias_act_kernel<scalar_t, NIN, NOUT, int32_t><<<blocks, kThreads, 0, stream>>>(
        a, static_cast<int32_t>(n), static_cast<int32_t>(layout.inner), static_cast<int32_t>(layout.channels), op);
  } else {
    bias_act_kernel<scalar_t, NIN, NOUT, int64_t><<<blocks, kThreads, 0, stream>>>(a, n, layout.inner,
                                                                                   layout.channels, op);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
const scalar_t* bias_ptr(const Launch& l) {
  return l.bias.defined() ? l.bias.data_ptr<scalar_t>() : nullptr;
}

at::Tensor bias_act_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t act, double alpha,
                         double gain, int64_t dim) {
  const c10::cuda::CUDAGuard guard(x.device());
  Launch l = prepare_forward(x, b, act, dim);
  if (l.layout.n == 0) return l.out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cuda", [&] {
    using T = acc_t<scalar_t>;
    const auto p = make_params<T>(alpha, gain);
    Args<scalar_t, 1, 1> a{{l.in0.data_ptr<scalar_t>()}, {l.out.data_ptr<scalar_t>()}, bias_ptr<scalar_t>(l), false};
    dispatch_act(static_cast<int>(act), [&](auto act_c) {
      launch(a, l.layout, ForwardOp<decltype(act_c)::value, T>{p});
    });
  });
  return l.out;
}

// The bias gradient db: dx summed over every dimension but the channel one (one reduction).
void sum_to_bias(at::Tensor& db, const at::Tensor& dx, const FlatLayout& layout) {
  if (dx.dim() == 1) {
    db.copy_(dx);
    return;
  }
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < dx.dim(); ++d)
    if (d != layout.dim) dims.push_back(d);
  at::sum_out(db, dx, dims);
}

std::tuple<at::Tensor, at::Tensor> bias_act_grad_cuda(const at::Tensor& dy, const c10::optional<at::Tensor>& x,
                                                      const c10::optional<at::Tensor>& b,
                                                      const c10::optional<at::Tensor>& y, int64_t act, double alpha,
                                                      double gain, int64_t dim, bool need_db) {
  const c10::cuda::CUDAGuard guard(dy.device());
  Launch l = prepare_grad(dy, x, b, y, act, alpha, gain, dim, need_db);
  if (l.layout.n == 0) {
    if (need_db) l.out2.zero_();
    return {l.out, l.out2};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "bias_act_grad_cuda", [&] {
    using T = acc_t<scalar_t>;
    const auto p = make_params<T>(alpha, gain);
    scalar_t* dx = l.out.data_ptr<scalar_t>();
    const scalar_t* dyp = l.in0.data_ptr<scalar_t>();
    dispatch_act(static_cast<int>(act), [&](auto act_c) {
      constexpr int ACT = decltype(act_c)::value;
      if constexpr (ACT == kLinear) {
        launch(Args<scalar_t, 1, 1>{{dyp}, {dx}, nullptr, false}, l.layout, GradOp<ACT, false, 1, T>{p});
      } else {
        const scalar_t* ref = l.in1.data_ptr<scalar_t>();
        if constexpr (ACT == kRelu || ACT == kLrelu || ACT == kTanh || ACT == kSigmoid) {
          if (l.ref == Ref::kY) {
            launch(Args<scalar_t, 2, 1>{{dyp, ref}, {dx}, nullptr, false}, l.layout, GradOp<ACT, true, 2, T>{p});
            return;
          }
        }
        launch(Args<scalar_t, 2, 1>{{dyp, ref}, {dx}, bias_ptr<scalar_t>(l), false}, l.layout,
               GradOp<ACT, false, 2, T>{p});
      }
    });
  });
  if (need_db) sum_to_bias(l.out2, l.out, l.layout);
  return {l.out, l.out2};
}

std::tuple<at::Tensor, at::Tensor> bias_act_grad2_cuda(const at::Tensor& ddx, const at::Tensor& dy,
                                                       const c10::optional<at::Tensor>& x,
                                                       const c10::optional<at::Tensor>& b,
                                                       const c10::optional<at::Tensor>& y, int64_t act,
                                                       double alpha, double gain, int64_t dim, bool need_ddy) {
  const c10::cuda::CUDAGuard guard(ddx.device());
  Launch l = prepare_grad2(ddx, dy, x, b, y, act, alpha, gain, dim, need_ddy);
  if (l.layout.n == 0) return {l.out, l.out2};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ddx.scalar_type(), "bias_act_grad2_cuda", [&] {
    using T = acc_t<scalar_t>;
    const auto p = make_params<T>(alpha, gain);
    Args<scalar_t, 3, 2> a{{l.in0.data_ptr<scalar_t>(), l.in1.data_ptr<scalar_t>(), l.in2.data_ptr<scalar_t>()},
                           {need_ddy ? l.out.data_ptr<scalar_t>() : nullptr, l.out2.data_ptr<scalar_t>()},
                           nullptr,
                           false};
    dispatch_act(static_cast<int>(act), [&](auto act_c) {
      constexpr int ACT = decltype(act_c)::value;
      if constexpr (has_second_order(ACT)) {
        if constexpr (ACT == kTanh || ACT == kSigmoid) {
          if (l.ref == Ref::kY) {
            launch(a, l.layout, Grad2Op<ACT, true, T>{p});
            return;
          }
        }
        a.bias = bias_ptr<scalar_t>(l);
        launch(a, l.layout, Grad2Op<ACT, false, T>{p});
      }
    });
  });
  return {l.out, l.out2};
}

}  // namespace
}  // namespace bias_act

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("bias_act", &bias_act::bias_act_cuda);
  m.impl("bias_act_grad", &bias_act::bias_act_grad_cuda);
  m.impl("bias_act_grad2", &bias_act::bias_act_grad2_cuda);
}

}  // namespace fastgan
