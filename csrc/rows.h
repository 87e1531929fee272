// Host-side view of a batch tensor as B rows of N contiguous elements.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace fastgan {

// True when sample b occupies elements [b * N, (b + 1) * N) of dense memory: any
// dense layout whose batch dimension is outermost (contiguous, channels-last, ...).
inline bool is_batch_major(const at::Tensor& t) {
  if (t.dim() == 0 || !t.is_non_overlapping_and_dense()) return false;
  const int64_t rows = t.size(0);
  return rows <= 1 || t.stride(0) * rows == t.numel();
}

// `t` itself when batch-major, else a contiguous copy.
inline at::Tensor batch_major(const at::Tensor& t) { return is_batch_major(t) ? t : t.contiguous(); }

// A batch-major view of `a` and `b` sharing one layout: both as they are when
// their strides agree, else both contiguous.
inline std::pair<at::Tensor, at::Tensor> batch_major_pair(const at::Tensor& a, const at::Tensor& b) {
  if (is_batch_major(a) && a.strides().equals(b.strides())) return {a, b};
  return {a.contiguous(), b.contiguous()};
}

inline int64_t row_length(const at::Tensor& t) { return t.size(0) == 0 ? 0 : t.numel() / t.size(0); }

}  // namespace fastgan
