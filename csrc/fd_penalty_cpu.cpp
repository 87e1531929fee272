// Finite-difference (first-order approximate) R1/R2 ops: schemas and CPU kernels.
//   perturb:                            x + sigma * noise, one pass
//   finite_difference_penalty:          w / B * sum ((p - o) / sigma)^2, one pass
//   finite_difference_penalty_backward: (c q, -c q), both in one pass
// Math in fd_penalty_math.h; autograd in fd_penalty_autograd.cpp.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <type_traits>

#include "cpu_multi_tensor.h"
#include "cpu_types.h"
#include "empty.h"
#include "fd_penalty_host.h"
#include "fd_penalty_math.h"
#include "namespaces.h"
#include "rows.h"

namespace fastgan {
namespace {

template <typename scalar_t>
FASTGAN_CPU_CLONES void perturb_span(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                     const scalar_t* __restrict__ noise, int64_t n, acc_t<scalar_t> sigma) {
  using T = acc_t<scalar_t>;
  for (int64_t j = 0; j < n; ++j)
    out[j] = static_cast<scalar_t>(perturb_element(static_cast<T>(x[j]), static_cast<T>(noise[j]), sigma));
}

template <typename scalar_t>
FASTGAN_CPU_CLONES double sum_squared_quotients(const scalar_t* __restrict__ p, const scalar_t* __restrict__ o,
                                                int64_t n, acc_t<scalar_t> sigma) {
  using T = acc_t<scalar_t>;
  constexpr int kLanes = 16;  // independent partial sums: vectorised, and a fixed summation order
  T lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const T q = fd_quotient(static_cast<T>(p[j + k]), static_cast<T>(o[j + k]), sigma);
      lanes[k] += q * q;
    }
  double total = 0.0;
  for (int k = 0; k < kLanes; ++k) total += static_cast<double>(lanes[k]);
  for (; j < n; ++j) {
    const double q = static_cast<double>(fd_quotient(static_cast<T>(p[j]), static_cast<T>(o[j]), sigma));
    total += q * q;
  }
  return total;
}

template <typename scalar_t>
FASTGAN_CPU_CLONES void fd_grad_span(scalar_t* __restrict__ grad_p, scalar_t* __restrict__ grad_o,
                                     const scalar_t* __restrict__ p, const scalar_t* __restrict__ o, int64_t n,
                                     acc_t<scalar_t> sigma, acc_t<scalar_t> coef) {
  using T = acc_t<scalar_t>;
  // Unswitched by hand on which gradients are wanted: left to GCC, the float16 loop stayed scalar.
  auto loop = [&](auto want_p, auto want_o) __attribute__((always_inline)) {
    for (int64_t j = 0; j < n; ++j) {
      const T g = coef * fd_quotient(static_cast<T>(p[j]), static_cast<T>(o[j]), sigma);
      if constexpr (want_p()) grad_p[j] = static_cast<scalar_t>(g);
      if constexpr (want_o()) grad_o[j] = static_cast<scalar_t>(-g);
    }
  };
  using yes = std::true_type;
  using no = std::false_type;
  if (grad_p && grad_o) loop(yes{}, yes{});
  else if (grad_p) loop(yes{}, no{});
  else loop(no{}, yes{});
}

at::Tensor perturb_cpu(const at::Tensor& x, const at::Tensor& noise, double sigma) {
  check_perturb_args(x, noise, sigma);
  auto [xs, ns] = batch_major_pair(x, noise);
  at::Tensor out = at::empty_like(xs);
  FASTGAN_CPU_DISPATCH(xs.scalar_type(), "perturb_cpu", [&] {
    const scalar_t* xp = cpu_data<scalar_t>(xs);
    const scalar_t* np = cpu_data<scalar_t>(ns);
    scalar_t* op = cpu_data<scalar_t>(out);
    const auto s = static_cast<acc_t<scalar_t>>(sigma);
    cpu_for_each_chunk({xs.numel()}, [&](int64_t, int64_t begin, int64_t end) {
      perturb_span(op + begin, xp + begin, np + begin, end - begin, s);
    });
  });
  return out;
}

// A scalar in the inputs' dtype; the sum is kept in double (critic outputs are few).
at::Tensor fd_penalty_cpu(const at::Tensor& perturbed, const at::Tensor& outputs, double sigma, double weight) {
  check_fd_penalty_args(perturbed, outputs, sigma, weight, "finite_difference_penalty");
  auto [p, o] = batch_major_pair(perturbed, outputs);
  at::Tensor loss = new_empty({}, p.options());
  FASTGAN_CPU_DISPATCH(p.scalar_type(), "finite_difference_penalty_cpu", [&] {
    const double total = sum_squared_quotients(cpu_data<scalar_t>(p), cpu_data<scalar_t>(o), p.numel(),
                                               static_cast<acc_t<scalar_t>>(sigma));
    cpu_data<scalar_t>(loss)[0] = static_cast<scalar_t>(weight / static_cast<double>(p.size(0)) * total);
  });
  return loss;
}

// Returns (grad_perturbed, grad_outputs); an unneeded one is an empty tensor.
std::tuple<at::Tensor, at::Tensor> fd_penalty_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& perturbed,
                                                           const at::Tensor& outputs, double sigma, double weight,
                                                           bool need_perturbed, bool need_outputs) {
  check_fd_penalty_backward_args(grad_loss, perturbed, outputs, sigma, weight);
  auto [p, o] = batch_major_pair(perturbed, outputs);
  at::Tensor grad_p = need_perturbed ? at::empty_like(p) : new_empty({0}, p.options());
  at::Tensor grad_o = need_outputs ? at::empty_like(p) : new_empty({0}, p.options());
  if (!(need_perturbed || need_outputs)) return {grad_p, grad_o};
  FASTGAN_CPU_DISPATCH(p.scalar_type(), "finite_difference_penalty_backward_cpu", [&] {
    using T = acc_t<scalar_t>;
    const T s = static_cast<T>(sigma);
    const T coef = fd_penalty_grad_coef(static_cast<T>(*cpu_data<scalar_t>(grad_loss)), static_cast<T>(weight), s,
                                        p.size(0));
    const scalar_t* pp = cpu_data<scalar_t>(p);
    const scalar_t* op = cpu_data<scalar_t>(o);
    scalar_t* gp = need_perturbed ? cpu_data<scalar_t>(grad_p) : nullptr;
    scalar_t* go = need_outputs ? cpu_data<scalar_t>(grad_o) : nullptr;
    cpu_for_each_chunk({p.numel()}, [&](int64_t, int64_t begin, int64_t end) {
      fd_grad_span(gp ? gp + begin : nullptr, go ? go + begin : nullptr, pp + begin, op + begin, end - begin, s, coef);
    });
  });
  return {grad_p, grad_o};
}

void define_ops(torch::Library& m) {
  m.def("perturb(Tensor x, Tensor noise, float sigma) -> Tensor");
  m.def("finite_difference_penalty(Tensor perturbed, Tensor outputs, float sigma, float weight) -> Tensor");
  m.def(
      "finite_difference_penalty_backward(Tensor grad_loss, Tensor perturbed, Tensor outputs, float sigma, "
      "float weight, bool need_perturbed, bool need_outputs) -> (Tensor, Tensor)");
}

}  // namespace

FASTGAN_DEFINE_OPS(define_ops)

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("perturb", &perturb_cpu);
  m.impl("finite_difference_penalty", &fd_penalty_cpu);
  m.impl("finite_difference_penalty_backward", &fd_penalty_backward_cpu);
}

}  // namespace fastgan
