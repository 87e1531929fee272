// Gradient-penalty ops on CUDA (math in penalty_math.h, schemas in penalty_cpu.cpp).
//
// Work is cut into items (row, tile of kTile elements); each block walks items
// with a grid-stride loop, so rows of 2 elements and rows of 3M use one launch.
// grad_norm_penalty writes one partial sum of squares per item, and the last
// block to finish (threadfence + atomic counter, reset by that block) turns the
// partials into norms, terms and the reduced loss: one launch, a fixed
// summation order (deterministic), no host synchronisation (graph-capturable).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda_utils.cuh"
#include "penalty_host.h"
#include "penalty_math.h"
#include "rows.h"

namespace fastgan {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kTile = 8192;

struct RowItems {
  int64_t rows, row_len, tiles;
  __host__ __device__ int64_t count() const { return rows * tiles; }
  __device__ void locate(int64_t item, int64_t& row, int64_t& begin, int64_t& end) const {
    row = item / tiles;
    begin = (item - row * tiles) * kTile;
    end = begin + kTile < row_len ? begin + kTile : row_len;
  }
};

RowItems row_items(int64_t rows, int64_t row_len) {
  return {rows, row_len, std::max<int64_t>(1, (row_len + kTile - 1) / kTile)};
}

int grid_for(const RowItems& items, const at::Device& device) {
  const int64_t blocks = int64_t(multiprocessor_count(device.index())) * 8;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(items.count(), blocks)));
}

template <typename scalar_t>
constexpr int vec_width() {
  return 16 / sizeof(scalar_t);
}

// Calls op(k) for every element index k in [begin, end) this thread owns, using
// VEC-wide groups on the aligned body: op_vec(k) handles k..k+VEC-1, where all
// pointers offset by k are 16-byte aligned whenever `base_aligned` holds.
template <int VEC, typename OpScalar, typename OpVec>
__device__ __forceinline__ void for_each_in_range(int64_t begin, int64_t end, bool base_aligned,
                                                  const OpScalar& op, const OpVec& op_vec) {
  int64_t head = base_aligned ? ((VEC - begin % VEC) % VEC) : (end - begin);
  if (head > end - begin) head = end - begin;
  for (int64_t k = begin + threadIdx.x; k < begin + head; k += blockDim.x) op(k);
  const int64_t body_begin = begin + head;
  const int64_t n_vec = (end - body_begin) / VEC;
  for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) op_vec(body_begin + v * VEC);
  for (int64_t k = body_begin + n_vec * VEC + threadIdx.x; k < end; k += blockDim.x) op(k);
}

template <typename scalar_t>
using Vec16 = AlignedVector<scalar_t, vec_width<scalar_t>()>;

template <typename scalar_t>
__device__ __forceinline__ Vec16<scalar_t> load_vec(const scalar_t* p) {
  return *reinterpret_cast<const Vec16<scalar_t>*>(p);
}

template <typename scalar_t>
__device__ __forceinline__ void store_vec(scalar_t* p, const Vec16<scalar_t>& v) {
  *reinterpret_cast<Vec16<scalar_t>*>(p) = v;
}

