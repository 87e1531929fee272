// CUDA kernels of the GAN-loss family: each op is one launch.
//
// gan_loss: block b reads the b-th strip of x and of y (16-byte vector loads and
// stores when aligned), writes x_grad = s_x t_x'(x) and y_grad (not for a linear
// term, whose t' is constant: gan_loss_backward writes it), and reduces its two
// sums in a fixed order (warp shuffles, then one warp). With one block that
// block writes the loss. Otherwise each block stores its partials and takes a
// ticket (threadfence + atomicAdd on a counter); the last block sums the
// partials in a fixed order, writes the loss and resets the counter to zero.
// The counter and partials live in a workspace cached per (device, stream),
// zeroed once at creation: no memset launch and no host sync, and the loss is
// deterministic for a given size and GPU. Under CUDA-graph capture each loss gets
// its own workspace (see stream_workspace in cuda_utils.cuh).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "gan_loss_host.h"
#include "gan_loss_math.h"
#include "multi_tensor_apply.cuh"

namespace fastgan {
namespace {

constexpr int kLossThreads = 512;
constexpr int kLossMaxBlocks = 1024;             // partial sums per side in the workspace
constexpr int64_t kLossElementsPerBlock = 8192;  // 16 per thread before a second block pays off
constexpr int64_t kStripAlign = 16;              // strips start at multiples of 16 elements (>= one vector)

// Blocks of `Kernel` that fit on the GPU at once (occupancy query, cached per
// kernel and device): a grid of at most that many runs in one wave.
template <auto Kernel>
int64_t resident_blocks(int device) {
  static int per_sm[64] = {0};
  int& slot = per_sm[device >= 0 && device < 64 ? device : 0];
  if (slot == 0) {
    int blocks = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, Kernel, kLossThreads, 0));
    slot = std::max(blocks, 1);
  }
  return static_cast<int64_t>(slot) * multiprocessor_count(device);
}

// Strips of x and y per block: at most one wave of blocks (every block then runs
// its strip at once), strips are multiples of kStripAlign.
struct Strips {
  int blocks;
  int64_t x, y;
};

Strips make_strips(int64_t nx, int64_t ny, int64_t resident) {
  const int64_t wanted = (nx + ny + kLossElementsPerBlock - 1) / kLossElementsPerBlock;
  Strips s;
  s.blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({wanted, resident, kLossMaxBlocks})));
  auto strip = [&](int64_t n) {
    const int64_t per = (n + s.blocks - 1) / s.blocks;
    return (per + kStripAlign - 1) / kStripAlign * kStripAlign;
  };
  s.x = strip(nx);
  s.y = strip(ny);
  return s;
}

bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Sum over the block in a fixed order; the result is valid in thread 0.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < (blockDim.x >> 5) ? shared[threadIdx.x] : T(0);
  if (warp == 0) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// This thread's share of sum t(x[i]) over [begin, end), writing g[i] = scale * t'(x[i])
// unless TERM is linear.
template <int TERM, typename scalar_t>
__device__ __forceinline__ acc_t<scalar_t> term_sum_range(const scalar_t* __restrict__ x, scalar_t* __restrict__ g,
                                                          int64_t begin, int64_t end, acc_t<scalar_t> scale,
                                                          bool aligned) {
  using T = acc_t<scalar_t>;
  constexpr bool kSave = !gan_term_is_linear(TERM);
  constexpr int VEC = 16 / sizeof(scalar_t);
  using Vec = AlignedVector<scalar_t, VEC>;
  T sum = T(0);
  const int64_t n_vec = aligned ? (end - begin) / VEC : 0;
  const Vec* xv = reinterpret_cast<const Vec*>(x + begin);
  Vec* gv = reinterpret_cast<Vec*>(g + begin);
#pragma unroll 2
  for (int64_t i = threadIdx.x; i < n_vec; i += blockDim.x) {
    const Vec in = xv[i];
    Vec out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      T t, dt;
      gan_term_and_derivative<TERM>(static_cast<T>(in.v[k]), t, dt);
      sum += t;
      out.v[k] = static_cast<scalar_t>(scale * dt);
    }
    if constexpr (kSave) gv[i] = out;
  }
  for (int64_t i = begin + n_vec * VEC + threadIdx.x; i < end; i += blockDim.x) {
    T t, dt;
    gan_term_and_derivative<TERM>(static_cast<T>(x[i]), t, dt);
    sum += t;
    if constexpr (kSave) g[i] = static_cast<scalar_t>(scale * dt);
  }
  return sum;
}

