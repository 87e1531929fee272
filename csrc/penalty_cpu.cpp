// Gradient-penalty ops (THEORY.md §3): schemas and CPU kernels.
//   interpolate:              x_hat = eps * real + (1 - eps) * fake, one eps per sample
//   grad_norm_penalty:        per-sample L2 norm, penalty, reduction, in one pass
//   grad_norm_penalty_backward: dP/dg = scale_b * coef(n_b) * g_b, one pass
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "cpu_multi_tensor.h"
#include "cpu_types.h"
#include "empty.h"
#include "namespaces.h"
#include "penalty_host.h"
#include "penalty_math.h"
#include "rows.h"

namespace fastgan {
namespace {

// Pieces of about kCpuChunk elements: runs of whole rows when a row fits in one, else
// the kCpuChunk tiles of one row. fn(first_row, rows, begin, len) covers elements
// [begin, begin + len) of rows first_row .. first_row + rows - 1, so the kernels loop
// over a run of short rows themselves (a toy GAN's (256, 2) samples are 256 rows).
template <typename Fn>
void cpu_for_each_row_piece(int64_t rows, int64_t row_len, const Fn& fn) {
  if (rows == 0 || row_len == 0) return;
  const int64_t tiles = (row_len + kCpuChunk - 1) / kCpuChunk;
  if (tiles == 1) {
    at::parallel_for(0, rows, std::max<int64_t>(1, kCpuChunk / row_len),
                     [&](int64_t first, int64_t last) { fn(first, last - first, int64_t{0}, row_len); });
    return;
  }
  at::parallel_for(0, rows * tiles, 1, [&](int64_t first, int64_t last) {
    for (int64_t item = first; item < last; ++item) {
      const int64_t r = item / tiles, begin = (item % tiles) * kCpuChunk;
      fn(r, int64_t{1}, begin, std::min(kCpuChunk, row_len - begin));
    }
  });
}

int64_t row_tiles(int64_t row_len) { return std::max<int64_t>(1, (row_len + kCpuChunk - 1) / kCpuChunk); }

// The rows' loops below: `rows` rows of `len` elements, `stride` apart, with a per-row
// value at index r of its array.

// The sum of x's n squares, in double.
template <typename scalar_t>
FASTGAN_CPU_INLINE double sum_squares(const scalar_t* __restrict__ x, int64_t n) {
  using T = acc_t<scalar_t>;
  constexpr int kLanes = 16;  // independent partial sums: vectorised, and a fixed summation order
  double total = 0.0;
  int64_t j = 0;
  if (n >= kLanes) {
    T lanes[kLanes] = {};
    for (; j + kLanes <= n; j += kLanes)
      for (int k = 0; k < kLanes; ++k) {
        const T v = static_cast<T>(x[j + k]);
        lanes[k] += v * v;
      }
    double sums[kLanes];  // the lanes added pairwise: vectorised too, where a serial sum costs a short row most
    for (int k = 0; k < kLanes; ++k) sums[k] = static_cast<double>(lanes[k]);
    for (int width = kLanes / 2; width > 0; width /= 2)
      for (int k = 0; k < width; ++k) sums[k] += sums[k + width];
    total = sums[0];
  }
  for (; j < n; ++j) {
    const double v = static_cast<double>(x[j]);
    total += v * v;
  }
  return total;
}

// out[r * out_stride] = the sum of row r's squares.
template <typename scalar_t>
FASTGAN_CPU_CLONES void sum_squares_rows(double* __restrict__ out, int64_t out_stride,
                                         const scalar_t* __restrict__ x, int64_t rows, int64_t stride, int64_t len) {
  for (int64_t r = 0; r < rows; ++r) out[r * out_stride] = sum_squares(x + r * stride, len);
}

// out = coef[r] * x (COMPLEMENT: (1 - coef[r]) * x).
template <bool COMPLEMENT, typename scalar_t>
FASTGAN_CPU_CLONES void scale_rows(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                   const acc_t<scalar_t>* __restrict__ coef, int64_t rows, int64_t stride,
                                   int64_t len) {
  using T = acc_t<scalar_t>;
  for (int64_t r = 0; r < rows; ++r) {
    const T c = COMPLEMENT ? T(1) - coef[r] : coef[r];
    for (int64_t j = 0; j < len; ++j)
      out[r * stride + j] = static_cast<scalar_t>(c * static_cast<T>(x[r * stride + j]));
  }
}

template <typename scalar_t>
FASTGAN_CPU_CLONES void interpolate_rows(scalar_t* __restrict__ out, const scalar_t* __restrict__ real,
                                         const scalar_t* __restrict__ fake, const acc_t<scalar_t>* __restrict__ eps,
                                         int64_t rows, int64_t stride, int64_t len) {
  using T = acc_t<scalar_t>;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < len; ++j) {
      const int64_t o = r * stride + j;
      out[o] = static_cast<scalar_t>(interpolate_element(static_cast<T>(real[o]), static_cast<T>(fake[o]), eps[r]));
    }
}

at::Tensor interpolate_cpu(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& eps) {
  check_interpolate_args(real, fake, eps);
  auto [r, f] = batch_major_pair(real, fake);
  at::Tensor e = eps.contiguous();
  at::Tensor out = at::empty_like(r);
  const int64_t rows = r.size(0), n = row_length(r);
  FASTGAN_CPU_DISPATCH(r.scalar_type(), "interpolate_cpu", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t* rp = cpu_data<scalar_t>(r);
    const scalar_t* fp = cpu_data<scalar_t>(f);
    const T* ep = e.data_ptr<T>();
    scalar_t* op = cpu_data<scalar_t>(out);
    cpu_for_each_row_piece(rows, n, [&](int64_t row, int64_t count, int64_t begin, int64_t len) {
      const int64_t o = row * n + begin;
      interpolate_rows(op + o, rp + o, fp + o, ep + row, count, n, len);
    });
  });
  return out;
}

