// Finite-difference penalty ops on CUDA (math in fd_penalty_math.h, schemas in fd_penalty_cpu.cpp).
//
// perturb and the backward are grid-stride element loops. The penalty itself reduces
// critic outputs (B x O elements, few) in one block: one launch, a fixed summation
// order in double (deterministic), the loss written on the device (no host sync, so
// graph-capturable); the backward reads the upstream gradient on the device too.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda_utils.cuh"
#include "fd_penalty_host.h"
#include "fd_penalty_math.h"
#include "rows.h"

namespace fastgan {
namespace {

constexpr int kThreads = 256;
constexpr int kReduceThreads = 1024;

int elementwise_grid(int64_t n, const at::Device& device) {
  const int64_t blocks = int64_t(multiprocessor_count(device.index())) * 8;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, blocks)));
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    perturb_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x, const scalar_t* __restrict__ noise,
                   int64_t n, acc_t<scalar_t> sigma) {
  using T = acc_t<scalar_t>;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = static_cast<scalar_t>(perturb_element(static_cast<T>(x[i]), static_cast<T>(noise[i]), sigma));
}

template <typename scalar_t>
__global__ void __launch_bounds__(kReduceThreads)
    fd_penalty_kernel(scalar_t* __restrict__ loss, const scalar_t* __restrict__ p, const scalar_t* __restrict__ o,
                      int64_t n, int64_t rows, acc_t<scalar_t> sigma, double weight) {
  using T = acc_t<scalar_t>;
  __shared__ double shared[kReduceThreads];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double q = static_cast<double>(fd_quotient(static_cast<T>(p[i]), static_cast<T>(o[i]), sigma));
    sum += q * q;
  }
  const double total = block_tree_sum(sum, shared);
  if (threadIdx.x == 0) loss[0] = static_cast<scalar_t>(weight / static_cast<double>(rows) * total);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    fd_penalty_backward_kernel(scalar_t* __restrict__ grad_p, scalar_t* __restrict__ grad_o,
                               const scalar_t* __restrict__ grad_loss, const scalar_t* __restrict__ p,
                               const scalar_t* __restrict__ o, int64_t n, int64_t rows, acc_t<scalar_t> sigma,
                               acc_t<scalar_t> weight) {
  using T = acc_t<scalar_t>;
  const T coef = fd_penalty_grad_coef(static_cast<T>(grad_loss[0]), weight, sigma, rows);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const T g = coef * fd_quotient(static_cast<T>(p[i]), static_cast<T>(o[i]), sigma);
    if (grad_p) grad_p[i] = static_cast<scalar_t>(g);
    if (grad_o) grad_o[i] = static_cast<scalar_t>(-g);
  }
}

at::Tensor perturb_cuda(const at::Tensor& x, const at::Tensor& noise, double sigma) {
  check_perturb_args(x, noise, sigma);
  c10::cuda::CUDAGuard guard(x.device());
  auto [xs, ns] = batch_major_pair(x, noise);
  at::Tensor out = at::empty_like(xs);
  const int64_t n = xs.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xs.scalar_type(), "perturb_cuda", [&] {
    perturb_kernel<scalar_t><<<elementwise_grid(n, xs.device()), kThreads, 0, stream>>>(
        out.data_ptr<scalar_t>(), xs.data_ptr<scalar_t>(), ns.data_ptr<scalar_t>(), n,
        static_cast<acc_t<scalar_t>>(sigma));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor fd_penalty_cuda(const at::Tensor& perturbed, const at::Tensor& outputs, double sigma, double weight) {
  check_fd_penalty_args(perturbed, outputs, sigma, weight, "finite_difference_penalty");
  c10::cuda::CUDAGuard guard(perturbed.device());
  auto [p, o] = batch_major_pair(perturbed, outputs);
  at::Tensor loss = at::empty({}, p.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "finite_difference_penalty_cuda", [&] {
    fd_penalty_kernel<scalar_t><<<1, kReduceThreads, 0, stream>>>(
        loss.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), p.numel(), p.size(0),
        static_cast<acc_t<scalar_t>>(sigma), weight);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return loss;
}

std::tuple<at::Tensor, at::Tensor> fd_penalty_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& perturbed,
                                                            const at::Tensor& outputs, double sigma, double weight,
                                                            bool need_perturbed, bool need_outputs) {
  check_fd_penalty_backward_args(grad_loss, perturbed, outputs, sigma, weight);
  c10::cuda::CUDAGuard guard(perturbed.device());
  auto [p, o] = batch_major_pair(perturbed, outputs);
  at::Tensor grad_p = need_perturbed ? at::empty_like(p) : at::empty({0}, p.options());
  at::Tensor grad_o = need_outputs ? at::empty_like(p) : at::empty({0}, p.options());
  if (!(need_perturbed || need_outputs)) return {grad_p, grad_o};
  const int64_t n = p.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(),
                                  "finite_difference_penalty_backward_cuda", [&] {
    using T = acc_t<scalar_t>;
    fd_penalty_backward_kernel<scalar_t><<<elementwise_grid(n, p.device()), kThreads, 0, stream>>>(
        need_perturbed ? grad_p.data_ptr<scalar_t>() : nullptr, need_outputs ? grad_o.data_ptr<scalar_t>() : nullptr,
        grad_loss.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), n, p.size(0),
        static_cast<T>(sigma), static_cast<T>(weight));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_p, grad_o};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("perturb", &perturb_cuda);
  m.impl("finite_difference_penalty", &fd_penalty_cuda);
  m.impl("finite_difference_penalty_backward", &fd_penalty_backward_cuda);
}

}  // namespace fastgan