template <typename scalar_t>
struct GanLossArgs {
  const scalar_t* x;
  const scalar_t* y;
  scalar_t* x_grad;
  scalar_t* y_grad;
  scalar_t* loss;
  int64_t nx, ny, strip_x, strip_y;
  acc_t<scalar_t> scale_x, scale_y;
  int x_term, y_term;
  bool aligned;
  acc_t<scalar_t>* partials;  // [2 * kLossMaxBlocks]: x sums, then y sums
  unsigned int* counter;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kLossThreads) gan_loss_kernel(const GanLossArgs<scalar_t> a) {
  using T = acc_t<scalar_t>;
  __shared__ T shared[32];
  __shared__ bool is_last;
  const int64_t bx = std::min<int64_t>(a.nx, blockIdx.x * a.strip_x), ex = std::min<int64_t>(a.nx, bx + a.strip_x);
  const int64_t by = std::min<int64_t>(a.ny, blockIdx.x * a.strip_y), ey = std::min<int64_t>(a.ny, by + a.strip_y);
  T sum_x = dispatch_gan_term(a.x_term, [&](auto term) {
    return term_sum_range<decltype(term)::value>(a.x, a.x_grad, bx, ex, a.scale_x, a.aligned);
  });
  T sum_y = by < ey ? dispatch_gan_term(a.y_term, [&](auto term) {
    return term_sum_range<decltype(term)::value>(a.y, a.y_grad, by, ey, a.scale_y, a.aligned);
  }) : T(0);
  sum_x = block_sum(sum_x, shared);
  sum_y = block_sum(sum_y, shared);
  if (gridDim.x == 1) {
    if (threadIdx.x == 0) *a.loss = static_cast<scalar_t>(a.scale_x * sum_x + a.scale_y * sum_y);
    return;
  }
  if (threadIdx.x == 0) {
    a.partials[blockIdx.x] = sum_x;
    a.partials[kLossMaxBlocks + blockIdx.x] = sum_y;
    __threadfence();  // the partials are visible before the ticket
    is_last = atomicAdd(a.counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  T px = T(0), py = T(0);
  for (int i = threadIdx.x; i < gridDim.x; i += blockDim.x) {  // fixed order: deterministic
    px += __ldcg(a.partials + i);
    py += __ldcg(a.partials + kLossMaxBlocks + i);
  }
  px = block_sum(px, shared);
  py = block_sum(py, shared);
  if (threadIdx.x == 0) {
    *a.loss = static_cast<scalar_t>(a.scale_x * px + a.scale_y * py);
    *a.counter = 0u;  // ready for the next launch on this stream
  }
}

// Counter (16 bytes) then 4 * kLossMaxBlocks partials of up to 8 bytes (stream_workspace):
// gan_loss uses two sums per block, relativistic_loss up to four; one size serves both.
constexpr int64_t kLossWorkspaceBytes = 16 + 4 * kLossMaxBlocks * 8;

std::tuple<at::Tensor, at::Tensor, at::Tensor> gan_loss_cuda(const at::Tensor& x, const std::optional<at::Tensor>& y,
                                                             int64_t x_term, int64_t y_term, int64_t reduction) {
  GanLossProblem p = prepare_gan_loss(x, y, x_term, y_term, reduction);
  const at::Device device = p.x.device();
  c10::cuda::CUDAGuard guard(device);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index());
  at::Tensor workspace = stream_workspace(device, stream, kLossWorkspaceBytes, kGanLossWorkspace);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.x.scalar_type(), "gan_loss_cuda", [&] {
    using T = acc_t<scalar_t>;
    const Strips strips =
        make_strips(p.x.numel(), p.y.numel(), resident_blocks<gan_loss_kernel<scalar_t>>(device.index()));
    GanLossArgs<scalar_t> a;
    a.x = p.x.data_ptr<scalar_t>();
    a.y = p.y.data_ptr<scalar_t>();
    a.x_grad = p.x_grad.data_ptr<scalar_t>();
    a.y_grad = p.y_grad.data_ptr<scalar_t>();
    a.loss = p.loss.data_ptr<scalar_t>();
    a.nx = p.x.numel();
    a.ny = p.y.numel();
    a.strip_x = strips.x;
    a.strip_y = strips.y;
    a.scale_x = static_cast<T>(p.x_scale);
    a.scale_y = static_cast<T>(p.y_scale);
    a.x_term = p.x_term;
    a.y_term = p.y_term;
    a.aligned = aligned16({a.x, a.y, a.x_grad, a.y_grad});
    uint8_t* base = workspace.data_ptr<uint8_t>();
    a.counter = reinterpret_cast<unsigned int*>(base);
    a.partials = reinterpret_cast<T*>(base + 16);
    gan_loss_kernel<scalar_t><<<strips.blocks, kLossThreads, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {p.loss, p.x_grad, p.y_grad};
}

template <typename scalar_t>
__device__ __forceinline__ void scale_range(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, int64_t begin,
                                            int64_t end, acc_t<scalar_t> g, bool aligned) {
  using T = acc_t<scalar_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  using Vec = AlignedVector<scalar_t, VEC>;
  const int64_t n_vec = aligned ? (end - begin) / VEC : 0;
  const Vec* iv = reinterpret_cast<const Vec*>(in + begin);
  Vec* ov = reinterpret_cast<Vec*>(out + begin);
#pragma unroll 2
  for (int64_t i = threadIdx.x; i < n_vec; i += blockDim.x) {
    Vec v = iv[i];
#pragma unroll
    for (int k = 0; k < VEC; ++k) v.v[k] = static_cast<scalar_t>(g * static_cast<T>(v.v[k]));
    ov[i] = v;
  }
  for (int64_t i = begin + n_vec * VEC + threadIdx.x; i < end; i += blockDim.x)
    out[i] = static_cast<scalar_t>(g * static_cast<T>(in[i]));
}

// out[i] = v over [begin, end): a linear side's gradient.
template <typename scalar_t>
__device__ __forceinline__ void fill_range(scalar_t* __restrict__ out, int64_t begin, int64_t end, scalar_t v,
                                           bool aligned) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  using Vec = AlignedVector<scalar_t, VEC>;
  const int64_t n_vec = aligned ? (end - begin) / VEC : 0;
  Vec fill;
#pragma unroll
  for (int k = 0; k < VEC; ++k) fill.v[k] = v;
  Vec* ov = reinterpret_cast<Vec*>(out + begin);
  for (int64_t i = threadIdx.x; i < n_vec; i += blockDim.x) ov[i] = fill;
  for (int64_t i = begin + n_vec * VEC + threadIdx.x; i < end; i += blockDim.x) out[i] = v;
}

// One side of the backward: out = g * saved, or the constant g * s * t' of a linear term.
template <typename scalar_t>
struct BackwardSide {
  const scalar_t* saved;  // unused for a linear term
  scalar_t* out;
  int64_t n, strip;
  acc_t<scalar_t> constant;  // s * t' of a linear term
  bool linear;
};

template <typename scalar_t>
__device__ __forceinline__ void backward_side(const BackwardSide<scalar_t>& s, acc_t<scalar_t> g, bool aligned) {
  const int64_t begin = std::min<int64_t>(s.n, blockIdx.x * s.strip), end = std::min<int64_t>(s.n, begin + s.strip);
  if (s.linear) fill_range(s.out, begin, end, static_cast<scalar_t>(g * s.constant), aligned);
  else scale_range(s.saved, s.out, begin, end, g, aligned);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kLossThreads)
    gan_loss_backward_kernel(const scalar_t* __restrict__ grad, const BackwardSide<scalar_t> x,
                             const BackwardSide<scalar_t> y, bool aligned) {
  const auto g = static_cast<acc_t<scalar_t>>(*grad);
  backward_side(x, g, aligned);
  backward_side(y, g, aligned);
}

std::tuple<at::Tensor, at::Tensor> gan_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& x_grad,
                                                          const at::Tensor& y_grad, const at::Tensor& x,
                                                          const std::optional<at::Tensor>& y, int64_t x_term,
                                                          int64_t y_term, int64_t reduction) {
  GanLossBackwardProblem p = prepare_gan_loss_backward(grad, x_grad, y_grad, x, y, x_term, y_term, reduction);
  const int64_t nx = p.x_out.numel(), ny = p.y_out.numel();
  if (nx + ny == 0) return {p.x_out, p.y_out};
  const at::Device device = p.x_out.device();
  c10::cuda::CUDAGuard guard(device);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.x_out.scalar_type(), "gan_loss_backward_cuda", [&] {
    using T = acc_t<scalar_t>;
    const Strips strips = make_strips(nx, ny, resident_blocks<gan_loss_backward_kernel<scalar_t>>(device.index()));
    const BackwardSide<scalar_t> xs{p.x_grad.data_ptr<scalar_t>(), p.x_out.data_ptr<scalar_t>(), nx, strips.x,
                                    static_cast<T>(p.x_const), p.x_linear};
    const BackwardSide<scalar_t> ys{p.y_grad.data_ptr<scalar_t>(), p.y_out.data_ptr<scalar_t>(), ny, strips.y,
                                    static_cast<T>(p.y_const), p.y_linear};
    const bool aligned = aligned16({xs.linear ? nullptr : xs.saved, ys.linear ? nullptr : ys.saved, xs.out, ys.out});
    gan_loss_backward_kernel<scalar_t><<<strips.blocks, kLossThreads, 0, stream>>>(p.grad.data_ptr<scalar_t>(), xs,
                                                                                    ys, aligned);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {p.x_out, p.y_out};
}

template <int TERM, bool HAS_GRAD, typename scalar_t>
__global__ void __launch_bounds__(kLossThreads)
    gan_loss_pointwise_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ grad,
                              scalar_t* __restrict__ out, int64_t n, int64_t strip, int order, bool aligned) {
  using T = acc_t<scalar_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  using Vec = AlignedVector<scalar_t, VEC>;
  const int64_t begin = std::min<int64_t>(n, blockIdx.x * strip), end = std::min<int64_t>(n, begin + strip);
  const int64_t n_vec = aligned ? (end - begin) / VEC : 0;
  for (int64_t i = threadIdx.x; i < n_vec; i += blockDim.x) {
    const Vec xv = reinterpret_cast<const Vec*>(x + begin)[i];
    Vec gv;
    if (HAS_GRAD) gv = reinterpret_cast<const Vec*>(grad + begin)[i];
    Vec ov;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const T v = gan_term_order<TERM>(static_cast<T>(xv.v[k]), order);
      ov.v[k] = static_cast<scalar_t>(HAS_GRAD ? static_cast<T>(gv.v[k]) * v : v);
    }
    reinterpret_cast<Vec*>(out + begin)[i] = ov;
  }
  for (int64_t i = begin + n_vec * VEC + threadIdx.x; i < end; i += blockDim.x) {
    const T v = gan_term_order<TERM>(static_cast<T>(x[i]), order);
    out[i] = static_cast<scalar_t>(HAS_GRAD ? static_cast<T>(grad[i]) * v : v);
  }
}