// Returns (grad_real, grad_fake); an unneeded one is an empty tensor.
std::tuple<at::Tensor, at::Tensor> interpolate_backward_cpu(const at::Tensor& grad, const at::Tensor& eps,
                                                            bool need_real, bool need_fake) {
  check_interpolate_backward_args(grad, eps);
  at::Tensor g = batch_major(grad);
  at::Tensor e = eps.contiguous();
  at::Tensor grad_real = need_real ? at::empty_like(g) : new_empty({0}, g.options());
  at::Tensor grad_fake = need_fake ? at::empty_like(g) : new_empty({0}, g.options());
  const int64_t rows = g.size(0), n = row_length(g);
  FASTGAN_CPU_DISPATCH(g.scalar_type(), "interpolate_backward_cpu", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t* gp = cpu_data<scalar_t>(g);
    const T* ep = e.data_ptr<T>();
    scalar_t* real_p = need_real ? cpu_data<scalar_t>(grad_real) : nullptr;
    scalar_t* fake_p = need_fake ? cpu_data<scalar_t>(grad_fake) : nullptr;
    cpu_for_each_row_piece(rows, n, [&](int64_t row, int64_t count, int64_t begin, int64_t len) {
      const int64_t o = row * n + begin;
      if (real_p != nullptr) scale_rows<false>(real_p + o, gp + o, ep + row, count, n, len);
      if (fake_p != nullptr) scale_rows<true>(fake_p + o, gp + o, ep + row, count, n, len);
    });
  });
  return {grad_real, grad_fake};
}

