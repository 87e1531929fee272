// CUDA kernels of the VAE family (csrc/vae_math.h); each op is one launch.
//
// vae_loss: block b reads sample b's reconstruction once (its terms and gradient) and
// its (mu, logvar) once (the KL and its gradients), and sums loss_b in a fixed order.
// For reduction none it writes loss_b. Otherwise it stores loss_b as a partial and
// takes a ticket (threadfence + atomicAdd on a counter); the last block adds the
// partials in a fixed order, writes the loss and resets the counter. The counter and
// partials live in a stream_workspace (zeroed once): no memset, no host sync, and the
// loss is deterministic for a given size and GPU.
#include <ATen/Dispatch.h>
#include <ATen/native/cuda/block_reduce.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "cuda_utils.cuh"
#include "vae_host.h"
#include "vae_math.h"

namespace fastgan {
namespace {

constexpr int kVaeThreads = 256;  // a multiple of the warp size (BlockReduceSum)
constexpr int kReconBernoulli = 0, kReconGaussian = 1, kReconUnit = 2;

template <typename scalar_t>
struct VaeLossArgs {
  const scalar_t *recon, *target, *recon_logvar, *mu, *logvar;
  scalar_t *recon_grad, *recon_logvar_grad, *mu_grad, *logvar_grad, *loss;
  int64_t rows, recon_len, latent_len;
  acc_t<scalar_t> scale, kl_scale, beta;
  int kind;  // -1: no reconstruction
  bool has_kl, per_row;
  acc_t<scalar_t>* partials;  // [rows]
  unsigned int* counter;
};

// This thread's share of sample b's reconstruction terms, writing their gradients.
template <int KIND, typename scalar_t>
__device__ __forceinline__ acc_t<scalar_t> recon_share(const VaeLossArgs<scalar_t>& a, int64_t b) {
  using T = acc_t<scalar_t>;
  const int64_t base = b * a.recon_len;
  T sum = T(0);
  for (int64_t j = base + threadIdx.x; j < base + a.recon_len; j += blockDim.x) {
    T t, d, dv;
    if constexpr (KIND == kReconBernoulli) {
      bernoulli_term(static_cast<T>(a.recon[j]), static_cast<T>(a.target[j]), t, d);
    } else if constexpr (KIND == kReconGaussian) {
      gaussian_term(static_cast<T>(a.recon[j]), static_cast<T>(a.target[j]), static_cast<T>(a.recon_logvar[j]), t, d,
                    dv);
      a.recon_logvar_grad[j] = static_cast<scalar_t>(a.scale * dv);
    } else {
      gaussian_unit_term(static_cast<T>(a.recon[j]), static_cast<T>(a.target[j]), t, d);
    }
    a.recon_grad[j] = static_cast<scalar_t>(a.scale * d);
    sum += t;
  }
  return sum;
}

template <typename scalar_t>
__device__ __forceinline__ acc_t<scalar_t> kl_share(const VaeLossArgs<scalar_t>& a, int64_t b) {
  using T = acc_t<scalar_t>;
  const int64_t base = b * a.latent_len;
  T sum = T(0);
  for (int64_t j = base + threadIdx.x; j < base + a.latent_len; j += blockDim.x) {
    T k, dmu, dlv;
    gaussian_kl_term(static_cast<T>(a.mu[j]), static_cast<T>(a.logvar[j]), k, dmu, dlv);
    a.mu_grad[j] = static_cast<scalar_t>(a.kl_scale * dmu);
    a.logvar_grad[j] = static_cast<scalar_t>(a.kl_scale * dlv);
    sum += k;
  }
  return sum;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kVaeThreads) vae_loss_kernel(const VaeLossArgs<scalar_t> a) {
  using T = acc_t<scalar_t>;
  __shared__ T shared[kVaeThreads / 32];
  __shared__ bool is_last;
  const int64_t b = blockIdx.x;
  T recon = T(0), kl = T(0);
  if (a.kind == kReconBernoulli) recon = recon_share<kReconBernoulli>(a, b);
  else if (a.kind == kReconGaussian) recon = recon_share<kReconGaussian>(a, b);
  else if (a.kind == kReconUnit) recon = recon_share<kReconUnit>(a, b);
  if (a.has_kl) kl = kl_share(a, b);
  const T row = at::native::cuda_utils::BlockReduceSum(recon + a.beta * kl, shared);
  if (a.per_row) {
    if (threadIdx.x == 0) a.loss[b] = static_cast<scalar_t>(row);
    return;
  }
  if (gridDim.x == 1) {
    if (threadIdx.x == 0) *a.loss = static_cast<scalar_t>(a.scale * row);
    return;
  }
  if (threadIdx.x == 0) {
    a.partials[b] = row;
    __threadfence();  // the partial is visible before the ticket
    is_last = atomicAdd(a.counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  T total = T(0);
  for (int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) total += __ldcg(a.partials + i);  // fixed order
  __syncthreads();  // `shared` is reused
  total = at::native::cuda_utils::BlockReduceSum(total, shared);
  if (threadIdx.x == 0) {
    *a.loss = static_cast<scalar_t>(a.scale * total);
    *a.counter = 0u;  // ready for the next launch on this stream
  }
}

using LossResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

template <typename scalar_t>
const scalar_t* const_ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

LossResult vae_loss_cuda(const std::optional<at::Tensor>& recon, const std::optional<at::Tensor>& target,
                         const std::optional<at::Tensor>& recon_logvar, const std::optional<at::Tensor>& mu,
                         const std::optional<at::Tensor>& logvar, int64_t likelihood, double beta,
                         int64_t reduction) {
  VaeLossProblem p = prepare_vae_loss(recon, target, recon_logvar, mu, logvar, likelihood, beta, reduction);
  const at::Device device = p.loss.device();
  c10::cuda::CUDAGuard guard(device);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index());
  at::Tensor workspace = stream_workspace(device, stream, 16 + p.rows * 8, kVaeWorkspace);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.loss.scalar_type(), "vae_loss_cuda", [&] {
    using T = acc_t<scalar_t>;
    VaeLossArgs<scalar_t> a;
    a.recon = const_ptr<scalar_t>(p.recon);
    a.target = const_ptr<scalar_t>(p.target);
    a.recon_logvar = const_ptr<scalar_t>(p.recon_logvar);
    a.mu = const_ptr<scalar_t>(p.mu);
    a.logvar = const_ptr<scalar_t>(p.logvar);
    a.recon_grad = p.recon_grad.data_ptr<scalar_t>();
    a.recon_logvar_grad = p.recon_logvar_grad.data_ptr<scalar_t>();
    a.mu_grad = p.mu_grad.data_ptr<scalar_t>();
    a.logvar_grad = p.logvar_grad.data_ptr<scalar_t>();
    a.loss = p.loss.data_ptr<scalar_t>();
    a.rows = p.rows;
    a.recon_len = p.recon_len;
    a.latent_len = p.latent_len;
    a.scale = static_cast<T>(p.scale);
    a.kl_scale = static_cast<T>(p.scale * p.beta);
    a.beta = static_cast<T>(p.beta);
    a.kind = !p.has_recon ? -1 : p.likelihood == kVaeBernoulli ? kReconBernoulli
                                 : p.has_recon_logvar          ? kReconGaussian
                                                               : kReconUnit;
    a.has_kl = p.has_kl;
    a.per_row = p.reduction == kVaeNone;
    uint8_t* base = workspace.data_ptr<uint8_t>();
    a.counter = reinterpret_cast<unsigned int*>(base);
    a.partials = reinterpret_cast<T*>(base + 16);
    vae_loss_kernel<scalar_t><<<static_cast<unsigned int>(p.rows), kVaeThreads, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {p.loss, p.recon_grad, p.recon_logvar_grad, p.mu_grad, p.logvar_grad};
}

// The four (saved, out) pairs of vae_loss_backward; blockIdx.y picks one.
template <typename scalar_t>
struct ScaleRowsArgs {
  const scalar_t* saved[4];
  scalar_t* out[4];
  int64_t numel[4], row_len[4];
  const scalar_t* grad;
  bool per_row;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kVaeThreads) vae_loss_backward_kernel(const ScaleRowsArgs<scalar_t> a) {
  using T = acc_t<scalar_t>;
  const int i = blockIdx.y;
  const int64_t n = a.numel[i], len = a.row_len[i];
  const scalar_t* in = a.saved[i];
  scalar_t* out = a.out[i];
  const T scalar = a.per_row ? T(0) : static_cast<T>(*a.grad);
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const T g = a.per_row ? static_cast<T>(a.grad[j / len]) : scalar;
    out[j] = static_cast<scalar_t>(g * static_cast<T>(in[j]));
  }
}

unsigned int grid_for(int64_t n, int device) {
  const int64_t wanted = (n + kVaeThreads - 1) / kVaeThreads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(wanted, 8 * multiprocessor_count(device))));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> vae_loss_backward_cuda(
    const at::Tensor& grad_loss, const at::Tensor& recon_grad, const at::Tensor& recon_logvar_grad,
    const at::Tensor& mu_grad, const at::Tensor& logvar_grad, int64_t reduction) {
  VaeLossBackwardProblem p =
      prepare_vae_loss_backward(grad_loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad, reduction);
  const at::Device device = p.grad.device();
  c10::cuda::CUDAGuard guard(device);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.grad.scalar_type(), "vae_loss_backward_cuda", [&] {
    ScaleRowsArgs<scalar_t> a;
    int64_t largest = 0;
    for (int i = 0; i < 4; ++i) {
      a.saved[i] = p.saved[i].data_ptr<scalar_t>();
      a.out[i] = p.out[i].data_ptr<scalar_t>();
      a.numel[i] = p.out[i].numel();
      a.row_len[i] = std::max<int64_t>(1, a.numel[i] / p.rows);
      largest = std::max(largest, a.numel[i]);
    }
    a.grad = p.grad.data_ptr<scalar_t>();
    a.per_row = p.per_row;
    const dim3 grid(grid_for(largest, device.index()), 4);
    vae_loss_backward_kernel<scalar_t><<<grid, kVaeThreads, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {p.out[0], p.out[1], p.out[2], p.out[3]};
}

template <typename scalar_t>
__global__ void __launch_bounds__(kVaeThreads)
    vae_reparameterize_kernel(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ lv,
                              const scalar_t* __restrict__ eps, scalar_t* __restrict__ z, int64_t n) {
  using T = acc_t<scalar_t>;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x)
    z[j] = static_cast<scalar_t>(
        reparameterize_element(static_cast<T>(mu[j]), static_cast<T>(lv[j]), static_cast<T>(eps[j])));
}

template <typename scalar_t>
__global__ void __launch_bounds__(kVaeThreads)
    vae_reparameterize_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ lv,
                                       const scalar_t* __restrict__ eps, scalar_t* __restrict__ out, int64_t n) {
  using T = acc_t<scalar_t>;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[j] = static_cast<scalar_t>(
        reparameterize_logvar_grad(static_cast<T>(grad[j]), static_cast<T>(lv[j]), static_cast<T>(eps[j])));
}

at::Tensor vae_reparameterize_cuda(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps) {
  check_vae_reparameterize(mu, logvar, eps, "vae_reparameterize", "mu", "logvar", "eps");
  const at::Tensor m = mu.contiguous(), v = logvar.contiguous(), e = eps.contiguous();
  at::Tensor z = at::empty(m.sizes(), m.options());
  c10::cuda::CUDAGuard guard(m.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(m.device().index());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "vae_reparameterize_cuda", [&] {
    vae_reparameterize_kernel<scalar_t><<<grid_for(m.numel(), m.device().index()), kVaeThreads, 0, stream>>>(
        m.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), m.numel());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return z;
}

at::Tensor vae_reparameterize_backward_cuda(const at::Tensor& grad, const at::Tensor& logvar,
                                            const at::Tensor& eps) {
  check_vae_reparameterize(grad, logvar, eps, "vae_reparameterize_backward", "grad", "logvar", "eps");
  const at::Tensor g = grad.contiguous(), v = logvar.contiguous(), e = eps.contiguous();
  at::Tensor out = at::empty(g.sizes(), g.options());
  c10::cuda::CUDAGuard guard(g.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(g.device().index());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "vae_reparameterize_backward_cuda", [&] {
    vae_reparameterize_backward_kernel<scalar_t>
        <<<grid_for(g.numel(), g.device().index()), kVaeThreads, 0, stream>>>(
            g.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
            g.numel());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("vae_loss", &vae_loss_cuda);
  m.impl("vae_loss_backward", &vae_loss_backward_cuda);
  m.impl("vae_reparameterize", &vae_reparameterize_cuda);
  m.impl("vae_reparameterize_backward", &vae_reparameterize_backward_cuda);
}

}  // namespace fastgan