at::Tensor gan_loss_pointwise_cuda(const at::Tensor& logits, const std::optional<at::Tensor>& grad, int64_t term,
                                   int64_t order) {
  GanPointwiseProblem p = prepare_gan_pointwise(logits, grad, term, order);
  const int64_t n = p.logits.numel();
  if (n == 0) return p.out;
  const at::Device device = p.logits.device();
  c10::cuda::CUDAGuard guard(device);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.logits.scalar_type(), "gan_loss_pointwise_cuda", [&] {
    const scalar_t* x = p.logits.data_ptr<scalar_t>();
    const scalar_t* g = p.grad.defined() ? p.grad.data_ptr<scalar_t>() : nullptr;
    scalar_t* out = p.out.data_ptr<scalar_t>();
    const bool aligned = aligned16({x, g, out});  // nullptr is aligned
    dispatch_gan_term(p.term, [&](auto t) {
      constexpr int TERM = decltype(t)::value;
      if (g != nullptr) {
        const Strips strips = make_strips(n, 0, resident_blocks<gan_loss_pointwise_kernel<TERM, true, scalar_t>>(
                                                    device.index()));
        gan_loss_pointwise_kernel<TERM, true, scalar_t>
            <<<strips.blocks, kLossThreads, 0, stream>>>(x, g, out, n, strips.x, p.order, aligned);
      } else {
        const Strips strips = make_strips(n, 0, resident_blocks<gan_loss_pointwise_kernel<TERM, false, scalar_t>>(
                                                    device.index()));
        gan_loss_pointwise_kernel<TERM, false, scalar_t>
            <<<strips.blocks, kLossThreads, 0, stream>>>(x, g, out, n, strips.x, p.order, aligned);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return p.out;
}

// ---- relativistic_loss ----
//
// RpGAN: one launch (relativistic_kernel<kPassPair>) over the pairs writes both
// gradients and reduces the loss. RaGAN: three launches, in stream order: the two
// means (kPassMeans), the loss and the sigmoid sums (kPassSums, whose last block also
// writes the cross terms of the gradients), then the gradients
// (relativistic_average_grad_kernel). The reductions use gan_loss's workspace, ticket
// and fixed-order last-block sum; `stats` carries the means and cross terms between
// launches.
enum RelativisticPass : int { kPassPair = 0, kPassMeans = 1, kPassSums = 2 };

template <typename scalar_t>
struct RelativisticArgs {
  const scalar_t* x;
  const scalar_t* y;
  scalar_t* x_grad;
  scalar_t* y_grad;
  scalar_t* loss;
  int64_t nx, ny, strip_x, strip_y;
  acc_t<scalar_t> scale_x, scale_y;
  acc_t<scalar_t>* stats;     // [mean(x), mean(y), cross_x, cross_y]
  acc_t<scalar_t>* partials;  // [4 * kLossMaxBlocks]
  unsigned int* counter;
};

// The pass's result from its K totals (thread 0 of the last block).
template <int PASS, typename scalar_t>
__device__ __forceinline__ void relativistic_finish(const RelativisticArgs<scalar_t>& a, const acc_t<scalar_t>* s) {
  using T = acc_t<scalar_t>;
  if constexpr (PASS == kPassPair) {
    *a.loss = static_cast<scalar_t>(a.scale_x * s[0]);
  } else if constexpr (PASS == kPassMeans) {
    a.stats[0] = s[0] / static_cast<T>(a.nx);
    a.stats[1] = s[1] / static_cast<T>(a.ny);
  } else {
    *a.loss = static_cast<scalar_t>(a.scale_x * s[0] + a.scale_y * s[2]);
    a.stats[2] = -a.scale_y * s[3] / static_cast<T>(a.nx);  // x's mean is in every y_j - mean(x)
    a.stats[3] = a.scale_x * s[1] / static_cast<T>(a.ny);
  }
}

template <int PASS, typename scalar_t>
__global__ void __launch_bounds__(kLossThreads) relativistic_kernel(const RelativisticArgs<scalar_t> a) {
  using T = acc_t<scalar_t>;
  constexpr int K = PASS == kPassPair ? 1 : PASS == kPassMeans ? 2 : 4;
  __shared__ T shared[32];
  __shared__ bool is_last;
  const int64_t bx = std::min<int64_t>(a.nx, blockIdx.x * a.strip_x), ex = std::min<int64_t>(a.nx, bx + a.strip_x);
  const int64_t by = std::min<int64_t>(a.ny, blockIdx.x * a.strip_y), ey = std::min<int64_t>(a.ny, by + a.strip_y);
  T s[K];
#pragma unroll
  for (int k = 0; k < K; ++k) s[k] = T(0);
  if constexpr (PASS == kPassPair) {  // pairs: x's strip indexes y too
    for (int64_t i = bx + threadIdx.x; i < ex; i += blockDim.x) {
      T t, sig;
      relativistic_term(static_cast<T>(a.y[i]) - static_cast<T>(a.x[i]), t, sig);
      s[0] += t;
      a.x_grad[i] = static_cast<scalar_t>(-a.scale_x * sig);
      a.y_grad[i] = static_cast<scalar_t>(a.scale_x * sig);
    }
  } else if constexpr (PASS == kPassMeans) {
    for (int64_t i = bx + threadIdx.x; i < ex; i += blockDim.x) s[0] += static_cast<T>(a.x[i]);
    for (int64_t i = by + threadIdx.x; i < ey; i += blockDim.x) s[1] += static_cast<T>(a.y[i]);
  } else {
    const T mean_x = a.stats[0], mean_y = a.stats[1];
    for (int64_t i = bx + threadIdx.x; i < ex; i += blockDim.x) {
      T t, sig;
      relativistic_term(mean_y - static_cast<T>(a.x[i]), t, sig);
      s[0] += t;
      s[1] += sig;
    }
    for (int64_t i = by + threadIdx.x; i < ey; i += blockDim.x) {
      T t, sig;
      relativistic_term(static_cast<T>(a.y[i]) - mean_x, t, sig);
      s[2] += t;
      s[3] += sig;
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k) s[k] = block_sum(s[k], shared);
  if (gridDim.x == 1) {
    if (threadIdx.x == 0) relativistic_finish<PASS>(a, s);
    return;
  }
  if (threadIdx.x == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) a.partials[k * kLossMaxBlocks + blockIdx.x] = s[k];
    __threadfence();  // the partials are visible before the ticket
    is_last = atomicAdd(a.counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  T total[K];
#pragma unroll
  for (int k = 0; k < K; ++k) total[k] = T(0);
  for (int i = threadIdx.x; i < gridDim.x; i += blockDim.x) {  // fixed order: deterministic
#pragma unroll
    for (int k = 0; k < K; ++k) total[k] += __ldcg(a.partials + k * kLossMaxBlocks + i);
  }
#pragma unroll
  for (int k = 0; k < K; ++k) total[k] = block_sum(total[k], shared);
  if (threadIdx.x == 0) {
    relativistic_finish<PASS>(a, total);
    *a.counter = 0u;  // ready for the next launch on this stream
  }
}

// RaGAN's gradients: x_grad = -s_x sigmoid(mean(y) - x) + cross_x, y_grad = s_y sigmoid(y - mean(x)) + cross_y.
template <typename scalar_t>
__global__ void __launch_bounds__(kLossThreads) relativistic_average_grad_kernel(const RelativisticArgs<scalar_t> a) {
  using T = acc_t<scalar_t>;
  const T mean_x = a.stats[0], mean_y = a.stats[1], cross_x = a.stats[2], cross_y = a.stats[3];
  const int64_t bx = std::min<int64_t>(a.nx, blockIdx.x * a.strip_x), ex = std::min<int64_t>(a.nx, bx + a.strip_x);
  const int64_t by = std::min<int64_t>(a.ny, blockIdx.x * a.strip_y), ey = std::min<int64_t>(a.ny, by + a.strip_y);
  for (int64_t i = bx + threadIdx.x; i < ex; i += blockDim.x) {
    T t, sig;
    relativistic_term(mean_y - static_cast<T>(a.x[i]), t, sig);
    a.x_grad[i] = static_cast<scalar_t>(-a.scale_x * sig + cross_x);
  }
  for (int64_t i = by + threadIdx.x; i < ey; i += blockDim.x) {
    T t, sig;
    relativistic_term(static_cast<T>(a.y[i]) - mean_x, t, sig);
    a.y_grad[i] = static_cast<scalar_t>(a.scale_y * sig + cross_y);
  }
}

template <auto Kernel, typename scalar_t>
void launch_relativistic(RelativisticArgs<scalar_t> a, int64_t nx, int64_t ny, int device, cudaStream_t stream) {
  const Strips strips = make_strips(nx, ny, resident_blocks<Kernel>(device));
  a.strip_x = strips.x;
  a.strip_y = strips.y;
  Kernel<<<strips.blocks, kLossThreads, 0, stream>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> relativistic_loss_cuda(const at::Tensor& x, const at::Tensor& y,
                                                                      int64_t kind, int64_t reduction) {
  RelativisticLossProblem p = prepare_relativistic_loss(x, y, kind, reduction);
  const at::Device device = p.x.device();
  c10::cuda::CUDAGuard guard(device);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index());
  at::Tensor workspace = stream_workspace(device, stream, kLossWorkspaceBytes, kGanLossWorkspace);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.x.scalar_type(), "relativistic_loss_cuda", [&] {
    using T = acc_t<scalar_t>;
    const at::Tensor stats = at::empty({4}, p.x.options().dtype(c10::CppTypeToScalarType<T>::value));
    RelativisticArgs<scalar_t> a;
    a.x = p.x.data_ptr<scalar_t>();
    a.y = p.y.data_ptr<scalar_t>();
    a.x_grad = p.x_grad.data_ptr<scalar_t>();
    a.y_grad = p.y_grad.data_ptr<scalar_t>();
    a.loss = p.loss.data_ptr<scalar_t>();
    a.nx = p.x.numel();
    a.ny = p.y.numel();
    a.scale_x = static_cast<T>(p.x_scale);
    a.scale_y = static_cast<T>(p.y_scale);
    a.stats = stats.data_ptr<T>();
    uint8_t* base = workspace.data_ptr<uint8_t>();
    a.counter = reinterpret_cast<unsigned int*>(base);
    a.partials = reinterpret_cast<T*>(base + 16);
    const int index = device.index();
    if (p.kind == kRelativisticPair) {
      launch_relativistic<relativistic_kernel<kPassPair, scalar_t>>(a, a.nx, 0, index, stream);
    } else {
      launch_relativistic<relativistic_kernel<kPassMeans, scalar_t>>(a, a.nx, a.ny, index, stream);
      launch_relativistic<relativistic_kernel<kPassSums, scalar_t>>(a, a.nx, a.ny, index, stream);
      launch_relativistic<relativistic_average_grad_kernel<scalar_t>>(a, a.nx, a.ny, index, stream);
    }
  });
  return {p.loss, p.x_grad, p.y_grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("gan_loss", &gan_loss_cuda);
  m.impl("gan_loss_backward", &gan_loss_backward_cuda);
  m.impl("gan_loss_pointwise", &gan_loss_pointwise_cuda);
  m.impl("relativistic_loss", &relativistic_loss_cuda);
}

}  // namespace fastgan