// ---------------------------------------------------------------- interpolate

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    interpolate_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ real,
                       const scalar_t* __restrict__ fake, const acc_t<scalar_t>* __restrict__ eps,
                       RowItems items, bool aligned) {
  using T = acc_t<scalar_t>;
  constexpr int VEC = vec_width<scalar_t>();
  for (int64_t item = blockIdx.x; item < items.count(); item += gridDim.x) {
    int64_t row, begin, end;
    items.locate(item, row, begin, end);
    const T e = eps[row];
    const int64_t o = row * items.row_len;
    for_each_in_range<VEC>(
        o + begin, o + end, aligned,
        [&](int64_t k) {
          out[k] = static_cast<scalar_t>(interpolate_element(static_cast<T>(real[k]), static_cast<T>(fake[k]), e));
        },
        [&](int64_t k) {
          auto r = load_vec(real + k), f = load_vec(fake + k);
          Vec16<scalar_t> y;
#pragma unroll
          for (int j = 0; j < VEC; ++j)
            y.v[j] = static_cast<scalar_t>(interpolate_element(static_cast<T>(r.v[j]), static_cast<T>(f.v[j]), e));
          store_vec(out + k, y);
        });
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    interpolate_backward_kernel(scalar_t* __restrict__ grad_real, scalar_t* __restrict__ grad_fake,
                                const scalar_t* __restrict__ grad, const acc_t<scalar_t>* __restrict__ eps,
                                RowItems items, bool aligned) {
  using T = acc_t<scalar_t>;
  constexpr int VEC = vec_width<scalar_t>();
  for (int64_t item = blockIdx.x; item < items.count(); item += gridDim.x) {
    int64_t row, begin, end;
    items.locate(item, row, begin, end);
    const T e = eps[row];
    const int64_t o = row * items.row_len;
    for_each_in_range<VEC>(
        o + begin, o + end, aligned,
        [&](int64_t k) {
          const T g = static_cast<T>(grad[k]);
          if (grad_real) grad_real[k] = static_cast<scalar_t>(e * g);
          if (grad_fake) grad_fake[k] = static_cast<scalar_t>((T(1) - e) * g);
        },
        [&](int64_t k) {
          auto g = load_vec(grad + k);
          Vec16<scalar_t> a, b;
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            a.v[j] = static_cast<scalar_t>(e * static_cast<T>(g.v[j]));
            b.v[j] = static_cast<scalar_t>((T(1) - e) * static_cast<T>(g.v[j]));
          }
          if (grad_real) store_vec(grad_real + k, a);
          if (grad_fake) store_vec(grad_fake + k, b);
        });
  }
}

at::Tensor interpolate_cuda(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& eps) {
  check_interpolate_args(real, fake, eps);
  c10::cuda::CUDAGuard guard(real.device());
  auto [r, f] = batch_major_pair(real, fake);
  at::Tensor e = eps.contiguous();
  at::Tensor out = at::empty_like(r);
  const RowItems items = row_items(r.size(0), row_length(r));
  if (items.rows == 0 || items.row_len == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.scalar_type(), "interpolate_cuda", [&] {
    const bool aligned = aligned16(r.data_ptr()) && aligned16(f.data_ptr()) && aligned16(out.data_ptr());
    interpolate_kernel<scalar_t><<<grid_for(items, r.device()), kThreads, 0, stream>>>(
        out.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), e.data_ptr<acc_t<scalar_t>>(),
        items, aligned);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> interpolate_backward_cuda(const at::Tensor& grad, const at::Tensor& eps,
                                                             bool need_real, bool need_fake) {
  check_interpolate_backward_args(grad, eps);
  c10::cuda::CUDAGuard guard(grad.device());
  at::Tensor g = batch_major(grad);
  at::Tensor e = eps.contiguous();
  at::Tensor grad_real = need_real ? at::empty_like(g) : at::empty({0}, g.options());
  at::Tensor grad_fake = need_fake ? at::empty_like(g) : at::empty({0}, g.options());
  const RowItems items = row_items(g.size(0), row_length(g));
  if (items.rows == 0 || items.row_len == 0 || !(need_real || need_fake)) return {grad_real, grad_fake};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "interpolate_backward_cuda", [&] {
    scalar_t* gr = need_real ? grad_real.data_ptr<scalar_t>() : nullptr;
    scalar_t* gf = need_fake ? grad_fake.data_ptr<scalar_t>() : nullptr;
    const bool aligned = aligned16(g.data_ptr()) && (!gr || aligned16(gr)) && (!gf || aligned16(gf));
    interpolate_backward_kernel<scalar_t><<<grid_for(items, g.device()), kThreads, 0, stream>>>(
        gr, gf, g.data_ptr<scalar_t>(), e.data_ptr<acc_t<scalar_t>>(), items, aligned);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_real, grad_fake};
}

// ---------------------------------------------------------- grad_norm_penalty

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    grad_norm_penalty_kernel(const scalar_t* __restrict__ grads, RowItems items, bool aligned,
                             double* __restrict__ partial, int* __restrict__ counter,
                             acc_t<scalar_t>* __restrict__ norms, scalar_t* __restrict__ loss, double center,
                             double weight, bool one_sided, int64_t reduction) {
  using T = acc_t<scalar_t>;
  constexpr int VEC = vec_width<scalar_t>();
  __shared__ double shared[kThreads];
  __shared__ bool is_last;
  for (int64_t item = blockIdx.x; item < items.count(); item += gridDim.x) {
    int64_t row, begin, end;
    items.locate(item, row, begin, end);
    const int64_t o = row * items.row_len;
    T sum = T(0);
    for_each_in_range<VEC>(
        o + begin, o + end, aligned,
        [&](int64_t k) {
          const T v = static_cast<T>(grads[k]);
          sum += v * v;
        },
        [&](int64_t k) {
          auto x = load_vec(grads + k);
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            const T v = static_cast<T>(x.v[j]);
            sum += v * v;
          }
        });
    const double total = block_tree_sum(static_cast<double>(sum), shared);
    if (threadIdx.x == 0) partial[item] = total;
  }
  // The last block to finish reduces the partials.
  __threadfence();
  if (threadIdx.x == 0) is_last = atomicAdd(counter, 1) == static_cast<int>(gridDim.x) - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  const double row_weight = penalty_row_weight(weight, items.rows, reduction);
  double terms = 0.0;
  for (int64_t r = threadIdx.x; r < items.rows; r += blockDim.x) {
    double squares = 0.0;
    // __ldcg: read other blocks' partials from L2, never from a stale L1 line.
    for (int64_t t = 0; t < items.tiles; ++t) squares += __ldcg(partial + r * items.tiles + t);
    const double norm = sqrt(squares);
    norms[r] = static_cast<T>(norm);
    const double term = penalty_term(norm, center, one_sided);
    if (reduction == kPenaltyNone) loss[r] = static_cast<scalar_t>(weight * term);
    else terms += term;
  }
  const double total = block_tree_sum(terms, shared);
  if (threadIdx.x == 0) {
    if (reduction != kPenaltyNone) loss[0] = static_cast<scalar_t>(row_weight * total);
    *counter = 0;  // ready for the next launch on this stream
  }
}

std::tuple<at::Tensor, at::Tensor> grad_norm_penalty_cuda(const at::Tensor& grads, double center, double weight,
                                                          bool one_sided, int64_t reduction) {
  check_grad_norm_penalty_args(grads, reduction);
  c10::cuda::CUDAGuard guard(grads.device());
  at::Tensor g = batch_major(grads);
  const RowItems items = row_items(g.size(0), row_length(g));
  const auto acc_type = g.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor norms = at::empty({items.rows}, g.options().dtype(acc_type));
  at::Tensor loss = reduction == kPenaltyNone ? at::empty({items.rows}, g.options()) : at::empty({}, g.options());
  // Per-item sums of squares in double, as the CPU kernel keeps them (float64 stays exact).
  at::Tensor partial = at::empty({items.count()}, g.options().dtype(at::kDouble));
  auto stream = c10::cuda::getCurrentCUDAStream(g.device().index());
  int* counter = reinterpret_cast<int*>(
      stream_workspace(g.device(), stream.stream(), sizeof(int), kPenaltyWorkspace).data_ptr<uint8_t>());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "grad_norm_penalty_cuda", [&] {
    grad_norm_penalty_kernel<scalar_t><<<grid_for(items, g.device()), kThreads, 0, stream>>>(
        g.data_ptr<scalar_t>(), items, aligned16(g.data_ptr()), partial.data_ptr<double>(), counter,
        norms.data_ptr<acc_t<scalar_t>>(), loss.data_ptr<scalar_t>(), center, weight, one_sided, reduction);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {loss, norms};
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    grad_norm_penalty_backward_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ grads,
                                      const scalar_t* __restrict__ grad_loss, const acc_t<scalar_t>* __restrict__ norms,
                                      RowItems items, bool aligned, acc_t<scalar_t> center, acc_t<scalar_t> weight,
                                      bool one_sided, int64_t reduction) {
  using T = acc_t<scalar_t>;
  constexpr int VEC = vec_width<scalar_t>();
  const T row_weight = penalty_row_weight(weight, items.rows, reduction);
  for (int64_t item = blockIdx.x; item < items.count(); item += gridDim.x) {
    int64_t row, begin, end;
    items.locate(item, row, begin, end);
    const T upstream = static_cast<T>(grad_loss[reduction == kPenaltyNone ? row : 0]);
    const T coef = penalty_row_scale(upstream, row_weight, norms[row], center, one_sided);
    const int64_t o = row * items.row_len;
    for_each_in_range<VEC>(
        o + begin, o + end, aligned,
        [&](int64_t k) { out[k] = static_cast<scalar_t>(coef * static_cast<T>(grads[k])); },
        [&](int64_t k) {
          auto x = load_vec(grads + k);
#pragma unroll
          for (int j = 0; j < VEC; ++j) x.v[j] = static_cast<scalar_t>(coef * static_cast<T>(x.v[j]));
          store_vec(out + k, x);
        });
  }
}

at::Tensor grad_norm_penalty_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& grads,
                                           const at::Tensor& norms, double center, double weight, bool one_sided,
                                           int64_t reduction) {
  check_grad_norm_penalty_backward_args(grad_loss, grads, norms, reduction);
  c10::cuda::CUDAGuard guard(grads.device());
  at::Tensor g = batch_major(grads);
  at::Tensor go = grad_loss.contiguous();
  at::Tensor norms_c = norms.contiguous();
  at::Tensor out = at::empty_like(g);
  const RowItems items = row_items(g.size(0), row_length(g));
  if (items.rows == 0 || items.row_len == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "grad_norm_penalty_backward_cuda", [&] {
    using T = acc_t<scalar_t>;
    grad_norm_penalty_backward_kernel<scalar_t><<<grid_for(items, g.device()), kThreads, 0, stream>>>(
        out.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(), norms_c.data_ptr<T>(), items,
        aligned16(g.data_ptr()) && aligned16(out.data_ptr()), static_cast<T>(center), static_cast<T>(weight),
        one_sided, reduction);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("interpolate", &interpolate_cuda);
  m.impl("interpolate_backward", &interpolate_backward_cuda);
  m.impl("grad_norm_penalty", &grad_norm_penalty_cuda);
  m.impl("grad_norm_penalty_backward", &grad_norm_penalty_backward_cuda);
}

}  // namespace fastgan