// Returns (loss, norms): loss is (B,) for reduction none, else a scalar, in the
// input dtype; norms is (B,) in the accumulation dtype (saved for the backward).
std::tuple<at::Tensor, at::Tensor> grad_norm_penalty_cpu(const at::Tensor& grads, double center, double weight,
                                                         bool one_sided, int64_t reduction) {
  check_grad_norm_penalty_args(grads, reduction);
  at::Tensor g = batch_major(grads);
  const int64_t rows = g.size(0), n = row_length(g), tiles = row_tiles(n);
  const auto acc_type = g.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor norms = new_empty({rows}, g.options().dtype(acc_type));
  at::Tensor loss = reduction == kPenaltyNone ? new_empty({rows}, g.options()) : new_empty({}, g.options());
  std::vector<double> partial(rows * tiles, 0.0);
  FASTGAN_CPU_DISPATCH(g.scalar_type(), "grad_norm_penalty_cpu", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t* gp = cpu_data<scalar_t>(g);
    cpu_for_each_row_piece(rows, n, [&](int64_t row, int64_t count, int64_t begin, int64_t len) {
      sum_squares_rows(partial.data() + row * tiles + begin / kCpuChunk, tiles, gp + row * n + begin, count, n, len);
    });
    T* np = norms.data_ptr<T>();
    scalar_t* lp = cpu_data<scalar_t>(loss);
    const double row_weight = penalty_row_weight(weight, rows, reduction);
    double total = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      double squares = 0.0;
      for (int64_t t = 0; t < tiles; ++t) squares += partial[r * tiles + t];
      const double norm = std::sqrt(squares);
      np[r] = static_cast<T>(norm);
      const double term = penalty_term(norm, center, one_sided);
      if (reduction == kPenaltyNone) lp[r] = static_cast<scalar_t>(weight * term);
      else total += term;
    }
    if (reduction != kPenaltyNone) lp[0] = static_cast<scalar_t>(row_weight * total);
  });
  return {loss, norms};
}

at::Tensor grad_norm_penalty_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& grads,
                                          const at::Tensor& norms, double center, double weight, bool one_sided,
                                          int64_t reduction) {
  check_grad_norm_penalty_backward_args(grad_loss, grads, norms, reduction);
  at::Tensor g = batch_major(grads);
  at::Tensor go = grad_loss.contiguous();
  at::Tensor norms_c = norms.contiguous();
  at::Tensor out = at::empty_like(g);
  const int64_t rows = g.size(0), n = row_length(g);
  FASTGAN_CPU_DISPATCH(g.scalar_type(), "grad_norm_penalty_backward_cpu", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t* gp = cpu_data<scalar_t>(g);
    const scalar_t* gop = cpu_data<scalar_t>(go);
    const T* np = norms_c.data_ptr<T>();
    scalar_t* op = cpu_data<scalar_t>(out);
    const T row_weight = penalty_row_weight(static_cast<T>(weight), rows, reduction);
    std::vector<T> coef(rows);
    for (int64_t row = 0; row < rows; ++row) {
      const T upstream = static_cast<T>(gop[reduction == kPenaltyNone ? row : 0]);
      coef[row] = penalty_row_scale(upstream, row_weight, np[row], static_cast<T>(center), one_sided);
    }
    cpu_for_each_row_piece(rows, n, [&](int64_t row, int64_t count, int64_t begin, int64_t len) {
      scale_rows<false>(op + row * n + begin, gp + row * n + begin, coef.data() + row, count, n, len);
    });
  });
  return out;
}

void define_ops(torch::Library& m) {
  m.def("interpolate(Tensor real, Tensor fake, Tensor eps) -> Tensor");
  m.def("interpolate_backward(Tensor grad, Tensor eps, bool need_real, bool need_fake) -> (Tensor, Tensor)");
  m.def(
      "grad_norm_penalty(Tensor grads, float center, float weight, bool one_sided, int reduction) "
      "-> (Tensor, Tensor)");
  m.def(
      "grad_norm_penalty_backward(Tensor grad_loss, Tensor grads, Tensor norms, float center, float weight, "
      "bool one_sided, int reduction) -> Tensor");
}

}  // namespace

FASTGAN_DEFINE_OPS(define_ops)

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("interpolate", &interpolate_cpu);
  m.impl("interpolate_backward", &interpolate_backward_cpu);
  m.impl("grad_norm_penalty", &grad_norm_penalty_cpu);
  m.impl("grad_norm_penalty_backward", &grad_norm_penalty_backward_cpu);
}

}  // namespace fastgan
