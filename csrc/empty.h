// Fresh outputs of fastgan's kernels.
//
// A kernel runs below the dispatcher already (at its device's key), so a CPU output
// needs no second trip through it: at::empty's dispatch costs about as much as the
// allocation, several times per op call at a GAN step's sizes. ATen's structured CPU
// kernels allocate the same way. Deterministic mode's fill of uninitialised memory
// (torch.utils.deterministic.fill_uninitialized_memory; tests poison outputs with it)
// is kept: NaN for the floating outputs this path takes. Anything else goes through
// at::empty.
#pragma once

#include <ATen/Context.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/ArrayRef.h>

#include <limits>

namespace fastgan {

inline at::Tensor new_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  if (!options.device().is_cpu() || !at::isFloatingType(options.dtype().toScalarType()))
    return at::empty(sizes, options);
  at::Tensor out = at::detail::empty_cpu(sizes, options);
  const auto& context = at::globalContext();
  if (C10_UNLIKELY(context.deterministicAlgorithms() && context.deterministicFillUninitializedMemory()))
    out.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

}  // namespace fastgan
